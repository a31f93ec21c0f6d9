"""Synthetic degradations applied to clean training patches."""

from __future__ import annotations

import torch


def add_gaussian_noise(
    clean: torch.Tensor, sigma_range: tuple[float, float], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """AWGN with one sigma per image drawn uniformly from ``sigma_range`` (8-bit units).

    The noisy result is not clipped, matching the evaluation protocol. Returns the noisy
    batch and the sigmas (in [0, 1] units).
    """
    low, high = sigma_range
    sigma = torch.rand(clean.shape[0], 1, 1, 1, generator=generator) * (high - low) + low
    sigma = sigma / 255.0
    noise = torch.randn(clean.shape, generator=generator) * sigma
    return clean + noise, sigma.flatten()
