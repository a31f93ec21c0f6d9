"""`denoise eval` for raw2rgb: synthetic RAW from clean images, the model beside Malvar and LibRaw."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from denoise_cli import evaluate, registry, weights
from denoise_cli.cli import main
from denoise_cli.raw import demosaic_malvar, unpack
from denoise_cli.training import unprocess

from .conftest import smooth_scene

TINY_ISP = {"features": 4, "blocks": 1, "hyper": False}
BASELINES = (evaluate.RAW2RGB_MALVAR, evaluate.RAW2RGB_LIBRAW, evaluate.RAW2RGB_LIBRAW_LINEAR)


@pytest.fixture
def clean_folder(tmp_path: Path) -> Path:
    """Three smooth 8-bit sRGB images (the channels of one scene in different orders)."""
    folder = tmp_path / "clean"
    folder.mkdir()
    scene = smooth_scene(48, 64)
    for i, order in enumerate([(0, 1, 2), (2, 0, 1), (1, 2, 0)]):
        Image.fromarray(np.round(scene[..., order] * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def isp_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny RawToRGB whose last conv is zero, so it returns its coarse bilinear RGB: a known, weak model."""
    model = registry.build("hyperisp", **TINY_ISP)
    torch.nn.init.zeros_(model.tail.weight)
    torch.nn.init.zeros_(model.tail.bias)
    weights.save(model, tmp_path / "w" / "isp-test.safetensors", {"name": "isp-test", "arch_args": TINY_ISP})
    card = registry.ModelCard("isp-test", "raw2rgb", "hyperisp", "test", "test", scale=2, overlap=8)
    monkeypatch.setitem(registry.CARDS, "isp-test", card)
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path / "w"))
    return "isp-test"


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic RAW without sensor noise: what is left is demosaicking and the camera pipeline."""
    monkeypatch.setattr(unprocess, "add_noise", lambda raw, shot, read, generator=None: raw)


def eval_rows(*args: str) -> dict[str, dict]:
    result = CliRunner().invoke(main, ["eval", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {row["method"]: row for row in rows}


def test_eval_scores_the_model_and_each_classical_pipeline(isp_card: str, clean_folder: Path) -> None:
    rows = eval_rows("--model", isp_card, "--data", str(clean_folder))
    assert set(rows) == {*BASELINES, isp_card}
    for row in rows.values():
        assert row["setting"] == "clean synthetic RAW" and row["images"] == 3
        assert math.isfinite(row["psnr"]) and 10 < row["psnr"] < 60 and 0 < row["ssim"] <= 1
    assert rows[isp_card]["seconds"] > 0
    assert "not comparable" in rows[evaluate.RAW2RGB_LIBRAW]["note"]


def test_crop_and_limit_keep_the_mosaic_and_target_aligned(isp_card: str, clean_folder: Path, no_noise: None) -> None:
    rows = eval_rows("--model", isp_card, "--data", str(clean_folder), "--crop", "30", "--limit", "2")
    assert all(row["images"] == 2 for row in rows.values())
    assert rows[evaluate.RAW2RGB_MALVAR]["psnr"] > 45  # a crop one pixel off would fall far below


def test_without_noise_the_known_camera_pipelines_reproduce_the_image(
    isp_card: str, clean_folder: Path, no_noise: None
) -> None:
    """Wrong white balance, digital gain, colour matrix or step order would cost far more than demosaicking."""
    rows = eval_rows("--model", isp_card, "--data", str(clean_folder))
    assert rows[evaluate.RAW2RGB_MALVAR]["psnr"] > 45
    assert rows[evaluate.RAW2RGB_LIBRAW_LINEAR]["psnr"] > 45  # the DNG carries the same camera
    assert rows[isp_card]["psnr"] > 35  # bilinear up-sampling of the white-balanced planes


def test_the_model_gets_the_baselines_input_and_is_developed_like_it(clean_folder: Path) -> None:
    """A "model" that is Malvar on its input scores exactly as the Malvar baseline (with noise)."""
    rows = evaluate.evaluate_raw2rgb(lambda x: demosaic_malvar(unpack(x)), "malvar", clean_folder)
    by_method = {row.method: row for row in rows}
    assert by_method["malvar"].psnr == by_method[evaluate.RAW2RGB_MALVAR].psnr
    assert by_method["malvar"].ssim == by_method[evaluate.RAW2RGB_MALVAR].ssim


def test_precision_auto_probes_a_packed_mosaic_model_with_four_channels(isp_card: str, tmp_path: Path) -> None:
    from denoise_cli.engine import Enhancer

    path = tmp_path / "w" / "isp-test.json"
    card = json.loads(path.read_text())
    card["metrics"] = {"bf16_psnr_drop_db": 0.0}  # bf16 allowed: auto times both on a probe input
    path.write_text(json.dumps(card))
    enhancer = Enhancer(isp_card, device="cpu", precision="auto", tile=0)
    assert enhancer.precision in ("fp32", "bf16")
    assert enhancer(torch.rand(1, 4, 16, 16)).shape == (1, 3, 32, 32)
