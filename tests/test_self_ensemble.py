"""--self-ensemble: the model's results on the 8 flips and quarter turns, turned back and averaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from denoise_cli import registry, weights
from denoise_cli.cli import main
from denoise_cli.engine import DIHEDRAL, Enhancer, _turn, _unturn, _views, turned_pattern
from denoise_cli.raw import mosaic, pack, unpack


def test_the_eight_views_are_distinct_and_each_turns_back() -> None:
    x = torch.rand(1, 3, 6, 10)
    views = [_turn(x, turns, flip) for turns, flip in DIHEDRAL]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    for view, (turns, flip) in zip(views, DIHEDRAL, strict=True):
        assert torch.equal(_unturn(view, turns, flip), x)


@pytest.mark.parametrize(("tile", "overlap"), [(0, None), (32, 16)])
def test_the_ensemble_commutes_with_flips_and_turns(tiny_weights: Path, tile: int, overlap: int | None) -> None:
    # A random network is not symmetric; the average over all views is, whole or tiled (a 48-px image
    # on 32-px tiles with overlap 16 has a mirror-symmetric tile layout).
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    plain = Enhancer("mallenet", device="cpu", precision="fp32", tile=tile, overlap=overlap)
    ensemble = Enhancer("mallenet", device="cpu", precision="fp32", tile=tile, overlap=overlap, self_ensemble=True)
    flip = lambda t: t.flip(-1)  # noqa: E731
    turn = lambda t: torch.rot90(t, 1, (-2, -1))  # noqa: E731
    for change in (flip, turn):
        assert not torch.allclose(plain(change(x)), change(plain(x)), atol=1e-4)
        assert torch.allclose(ensemble(change(x)), change(ensemble(x)), atol=1e-5)
    assert ensemble.facts["self_ensemble"] == 8


def test_the_ensemble_keeps_a_non_square_size(tiny_weights: Path) -> None:
    x = torch.rand(1, 3, 40, 56)
    for tile in (0, 24):
        out = Enhancer("mallenet", device="cpu", precision="fp32", tile=tile, overlap=8, self_ensemble=True)(x)
        assert out.shape == x.shape


def test_cli_reports_the_ensemble_and_refuses_it_for_the_classic_engine(
    tiny_weights: Path, images: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = str(tmp_path / "out") + "/"
    result = runner.invoke(main, ["denoise", str(images / "img0.png"), "-o", out, "--self-ensemble", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["self_ensemble"] == 8
    refused = runner.invoke(
        main, ["raw2rgb", str(images / "img0.png"), "-o", out, "--engine", "classic", "--self-ensemble"]
    )
    assert refused.exit_code == 2
    assert "--self-ensemble" in refused.output


def test_turned_patterns_follow_the_cell() -> None:
    assert [turned_pattern(turns, flip) for turns, flip in DIHEDRAL] == [
        "RGGB", "GBRG", "BGGR", "GRBG", "GRBG", "RGGB", "GBRG", "BGGR"
    ]  # fmt: skip


def test_mosaic_views_are_rggb_and_turn_back_exactly() -> None:
    # Every view of a packed mosaic is again RGGB (a flat colour gives the same four planes), and
    # a "network" that returns the mosaic itself gets it back in place from every view.
    flat = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(1, 3, 10, 14)
    for view, _ in _views(pack(mosaic(flat)), packed_bayer=True):
        assert torch.allclose(view, torch.tensor([0.1, 0.5, 0.5, 0.9]).view(1, 4, 1, 1).expand_as(view))
    packed = torch.rand(1, 4, 5, 7)
    as_rgb = lambda p: unpack(p).expand(-1, 3, -1, -1)  # noqa: E731
    for view, back in _views(packed, packed_bayer=True):
        assert torch.equal(back(as_rgb(view)), as_rgb(packed))


@pytest.fixture
def tiny_demosaic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    args = {"features": 8, "blocks": 2, "in_channels": 4, "upscale": 2, "mosaic_skip": True}
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    weights.save(registry.build("panet", **args), folder / "panet-demosaic.safetensors", {"arch_args": args})
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(folder))
    return "panet-demosaic"


@pytest.mark.parametrize("tile", [0, 16])
def test_the_mosaic_ensemble_commutes_with_a_transpose(tiny_demosaic: str, tile: int) -> None:
    # Transposing an RGGB mosaic keeps it RGGB (G1 and G2 swap places): the ensemble of the
    # transposed mosaic is the transposed ensemble, which a single pass is not.
    packed = torch.rand(1, 4, 24, 24, generator=torch.Generator().manual_seed(1))
    transposed = pack(unpack(packed).transpose(-2, -1))
    plain = Enhancer(tiny_demosaic, device="cpu", precision="fp32", tile=tile, overlap=8)
    ensemble = Enhancer(tiny_demosaic, device="cpu", precision="fp32", tile=tile, overlap=8, self_ensemble=True)
    assert not torch.allclose(plain(transposed), plain(packed).transpose(-2, -1), atol=1e-4)
    assert torch.allclose(ensemble(transposed), ensemble(packed).transpose(-2, -1), atol=1e-5)
