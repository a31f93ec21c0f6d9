"""Blocks shared by several networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate the last rows and columns until both sides are multiples of ``multiple``
    (``x`` itself when they already are); the caller crops the output back."""
    height, width = x.shape[-2:]
    if not (height % multiple or width % multiple):
        return x
    return F.pad(x, (0, -width % multiple, 0, -height % multiple), mode="replicate")


class InvertedResidual(nn.Module):
    """1x1 expand -> ReLU -> 3x3 depthwise -> ReLU -> 1x1 project, plus identity.

    MalleNet's "ResConvBlock" without normalisation: the projection starts at a small
    scale (``init_scale``) so a deep stack begins close to the identity and trains
    stably at small batch sizes, where batch statistics would be noisy.
    """

    def __init__(self, channels: int, expansion: int = 5, init_scale: float = 0.1) -> None:
        super().__init__()
        hidden = channels * expansion
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.act1 = nn.ReLU(inplace=True)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act2 = nn.ReLU(inplace=True)
        self.project = nn.Conv2d(hidden, channels, 1)
        with torch.no_grad():
            self.project.weight.mul_(init_scale)
            self.project.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.expand(x))
        y = self.act2(self.depthwise(y))
        return x + self.project(y)


def blocks(channels: int, count: int, expansion: int = 5) -> nn.Sequential:
    """``count`` inverted-residual blocks of one width."""
    return nn.Sequential(*(InvertedResidual(channels, expansion) for _ in range(count)))
