"""EDSR (Lim et al., CVPR 2017 workshops) and PA-EDSR (the PANet paper's super-resolution
network: EDSR with one pyramid attention block in the middle of its residual trunk).

Mean shift, head conv, ResBlocks (ReLU, residual scaling) with the attention block after
the first half, conv, skip from the head, pixel-shuffle upsampler in 2x steps, tail conv.
``attention=False`` gives the same trunk without it, for the ablation. The attention block
lives beside the trunk (``attention``), not inside it, so both twins name every trunk tensor
alike and EDSR weights load into PA-EDSR by name (``--init-matching``); the block starts
as the identity, so such a PA-EDSR begins as exactly the EDSR it came from.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .drn import RGB_MEAN
from .panet import PyramidAttention, ResBlock


class PAEDSR(nn.Module):
    def __init__(
        self,
        scale: int = 4,
        features: int = 64,
        blocks: int = 16,
        res_scale: float = 1.0,
        attention: bool = True,
        attention_channels: int = 32,
    ) -> None:
        super().__init__()
        steps = int(math.log2(scale))
        if 2**steps != scale or steps < 1:
            raise ValueError(f"scale must be a power of two >= 2, not {scale}")
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, features, 3, padding=1)
        self.attention_at = blocks // 2  # runs before this trunk index
        self.attention = None
        if attention:  # the paper's SR block: reduction to 32 channels (256 / 8 there)
            self.attention = PyramidAttention(features, reduction=max(1, features // attention_channels))
            self.attention.start_as_identity()  # EDSR weights loaded around it keep working
        trunk: list[nn.Module] = [ResBlock(features, res_scale, relu=True) for _ in range(blocks)]
        trunk.append(nn.Conv2d(features, features, 3, padding=1))
        self.trunk = nn.Sequential(*trunk)
        up: list[nn.Module] = []
        for _ in range(steps):
            up += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(features, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x - self.mean)
        y = head
        for index, layer in enumerate(self.trunk):
            if index == self.attention_at and self.attention is not None:
                y = self.attention(y)
            y = layer(y)
        return self.tail(self.upsample(y + head)) + self.mean
