"""DRN: Dual Regression Networks for single-image super-resolution (Guo et al., CVPR 2020).

The primal network P maps LR to HR like a U-Net run backwards: the LR image is bicubically
up-sampled to HR size, a head conv and log2(scale) stride-2 down blocks bring it back to
LR size while keeping skips, and log2(scale) up stages (RCABs, pixel shuffle, 1x1 conv,
concatenation with the skip) climb to HR again. Every level has an RGB output head; the
last one is the SR result, the others feed the multi-scale primal loss. The dual networks
D (one per 2x step) map an output back down, for the dual loss ``L1(D(P(x)), x)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# DIV2K RGB mean, subtracted before the head and added back after every output head.
RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool, bottleneck, sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.body(x)


class RCAB(nn.Module):
    """Residual channel-attention block: conv, ReLU, conv, channel attention, plus input.

    ``inner`` is the width between the two convs (default ``channels``); channel pruning
    (DRC) narrows only that, so the block's input and output keep the stream's width.
    """

    def __init__(self, channels: int, reduction: int = 16, inner: int | None = None) -> None:
        super().__init__()
        self.inner = channels if inner is None else inner
        self.body = nn.Sequential(
            nn.Conv2d(channels, self.inner, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.inner, channels, 3, padding=1),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def down_block(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    """Stride-2 3x3 conv (no bias), LeakyReLU(0.2), 3x3 conv: halves the resolution."""
    mid = cin if mid is None else mid
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, stride=2, padding=1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(mid, cout, 3, padding=1, bias=False),
    )


class UpStage(nn.Module):
    """``blocks`` RCABs, x2 pixel-shuffle up-sampler, 1x1 conv down to the skip's width."""

    def __init__(self, channels: int, skip_channels: int, blocks: int, inner: list[int] | None = None) -> None:
        super().__init__()
        inner = [channels] * blocks if inner is None else inner
        self.body = nn.Sequential(*(RCAB(channels, inner=w) for w in inner))
        self.up = nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
        self.reduce = nn.Conv2d(channels, skip_channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.reduce(self.up(self.body(x))), skip], dim=1)


class DRN(nn.Module):
    """Primal network. ``forward`` returns the outputs from LR size up to HR size.

    ``channels`` is F, the head width at HR; the LR level works at F * scale channels.
    DRN-S x4 is ``DRN(4, channels=16, blocks=30)`` (4.8 M parameters).
    ``inner`` gives every RCAB's width between its two convs, in stage order (a channel-pruned
    DRN, see training/drc.py); None keeps them at the stage width.
    """

    def __init__(self, scale: int = 4, channels: int = 16, blocks: int = 30, inner: list[int] | None = None) -> None:
        super().__init__()
        steps = int(math.log2(scale))
        if 2**steps != scale or steps < 1:
            raise ValueError(f"scale must be a power of two >= 2, not {scale}")
        if inner is not None and (len(inner) != steps * blocks or min(inner) < 1):
            raise ValueError(f"inner needs {steps * blocks} positive widths (one per RCAB), not {inner}")
        self.scale, self.steps, self.channels, self.blocks = scale, steps, channels, blocks
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        widths = [channels * 2**i for i in range(steps + 1)]  # F at HR ... F * scale at LR
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.down = nn.ModuleList(down_block(widths[i], widths[i + 1]) for i in range(steps))
        # Stage k runs at the LR width; after its concat the next stage has 2x the skip width.
        stage_in = [widths[steps]] + [2 * widths[steps - k] for k in range(1, steps)]
        per_stage = [None if inner is None else list(inner[k * blocks : (k + 1) * blocks]) for k in range(steps)]
        self.up = nn.ModuleList(UpStage(stage_in[k], widths[steps - 1 - k], blocks, per_stage[k]) for k in range(steps))
        out_widths = [widths[steps]] + [2 * widths[steps - 1 - k] for k in range(steps)]
        self.tails = nn.ModuleList(nn.Conv2d(w, 3, 3, padding=1) for w in out_widths)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs at 1x, 2x, ... scale x the input size (the last is the SR image)."""
        up = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        feat = self.head(up - self.mean)
        skips = []
        for block in self.down:
            skips.append(feat)
            feat = block(feat)
        outputs = [self.tails[0](feat) + self.mean]
        for k, stage in enumerate(self.up):
            feat = stage(feat, skips[self.steps - 1 - k])
            outputs.append(self.tails[k + 1](feat) + self.mean)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[-1]


class DualNet(nn.Module):
    """One dual model per 2x step: maps an image at 2^k x LR size down to 2^(k-1) x."""

    def __init__(self, scale: int = 4, channels: int = 16) -> None:
        super().__init__()
        steps = int(math.log2(scale))
        self.steps = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(channels, 3, 3, padding=1, bias=False),
            )
            for _ in range(steps)
        )

    def forward(self, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """For primal outputs [1x, 2x, ..., sx], the dual images [1x, ..., (s/2)x]."""
        return [step(outputs[k + 1]) for k, step in enumerate(self.steps)]
