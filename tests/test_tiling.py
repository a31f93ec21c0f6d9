from __future__ import annotations

import pytest
import torch
from torch import nn

from denoise_cli.tiling import plan, run_tiled, window


def conv_net(radius: int) -> nn.Module:
    """A plain conv net whose receptive-field radius is ``radius``."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
    for _ in range(radius - 2):
        layers += [nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)]
    layers += [nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize(("tile", "overlap"), [(32, 16), (48, 24), (40, 32)])
def test_tiled_equals_whole_image_when_receptive_field_fits(tile: int, overlap: int) -> None:
    net = conv_net(radius=overlap // 4)
    x = torch.rand(1, 3, 97, 131)
    with torch.no_grad():
        whole = net(x)
        tiled = run_tiled(x, net, tile, overlap)
    assert len(plan(97, 131, tile, overlap)) > 4
    assert (whole - tiled).abs().max().item() < 1 / 255


def test_tiling_is_not_exact_when_receptive_field_exceeds_overlap() -> None:
    net = conv_net(radius=8)
    x = torch.rand(1, 3, 80, 80)
    with torch.no_grad():
        diff = (net(x) - run_tiled(x, net, 32, 8)).abs().max().item()
    assert diff > 1e-4  # the test above would catch a tiler that ignores its tiles


def test_windows_cover_every_pixel() -> None:
    height, width, tile, overlap = 70, 90, 32, 16
    total = torch.zeros(height, width)
    for t in plan(height, width, tile, overlap):
        total[t.top : t.top + t.height, t.left : t.left + t.width] += window(t, height, width, overlap)
    assert total.min().item() > 0.5


def test_scaled_output_for_upscalers() -> None:
    up = nn.Upsample(scale_factor=2, mode="nearest")
    x = torch.rand(1, 3, 50, 70)
    out = run_tiled(x, up, 24, 8, scale=2)
    assert out.shape == (1, 3, 100, 140)
    assert torch.allclose(out, up(x), atol=1e-6)


def test_progress_reports_every_tile() -> None:
    seen: list[tuple[int, int]] = []
    run_tiled(torch.rand(1, 3, 64, 64), nn.Identity(), 32, 8, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == len(plan(64, 64, 32, 8))
