"""Task readers: what each subcommand adds around the shared flow (tiny random PANet models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from denoise_cli import registry, weights
from denoise_cli.cli import main

from .conftest import photo


def register_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, task: str, **arch_args) -> None:
    args = {"features": 8, "blocks": 2, **arch_args}
    torch.manual_seed(0)
    folder = tmp_path / "weights"
    weights.save(registry.build("panet", **args), folder / f"{name}.safetensors", {"arch_args": args})
    card = registry.ModelCard(name, task, "panet", "test", "test", overlap=8, max_tile=64)
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
    with Image.open(tmp_path / "q23_deblocked.jpg") as im:
        assert im.size == (56, 40)
