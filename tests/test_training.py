"""The training loop on a tiny model and a generated folder: steps, resume, export."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from denoise_cli import registry
from denoise_cli.training.data import split_holdout
from denoise_cli.training.loop import Trainer, lr_at
from denoise_cli.training.recipes import RECIPES

from .conftest import TINY_ARCH, photo


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "train" / "synthetic"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(photo(96, 128, seed=i)).save(folder / f"{i}.png")
    return tmp_path / "data"


def tiny_recipe(steps: int):
    return dataclasses.replace(
        RECIPES["mallenet"],
        arch_args=TINY_ARCH,
        train_dirs=["train/synthetic"],
        patch=32,
        batch=2,
        steps=steps,
        warmup=2,
        holdout=0,
    )


def test_trains_resumes_and_exports(tmp_path: Path, data_root: Path) -> None:
    out = tmp_path / "run"
    first = Trainer(tiny_recipe(6), out, data_root)
    first.run(max_minutes=0.0)  # the time budget stops it after one step, resumably
    assert first.step == 1 and (out / "checkpoint.pt").exists()
    second = Trainer(tiny_recipe(6), out, data_root)
    assert second.resume() and second.step == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    )
    second.run()
    assert second.step == 6
    card = json.loads((out / "mallenet.json").read_text())
    assert card["steps"] == 6 and card["arch_args"] == TINY_ARCH and card["recipe"]["patch"] == 32
    model, meta = registry.load("mallenet", out / "mallenet.safetensors")
    assert meta["steps"] == 6 and not model.training


def test_learning_rate_warms_up_then_decays() -> None:
    recipe = tiny_recipe(100)
    assert lr_at(0, recipe) < lr_at(1, recipe) <= recipe.lr
    assert lr_at(50, recipe) < recipe.lr
    assert lr_at(100, recipe) == pytest.approx(recipe.min_lr)


def test_holdout_is_disjoint_from_training_files() -> None:
    files = [Path(f"{i}.png") for i in range(40)]
    kept, held = split_holdout(files, 5)
    assert len(held) == 5 and not set(kept) & set(held) and len(kept) + len(held) == 40
