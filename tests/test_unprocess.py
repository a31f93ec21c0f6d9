"""Tests for denoise_cli.training.unprocess: the camera pipeline, its inverse, noise and reproducibility."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from denoise_cli.metrics import psnr
from denoise_cli.raw import demosaic_bilinear, mosaic, pack, unpack
from denoise_cli.training import unprocess as up

from .conftest import photo


def smooth_rgb(height: int = 32, width: int = 48) -> torch.Tensor:
    """(1, 3, H, W) moderately coloured sRGB ramps in [0.15, 0.75]: in gamut, no highlights."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    r = 0.25 + 0.4 * x
    g = 0.3 + 0.35 * y
    b = 0.45 + 0.2 * torch.sin(3 * x + 2 * y)
    return torch.stack([r, g, b])[None]


def camera(seed: int, n: int = 1) -> up.CameraParams:
    return up.random_camera(torch.Generator().manual_seed(seed), n)


# ------------------------------------------------------------------------------- pipeline steps


def test_inverse_smoothstep_inverts_the_tone_curve() -> None:
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(up.inverse_smoothstep(up.smoothstep(x)), x, atol=1e-9)
    assert torch.allclose(up.smoothstep(up.inverse_smoothstep(x)), x, atol=1e-9)
    # An S-curve: darker shadows, brighter highlights, fixed ends and middle.
    assert up.smoothstep(torch.tensor(0.25)) < 0.25 < 0.75 < up.smoothstep(torch.tensor(0.75))
    assert up.smoothstep(torch.tensor([0.0, 0.5, 1.0])).tolist() == [0.0, 0.5, 1.0]


def test_gamma_expand_inverts_gamma_compress() -> None:
    x = torch.linspace(1e-4, 1, 500, dtype=torch.float64)
    assert torch.allclose(up.gamma_expand(up.gamma_compress(x)), x, rtol=1e-9)
    assert up.gamma_compress(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(0.5 ** (1 / 2.2))
    # The epsilon keeps zero and negative (noisy) values finite, values and gradients alike.
    low = torch.tensor([0.0, -0.1], requires_grad=True)
    out = up.gamma_compress(low)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(low.grad).all()


def test_safe_invert_gains_is_plain_division_below_the_threshold_and_keeps_white() -> None:
    gains = torch.tensor([2.0, 1.25, 1.6]).view(1, 3, 1, 1)
    dark = torch.tensor([0.3, 0.5, 0.4]).view(1, 3, 1, 1)
    assert torch.allclose(up.safe_invert_gains(dark, gains), dark / gains)
    white = torch.ones(1, 3, 1, 1)
    assert torch.allclose(up.safe_invert_gains(white, gains), white)
    # Between the threshold and white, the result lies between plain division and the input.
    bright = torch.full((1, 3, 1, 1), 0.95)
    result = up.safe_invert_gains(bright, gains)
    assert ((result > bright / gains) & (result < bright)).all()


def test_random_camera_draws_follow_the_paper() -> None:
    params = camera(0, 4000)
    assert params.red_gain.min() >= 1.9 and params.red_gain.max() <= 2.4
    assert params.blue_gain.min() >= 1.5 and params.blue_gain.max() <= 1.9
    assert abs((1 / params.digital_gain).mean().item() - 0.8) < 0.01
    assert torch.allclose(params.cam_to_srgb.sum(dim=2), torch.ones(4000, 3), atol=1e-5)
    assert (torch.diagonal(params.cam_to_srgb, dim1=1, dim2=2) > 1).all()  # camera colours are less saturated
    assert params.shot_noise.min() >= 1e-4 and params.shot_noise.max() <= 0.012
    log_shot, log_read = params.shot_noise.double().log(), params.read_noise.double().log()
    slope = torch.cov(torch.stack([log_shot, log_read]))[0, 1] / log_shot.var()
    residual = log_read - (2.18 * log_shot + 1.20)
    assert abs(slope.item() - 2.18) < 0.05
    assert abs(residual.mean().item()) < 0.02 and abs(residual.std().item() - 0.26) < 0.02


def test_grey_unprocesses_to_the_inverse_white_balance() -> None:
    """A neutral sRGB grey is a camera colour whose channel ratios are 1 / gain (green-heavy)."""
    params = camera(3)
    linear = up.unprocess_rgb(torch.full((1, 3, 4, 4), 0.4), params)
    r, g, b = linear[0, :, 0, 0].tolist()
    assert r / g == pytest.approx(1 / params.red_gain.item(), rel=1e-4)
    assert b / g == pytest.approx(1 / params.blue_gain.item(), rel=1e-4)


def test_white_stays_sensor_white() -> None:
    """Safe gains: sRGB white unprocesses to saturated RAW in every channel, not to a grey of 1 / gain."""
    for seed in range(5):
        assert torch.allclose(up.unprocess_rgb(torch.ones(1, 3, 2, 2), camera(seed)), torch.ones(1, 3, 2, 2), atol=1e-5)


# ------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_process_inverts_unprocess_without_noise(seed: int) -> None:
    rgb = smooth_rgb()
    params = camera(seed)
    linear = up.unprocess_rgb(rgb, params)
    assert linear.min() > 0 and linear.max() < 0.9  # nothing clipped: the inverse must then be exact
    assert (rgb - up.process(linear, params)).abs().max() < 1e-5


def test_clean_packed_is_the_mosaic_of_the_unprocessed_image_and_develops_back() -> None:
    rgb = smooth_rgb(64, 96)
    noisy, clean, params = up.unprocess(rgb, torch.Generator().manual_seed(7))
    linear = up.unprocess_rgb(rgb, params)
    assert torch.equal(clean, pack(mosaic(linear, "RGGB")))
    developed = up.process(demosaic_bilinear(unpack(clean)), params)
    assert psnr(developed[..., 2:-2, 2:-2], rgb[..., 2:-2, 2:-2]) > 40
    assert not torch.equal(noisy, clean)


def test_noise_variance_is_shot_times_signal_plus_read() -> None:
    levels = torch.tensor([0.05, 0.3, 0.8]).view(3, 1, 1, 1)
    flat = levels.expand(3, 1, 256, 256).contiguous()
    shot, read = torch.tensor([0.01, 0.002, 0.005]), torch.tensor([1e-4, 4e-6, 2e-5])
    noisy = up.add_noise(flat, shot, read, torch.Generator().manual_seed(0))
    expected = shot * levels.flatten() + read
    variance = (noisy - flat).flatten(1).var(dim=1)
    assert torch.allclose(variance, expected, rtol=0.03)
    assert ((noisy - flat).flatten(1).mean(dim=1).abs() < 4 * expected.sqrt() / 256).all()  # 4 standard errors


def test_unprocess_shapes_and_one_camera_per_image() -> None:
    noisy, clean, params = up.unprocess(torch.rand(2, 3, 33, 40), torch.Generator().manual_seed(0))
    assert noisy.shape == clean.shape == (2, 4, 16, 20)
    assert noisy.dtype == clean.dtype == torch.float32
    assert len(params) == 2 and params.cam_to_srgb.shape == (2, 3, 3)
    assert params.red_gain[0] != params.red_gain[1]
    assert clean.min() >= 0 and clean.max() <= 1
    with pytest.raises(ValueError, match="3, H, W"):
        up.unprocess(torch.rand(1, 1, 8, 8), torch.Generator())


# ------------------------------------------------------------------------------- reproducibility


def test_same_seed_same_sample_and_other_seed_another() -> None:
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    first = up.unprocess(rgb, torch.Generator().manual_seed(5))
    again = up.unprocess(rgb, torch.Generator().manual_seed(5))
    other = up.unprocess(rgb, torch.Generator().manual_seed(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(first[2].cam_to_srgb, again[2].cam_to_srgb)
    assert not torch.equal(first[0], other[0])


def test_synthetic_pair_is_deterministic_per_seed() -> None:
    rgb = torch.from_numpy(photo(31, 40)).permute(2, 0, 1).float() / 255
    noisy, target, params = up.synthetic_pair(rgb, seed=11)
    noisy2, target2, _ = up.synthetic_pair(rgb, seed=11)
    noisy3, _, _ = up.synthetic_pair(rgb, seed=12)
    assert noisy.shape == (1, 4, 15, 20) and target.shape == (1, 3, 30, 40)
    assert torch.equal(noisy, noisy2) and torch.equal(target, target2)
    assert not torch.equal(noisy, noisy3)
    # The target is what the clean RAW develops to: the input wherever nothing was clipped.
    assert psnr(target, rgb[None, :, :30, :40]) > 30
    assert torch.equal(target, up.process(up.unprocess_rgb(rgb[None, :, :30, :40], params), params))


def test_synthetic_test_set_seeds_by_file_name(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(photo(16, 20, seed=i)).save(paths[-1])
    forward = {p.name: noisy for p, noisy, _, _ in up.synthetic_test_set(paths)}
    backward = {p.name: noisy for p, noisy, _, _ in up.synthetic_test_set(paths[::-1])}
    assert all(torch.equal(forward[name], backward[name]) for name in forward)
    shifted = {p.name: noisy for p, noisy, _, _ in up.synthetic_test_set(paths, base_seed=1)}
    assert not torch.equal(forward["img0.png"], shifted["img0.png"])
    assert up.image_seed("a.png") != up.image_seed("b.png")
