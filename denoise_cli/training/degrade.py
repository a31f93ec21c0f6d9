"""Synthetic degradations applied to clean training patches."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def gaussian_blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian low-pass of (N, C, H, W) with one width per image (``sigma`` (N,),
    pixels; 0 leaves the image as is), reflecting at the borders."""
    count, channels, height, width = image.shape
    radius = min(max(1, math.ceil(3.0 * float(sigma.max()))), height - 1, width - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma.double().clamp(min=1e-3).view(-1, 1)) ** 2)
    taps = (taps / taps.sum(1, keepdim=True)).to(image).repeat_interleave(channels, 0)
    planes = image.reshape(1, count * channels, height, width)
    planes = F.conv2d(
        F.pad(planes, (radius, radius, 0, 0), mode="reflect"),
        taps.view(-1, 1, 1, 2 * radius + 1),
        groups=count * channels,
    )
    planes = F.conv2d(
        F.pad(planes, (0, 0, radius, radius), mode="reflect"),
        taps.view(-1, 1, 2 * radius + 1, 1),
        groups=count * channels,
    )
    return planes.view(count, channels, height, width)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``imresize`` bicubic)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_weights(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out_len, taps) weights and source indices along one axis, as MATLAB computes them.

    Down-scaling widens the kernel by 1/scale (antialiasing). Source indices that fall
    outside the axis are mirrored ("symmetric" padding: ... 2 1 | 1 2 3 ... n | n n-1 ...).
    """
    kernel_scale = min(scale, 1.0)
    width = 4.0 / kernel_scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # output pixel centre in 1-based input coordinates
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    index = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    weights = kernel_scale * _cubic((u[:, None] - index) * kernel_scale)
    weights = weights / weights.sum(dim=1, keepdim=True)
    zero_based = index.long() - 1
    period = 2 * in_len
    wrapped = zero_based % period
    mirrored = torch.where(wrapped < in_len, wrapped, period - 1 - wrapped)
    return weights, mirrored


def imresize(image: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB-compatible bicubic ``imresize`` (antialiased when shrinking) of (..., H, W).

    The output side is ``ceil(side * scale)``; rows are resized first, then columns, in
    float64, like MATLAB for equal scale factors. No clipping.
    """
    out = image.double()
    for dim in (-2, -1):
        in_len = out.shape[dim]
        out_len = math.ceil(in_len * scale)
        weights, index = _resize_weights(in_len, out_len, scale)
        moved = out.movedim(dim, -1)  # (..., in_len)
        gathered = moved[..., index]  # (..., out_len, taps)
        out = (gathered * weights).sum(dim=-1).movedim(-1, dim)
    return out.to(image.dtype)
