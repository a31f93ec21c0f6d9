"""MalleConv and MalleNet (Jiang et al., "Fast and High-Quality Image Denoising via
Malleable Convolutions", ECCV 2022).

MalleConv predicts a low-resolution grid of depthwise k x k kernels (plus a bias) from a
down-sampled copy of its input and applies them at full resolution with
:func:`slice_and_conv`, which interpolates the kernels bilinearly tap by tap, so only one
full-resolution kernel plane exists at a time instead of k*k of them.

MalleNet is the released code's shuffle-pyramid: the image is split by space-to-depth into
four levels (H, H/2, H/4, H/8), refined coarse to fine with inverted-residual blocks and
one MalleConv per level, and the network predicts the noise, which is subtracted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import blocks, pad_to_multiple


def slice_and_conv(
    x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply spatially varying depthwise kernels given on a coarse grid.

    x: (B, C, H, W) features. kernels: (B, C, k*k, h, w) taps on a grid that covers the
    image (cell centres as in ``F.interpolate(align_corners=False)``). bias: (B, C, h, w).
    Returns (B, C, H, W): ``sum_t up(kernels[:, :, t])(p) * x(p + t) + up(bias)(p)``, with
    zero padding at the border, plus ``residual`` if given.
    """
    height, width = x.shape[-2:]
    taps = kernels.shape[2]
    size = round(taps**0.5)
    radius = size // 2
    # Planar (NCHW) operands: measured faster on CPU than channels-last here, since the
    # bilinear up-sampling of a few planes dominates and is quickest planar.
    padded = F.pad(x.contiguous(), (radius, radius, radius, radius))

    def upsample(plane: torch.Tensor) -> torch.Tensor:
        return F.interpolate(plane, size=(height, width), mode="bilinear", align_corners=False)

    out = upsample(bias)
    if residual is not None:
        out.add_(residual)
    for tap in range(taps):
        dy, dx = divmod(tap, size)
        out.addcmul_(upsample(kernels[:, :, tap]), padded[:, :, dy : dy + height, dx : dx + width])
    return out


class KernelPredictor(nn.Module):
    """Small CNN on an average-pooled copy of the features; emits the kernel grid."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, pool: int) -> None:
        super().__init__()
        self.channels = channels
        self.taps = kernel_size * kernel_size
        self.pool = pool
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.PReLU(hidden),
            blocks(hidden, 2, expansion=2),
            nn.Conv2d(hidden, channels * (self.taps + 1), 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.body(F.avg_pool2d(x, self.pool))
        b, _, h, w = grid.shape
        grid = grid.view(b, self.channels, self.taps + 1, h, w)
        return grid[:, :, : self.taps], grid[:, :, self.taps]


class MalleConv(nn.Module):
    """Residual malleable convolution: ``x + gate * slice_and_conv(x, predictor(x))``.

    The gate is a learnable scalar that starts at zero, as in the released code, so the
    network begins as a plain CNN and learns how much spatially varying filtering to use.
    """

    def __init__(self, channels: int, kernel_size: int = 3, pool: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.predictor = KernelPredictor(channels, hidden, kernel_size, pool)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels, bias = self.predictor(x)
        # The gate scales the coarse grid, not the full-resolution result: same sum, less work.
        return slice_and_conv(x, kernels * self.gate, bias * self.gate, residual=x)

    def macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """Slice-and-conv arithmetic (the predictor's convs are counted on their own)."""
        return output.numel() * self.predictor.taps


class MalleNet(nn.Module):
    """Blind denoiser: shuffle pyramid, coarse-to-fine refinement, noise prediction.

    ``channels`` is the width at H/2; the H/4 and H/8 levels use 2x and 4x that, and the
    full-resolution level, which only fuses, filters (MalleConv) and predicts the noise,
    uses ``full_res_channels``. ``grid_pool`` is how much coarser than its level each kernel grid is.
    """

    levels = 4

    def __init__(
        self,
        channels: int = 32,
        full_res_channels: int = 16,
        blocks_per_stage: int = 2,
        kernel_size: int = 3,
        grid_pool: tuple[int, int, int, int] = (8, 4, 4, 2),
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        c = channels
        widths = (full_res_channels, c, 2 * c, 4 * c)
        self.grid_pool = grid_pool
        # Stage 1: one encoder per pyramid level (space-to-depth by 2 per level).
        self.encoders = nn.ModuleList()
        for level, width in enumerate(widths):
            cin = image_channels * 4**level
            layers: list[nn.Module] = [nn.Conv2d(cin, width, 3, padding=1)]
            if level > 0:  # no expanded block at full resolution: keeps the cost per pixel low
                layers.append(blocks(width, 1))
            self.encoders.append(nn.Sequential(*layers))
        # Stage 2: coarse to fine. Each level fuses the upsampled coarser result. The
        # upsampling is depth-to-space (1x1 conv + pixel shuffle), the inverse of the
        # pyramid's space-to-depth, rather than the released code's bilinear resize: a
        # bilinear H/2 -> H step left per-pixel detail to the shallow full-resolution path.
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i + 1], 4 * widths[i], 1), nn.PixelShuffle(2)) for i in range(3)
        )
        self.fuse = nn.ModuleList(
            [
                nn.Conv2d(2 * widths[0], widths[0], 1),
                nn.Conv2d(2 * widths[1], widths[1], 3, padding=1),
                nn.Conv2d(2 * widths[2], widths[2], 3, padding=1),
            ]
        )
        self.pre = nn.ModuleList([nn.Identity()] + [blocks(w, blocks_per_stage) for w in widths[1:]])
        self.malle = nn.ModuleList(MalleConv(w, kernel_size, pool) for w, pool in zip(widths, grid_pool, strict=True))
        self.post = nn.ModuleList([nn.Identity()] + [blocks(w, blocks_per_stage) for w in widths[1:]])
        # Stage 3: predict the noise. Plain 3x3 convs: an expanded block at full
        # resolution would cost more than all coarser levels together.
        self.head = nn.Sequential(
            nn.Conv2d(widths[0], widths[0], 3, padding=1),
            nn.PReLU(widths[0]),
            nn.Conv2d(widths[0], image_channels, 3, padding=1),
        )

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this (the model pads to it by itself)."""
        return max(2**level * pool for level, pool in enumerate(self.grid_pool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)

        pyramid = [padded]
        for _ in range(self.levels - 1):
            pyramid.append(F.pixel_unshuffle(pyramid[-1], 2))
        feats = [enc(level) for enc, level in zip(self.encoders, pyramid, strict=True)]

        y = self.post[3](self.malle[3](self.pre[3](feats[3])))
        for level in (2, 1, 0):
            y = self.fuse[level](torch.cat([feats[level], self.up[level](y)], dim=1))
            y = self.post[level](self.malle[level](self.pre[level](y)))
        noise = self.head(y)
        return (padded - noise)[..., :height, :width]
