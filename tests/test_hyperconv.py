"""Tests for denoise_cli.models.hyperconv: generated kernels, their init, caching, gradients and MAC counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from denoise_cli.flops import count_macs
from denoise_cli.models.hyperconv import HyperConv2d


def layer(seed: int = 0, **kwargs: object) -> HyperConv2d:
    torch.manual_seed(seed)
    args = {"in_channels": 8, "out_channels": 12, "kernel_size": 3, "code_dim": 8, "hidden": 16, "padding": 1}
    args.update(kwargs)
    return HyperConv2d(**args)  # type: ignore[arg-type]


def image(channels: int = 8, size: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hidden", [1, 8, 64])
def test_generated_kernel_starts_with_kaiming_scale(hidden: int) -> None:
    conv = layer(hidden=hidden, in_channels=32, out_channels=32, code_dim=16)
    weight, bias = conv.generate()
    expected = math.sqrt(2.0 / (32 * 9))  # He et al. 2015 for a 32 -> 32 3x3 conv
    assert weight.shape == (32, 32, 3, 3)
    assert abs(weight.std().item() / expected - 1) < 0.05
    assert abs(weight.mean().item()) < 0.1 * expected
    assert bias is not None and torch.equal(bias, torch.zeros(32))


def test_init_gain_and_groups_set_the_scale() -> None:
    conv = layer(in_channels=16, out_channels=16, groups=4, init_gain=1.0)
    weight = conv.weight()
    assert weight.shape == (16, 4, 3, 3)
    assert abs(weight.std().item() * math.sqrt(4 * 9) - 1) < 0.1


def test_forward_is_conv2d_with_the_generated_kernel() -> None:
    conv = layer(in_channels=8, out_channels=8, stride=2, padding=2, dilation=2, groups=2)
    x = image()
    weight, bias = conv.generate()
    expected = F.conv2d(x, weight, bias, stride=2, padding=2, dilation=2, groups=2)
    assert torch.equal(conv(x), expected)
    assert torch.equal(conv.to_conv2d()(x), expected)


def test_cached_and_uncached_paths_agree_and_the_mlp_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = layer()
    x = image()
    fresh = conv(x)
    calls = []
    generate = conv.generate
    monkeypatch.setattr(conv, "generate", lambda: calls.append(1) or generate())
    conv.eval()
    with torch.no_grad():
        first, second = conv(x), conv(x)
    with torch.inference_mode():
        third = conv(x)
    assert len(calls) == 1
    assert torch.equal(first, fresh.detach()) and torch.equal(second, first) and torch.equal(third, first)
    conv.train()
    conv(x)
    assert len(calls) == 2  # training never uses the cache


def test_cache_is_invalidated_by_optimiser_steps_and_loading() -> None:
    conv = layer().freeze()
    x = image()
    with torch.no_grad():
        before = conv(x)
    optimiser = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(x).square().mean().backward()  # eval mode but with gradients: generated afresh
    optimiser.step()
    with torch.no_grad():
        after = conv(x)
        expected = F.conv2d(x, *conv.generate(), padding=1)
    assert not torch.allclose(after, before) and torch.equal(after, expected)
    conv.load_state_dict(layer(seed=5).state_dict())
    with torch.no_grad():
        assert torch.equal(conv(x), F.conv2d(x, *conv.generate(), padding=1))


def test_cache_follows_dtype_changes() -> None:
    conv = layer().freeze()
    with torch.no_grad():
        conv(image())
        out = conv.double()(image().double())
    assert out.dtype == torch.float64


def test_gradients_reach_the_mlp_and_the_code() -> None:
    conv = layer()
    conv(image()).square().mean().backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_wider_hidden_adds_parameters_not_macs() -> None:
    def net(hidden: int) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(HyperConv2d(3, 16, 3, code_dim=8, hidden=hidden, padding=1), nn.ReLU())

    plain = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
    small, wide = net(4), net(32)
    n_small, n_wide = (sum(p.numel() for p in m.parameters()) for m in (small, wide))
    assert n_wide - n_small == 28 * (8 + 1 + 16 * 3 * 9 + 16)  # per extra unit: a w1 row, b1, a w2 column
    plain_macs = count_macs(plain, 32, 48)
    assert plain_macs == 16 * 32 * 48 * 3 * 9
    assert count_macs(small, 32, 48) == count_macs(wide, 32, 48) == plain_macs
    wide.eval()
    assert count_macs(wide, 32, 48) == plain_macs
    assert wide[0].generator_macs() > small[0].generator_macs()


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="groups"):
        HyperConv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="positive"):
        HyperConv2d(6, 8, 3, hidden=0)
    no_bias = HyperConv2d(4, 4, 1, bias=False)
    assert no_bias.bias() is None and no_bias.to_conv2d().bias is None


def test_a_kernel_cached_under_bf16_autocast_serves_a_later_fp32_forward() -> None:
    # The engine times bf16 against fp32 on the same model: whichever runs first fills the cache.
    torch.manual_seed(0)
    layer = HyperConv2d(4, 6, 3, padding=1).eval()
    x = torch.rand(1, 4, 12, 12)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = layer(x)
        full = layer(x)
        reference = F.conv2d(x, *layer.generate(), padding=1)
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert torch.allclose(full, reference, atol=1e-6)
    assert torch.allclose(low.float(), reference, atol=0.1)
