"""Real-noise denoising: camera-noise synthesis, the VDN network, its objective, --strength and --json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from denoise_cli import registry, weights
from denoise_cli.cli import main
from denoise_cli.flops import count_macs
from denoise_cli.models.vdn import VDN, local_variance
from denoise_cli.training import realnoise, residual_cap
from denoise_cli.training.degrade import gaussian_blur
from denoise_cli.training.noisestats import correlation
from denoise_cli.training.objectives import variational

TINY = {"features": 4, "sigma_features": 4, "sigma_layers": 3, "hidden": 2}


def flat(value: float, size: int = 64, count: int = 8) -> torch.Tensor:
    return torch.full((count, 3, size, size), value)


def neighbour_correlation(r: torch.Tensor) -> float:
    return correlation(r[..., :-1], r[..., 1:])


def only(monkeypatch: pytest.MonkeyPatch, jpeg: float = 0.0, awgn: float = 0.0, reduction: float = 0.0) -> None:
    monkeypatch.setattr(realnoise, "NR_FRACTION", reduction)
    monkeypatch.setattr(realnoise, "JPEG_FRACTION", jpeg)
    monkeypatch.setattr(realnoise, "AWGN_FRACTION", awgn)


# ------------------------------------------------------------------------------ noise synthesis


def test_camera_noise_is_seeded_and_the_target_is_the_developed_clean_photo() -> None:
    clean = torch.linspace(0.2, 0.8, 40).expand(4, 3, 33, 40).clone()  # smooth: demosaicking is exact
    noisy, target = realnoise.camera_noise(clean, torch.Generator().manual_seed(3))
    again, _ = realnoise.camera_noise(clean, torch.Generator().manual_seed(3))
    assert noisy.shape == target.shape == (4, 3, 32, 40)  # even sides for the Bayer mosaic
    assert torch.equal(noisy, again)
    inner = (..., slice(6, -6), slice(6, -6))  # the optics' and demosaickers' borders aside
    assert torch.allclose(target[inner], clean[..., :32, :][inner], atol=2e-3)  # nothing clipped in mid-tones
    assert torch.equal(noisy, (noisy * 255).round() / 255)  # stored as 8 bits


def test_without_sensor_noise_the_residual_is_only_8_bit_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    only(monkeypatch)
    monkeypatch.setattr(realnoise, "SHOT_RANGE", (1e-12, 1.0001e-12))
    textured = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    noisy, target = realnoise.camera_noise(textured, torch.Generator().manual_seed(0))
    # The target went through the same demosaicker: its errors on texture are not noise to remove.
    assert (noisy - target.clamp(0, 1)).abs().max() <= 1 / 255


def test_the_optics_blur_keeps_demosaicking_errors_out_of_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    only(monkeypatch)
    monkeypatch.setattr(realnoise, "SHOT_RANGE", (1e-12, 1.0001e-12))
    monkeypatch.setattr(realnoise, "MALVAR_FRACTION", 1.0)
    textured = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    inner = (..., slice(8, -8), slice(8, -8))
    errors = {}
    for width in (0.0, 1.0):
        monkeypatch.setattr(realnoise, "OPTICS_SIGMA", (width, width))
        _, target = realnoise.camera_noise(textured, torch.Generator().manual_seed(0))
        seen = gaussian_blur(textured, torch.full((4,), width))  # what the sensor saw
        errors[width] = float((target - seen)[inner].std())
    # Pixel-sharp noise texture: demosaicking invents colour patterns the size of the noise itself.
    assert errors[0.0] > 0.05
    # Behind the optics the same demosaicker is nearly exact, so the target holds no such patterns.
    assert errors[1.0] < errors[0.0] / 4


def test_camera_noise_grows_with_the_shot_level(monkeypatch: pytest.MonkeyPatch) -> None:
    only(monkeypatch)
    stds = []
    for level in (2e-4, 5e-3):
        monkeypatch.setattr(realnoise, "SHOT_RANGE", (level, level * 1.0001))
        noisy, target = realnoise.camera_noise(flat(0.4), torch.Generator().manual_seed(0))
        stds.append(float((noisy - target).std()))
    # Shot noise dominates read noise at these levels: std ~ sqrt(shot), 25x the variance is ~5x the std.
    assert 3.0 < stds[1] / stds[0] < 7.0


def test_camera_noise_is_signal_dependent_and_spatially_correlated(monkeypatch: pytest.MonkeyPatch) -> None:
    only(monkeypatch)
    monkeypatch.setattr(realnoise, "SHOT_RANGE", (5e-3, 5.0001e-3))
    residuals = {}
    for value in (0.15, 0.6):
        noisy, target = realnoise.camera_noise(flat(value), torch.Generator().manual_seed(1))
        residuals[value] = (noisy - target)[..., 4:-4, 4:-4]
    # Neighbouring pixels share samples through demosaicking: white noise would give ~0.
    assert neighbour_correlation(residuals[0.6]) > 0.2
    # Signal-dependent: raw variance grows with the signal (the tone curve squeezes it again, but not all).
    assert residuals[0.6].std() != pytest.approx(float(residuals[0.15].std()), rel=0.1)


def test_gaussian_blur_keeps_constants_and_spreads_an_impulse_by_sigma() -> None:
    sigma = torch.tensor([0.0, 1.5])
    assert torch.allclose(gaussian_blur(torch.full((2, 3, 20, 20), 0.3), sigma), torch.full((2, 3, 20, 20), 0.3))
    impulse = torch.zeros(2, 1, 41, 41)
    impulse[..., 20, 20] = 1.0
    spread = gaussian_blur(impulse, sigma)
    assert torch.equal(spread[0], impulse[0])  # width 0: untouched
    assert float(spread[1].sum()) == pytest.approx(1.0, abs=1e-5)
    offsets = torch.arange(-20, 21, dtype=torch.float32)
    assert float((spread[1, 0].sum(0) * offsets**2).sum()) == pytest.approx(1.5**2, rel=0.02)


def test_camera_noise_reduction_smooths_chroma_and_keeps_luma_at_width_0() -> None:
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reduced = realnoise.camera_noise_reduction(noise, torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0]))
    assert torch.allclose(reduced[0], noise[0], atol=1e-6)  # both widths 0: nothing changes
    assert torch.allclose(reduced[1].mean(0), noise[1].mean(0), atol=1e-5)  # luma width 0: luma kept
    # The chroma is low-passed: weaker, and smooth (neighbours correlate); white chroma is not.
    chroma, white = reduced[1] - reduced[1].mean(0), noise[1] - noise[1].mean(0)
    assert neighbour_correlation(chroma) > 0.8
    assert abs(neighbour_correlation(white)) < 0.05
    assert chroma.std() < 0.3 * white.std()


def test_camera_noise_reduction_share_correlates_the_noise_and_keeps_the_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(realnoise, "SHOT_RANGE", (5e-3, 5.0001e-3))
    residuals, targets = [], []
    for share in (0.0, 1.0):
        only(monkeypatch, reduction=share)
        noisy, target = realnoise.camera_noise(flat(0.5), torch.Generator().manual_seed(1))
        residuals.append((noisy - target)[..., 4:-4, 4:-4])
        targets.append(target)
    assert torch.equal(targets[0], targets[1])
    assert neighbour_correlation(residuals[1]) > neighbour_correlation(residuals[0]) + 0.1
    assert residuals[1].std() < residuals[0].std()


def test_awgn_share_gets_gaussian_noise_on_the_clean_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    only(monkeypatch, awgn=1.0)
    monkeypatch.setattr(realnoise, "AWGN_SIGMA", (20.0, 20.0))
    noisy, target = realnoise.camera_noise(flat(0.5), torch.Generator().manual_seed(0))
    assert float((noisy - target).std() * 255) == pytest.approx(20.0, rel=0.05)


def test_jpeg_share_leaves_8x8_block_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    only(monkeypatch, jpeg=1.0)
    monkeypatch.setattr(realnoise, "JPEG_QUALITY", (60, 60))
    noisy, target = realnoise.camera_noise(flat(0.5), torch.Generator().manual_seed(0))
    only(monkeypatch)
    raw_noisy, _ = realnoise.camera_noise(flat(0.5), torch.Generator().manual_seed(0))
    assert (noisy - target).std() < 0.8 * (raw_noisy - target).std()  # q60 smooths noise away


# -------------------------------------------------------------------------------------- network


def test_vdn_keeps_any_size_and_hyper_costs_the_plain_macs() -> None:
    hyper, plain = VDN(**TINY, hyper=True).eval(), VDN(**TINY, hyper=False).eval()
    with torch.no_grad():
        assert hyper(torch.rand(1, 3, 21, 30)).shape == (1, 3, 21, 30)
    assert count_macs(hyper, 32, 32) == count_macs(plain, 32, 32)
    assert sum(p.numel() for p in hyper.parameters()) > 1.5 * sum(p.numel() for p in plain.parameters())


def test_hyper_and_plain_twins_start_with_the_same_kernel_scale() -> None:
    torch.manual_seed(0)
    hyper, plain = VDN(hyper=True), VDN(hyper=False)
    with torch.no_grad():
        for name in ("dnet.bottom.0.conv1", "dnet.head", "snet.body.1"):
            generated = hyper.get_submodule(name).weight().std()
            assert float(generated) == pytest.approx(float(plain.get_submodule(name).weight.std()), rel=0.15)


def test_noise_estimate_in_strips_equals_the_whole_image_estimate() -> None:
    torch.manual_seed(0)
    net = VDN(**TINY).eval()
    image = torch.rand(1, 3, 1100, 40)
    with torch.no_grad():
        strips = net.decide(image)["noise_sigma"]
        whole = 255.0 * float(net.noise_sigma(image).mean())
    assert strips == pytest.approx(whole, abs=0.05 * whole)


def test_residual_cap_scales_down_only_removal_stronger_than_the_estimated_noise() -> None:
    net = VDN(**TINY, residual_cap=1.5)
    variance = torch.tensor([0.01])  # sigma 0.1: removal up to RMS 0.15 passes
    strong, weak = torch.full((1, 3, 16, 16), 0.3), torch.full((1, 3, 16, 16), 0.1)
    assert torch.allclose(net.cap(strong, variance), torch.full_like(strong, 0.15))
    assert torch.equal(net.cap(weak, variance), weak)
    spot = weak.clone()
    spot[..., :4, :4] = 1.0  # structure removed in one corner: only its neighbourhood is scaled down
    capped = net.cap(spot, variance)
    assert float(capped[..., :4, :4].max()) < 0.5
    assert torch.equal(capped[..., 10:, 10:], spot[..., 10:, 10:])


def test_tiles_are_capped_against_the_whole_images_noise_level() -> None:
    torch.manual_seed(0)
    net = VDN(**TINY, residual_cap=0.01).eval()  # tight enough to act on an untrained network
    image = torch.rand(1, 3, 64, 48) * torch.linspace(0.2, 1.0, 64).view(1, 1, 64, 1)
    with torch.no_grad():
        whole = float(net.noise_level(image)[0])
        net.decide(image)
        assert float(net.level[0]) == pytest.approx(whole, rel=1e-4)
        top = image[..., :32, :]
        assert float(net.noise_level(top)[0]) != pytest.approx(whole, rel=1e-3)
        residual = net.dnet(top)[:, :3]
        assert torch.equal(net(top), top + net.cap(residual, net.level))
        assert not torch.allclose(net(top), top + net.cap(residual, net.noise_level(top)))


def test_residual_cap_0_is_off_and_a_tiny_cap_keeps_the_input() -> None:
    torch.manual_seed(0)
    plain = VDN(**TINY).eval()
    tight = VDN(**TINY, residual_cap=1e-4).eval()
    tight.load_state_dict(plain.state_dict())
    image = torch.rand(1, 3, 24, 24)  # a multiple of the U-Net's size: no padding
    with torch.no_grad():
        assert torch.allclose(plain(image), plain.posterior(image)[0])
        assert not torch.allclose(plain(image), image, atol=1e-3)
        assert torch.allclose(tight(image), image, atol=1e-3)


# ------------------------------------------------------------------------------------ objective


def test_local_variance_of_a_constant_residual_is_its_square() -> None:
    residual = torch.full((1, 3, 16, 16), 0.1)
    assert torch.allclose(local_variance(residual), torch.full_like(residual, 0.01))


def test_variational_loss_trains_both_networks() -> None:
    torch.manual_seed(0)
    net = VDN(**TINY)
    clean = torch.rand(2, 3, 16, 16)
    noisy = clean + 0.1 * torch.randn_like(clean)
    loss = variational(net, None, noisy, clean, None, torch.Generator())  # type: ignore[arg-type]
    assert math.isfinite(loss.item())
    loss.backward()
    assert net.dnet.tail.w2.grad.abs().sum() > 0 and net.snet.tail.w2.grad.abs().sum() > 0


def test_variational_loss_prefers_the_true_noise_level() -> None:
    """With the clean image known, the bound is lowest when S-Net's variance matches the noise."""
    clean = torch.rand(1, 3, 16, 16)
    noisy = clean + 0.1 * torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    p2 = 49

    class Fixed(torch.nn.Module):
        def __init__(self, variance: float) -> None:
            super().__init__()
            self.variance = variance

        def posterior(self, y: torch.Tensor):
            alpha = torch.full_like(y, p2 / 2 - 1)
            beta = alpha * 0 + self.variance * p2 / 2
            return clean, torch.full_like(y, math.log(1e-6)), alpha.log(), beta.log()

    losses = {v: float(variational(Fixed(v), None, noisy, clean, None, None)) for v in (0.001, 0.01, 0.1)}  # type: ignore[arg-type]
    assert losses[0.01] < losses[0.001] and losses[0.01] < losses[0.1]


# --------------------------------------------------------------------------------------- the CLI


@pytest.fixture
def tiny_vdn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    torch.manual_seed(0)
    folder = tmp_path / "w"
    weights.save(VDN(**TINY), folder / "vdn-tiny.safetensors", {"arch_args": TINY})
    card = registry.ModelCard("vdn-tiny", "denoise", "vdn", "test", "test", overlap=16, tile_multiple=8)
    monkeypatch.setitem(registry.CARDS, "vdn-tiny", card)
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(folder))
    return "vdn-tiny"


def test_json_reports_the_estimated_noise_and_strength_0_returns_the_input(tiny_vdn: str, images: Path) -> None:
    out = images.parent / "out"
    result = CliRunner().invoke(
        main, ["denoise", str(images), "--model", tiny_vdn, "--json", "--strength", "0", "-o", f"{out}/"]
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3 and all(r["noise_sigma"] > 0 for r in records)
    for path in sorted(images.iterdir()):
        with Image.open(path) as a, Image.open(out / path.name) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_strength_blends_between_input_and_result(tiny_vdn: str, images: Path) -> None:
    source = sorted(images.iterdir())[0]
    results = {}
    for strength in ("1", "0.5"):
        target = images.parent / f"s{strength}.png"
        run = CliRunner().invoke(
            main, ["denoise", str(source), "--model", tiny_vdn, "--strength", strength, "-o", str(target)]
        )
        assert run.exit_code == 0, run.stderr
        results[strength] = np.asarray(Image.open(target), dtype=float)
    original = np.asarray(Image.open(source), dtype=float)
    assert np.abs((original + results["1"]) / 2 - results["0.5"]).max() <= 1.0
    assert CliRunner().invoke(main, ["denoise", str(source), "--strength", "1.5"]).exit_code == 2


def test_noise_statistics_tell_white_from_correlated_noise() -> None:
    from denoise_cli.training.noisestats import residual_stats

    clean = torch.full((1, 3, 96, 96), 0.5)
    white = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * (10 / 255)
    stats = residual_stats(clean + white, clean)
    assert stats["std"] == pytest.approx(10.0, rel=0.05)
    assert abs(stats["neighbour"]) < 0.05 and abs(stats["colour"]) < 0.05
    smeared = (white + white.roll(1, -1)) / 2 + white.mean(1, keepdim=True)  # over neighbours and colours
    stats = residual_stats(clean + smeared, clean)
    assert stats["neighbour"] > 0.3 and stats["colour"] > 0.3
    assert stats["mid"] == pytest.approx(stats["std"]) and stats["dark"] != stats["dark"]  # only mid-grey: NaN


def test_residual_cap_choice_is_the_tightest_within_the_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    curve = {0.0: 30.0, 1.0: 29.5, 1.1: 29.9, 1.2: 29.985, 1.3: 29.999}
    monkeypatch.setattr(residual_cap, "held_out_psnr", lambda trainer, model, cap: curve.get(cap, 30.0))
    cap, scores = residual_cap.choose_cap(None, None)
    assert cap == 1.2 and list(scores) == [0.0, 1.0, 1.1, 1.2]
    monkeypatch.setattr(residual_cap, "held_out_psnr", lambda trainer, model, cap: 30.0 if cap == 0 else 29.0)
    assert residual_cap.choose_cap(None, None)[0] == 0.0  # no cap is cheap enough: none
