"""Shared fixtures: small generated images and a tiny (untrained) model for plumbing tests.

Behaviour tests of the CLI run a tiny MalleNet with random weights from a temporary
weights folder (``DENOISE_WEIGHTS_DIR``); quality tests use the shipped weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from denoise_cli import registry, weights
from denoise_cli.tasks import TASKS

TINY_ARCH = {"channels": 8, "full_res_channels": 4, "blocks_per_stage": 1, "kernel_size": 3}


@pytest.fixture
def tiny_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights folder whose ``mallenet`` is a tiny random MalleNet, the default of ``denoise denoise`` here."""
    monkeypatch.setitem(TASKS, "denoise", dataclasses.replace(TASKS["denoise"], default_model="mallenet"))
    torch.manual_seed(0)
    model = registry.build("mallenet", **TINY_ARCH)
    folder = tmp_path / "weights"
    weights.save(model, folder / "mallenet.safetensors", {"name": "mallenet", "arch_args": TINY_ARCH, "steps": 0})
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(folder))
    return folder


def photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour test image with some texture, HxWx3 uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 5.0) * np.cos(y / 7.0)], axis=-1)
    noisy = base * 200 + 20 + rng.normal(0, 10, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def smooth_scene(height: int = 48, width: int = 64) -> np.ndarray:
    """A known smooth linear colour image, (H, W, 3) float64 in [0.1, 0.8]: ramps and a slow wave."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 0.2 + 0.5 * x / max(width - 1, 1)
    green = 0.3 + 0.4 * y / max(height - 1, 1)
    blue = 0.45 + 0.3 * np.sin(x / 9.0) * np.cos(y / 7.0)
    return np.stack([red, green, blue], axis=-1)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder with three small PNG photos."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(photo(seed=i)).save(folder / f"img{i}.png")
    return folder


def tiny_teacher(folder: Path, scale: int = 4, seed: int = 0) -> Path:
    """A tiny random DRN with its card, standing in for a distillation teacher not trained yet."""
    torch.manual_seed(seed)
    arch_args = {"scale": scale, "channels": 4, "blocks": 1}
    path = folder / "teacher.safetensors"
    weights.save(registry.build("drn", **arch_args), path, {"name": "teacher", "arch": "drn", "arch_args": arch_args})
    return path
