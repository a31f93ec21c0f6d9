from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from denoise_cli import registry, weights
from denoise_cli.models.mallenet import MalleConv, MalleNet, slice_and_conv


def naive_slice_and_conv(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-pixel reference: materialise every pixel's k x k kernel, then convolve pixel by pixel."""
    b, c, h, w = x.shape
    taps = kernels.shape[2]
    k = int(taps**0.5)
    r = k // 2
    full = F.interpolate(kernels.reshape(b, c * taps, *kernels.shape[-2:]), size=(h, w), mode="bilinear")
    full = full.reshape(b, c, k, k, h, w)
    full_bias = F.interpolate(bias, size=(h, w), mode="bilinear")
    padded = F.pad(x, (r, r, r, r))
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            window = padded[:, :, i : i + k, j : j + k]  # (b, c, k, k)
            out[:, :, i, j] = (window * full[:, :, :, :, i, j]).sum(dim=(-1, -2)) + full_bias[:, :, i, j]
    return out


@pytest.mark.parametrize("k", [1, 3, 5])
def test_slice_and_conv_matches_per_pixel_reference(k: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 24)
    kernels = torch.randn(2, 3, k * k, 4, 6)
    bias = torch.randn(2, 3, 4, 6)
    fast = slice_and_conv(x, kernels, bias)
    assert torch.allclose(fast, naive_slice_and_conv(x, kernels, bias), atol=1e-5)


def test_slice_and_conv_with_constant_grid_is_a_depthwise_conv() -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 4, 20, 20)
    kernel = torch.randn(4, 1, 3, 3)
    grid = kernel.reshape(1, 4, 9, 1, 1).expand(1, 4, 9, 5, 5)
    out = slice_and_conv(x, grid, torch.zeros(1, 4, 5, 5))
    assert torch.allclose(out, F.conv2d(x, kernel, padding=1, groups=4), atol=1e-5)


def test_malleconv_starts_as_identity_and_its_gate_learns() -> None:
    torch.manual_seed(0)
    layer = MalleConv(8, kernel_size=3, pool=4)
    x = torch.randn(2, 8, 32, 32)
    assert torch.equal(layer(x), x)
    loss = layer(x).square().mean()
    loss.backward()
    assert layer.gate.grad is not None and layer.gate.grad.abs().item() > 0
    assert "gate" in dict(layer.named_parameters())  # registered, so it trains and is saved


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (16, 80)])
def test_mallenet_keeps_any_size(size: tuple[int, int]) -> None:
    model = MalleNet(channels=8, full_res_channels=4, blocks_per_stage=1).eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        assert model(x).shape == x.shape


def test_weights_round_trip_keeps_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    args = {"channels": 8, "full_res_channels": 4, "blocks_per_stage": 1}
    model = registry.build("mallenet", **args).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # the gates too, so MalleConv branches are active
    path = tmp_path / "m.safetensors"
    weights.save(model, path, {"arch_args": args})
    other = registry.build("mallenet", **weights.read_card(path)["arch_args"]).eval()
    weights.load_into(other, path)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))
