"""The RAW-to-RGB network: shapes, equal MACs for the hyper and plain variants, training pairs."""

from __future__ import annotations

import torch

from denoise_cli.flops import count_macs
from denoise_cli.models.hyperisp import RawToRGB, coarse_rgb
from denoise_cli.training.unprocess import synthetic_raw


def test_packed_raw_in_full_resolution_rgb_out() -> None:
    net = RawToRGB(features=8, blocks=1)
    assert net(torch.rand(2, 4, 6, 9)).shape == (2, 3, 12, 18)


def test_hyper_and_plain_cost_the_same_macs_but_not_the_same_parameters() -> None:
    hyper, plain = RawToRGB(features=8, blocks=2, hyper=True), RawToRGB(features=8, blocks=2, hyper=False)
    assert count_macs(hyper.eval(), 16, 16, channels=4) == count_macs(plain.eval(), 16, 16, channels=4)
    assert sum(p.numel() for p in hyper.parameters()) > 2 * sum(p.numel() for p in plain.parameters())


def test_a_grey_flat_raw_gives_a_grey_flat_coarse_image() -> None:
    packed = torch.full((1, 4, 5, 5), 0.3)
    assert torch.allclose(coarse_rgb(packed), torch.full((1, 3, 10, 10), 0.3))


def test_synthetic_raw_pairs_line_up() -> None:
    srgb = torch.rand(2, 3, 32, 32) * 0.5 + 0.25
    noisy, target = synthetic_raw(srgb, torch.Generator().manual_seed(0))
    assert noisy.shape == (2, 4, 16, 16) and target.shape == (2, 3, 32, 32)
    # Without the noise the packed input is the mosaic of the target: compare the red sites.
    red = target[:, 0, 0::2, 0::2]
    assert (noisy[:, 0] - red).abs().mean() < 0.05 and target.min() >= 0 and target.max() <= 1
    again, _ = synthetic_raw(srgb, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def test_macs_of_a_packed_mosaic_model_are_per_megapixel_of_the_photo() -> None:
    from denoise_cli.flops import macs_per_megapixel, size_facts

    model = RawToRGB(features=4, blocks=1, hyper=False).eval()
    # 4-channel input at half resolution: a 256x256 photo is a 128x128 packed mosaic
    assert macs_per_megapixel(model) == count_macs(model, 128, 128, channels=4) * 1e6 / 256**2
    assert size_facts(model)["gmacs_per_mp"] > 0
