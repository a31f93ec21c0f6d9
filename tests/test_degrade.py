from __future__ import annotations

import pytest
import torch

from denoise_cli.training.degrade import add_gaussian_noise, imresize

# Keys' cubic (a = -0.5) at the four distances of a 2x up-scaled sample: worked out by hand.
W_025, W_075, W_125, W_175 = 0.8671875, 0.2265625, -0.0703125, -0.0234375


def test_upscale_x2_matches_matlab_by_hand() -> None:
    a = torch.tensor([[3.0, 7.0, 2.0, 9.0, 4.0, 6.0, 1.0, 8.0]], dtype=torch.float64)
    out = imresize(a[None], 2.0)[0, 0]  # (1, 8) -> (2, 16); both rows equal
    assert out.shape == (16,)
    # Output 6 (1-based) sits at input 3.25: taps on inputs 2..5 at distances 1.25, 0.25, 0.75, 1.75.
    expected = W_125 * a[0, 1] + W_025 * a[0, 2] + W_075 * a[0, 3] + W_175 * a[0, 4]
    assert out[5].item() == pytest.approx(expected.item(), abs=1e-12)
    # Output 1 sits at 0.75; MATLAB mirrors input 0 to input 1 and input -1 to input 2.
    expected_border = (W_075 + W_025) * a[0, 0] + (W_175 + W_125) * a[0, 1]
    assert out[0].item() == pytest.approx(expected_border.item(), abs=1e-12)


def test_downscale_keeps_ramps_and_constants_and_antialiases() -> None:
    ramp = torch.arange(1, 33, dtype=torch.float64).expand(32, 32)
    half = imresize(ramp, 0.5)
    assert half.shape == (16, 16)
    # Antialiased kernel is 8 taps wide; away from borders a ramp maps to its sample positions.
    assert torch.allclose(half[:, 4:12], torch.arange(5, 13, dtype=torch.float64) * 2 - 0.5)
    assert torch.allclose(imresize(torch.full((1, 3, 20, 30), 0.3), 0.25), torch.full((1, 3, 5, 8), 0.3))
    stripes = torch.tensor([0.0, 1.0]).repeat(16).expand(32, 32)  # finest possible pattern
    assert imresize(stripes, 0.5)[2:-2, 2:-2].std().item() < 1e-6  # averaged away, not aliased


def test_output_size_is_ceiled() -> None:
    assert imresize(torch.rand(1, 3, 37, 50), 0.25).shape == (1, 3, 10, 13)
    assert imresize(torch.rand(1, 3, 5, 7), 3.0).shape == (1, 3, 15, 21)


def test_gaussian_noise_level_and_no_clipping() -> None:
    clean = torch.full((4, 3, 64, 64), 0.02)
    noisy, sigma = add_gaussian_noise(clean, (25.0, 25.0), torch.Generator().manual_seed(0))
    assert torch.allclose(sigma, torch.full((4,), 25 / 255))
    assert (noisy - clean).std().item() == pytest.approx(25 / 255, rel=0.02)
    assert noisy.min().item() < 0.0  # not clipped


def test_demosaic_training_pairs_saturate_colour_but_keep_grey_and_the_mosaic_consistent() -> None:
    from denoise_cli.raw import mosaic, pack
    from denoise_cli.training.recipes import packed_mosaic

    generator = torch.Generator().manual_seed(0)
    grey = torch.rand(8, 1, 16, 16).expand(8, 3, 16, 16)
    inputs, target = packed_mosaic(max_saturation=1.6)(grey, generator)
    assert torch.equal(target, grey)  # no chroma, nothing to scale

    colour = 0.25 + 0.5 * torch.rand(64, 3, 16, 16, generator=generator)
    inputs, target = packed_mosaic(max_saturation=1.6)(colour, generator)
    assert torch.equal(inputs, pack(mosaic(target)))
    assert target.min() >= 0.0 and target.max() <= 1.0

    def chroma(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2, 3))

    ratio = chroma(target) / chroma(colour)
    assert torch.all(ratio >= 1.0 - 1e-5) and torch.all(ratio <= 1.6 + 1e-5)
    boosted = ratio > 1.0 + 1e-5
    assert 16 <= int(boosted.sum()) <= 48  # about half the patches
    _, plain_target = packed_mosaic()(colour, generator)
    assert torch.equal(plain_target, colour)
