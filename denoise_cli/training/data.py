"""Random training patches from folders of clean images, held in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folders: list[Path]) -> list[Path]:
    """Every image file directly inside ``folders``, sorted for reproducibility."""
    files: list[Path] = []
    for folder in folders:
        files.extend(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files)


def split_holdout(files: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """Keep every ``len/count``-th file apart to watch training (never the val/ data)."""
    if count <= 0:
        return files, []
    step = max(1, len(files) // count)
    held = files[::step][:count]
    held_set = set(held)
    kept = [f for f in files if f not in held_set]
    return kept, held


def load_rgb(path: Path) -> np.ndarray:
    """An image as HxWx3 uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class PatchSampler:
    """Draws augmented patches: random down-scaling, crop, flips and 90-degree turns.

    Down-scaling the clean image (by a factor drawn in ``scales``) before cropping adds variety
    to a small training set and makes noise-free textures at several scales.
    """

    images: list[np.ndarray]
    patch: int
    scales: tuple[float, float] = (0.5, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.images = [im for im in self.images if min(im.shape[:2]) >= self.patch]
        if not self.images:
            raise ValueError(f"no training image is at least {self.patch} px on each side")

    def _one(self) -> np.ndarray:
        im = self.images[self.rng.integers(len(self.images))]
        h, w = im.shape[:2]
        highest = max(self.scales[1], self.patch / min(h, w))
        lowest = min(max(self.scales[0], self.patch / min(h, w)), highest)
        scale = self.rng.uniform(lowest, highest)
        if scale < 0.999:
            # Crop a region first so the resize stays cheap, then scale it to the patch.
            side = min(int(np.ceil(self.patch / scale)), h, w)
            y, x = self.rng.integers(h - side + 1), self.rng.integers(w - side + 1)
            region = Image.fromarray(im[y : y + side, x : x + side])
            crop = np.asarray(region.resize((self.patch, self.patch), Image.Resampling.BICUBIC, reducing_gap=None))
        else:
            y, x = self.rng.integers(h - self.patch + 1), self.rng.integers(w - self.patch + 1)
            crop = im[y : y + self.patch, x : x + self.patch]
        crop = np.rot90(crop, self.rng.integers(4))
        if self.rng.integers(2):
            crop = crop[:, ::-1]
        return crop

    def batch(self, size: int) -> torch.Tensor:
        """(size, 3, patch, patch) float32 in [0, 1]."""
        stack = np.stack([self._one() for _ in range(size)])
        return torch.from_numpy(stack).permute(0, 3, 1, 2).float().div_(255.0)


def training_split(root: Path, dirs: Sequence[str], holdout: int) -> tuple[list[Path], list[Path]]:
    """The images of ``dirs`` under ``root``, split into training files and the ``holdout`` kept apart."""
    return split_holdout(list_images([root / d for d in dirs]), holdout)


MONITOR_CROP = 128
"""Side of the held-out crops a training run watches (and the tools that score its weights on them)."""


def monitor_crops(held: list[Path], scale: float = 1.0) -> torch.Tensor | None:
    """The fixed held-out batch: one centred MONITOR_CROP crop per held-out image, first
    down-scaled by ``scale`` (a recipe whose patches are all down-scaled watches the same kind)."""
    return center_crops([downscale(load_rgb(f), scale) for f in held], MONITOR_CROP) if held else None


def downscale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (bicubic); unchanged at 1."""
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC, reducing_gap=None))


def center_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    """One centred ``size`` crop per image large enough, for a fixed monitoring batch."""
    crops = []
    for im in images:
        h, w = im.shape[:2]
        if min(h, w) < size:
            continue
        y, x = (h - size) // 2, (w - size) // 2
        crops.append(im[y : y + size, x : x + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
