"""`denoise sr` and SR evaluation with a tiny random DRN registered as ``drn-x2``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from denoise_cli import registry, weights
from denoise_cli.cli import main
from denoise_cli.engine import Enhancer

from .conftest import photo

TINY_DRN = {"scale": 2, "channels": 4, "blocks": 1}


@pytest.fixture
def tiny_sr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    model = registry.build("drn", **TINY_DRN)
    weights.save(model, folder / "drn-x2.safetensors", {"name": "drn-x2", "arch_args": TINY_DRN, "steps": 0})
    card = registry.ModelCard("drn-x2", "sr", "drn", "tiny test SR", "test", scale=2, overlap=8)
    monkeypatch.setitem(registry.CARDS, "drn-x2", card)
    monkeypatch.delitem(registry.CARDS, "drn-x4", raising=False)  # the tiny family is x2 only
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(folder))
    return folder


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_output_is_exactly_scale_times_the_input_and_json_says_so(tiny_sr: Path, tmp_path: Path) -> None:
    Image.fromarray(photo(21, 34)).save(tmp_path / "small.png")
    out = tmp_path / "big.png"
    result = run("sr", str(tmp_path / "small.png"), "--model", "drn", "--scale", "2", "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["model"] == "drn-x2" and record["scale"] == 2 and record["size"] == [68, 42]
    with Image.open(out) as im:
        assert im.size == (68, 42)


def test_alpha_is_upscaled_and_16_bit_is_kept(tiny_sr: Path, tmp_path: Path) -> None:
    rgba = np.dstack([photo(16, 24), np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (16, 1))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(photo(16, 24)[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    result = run("sr", str(tmp_path / "a.png"), str(tmp_path / "g16.png"), "--model", "drn", "--scale", "2")
    assert result.exit_code == 0
    with Image.open(tmp_path / "a_sr.png") as im:
        assert im.mode == "RGBA" and im.size == (48, 32)
        alpha = np.asarray(im)[..., 3].astype(float)
    assert alpha[:, :8].mean() < 60 and alpha[:, -8:].mean() > 190  # the gradient survives up-scaling
    with Image.open(tmp_path / "g16_sr.png") as im:
        assert im.size == (48, 32) and im.mode in ("I;16", "I;16B", "I") and np.asarray(im).max() > 255


def test_without_scale_the_largest_shipped_scale_runs(tiny_sr: Path, tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(photo(10, 12)).save(tmp_path / "x.png")
    result = run("sr", str(tmp_path / "x.png"), "--json", "-o", str(tmp_path / "y.png"))  # drn is the default
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["scale"] == 2
    big = registry.ModelCard("drn-x4", "sr", "drn", "tiny", "test", scale=4, overlap=8)
    monkeypatch.setitem(registry.CARDS, "drn-x4", big)
    assert registry.resolve("drn") == "drn-x2"  # x4 is known but its weights do not ship
    x4_args = {**TINY_DRN, "scale": 4}
    weights.save(registry.build("drn", **x4_args), tiny_sr / "drn-x4.safetensors", {"arch_args": x4_args})
    assert registry.resolve("drn") == "drn-x4" and registry.resolve("drn", 2) == "drn-x2"


def test_a_scale_the_model_lacks_is_a_usage_error(tiny_sr: Path, tmp_path: Path) -> None:
    Image.fromarray(photo()).save(tmp_path / "x.png")
    result = run("sr", str(tmp_path / "x.png"), "--model", "drn", "--scale", "4")
    assert result.exit_code == 2 and "comes in x2, not x4" in result.stderr
    assert run("sr", str(tmp_path / "x.png"), "--model", "drn", "--scale", "3").exit_code == 2


def test_tiles_in_lr_space_land_on_the_right_output_pixels(tiny_sr: Path) -> None:
    image = torch.from_numpy(photo(40, 56)).permute(2, 0, 1)[None].float() / 255
    whole = Enhancer("drn-x2", device="cpu", precision="fp32", tile=0)(image)
    tiled = Enhancer("drn-x2", device="cpu", precision="fp32", tile=24, overlap=8)(image)
    assert tiled.shape == whole.shape == (1, 3, 80, 112)
    # Channel attention pools over the tile, so tiling is close but not exact.
    assert (tiled - whole).abs().mean() < 0.02


def test_eval_scores_y_psnr_beside_bicubic(tiny_sr: Path, tmp_path: Path) -> None:
    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(photo(33, 47, seed=i)).save(folder / f"{i}.png")
    result = run("eval", "--model", "drn", "--scale", "2", "--data", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["setting"], r["method"], r["images"]) for r in rows] == [
        ("hr x2", "bicubic", 2),
        ("hr x2", "drn-x2", 2),
    ]
    assert 20 < rows[0]["psnr"] < 60
