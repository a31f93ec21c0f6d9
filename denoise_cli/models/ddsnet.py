"""DDS-Net: a dynamic slimmable denoiser (Jiang et al., "Dynamic Slimmable Denoising Network",
IEEE TIP 2023), in the DS-Net family (Li et al., CVPR 2021) where every conv runs at a prefix
of its channels.

One weight-shared super network holds every sub-network. A sub-network is a channel
configuration: one width for the residual stream and one for the inside of each residual
block. Training has three stages (see ``training/ddsnet.py``): the super network with the
sandwich rule, progressive tailoring of the per-layer widths into ``configs``, and a small
gate that picks a configuration per image from a down-sampled copy of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import pad_to_multiple

# The static widths of the super network before tailoring, as fractions of the full width.
WIDTHS = (0.25, 0.5, 0.75, 1.0)
CHANNEL_STEP = 8  # widths are multiples of this (SIMD-friendly, as DRC's multiples of 4)
NOISE_MAP_UNIT = 50.0 / 255.0
"""The noise-level input channel is sigma in these units (1.0 at sigma 50 of 255)."""


def noise_sigma(image: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian noise level (B,), in [0, 1] units: the median absolute value of the
    finest diagonal Haar band over 0.6745 (Donoho and Johnstone's robust estimate). Edges
    barely move the median; fine texture pushes it up a little at low noise."""
    h, w = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
    x = image[..., :h, :w].float()
    diagonal = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return diagonal.flatten(1).abs().median(dim=1).values / 0.6745


class SlimConv2d(nn.Conv2d):
    """A conv that uses the first ``x.shape[1]`` input channels and the first ``out_active``
    output channels of its weight (all of them when ``out_active`` is None)."""

    out_active: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.out_active or self.out_channels
        weight = self.weight[:out, : x.shape[1]]
        bias = self.bias[:out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)


class SlimResBlock(nn.Module):
    """conv -> ReLU -> conv, scaled, plus input; the inner width is set per sub-network."""

    def __init__(self, channels: int, res_scale: float = 0.2) -> None:
        super().__init__()
        self.conv1 = SlimConv2d(channels, channels, 3, padding=1)
        self.conv2 = SlimConv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv2.out_active = x.shape[1]  # back to the stream's width
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class WidthGate(nn.Module):
    """Scores the sub-networks for one image from an 8x down-sampled copy (negligible MACs).

    Its input is the down-sampled image plus the mean absolute detail lost by down-sampling,
    a cheap stand-in for the noise level that decides how much network an image needs, and
    (``level_input``) the estimated noise level itself as a constant channel.
    """

    def __init__(self, choices: int, hidden: int = 16, pool: int = 8, level_input: bool = False) -> None:
        super().__init__()
        self.pool, self.level_input = pool, level_input
        self.features = nn.Sequential(
            nn.Conv2d(4 + int(level_input), hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.classify = nn.Linear(2 * hidden, choices)  # pooled mean and spread of the features

    def forward(self, image: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        pool = max(1, min(self.pool, *image.shape[-2:]))
        small = F.avg_pool2d(image, pool, ceil_mode=True)
        detail = (
            image - F.interpolate(small, scale_factor=pool, mode="nearest")[..., : image.shape[-2], : image.shape[-1]]
        )
        energy = F.avg_pool2d(detail.abs().mean(dim=1, keepdim=True), pool, ceil_mode=True)
        channels = [small, energy]
        if self.level_input:
            level = noise_sigma(image) if level is None else level
            channels.append((level.to(small.dtype) / NOISE_MAP_UNIT).view(-1, 1, 1, 1).expand_as(energy))
        feats = self.features(torch.cat(channels, dim=1))
        return self.classify(torch.cat([feats.mean(dim=(2, 3)), feats.std(dim=(2, 3), correction=0)], dim=1))


class DDSNet(nn.Module):
    """Slimmable residual denoiser at half resolution (space-to-depth), predicting the noise.

    ``configs`` (buffer, one row per sub-network, cheapest first) holds the stream width and
    each block's inner width. ``forward`` runs the active configuration: the one forced with
    ``use(index)``, else the one the gate chose in ``decide(image)``, else the largest.

    ``noise_map`` adds a constant input channel holding the estimated noise level
    (``noise_sigma``), as FFDNet's noise map: a narrow network need not judge the noise level
    itself. ``decide`` estimates it once per image, so all its tiles get the same value;
    without ``decide`` (training) each input is estimated on its own.
    """

    gate_side = 1024
    """The gate looks at (at most) this centre crop, so deciding stays cheap on huge images."""

    def __init__(self, channels: int = 64, blocks: int = 8, gate_hidden: int = 16, noise_map: bool = False) -> None:
        super().__init__()
        self.channels, self.blocks, self.noise_map = channels, blocks, noise_map
        self.head = SlimConv2d(12 + int(noise_map), channels, 3, padding=1)
        self.body = nn.ModuleList(SlimResBlock(channels) for _ in range(blocks))
        self.tail = SlimConv2d(channels, 12, 3, padding=1)
        self.register_buffer("configs", self.uniform_configs())
        self.gate = WidthGate(len(WIDTHS), gate_hidden, level_input=noise_map)
        self.active: int | None = None
        self.forced: int | None = None
        self.level: torch.Tensor | None = None  # the image's noise level, set by decide()

    def uniform_configs(self) -> torch.Tensor:
        """The untailored sub-networks: every layer at each of WIDTHS."""
        rows = [[_round_width(self.channels * w)] * (self.blocks + 1) for w in WIDTHS]
        return torch.tensor(rows, dtype=torch.int64)

    @property
    def choices(self) -> int:
        return self.configs.shape[0]

    def use(self, index: int | None) -> None:
        """Run sub-network ``index`` (0 = cheapest) for every image; None = the gate decides."""
        if index is not None and not 0 <= index < self.choices:
            raise ValueError(f"sub-network {index} does not exist (0..{self.choices - 1})")
        self.forced = self.active = index

    @torch.no_grad()
    def decide(self, image: torch.Tensor) -> dict[str, float]:
        """Pick the sub-network for this whole image (the gate, unless one is forced); the
        following forwards, e.g. its tiles, run it. Returns its share of the full MACs and
        the MACs it spends on this image against the full network's (and, with a noise map,
        the noise level it estimated, in 8-bit units)."""
        h, w = image.shape[-2:]
        top, left = max(0, (h - self.gate_side) // 2), max(0, (w - self.gate_side) // 2)
        crop = image[..., top : top + self.gate_side, left : left + self.gate_side]
        if self.noise_map:
            self.level = noise_sigma(crop)
        if self.forced is None:
            self.active = pick_width(self.gate(crop.float(), self.level))
        config = self.configs[self.active]
        pixels = image.shape[-2] * image.shape[-1]
        full = [self.channels] * (self.blocks + 1)
        facts = {
            "width": round(self.width_of(config), 3),
            "macs": round(self.macs_per_pixel(config) * pixels),
            "macs_full": round(self.macs_per_pixel(full) * pixels),
        }
        if self.level is not None:
            facts["noise_sigma"] = round(float(self.level[0]) * 255, 2)
        return facts

    def shares(self) -> list[float]:
        """Each sub-network's share of the full network's MACs, cheapest first."""
        return [self.width_of(c) for c in self.configs]

    def set_config(self, config: list[int] | torch.Tensor) -> None:
        """Apply one channel configuration: stream width, then each block's inner width."""
        values = [int(v) for v in config]
        self.head.out_active = values[0]
        for block, inner in zip(self.body, values[1:], strict=True):
            block.conv1.out_active = inner

    def forward(self, x: torch.Tensor, config: list[int] | torch.Tensor | None = None) -> torch.Tensor:
        if config is None:
            config = self.configs[self.choices - 1 if self.active is None else self.active]
        self.set_config(config)
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, 2)
        packed = F.pixel_unshuffle(padded, 2)
        if self.noise_map:
            level = self.level if self.level is not None else noise_sigma(x)
            level = level.to(packed.dtype).view(-1, 1, 1, 1) / NOISE_MAP_UNIT
            packed = torch.cat([packed, level.expand(x.shape[0], 1, *packed.shape[-2:])], dim=1)
        feat = self.head(packed)
        for block in self.body:
            feat = block(feat)
        noise = F.pixel_shuffle(self.tail(feat), 2)
        return (padded - noise)[..., :h, :w]

    def macs_per_pixel(self, config: list[int] | torch.Tensor) -> float:
        """Multiply-accumulates per input pixel of one configuration (convs only)."""
        values = [int(v) for v in config]
        stream, inners = values[0], values[1:]
        head, tail = self.head.in_channels, self.tail.out_channels  # 12 packed RGB values (+1: the noise map)
        per_quarter = 9 * (head * stream + stream * tail + sum(2 * stream * inner for inner in inners))
        return per_quarter / 4.0

    def width_of(self, config: list[int] | torch.Tensor) -> float:
        """A configuration's size as a fraction of the full network's MACs."""
        full = [self.channels] * (self.blocks + 1)
        return self.macs_per_pixel(config) / self.macs_per_pixel(full)


GATE_CONFIDENCE = 0.3
"""How likely a sub-network must be good enough for the gate to take it. Calibrated on the
held-out training crops (sigma 5/15/25/50) to the 0.1 dB budget: 0.5 (the median) ran 0.74
of the MACs on every crop at -0.066 dB; 0.3 ran 0.69 at -0.092 dB."""


def pick_width(logits: torch.Tensor, confidence: float = GATE_CONFIDENCE) -> int:
    """The gate's choice for one image: the cheapest sub-network whose chance of being good
    enough is at least ``confidence``. The gate learns, per image, which sub-network is the
    cheapest good one, so the chance that sub-network k is good enough is the probability
    of a label up to k. (The most likely label, an argmax, chose full width whenever the
    labels were split between the two widest.)"""
    probs = torch.softmax(logits.float(), dim=1)[0]
    return int((probs.cumsum(0) >= confidence).float().argmax())


def _round_width(value: float) -> int:
    return max(CHANNEL_STEP, round(value / CHANNEL_STEP) * CHANNEL_STEP)
