"""Pyramid attention and PANet (Mei et al., "Pyramid Attention Networks for Image
Restoration", 2020; IJCV 2023).

Pyramid attention matches every 3x3 query patch against the 3x3 patches of the feature map
resized to several scales (1.0 down to 0.6), so a pixel can borrow from similar structure
anywhere in the image and at coarser scales, where noise is weaker. The attention map is
quadratic in the feature-map area: the engine runs PANet on tiles of the size its card states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..raw import demosaic_malvar, unpack
from .layers import pad_to_multiple

PYRAMID_SCALES = (1.0, 0.9, 0.8, 0.7, 0.6)


def _patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * size * size, H * W): every patch at stride 1, zero 'same' padding."""
    return F.unfold(x, size, padding=size // 2)


class PyramidAttention(nn.Module):
    """Softmax attention from each query patch to the patches of all pyramid levels, plus input.

    Keys (C/r channels) and values (C channels) are 1x1 embeddings of the feature map resized
    by bicubic interpolation to each scale; keys are L2-normalised per patch; scores are
    scaled by ``softmax_scale`` before a softmax over every patch of every level; the value
    patches are scattered back with their attention weights (a transposed convolution) and
    divided by 4, as in the released code.
    """

    def __init__(
        self,
        channels: int = 64,
        reduction: int = 2,
        scales: tuple[float, ...] = PYRAMID_SCALES,
        patch: int = 3,
        softmax_scale: float = 10.0,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        inner = channels // reduction
        self.scales, self.patch = scales, patch
        self.softmax_scale, self.res_scale = softmax_scale, res_scale
        self.query = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.PReLU())
        self.key = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.PReLU())
        self.value = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.PReLU())

    def start_as_identity(self) -> None:
        """Zero the value embedding, so the block passes its input through unchanged until
        training moves it: inserted into a trained trunk, it starts without disturbing it."""
        nn.init.zeros_(self.value[0].weight)
        nn.init.zeros_(self.value[0].bias)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature map at every pyramid scale (bicubic, as the paper)."""
        return [
            x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
            for s in self.scales
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        levels = self.levels(x)
        keys = torch.cat([_patches(self.key(level), self.patch) for level in levels], dim=2)  # (B, Ck*9, L)
        values = torch.cat([_patches(self.value(level), self.patch) for level in levels], dim=2)  # (B, C*9, L)
        keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-4)
        queries = _patches(self.query(x), self.patch)  # (B, Ck*9, H*W)
        scores = torch.bmm(queries.transpose(1, 2), keys)  # (B, H*W, L)
        attention = torch.softmax(scores * self.softmax_scale, dim=2)
        columns = torch.bmm(values, attention.transpose(1, 2))  # (B, C*9, H*W)
        out = F.fold(columns, (height, width), self.patch, padding=self.patch // 2) / 4.0
        return x + self.res_scale * out

    def macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """The two patch products (the 1x1 embeddings are counted on their own)."""
        b, c, h, w = output.shape
        taps = self.patch * self.patch
        patches = sum(int(h * s) * int(w * s) for s in self.scales)
        inner = self.query[0].out_channels
        return b * h * w * patches * taps * (inner + c)


class ResBlock(nn.Module):
    """conv3x3 -> activation -> conv3x3, scaled by ``res_scale``, plus input (no normalisation).

    PANet's blocks use PReLU; EDSR's (and PA-EDSR's) use ReLU.
    """

    def __init__(self, channels: int, res_scale: float = 1.0, relu: bool = False) -> None:
        super().__init__()
        act = nn.ReLU(inplace=True) if relu else nn.PReLU()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), act, nn.Conv2d(channels, channels, 3, padding=1)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class PANet(nn.Module):
    """Head conv, ``blocks`` residual blocks with pyramid attention in the middle, conv,
    global skip from the head, tail conv (the paper's DN / DM / CAR network; 80 blocks there).

    Options for a CPU budget, all off by default (the paper's network):
    ``unshuffle`` runs the body at 1/f resolution (space-to-depth in, depth-to-space out);
    ``upscale`` makes the output that many times larger (a packed half-resolution Bayer
    input gives a full-resolution RGB image); ``image_skip`` adds the input image to the
    output so the network predicts a residual, where input and output have the same shape;
    ``mosaic_skip`` adds the Malvar-He-Cutler demosaicking of a packed RGGB input instead, so a
    demosaicking network predicts the correction to the classical result.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        features: int = 64,
        blocks: int = 80,
        reduction: int = 2,
        res_scale: float = 1.0,
        image_skip: bool = False,
        unshuffle: int = 1,
        upscale: int = 1,
        mosaic_skip: bool = False,
    ) -> None:
        super().__init__()
        half = blocks // 2
        self.unshuffle, self.shuffle = unshuffle, unshuffle * upscale
        self.in_channels = in_channels
        self.head = nn.Conv2d(in_channels * unshuffle**2, features, 3, padding=1)
        self.body = nn.Sequential(
            *(ResBlock(features, res_scale) for _ in range(half)),
            PyramidAttention(features, reduction),
            *(ResBlock(features, res_scale) for _ in range(blocks - half)),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.tail = nn.Conv2d(features, out_channels * self.shuffle**2, 3, padding=1)
        self.image_skip = image_skip and in_channels == out_channels and upscale == 1
        if mosaic_skip and (in_channels, out_channels, unshuffle * upscale) != (4, 3, 2):
            raise ValueError("mosaic_skip needs a packed RGGB input (4 channels) and a full-resolution RGB output")
        self.mosaic_skip = mosaic_skip

    @property
    def size_multiple(self) -> int:
        return self.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        m, up = self.unshuffle, self.shuffle // self.unshuffle
        x = pad_to_multiple(x, m)  # to the space-to-depth factor; cropped back below
        z = F.pixel_unshuffle(x, m) if m > 1 else x
        head = self.head(z)
        out = self.tail(self.body(head) + head)
        if self.shuffle > 1:
            out = F.pixel_shuffle(out, self.shuffle)
        if self.mosaic_skip:
            with torch.autocast(x.device.type, enabled=False):  # the classical part stays in fp32
                out = out.float() + demosaic_malvar(unpack(x.float()))
        elif self.image_skip:
            out = x + out
        return out[..., : height * up, : width * up]
