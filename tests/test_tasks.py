"""Task readers: what each subcommand adds around the shared flow (tiny random PANet models)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from denoise_cli import registry, weights
from denoise_cli.cli import main
from denoise_cli.imageio import read_image
from denoise_cli.tasks import TASKS

from .conftest import photo

RAW_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw" / "RAW_KODAK_DC50.KDC"


def register_tiny(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    task: str,
    scale: int = 1,
    jpeg_qualities: tuple[int, int] | None = None,
    jpeg_gray: bool = False,
    **arch_args: Any,
) -> None:
    """A tiny random PANet as model ``name``; small attention tiles keep the tests fast."""
    args = {"features": 4, "blocks": 2, "reduction": 4, **arch_args}
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    weights.save(registry.build("panet", **args), folder / f"{name}.safetensors", {"arch_args": args})
    card = registry.ModelCard(
        name, task, "panet", "test", "test", scale=scale, overlap=8, max_tile=32, jpeg_qualities=jpeg_qualities,
        jpeg_gray=jpeg_gray,
    )  # fmt: skip
    monkeypatch.setitem(registry.CARDS, name, card)
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(folder))


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_deblock_reports_the_jpeg_quality_of_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_tiny(tmp_path, monkeypatch, "deblock-tiny", "deblock", image_skip=True)
    Image.fromarray(photo(40, 56)).save(tmp_path / "q23.jpg", quality=23)
    Image.fromarray(photo(40, 56)).save(tmp_path / "lossless.png")
    inputs = [str(tmp_path / "q23.jpg"), str(tmp_path / "lossless.png")]
    result = run("deblock", *inputs, "--model", "deblock-tiny", "--json")
    assert result.exit_code == 0, result.stderr
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["q23.jpg"]["jpeg_quality"] == 23 and records["q23.jpg"]["jpeg_tables"] == "ijg"
    assert records["lossless.png"]["jpeg_quality"] is None
    assert "lossless.png: not a JPEG file" in result.stderr
    result = run(
        "deblock", *inputs, "--model", "deblock-tiny", "--json", "--quality-factor", "15", "-o", str(tmp_path / "given")
    )
    assert result.exit_code == 0 and "not a JPEG file" not in result.stderr, result.stderr
    assert [json.loads(line)["jpeg_quality"] for line in result.stdout.splitlines()] == [15, 15]
    with Image.open(tmp_path / "q23_deblocked.jpg") as im:
        assert im.size == (56, 40)


def deblock_models(inputs: list[str], *args: str) -> dict[str, str]:
    """The model ``denoise deblock`` ran on each input (by file stem)."""
    result = run("deblock", *inputs, "--json", "--on-exists", "overwrite", *args)
    assert result.exit_code == 0, result.stderr
    return {Path(r["input"]).stem: r["model"] for r in map(json.loads, result.stdout.splitlines())}


def test_deblock_runs_the_specialist_for_low_quality_files_unless_a_model_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(TASKS, "deblock", dataclasses.replace(TASKS["deblock"], default_model="deblock-tiny"))
    register_tiny(tmp_path, monkeypatch, "deblock-tiny", "deblock", image_skip=True)
    register_tiny(tmp_path, monkeypatch, "deblock-tiny-low", "deblock", jpeg_qualities=(1, 12), image_skip=True)
    for quality in (8, 12, 13, 50):
        Image.fromarray(photo(24, 32, seed=quality)).save(tmp_path / f"q{quality}.jpg", quality=quality)
    inputs = [str(tmp_path / f"q{quality}.jpg") for quality in (8, 12, 13, 50)]
    models_run = partial(deblock_models, inputs)

    low, blind = "deblock-tiny-low", "deblock-tiny"
    assert models_run() == {"q8": low, "q12": low, "q13": blind, "q50": blind}
    assert set(models_run("--model", "deblock-tiny").values()) == {blind}
    assert models_run("--quality-factor", "10") == dict.fromkeys(("q8", "q12", "q13", "q50"), low)
    (tmp_path / "weights" / "deblock-tiny-low.safetensors").unlink()  # a specialist that does not ship
    assert set(models_run().values()) == {blind}


def test_greyscale_jpegs_get_the_grey_specialist_colour_ones_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(TASKS, "deblock", dataclasses.replace(TASKS["deblock"], default_model="deblock-tiny"))
    register_tiny(tmp_path, monkeypatch, "deblock-tiny", "deblock", image_skip=True)
    register_tiny(tmp_path, monkeypatch, "deblock-tiny-gray", "deblock", jpeg_qualities=(1, 12), jpeg_gray=True)
    register_tiny(tmp_path, monkeypatch, "deblock-tiny-low", "deblock", jpeg_qualities=(1, 12), image_skip=True)
    colour = photo(24, 32)
    Image.fromarray(colour).save(tmp_path / "colour10.jpg", quality=10)
    Image.fromarray(colour).convert("L").save(tmp_path / "grey10.jpg", quality=10)
    Image.fromarray(colour).convert("L").save(tmp_path / "grey50.jpg", quality=50)
    models_run = partial(deblock_models, [str(tmp_path / f"{name}.jpg") for name in ("colour10", "grey10", "grey50")])

    assert models_run() == {"colour10": "deblock-tiny-low", "grey10": "deblock-tiny-gray", "grey50": "deblock-tiny"}
    with Image.open(tmp_path / "grey10_deblocked.jpg") as im:
        assert im.mode == "L"
    (tmp_path / "weights" / "deblock-tiny-gray.safetensors").unlink()  # without it, the colour specialist
    assert models_run()["grey10"] == "deblock-tiny-low"


@pytest.fixture
def tiny_demosaic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    register_tiny(tmp_path, monkeypatch, "demosaic-tiny", "demosaic", scale=2, in_channels=4, upscale=2)
    return "demosaic-tiny"


def test_demosaic_keeps_the_size_and_depth_of_an_odd_16_bit_mosaic(tiny_demosaic: str, tmp_path: Path) -> None:
    mosaic = photo(31, 41)[..., 1].astype(np.uint16) * 257
    Image.fromarray(mosaic).save(tmp_path / "m.png")
    result = run("demosaic", str(tmp_path / "m.png"), "--model", tiny_demosaic, "--pattern", "grbg", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["pattern"] == "GRBG"
    out = read_image(tmp_path / "m_demosaic.png")
    assert out.rgb.shape == (31, 41, 3) and out.bit_depth == 16 and not out.gray


def test_demosaic_refuses_colour_images_and_reads_raw_files(tiny_demosaic: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photo(16, 16)).save(folder / "colour.png")
    shutil.copy(RAW_FILE, folder / RAW_FILE.name)
    (folder / "broken.dng").write_bytes(b"II*\x00" + bytes(200))
    result = run("demosaic", str(folder), "-o", str(tmp_path / "out") + "/", "--model", tiny_demosaic, "--json")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 2
    assert any("colour.png" in e and "not a single-channel Bayer mosaic" in e for e in errors)
    assert any("broken.dng" in e for e in errors)
    record = next(r for r in map(json.loads, result.stdout.splitlines()) if r["status"] == "ok")
    assert record["pattern"] == "GRBG" and record["linear"] is True
    with Image.open(tmp_path / "out" / "RAW_KODAK_DC50.png") as im:
        assert im.size == (768, 512)


def eval_rows(*args: str) -> list[dict]:
    result = run("eval", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_eval_demosaic_scores_beside_bilinear_and_malvar(tiny_demosaic: str, tmp_path: Path) -> None:
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(photo(34, 47, seed=i)).save(folder / f"{i}.png")
    rows = eval_rows("--model", tiny_demosaic, "--data", str(folder))
    assert [(r["method"], r["images"]) for r in rows] == [
        ("bilinear", 2),
        ("Malvar-He-Cutler", 2),
        (tiny_demosaic, 2),
    ]
    assert rows[0]["psnr"] > 20 and rows[1]["psnr"] > 20


def test_eval_deblock_encodes_each_quality(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_tiny(tmp_path, monkeypatch, "deblock-tiny", "deblock", image_skip=True)
    folder = tmp_path / "clean"
    folder.mkdir()
    Image.fromarray(photo(32, 40)).save(folder / "colour.png")
    Image.fromarray(photo(32, 40, seed=1)[..., 0]).save(folder / "gray.png")
    rows = eval_rows("--model", "deblock-tiny", "--data", str(folder), "--quality", "10", "--quality", "60")
    assert [(r["setting"], r["method"]) for r in rows] == [
        ("clean q10", "input (JPEG)"),
        ("clean q10", "deblock-tiny"),
        ("clean q60", "input (JPEG)"),
        ("clean q60", "deblock-tiny"),
    ]
    assert rows[2]["psnr"] > rows[0]["psnr"] + 2
