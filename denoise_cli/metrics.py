"""PSNR and SSIM on [0, 1] tensors, RGB or the MATLAB-compatible Y channel."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2ycbcr`` luma for [0, 1] input, returned in [0, 1] (16-235 range)."""
    r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _prepare(a: torch.Tensor, b: torch.Tensor, shave: int, y_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    a, b = a.double(), b.double()
    if y_only and a.shape[1] == 3:
        a, b = rgb_to_y(a), rgb_to_y(b)
    if shave:
        a, b = a[..., shave:-shave, shave:-shave], b[..., shave:-shave, shave:-shave]
    return a, b


def psnr(a: torch.Tensor, b: torch.Tensor, shave: int = 0, y_only: bool = False) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch, peak 1.0."""
    a, b = _prepare(a, b, shave, y_only)
    mse = torch.mean((a - b) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def gaussian_blur(t: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """A normalised ``size`` x ``size`` Gaussian window per channel of (N, C, H, W), applied
    separably over the valid region (the result is ``size - 1`` pixels smaller per side pair)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(t)
    channels = t.shape[1]
    rows, cols = g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), g.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    return F.conv2d(F.conv2d(t, rows, groups=channels), cols, groups=channels)


def ssim(a: torch.Tensor, b: torch.Tensor, shave: int = 0, y_only: bool = False) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, valid region, mean over channels."""
    a, b = _prepare(a, b, shave, y_only)
    c1, c2 = 0.01**2, 0.03**2
    blur = gaussian_blur
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean().item()
