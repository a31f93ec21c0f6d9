from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from denoise_cli.metrics import psnr, rgb_to_y, ssim


def test_psnr_of_a_known_error() -> None:
    a = torch.full((1, 3, 8, 8), 0.5)
    assert psnr(a + 0.1, a) == pytest.approx(20.0, abs=1e-4)  # float32 input
    assert psnr(a, a) == float("inf")
    b = a.clone()
    b[..., :2, :] += 0.5  # only the border rows differ
    assert psnr(b, a, shave=2) == float("inf")


def test_y_channel_is_matlab_rgb2ycbcr() -> None:
    white, black = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235 / 255)
    assert rgb_to_y(black).item() == pytest.approx(16 / 255)


def test_ssim_matches_a_direct_2d_window_and_is_one_for_equal_images() -> None:
    torch.manual_seed(0)
    a = torch.rand(1, 3, 40, 50, dtype=torch.float64)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :])[None, None].expand(3, 1, 11, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=3)

    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    direct = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert ssim(a, b) == pytest.approx(direct.mean().item(), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) < 0.99
