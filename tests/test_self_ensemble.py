"""--self-ensemble: the model's results on the 8 flips and quarter turns, turned back and averaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from denoise_cli.cli import main
from denoise_cli.engine import DIHEDRAL, Enhancer, _turn, _unturn


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


def test_cli_reports_the_ensemble_and_refuses_it_for_mosaics(tiny_weights: Path, images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "out") + "/"
    result = runner.invoke(main, ["denoise", str(images / "img0.png"), "-o", out, "--self-ensemble", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["self_ensemble"] == 8
    refused = runner.invoke(main, ["demosaic", str(images / "img0.png"), "-o", out, "--self-ensemble"])
    assert refused.exit_code == 2
    assert "--self-ensemble" in refused.output
