"""Pyramid attention against a naive reference, and the PANet backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from denoise_cli import registry, weights
from denoise_cli.cli import main
from denoise_cli.flops import count_macs
from denoise_cli.models.panet import PANet, PyramidAttention


def naive_pyramid_attention(pa: PyramidAttention, x: torch.Tensor) -> torch.Tensor:
    """The paper's recipe, literally: key patches as conv filters, transposed conv to aggregate."""
    outputs = []
    for image in x.split(1):
        keys, values = [], []
        for level in pa.levels(image):
            k, v = pa.key(level), pa.value(level)
            h, w = level.shape[-2:]
            kp, vp = F.pad(k, (1, 1, 1, 1)), F.pad(v, (1, 1, 1, 1))
            for i in range(h):
                for j in range(w):
                    keys.append(kp[0, :, i : i + 3, j : j + 3])
                    values.append(vp[0, :, i : i + 3, j : j + 3])
        filters = torch.stack(keys)
        norms = filters.flatten(1).norm(dim=1).clamp_min(1e-4)
        filters = filters / norms[:, None, None, None]
        scores = F.conv2d(pa.query(image), filters, padding=1)  # (1, L, H, W)
        attention = torch.softmax(scores * 10.0, dim=1)
        outputs.append(F.conv_transpose2d(attention, torch.stack(values), padding=1) / 4.0 + image)
    return torch.cat(outputs)


def test_attention_equals_the_naive_reference() -> None:
    torch.manual_seed(0)
    pa = PyramidAttention(channels=8, reduction=2).eval()
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        assert torch.allclose(pa(x), naive_pyramid_attention(pa, x), atol=1e-5)


def test_attention_reaches_far_pixels_and_passes_gradients() -> None:
    torch.manual_seed(0)
    pa = PyramidAttention(channels=8)
    x = torch.randn(1, 8, 16, 16, requires_grad=True)
    pa(x)[0, :, 0, 0].sum().backward()
    assert x.grad[0, :, 12:, 12:].abs().sum() > 0  # a corner output depends on the far corner
    assert all(p.grad is not None for p in pa.parameters())


def test_panet_keeps_the_size_and_has_the_papers_parameter_count() -> None:
    net = PANet(blocks=2, features=16)
    assert net(torch.rand(1, 3, 20, 28)).shape == (1, 3, 20, 28)
    packed = PANet(in_channels=4, blocks=2, features=16, upscale=2)  # Bayer R, G1, G2, B at half size
    assert packed(torch.rand(1, 4, 10, 14)).shape == (1, 3, 20, 28)
    half = PANet(blocks=2, features=16, unshuffle=2, image_skip=True)
    assert half(torch.rand(1, 3, 20, 28)).shape == (1, 3, 20, 28)
    full = PANet()  # 80 blocks, 64 features: the paper's DN/DM/CAR network
    assert sum(p.numel() for p in full.parameters()) == pytest.approx(5.96e6, rel=0.01)


def test_attention_arithmetic_is_counted_and_grows_quadratically() -> None:
    net = PANet(blocks=2, features=16).eval()
    small, large = count_macs(net, 16, 16), count_macs(net, 32, 32)
    assert large / small > 4.5  # convolutions alone would give exactly 4


@pytest.fixture
def tiny_panet(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    args = {"features": 8, "blocks": 2}
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    weights.save(registry.build("panet", **args), folder / "panet-tiny.safetensors", {"arch_args": args})
    card = registry.ModelCard("panet-tiny", "denoise", "panet", "test", "test", overlap=8, max_tile=32)
    monkeypatch.setitem(registry.CARDS, "panet-tiny", card)
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(folder))
    return "panet-tiny"


def test_engine_keeps_attention_tiles_within_the_cards_limit(tiny_panet: str) -> None:
    from denoise_cli.engine import Enhancer

    enhancer = Enhancer(tiny_panet, device="cpu", precision="fp32", tile=0)  # asks for the whole image
    seen: list[tuple[int, int]] = []
    forward = enhancer.model.forward
    enhancer.model.forward = lambda x: (seen.append(tuple(x.shape[-2:])), forward(x))[1]
    # Whole-image attention on 256 x 256 would need ~57 GB for its score map alone.
    out = enhancer(torch.rand(1, 3, 256, 256))
    assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all()
    assert len(seen) > 1 and max(max(s) for s in seen) <= 32


@pytest.mark.parametrize("scale", [2, 4])
def test_pa_edsr_upscales_exactly_and_its_twin_differs_only_by_the_attention(scale: int) -> None:
    from denoise_cli.models.edsr import PAEDSR

    with_pa, without = PAEDSR(scale, features=16, blocks=2), PAEDSR(scale, features=16, blocks=2, attention=False)
    assert with_pa(torch.rand(1, 3, 7, 9)).shape == (1, 3, 7 * scale, 9 * scale)
    attention = next(m for m in with_pa.modules() if isinstance(m, PyramidAttention))
    extra = sum(p.numel() for p in attention.parameters())
    assert sum(p.numel() for p in with_pa.parameters()) == sum(p.numel() for p in without.parameters()) + extra
    assert attention.query[0].out_channels == 16  # narrower than 32 features: no reduction


def test_edsr_weights_load_into_pa_edsr_by_name_leaving_only_the_attention_fresh(tmp_path) -> None:
    from denoise_cli.models.edsr import PAEDSR

    torch.manual_seed(0)
    edsr, pa_edsr = PAEDSR(2, features=16, blocks=4, attention=False), PAEDSR(2, features=16, blocks=4)
    weights.save(edsr, tmp_path / "edsr.safetensors", {"name": "edsr"})
    fresh = weights.load_matching(pa_edsr, tmp_path / "edsr.safetensors")
    assert fresh and all(name.startswith("attention.") for name in fresh)
    for name, tensor in edsr.state_dict().items():  # every trunk block lands where it was trained
        assert torch.equal(pa_edsr.state_dict()[name], tensor)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():  # its fresh attention block starts as the identity: the same network
        assert torch.allclose(pa_edsr(x), edsr(x), atol=1e-6)
    pa_edsr(x).square().mean().backward()  # and it can learn: the value embedding gets a gradient
    assert pa_edsr.attention.value[0].weight.grad.abs().sum() > 0


def test_mosaic_skip_adds_malvar_demosaicking_of_the_packed_input() -> None:
    from denoise_cli.raw import demosaic_malvar, unpack

    torch.manual_seed(0)
    net = PANet(in_channels=4, blocks=2, upscale=2, mosaic_skip=True).eval()
    packed = torch.rand(1, 4, 10, 12)
    with torch.no_grad():
        correction = net(packed) - demosaic_malvar(unpack(packed))
        torch.nn.init.zeros_(net.tail.weight)
        torch.nn.init.zeros_(net.tail.bias)
        assert torch.equal(net(packed), demosaic_malvar(unpack(packed)))
    assert correction.abs().max() > 1e-3  # the network's part is really added on top
    with pytest.raises(ValueError, match="packed RGGB"):
        PANet(in_channels=3, blocks=2, mosaic_skip=True)


def test_space_to_depth_panet_takes_odd_sizes_and_crops_back() -> None:
    net = PANet(blocks=2, unshuffle=2, image_skip=True).eval()
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        out = net(x)
        padded = net(F.pad(x, (0, 1, 0, 1), mode="replicate"))
    assert out.shape == x.shape
    assert torch.allclose(out, padded[..., :11, :13])


def test_card_size_facts_count_attention_on_the_tile_it_runs_at() -> None:
    from denoise_cli.flops import macs_per_megapixel, size_facts

    net = PANet(in_channels=4, blocks=2, upscale=2, mosaic_skip=True)
    on_tiles = size_facts(net, max_tile=16)["gmacs_per_mp"]  # 16 packed px = a 32-px photo tile
    assert on_tiles == round(macs_per_megapixel(net, 32) / 1e9, 2)
    assert on_tiles < size_facts(net)["gmacs_per_mp"]  # whole 256-px photo: attention 64x larger


def test_a_subcommand_reaches_its_panet_by_the_family_name() -> None:
    assert registry.resolve("panet", task="demosaic") == "panet-demosaic"
    assert registry.resolve("panet", task="deblock") == "panet-deblock"
    assert registry.resolve("mallenet", task="denoise") == "mallenet"  # a full name stays itself
    with pytest.raises(registry.UnknownModelError):
        registry.resolve("panet")  # no subcommand, no family member


def test_denoise_model_panet_runs_the_denoising_panet(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = {"features": 8, "blocks": 2, "unshuffle": 2, "image_skip": True}
    folder = tmp_path / "weights"
    weights.save(registry.build("panet", **args), folder / "panet-denoise.safetensors", {"arch_args": args})
    card = registry.panet_card("panet-denoise", "denoise", "test", overlap=8, tile_multiple=2, max_tile=32)
    monkeypatch.setitem(registry.CARDS, "panet-denoise", card)
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(folder))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["denoise", str(tmp_path / "a.png"), "--model", "panet", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output.splitlines()[0])
    assert facts["model"] == "panet-denoise" and facts["status"] == "ok"
    assert Image.open(tmp_path / "a_denoised.png").size == (50, 40)
