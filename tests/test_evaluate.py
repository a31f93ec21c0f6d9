"""Scoring real noisy/clean pairs: the worst-image note and the best-single-sigma CBM3D reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from denoise_cli import evaluate

from .conftest import photo


@pytest.fixture
def pairs_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "real"
    (folder / "noisy").mkdir(parents=True)
    (folder / "gt").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        clean = photo(32, 40, seed=i)
        noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(folder / "gt" / f"{i}_gt.png")
        Image.fromarray(noisy).save(folder / "noisy" / f"{i}_noise.png")
    return folder


def test_real_pairs_report_the_worst_image_against_the_input(pairs_folder: Path) -> None:
    rows = evaluate.evaluate_model({"identity": lambda x: x, "worse": lambda x: x * 0.8}, pairs_folder, [])
    by_method = {r.method: r for r in rows}
    assert by_method["input (noisy)"].images == 3
    assert "worst image +0.00 dB over the input, 0 of 3 below it" in by_method["identity"].note
    worst = float(by_method["worse"].note.split("worst image ")[1].split(" dB")[0])
    assert worst < -3.0
    assert by_method["worse"].note.endswith("3 of 3 below it")


def test_cbm3d_reference_on_real_pairs_is_the_best_single_sigma(
    pairs_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[float] = []

    def fake_cbm3d(noisy: np.ndarray, sigma: float, key: str | None = None) -> np.ndarray:
        asked.append(sigma)
        return noisy + abs(sigma - 15.0) / 255.0  # best at sigma 15

    monkeypatch.setattr(evaluate, "cbm3d", fake_cbm3d)
    rows = evaluate.evaluate_model({}, pairs_folder, [], baseline=True)
    reference = next(r for r in rows if r.method == "CBM3D")
    assert "best single sigma over the set: 15" in reference.note
    assert sorted(set(asked)) == sorted(evaluate.REAL_NOISE_SIGMAS)
    assert reference.images == 3
    asked.clear()
    rows = evaluate.evaluate_model({}, pairs_folder, [], baseline=True, baseline_sigmas=(10.0, 30.0))
    reference = next(r for r in rows if r.method == "CBM3D")
    assert sorted(set(asked)) == [10.0, 30.0] and "best single sigma over the set: 10 (of 10, 30)" in reference.note
