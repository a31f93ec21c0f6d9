"""A compact RAW-to-RGB network built from HyperConvolutions (or plain convs at the same MACs).

Input: the RGGB mosaic packed to (N, 4, h, w) planes (R, G1, G2, B), linear, black level
removed and white-balanced. Output: linear camera RGB at full resolution (N, 3, 2h, 2w),
still white-balanced: the colour matrix, gamma and tone curve are applied after the network
(``training/unprocess.process`` steps), from the file's metadata. The network demosaicks
and denoises; a coarse RGB made from the packed planes is its global skip.

``hyper=True`` generates every conv kernel with an MLP from a learned per-layer code
(HyperNetworks at fixed FLOPs): more parameters, the same MACs once kernels are cached.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .hyperconv import HyperConv2d

Conv = Callable[[int, int], nn.Module]


# The kernel std of PyTorch's default Conv2d init (uniform in +-1/sqrt(fan_in)) is 1/sqrt(3 fan_in):
# generated kernels start with the same std, so a hyper network and its plain twin start alike.
PLAIN_CONV_GAIN = 1 / math.sqrt(3)


def conv_factory(hyper: bool, code_dim: int, hidden: int) -> Conv:
    """3x3 'same' convs: HyperConv2d when ``hyper``, else nn.Conv2d; both start with the same kernel std."""
    if hyper:
        return lambda cin, cout: HyperConv2d(
            cin, cout, 3, code_dim=code_dim, hidden=hidden, padding=1, init_gain=PLAIN_CONV_GAIN
        )
    return lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1)


class Block(nn.Module):
    """conv -> ReLU -> conv, scaled by 0.2, plus input."""

    def __init__(self, channels: int, conv: Conv) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv(channels, channels), conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.conv2(F.relu(self.conv1(x)))


def coarse_rgb(packed: torch.Tensor) -> torch.Tensor:
    """Full-resolution RGB from packed planes by bilinear up-sampling of R, mean G and B."""
    rgb = torch.stack([packed[:, 0], 0.5 * (packed[:, 1] + packed[:, 2]), packed[:, 3]], dim=1)
    return F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)


class RawToRGB(nn.Module):
    in_channels = 4
    """The packed RGGB mosaic (R, G1, G2, B) at half resolution."""

    def __init__(
        self, features: int = 32, blocks: int = 6, hyper: bool = True, code_dim: int = 16, hidden: int = 16
    ) -> None:
        super().__init__()
        conv = conv_factory(hyper, code_dim, hidden)
        self.head = conv(4, features)
        self.body = nn.Sequential(*(Block(features, conv) for _ in range(blocks)))
        self.tail = conv(features, 12)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        feat = self.head(packed)
        residual = F.pixel_shuffle(self.tail(self.body(feat) + feat), 2)
        return coarse_rgb(packed) + residual
