"""Synthetic against real camera noise, side by side.

``python -m denoise_cli.training.noisestats`` prints a table that describes the residual
(noisy - clean, in 8-bit units) of each real/ set and of the training synthesis
(``realnoise.sensor_noise`` with Malvar demosaicking, no JPEG) at a low, a middle and a high shot level, and at the
middle level with the camera noise reduction at the middle of its ranges. It can also write a PNG of crops with their
residuals beside them:

- std: the residual's standard deviation, overall and where the clean image is dark / mid /
  bright (thirds of [0, 1]): shot noise grows with the signal, read noise does not;
- neighbour corr.: correlation of horizontally adjacent residuals (demosaicking and JPEG
  spread noise over neighbours; white noise gives 0);
- colour corr.: mean correlation between the residual's R, G and B (the colour matrix and
  demosaicking mix channels).

This only describes the data. The real/ pairs are evaluation data: nothing here feeds
training or chooses its ranges. The PNG holds crops of real/, whose licence forbids
redistribution, so write it under runs/ and do not commit it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..evaluate import center_crop, load, pairs
from .data import center_crops, list_images, load_rgb
from .realnoise import NR_CHROMA_SIGMA, NR_LUMA_SIGMA, SHOT_RANGE, sensor_noise
from .recipes import SHARED_DATA
from .unprocess import random_camera

REAL_SETS = ("SIDD_samples", "Nam_CBDNet", "PolyU_crops")
SHOT_LEVELS = {"low": SHOT_RANGE[0], "middle": (SHOT_RANGE[0] * SHOT_RANGE[1]) ** 0.5, "high": SHOT_RANGE[1]}
"""The synthesis's shot-noise variances shown: both ends of its range and their geometric mean."""
THIRDS = (0.0, 1 / 3, 2 / 3, 1.0 + 1e-6)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / ((a.square().sum() * b.square().sum()).sqrt() + 1e-12))


def residual_stats(noisy: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """Statistics of ``noisy - clean`` (8-bit units) for one (1, 3, H, W) pair in [0, 1]."""
    residual = (noisy - clean)[0].double() * 255.0
    brightness = clean[0].double().mean(0)
    stats = {"std": float(residual.std())}
    for name, low, high in zip(("dark", "mid", "bright"), THIRDS, THIRDS[1:], strict=False):
        mask = (brightness >= low) & (brightness < high)
        stats[name] = float(residual[:, mask].std()) if int(mask.sum()) > 100 else float("nan")
    stats["neighbour"] = correlation(residual[..., :-1], residual[..., 1:])
    stats["colour"] = float(np.mean([correlation(residual[i], residual[j]) for i, j in ((0, 1), (1, 2), (0, 2))]))
    return stats


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}


def real_pairs(folder: Path, count: int, crop: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Centre crops of the first ``count`` (noisy, clean) pairs of a real/ folder."""
    found = []
    for _, noisy, clean in list(pairs(folder))[:count]:
        found.append((center_crop(load(noisy), crop), center_crop(load(clean), crop)))
    return found


def training_crops(data: Path, count: int, crop: int) -> torch.Tensor:
    """Centre crops of ``count`` training photos spread over train/ (photos smaller than ``crop`` are skipped)."""
    files = list_images([data / "train" / "bsds400", data / "train" / "t91"])
    chosen = files[:: max(1, len(files) // count)][:count]
    return center_crops([load_rgb(f) for f in chosen], crop)


def synthetic_pairs(
    clean: torch.Tensor, shot: float, reduction: tuple[float, float] | None = None, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The synthesis at one shot level on a batch of clean crops, with the camera noise
    reduction at (chroma, luma) widths if given."""
    generator = torch.Generator().manual_seed(seed)
    count = len(clean)
    camera = random_camera(generator, count, (shot, shot))
    widths = None if reduction is None else tuple(torch.full((count,), w) for w in reduction)
    noisy, target = sensor_noise(clean, camera, torch.ones(count, dtype=torch.bool), generator, widths)
    return [(noisy[i : i + 1], target[i : i + 1]) for i in range(count)]


def compare(data: Path, count: int, crop: int) -> dict[str, tuple[dict[str, float], list]]:
    """Row label -> (mean statistics, pairs) for the real sets and the synthetic shot levels."""
    rows: dict[str, tuple[dict[str, float], list]] = {}
    for name in REAL_SETS:
        found = real_pairs(data / "real" / name, count, crop)
        if found:
            rows[f"real {name}"] = (_mean([residual_stats(n, c) for n, c in found]), found)
    clean = training_crops(data, count, crop)
    for level, shot in SHOT_LEVELS.items():
        found = synthetic_pairs(clean, shot)
        rows[f"synthetic, {level} shot ({shot:.1e})"] = (_mean([residual_stats(n, c) for n, c in found]), found)
    reduction = (sum(NR_CHROMA_SIGMA) / 2, sum(NR_LUMA_SIGMA) / 2)
    found = synthetic_pairs(clean, SHOT_LEVELS["middle"], reduction)
    label = f"synthetic, middle shot, camera NR (chroma {reduction[0]:g} px, luma {reduction[1]:g} px)"
    rows[label] = (_mean([residual_stats(n, c) for n, c in found]), found)
    return rows


def table(rows: dict[str, tuple[dict[str, float], list]]) -> str:
    lines = [
        "| noise | std | std dark / mid / bright | neighbour corr. | colour corr. |",
        "|---|---|---|---|---|",
    ]
    for label, (s, _) in rows.items():
        thirds = " / ".join("-" if np.isnan(s[k]) else f"{s[k]:.1f}" for k in ("dark", "mid", "bright"))
        lines.append(f"| {label} | {s['std']:.1f} | {thirds} | {s['neighbour']:.2f} | {s['colour']:.2f} |")
    return "\n".join(lines)


def _to_image(t: torch.Tensor) -> Image.Image:
    return Image.fromarray((t[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def figure(rows: dict[str, tuple[dict[str, float], list]], path: Path, side: int = 128, gain: float = 4.0) -> None:
    """One row per noise source: noisy crop, then its residual x ``gain`` around mid-grey."""
    label_height = 14
    sheet = Image.new("RGB", (2 * side, len(rows) * (side + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, (_, found)) in enumerate(rows.items()):
        noisy, clean = (center_crop(t, side) for t in found[0])
        top = i * (side + label_height)
        draw.text((2, top), label, fill="black")
        sheet.paste(_to_image(noisy), (0, top + label_height))
        sheet.paste(_to_image((noisy - clean) * gain + 0.5), (side, top + label_height))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m denoise_cli.training.noisestats", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data root (train/ and real/)")
    parser.add_argument("--images", type=int, default=8, help="pairs per row")
    parser.add_argument("--crop", type=int, default=256, help="centre crop side")
    parser.add_argument("--figure", type=Path, default=None, help="also write crops side by side to this PNG")
    args = parser.parse_args(argv)
    rows = compare(args.data, args.images, args.crop)
    print(table(rows))
    if args.figure:
        figure(rows, args.figure)
        print(f"crops written to {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
