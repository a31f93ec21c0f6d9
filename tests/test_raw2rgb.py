"""`denoise raw2rgb`: the pipeline around the network, and LibRaw's classic engine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from denoise_cli import registry, weights
from denoise_cli.cli import main
from denoise_cli.dng import bayer_from_rgb, write_dng
from denoise_cli.imageio import read_image
from denoise_cli.models.hyperisp import coarse_rgb
from denoise_cli.raw import apply_ccm, gamma_compress, read_raw, smoothstep
from denoise_cli.tasks import TASKS

from .conftest import smooth_scene

RAW_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw" / "RAW_KODAK_DC50.KDC"


class CoarseDemosaic(nn.Module):
    """A parameter-free stand-in for the network: packed planes to RGB by bilinear up-sampling."""

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return coarse_rgb(packed)


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry.ARCHITECTURES, "coarse", f"{__name__}:CoarseDemosaic")
    weights.save(CoarseDemosaic(), tmp_path / "w" / "isp-test.safetensors", {"arch_args": {}})
    card = registry.ModelCard("isp-test", "raw2rgb", "coarse", "test", "test", scale=2, overlap=8)
    monkeypatch.setitem(registry.CARDS, "isp-test", card)
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path / "w"))
    return "isp-test"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG"])
def test_a_dng_of_a_known_scene_develops_to_that_scene(stand_in: str, tmp_path: Path, pattern: str) -> None:
    scene = smooth_scene(48, 64)
    dng = write_dng(tmp_path / "scene.dng", bayer_from_rgb(scene, pattern), pattern)
    result = run("raw2rgb", str(dng), "--model", stand_in, "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["pattern"] == pattern and record["bit_depth"] == 16 and record["output"].endswith("scene_rgb.tif")
    assert record["wb_gains"] == pytest.approx([2.0, 1.0, 1.6], abs=1e-3)  # 1 / AsShotNeutral
    out = read_image(Path(record["output"]))
    ccm = torch.from_numpy(read_raw(dng).camera_to_srgb)[None]
    linear = torch.from_numpy(scene).permute(2, 0, 1)[None].float()
    expected = smoothstep(gamma_compress(apply_ccm(linear, ccm).clamp(0, 1)))[0].permute(1, 2, 0).numpy()
    inner = (slice(4, -4), slice(4, -4))  # bilinear interpolation is exact inside a linear scene only
    assert out.rgb.shape == (48, 64, 3) and np.abs(out.rgb[inner] - expected[inner]).mean() < 0.01


def test_classic_engine_needs_no_model_and_keeps_the_sensor_size(tmp_path: Path) -> None:
    result = run("raw2rgb", str(RAW_FILE), "-o", str(tmp_path / "out.tif"), "--engine", "classic", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["engine"] == "classic"
    out = read_image(tmp_path / "out.tif")
    assert out.rgb.shape[:2] == (512, 768) and out.bit_depth == 16 and 0.02 < out.rgb.mean() < 0.9


def test_without_a_model_it_points_to_the_classic_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS, "raw2rgb", dataclasses.replace(TASKS["raw2rgb"], default_model=None))
    result = run("raw2rgb", str(RAW_FILE), "-o", str(tmp_path / "x.tif"))
    assert result.exit_code == 2 and "--engine classic" in result.stderr


@pytest.mark.skipif(not registry.card("hyperisp").weights_path.is_file(), reason="hyperisp weights not shipped")
def test_the_shipped_network_develops_a_camera_raw_file_at_the_sensor_size(tmp_path: Path) -> None:
    result = run("raw2rgb", str(RAW_FILE), "-o", str(tmp_path / "out.tif"), "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["engine"] == "network" and record["model"] == TASKS["raw2rgb"].default_model
    out = read_image(tmp_path / "out.tif")
    assert out.rgb.shape[:2] == (512, 768) and out.bit_depth == 16
    classic = run("raw2rgb", str(RAW_FILE), "-o", str(tmp_path / "classic.tif"), "--engine", "classic")
    assert classic.exit_code == 0
    reference = read_image(tmp_path / "classic.tif").rgb
    # the same scene as LibRaw's rendering: similar brightness and strongly correlated pixels
    assert abs(out.rgb.mean() - reference.mean()) < 0.1
    assert np.corrcoef(out.rgb.ravel(), reference.ravel())[0, 1] > 0.9


def test_unreadable_raw_files_fail_alone_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.nef").write_bytes(b"\x00" * 300)
    (tmp_path / "notes.txt").write_text("not an image")
    scene = smooth_scene(32, 48)
    write_dng(tmp_path / "fine.dng", bayer_from_rgb(scene))
    result = run("raw2rgb", str(tmp_path), "-o", str(tmp_path / "out") + "/", "--engine", "classic", "--bits", "8")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "broken.nef" in errors[0]
    out = read_image(tmp_path / "out" / "fine.tif")
    assert out.bit_depth == 8 and out.rgb.shape[:2] == (32, 48)
