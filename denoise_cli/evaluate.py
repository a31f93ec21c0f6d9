"""``denoise eval``: score a model (and a classical baseline) on clean or paired images.

Synthetic noise follows the usual protocol: AWGN with a fixed seed per image and sigma,
not clipped; outputs are quantised to 8 bits; PSNR/SSIM on RGB. Paired real-noise folders
(``noisy/`` + ``gt/``, or PolyU's ``*_real`` / ``*_mean``) are scored as they are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import psnr, ssim
from .training.data import list_images, load_rgb

BASELINE_TIMEOUT_S = 600


@dataclass
class Score:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, out: torch.Tensor, ref: torch.Tensor) -> None:
        self.psnr.append(psnr(out, ref))
        self.ssim.append(ssim(out, ref))

    def mean(self) -> tuple[float, float]:
        return float(np.mean(self.psnr)) if self.psnr else float("nan"), float(
            np.mean(self.ssim)
        ) if self.ssim else float("nan")


def quantize(t: torch.Tensor) -> torch.Tensor:
    return (t.clamp(0, 1) * 255.0).round() / 255.0


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255.0


def noise_seed(name: str, sigma: float) -> int:
    """A fixed seed per (image, sigma), independent of the order images are visited in."""
    return zlib.crc32(f"{name}:{sigma:g}".encode())


def add_noise(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return clean + torch.randn(clean.shape, generator=g) * (sigma / 255.0)


def center_crop(t: torch.Tensor, size: int | None) -> torch.Tensor:
    if not size:
        return t
    h, w = t.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return t[..., top : top + size, left : left + size]


def pairs(folder: Path) -> Iterator[tuple[str, Path, Path]]:
    """(name, noisy, clean) for a real-noise folder."""
    if (folder / "noisy").is_dir():
        for noisy in list_images([folder / "noisy"]):
            clean = folder / "gt" / noisy.name.replace("NOISY", "GT").replace("_noise", "_gt")
            if clean.exists():
                yield noisy.name, noisy, clean
        return
    for noisy in sorted(folder.glob("*_real.*")):
        clean = noisy.with_name(noisy.name.replace("_real", "_mean"))
        if clean.exists():
            yield noisy.name, noisy, clean


def cache_dir() -> Path:
    """Where deterministic baseline outputs are kept (``$DENOISE_CACHE`` or ~/.cache/denoise)."""
    return Path(os.environ.get("DENOISE_CACHE") or Path.home() / ".cache" / "denoise")


def cbm3d(noisy: np.ndarray, sigma: float, key: str | None = None) -> np.ndarray | None:
    """CBM3D (``bm3d`` package) in a child process: its native code can crash the process.

    With ``key`` (naming the image, noise level and seed) the result is cached, since the
    same noisy input always gives the same output and CBM3D takes seconds per image.
    """
    import pickle  # only our own arrays cross the pipe

    cached = cache_dir() / "cbm3d" / f"{key}.npy" if key else None
    if cached is not None and cached.exists():
        return np.load(cached)

    code = (
        "import sys,pickle,numpy as np,bm3d;"
        "a,s=pickle.load(sys.stdin.buffer);"
        "sys.stdout.buffer.write(pickle.dumps(np.asarray(bm3d.bm3d_rgb(a,s),dtype=np.float32)))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=pickle.dumps((noisy.astype(np.float32), sigma / 255.0)),
            capture_output=True,
            timeout=BASELINE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    out = pickle.loads(proc.stdout)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, out)
    return out


def estimate_sigma(noisy: np.ndarray) -> float:
    """Noise sigma (8-bit units) from the finest-scale diagonal wavelet detail (MAD rule)."""
    gray = noisy.mean(axis=2)
    h, w = gray.shape[0] // 2 * 2, gray.shape[1] // 2 * 2
    g = gray[:h, :w]
    hh = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(hh)) / 0.6745 * 255.0)


@dataclass
class EvalRow:
    setting: str
    method: str
    psnr: float
    ssim: float
    images: int
    seconds: float
    note: str = ""


def evaluate_model(
    run: Callable[[torch.Tensor], torch.Tensor],
    method: str,
    data: Path,
    sigmas: list[float],
    crop: int | None = None,
    limit: int | None = None,
    baseline: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[EvalRow]:
    """Score ``run`` (noisy (1,3,H,W) -> clean) on ``data``; sigma rows, or one row for pairs."""
    rows: list[EvalRow] = []
    paired = list(pairs(data))
    if paired:
        items = paired[:limit] if limit else paired
        settings: list[float | None] = [None]
    else:
        clean_files = list_images([data])
        items = [(f.name, None, f) for f in (clean_files[:limit] if limit else clean_files)]
        settings = list(sigmas)
    for sigma in settings:
        ours, base, noisy_score = Score(), Score(), Score()
        t_ours = t_base = 0.0
        for name, noisy_path, clean_path in items:
            clean = center_crop(to_tensor(load_rgb(clean_path)), crop)
            if sigma is None:
                assert noisy_path is not None
                noisy = center_crop(to_tensor(load_rgb(noisy_path)), crop)
            else:
                noisy = add_noise(clean, sigma, noise_seed(name, sigma))
            noisy_score.add(quantize(noisy), clean)
            start = time.perf_counter()
            ours.add(quantize(run(noisy)), clean)
            t_ours += time.perf_counter() - start
            if baseline:
                arr = noisy[0].permute(1, 2, 0).numpy()
                level = sigma if sigma is not None else estimate_sigma(arr)
                start = time.perf_counter()
                key = f"{data.name}-{name}-{'real' if sigma is None else f'{sigma:g}'}-{crop or 0}"
                out = cbm3d(arr, level, key)
                t_base += time.perf_counter() - start
                if out is None:
                    base.failed.append(name)
                else:
                    base.add(quantize(torch.from_numpy(out).permute(2, 0, 1)[None]), clean)
            if progress:
                progress(name)
        setting = data.name if sigma is None else f"{data.name} sigma {sigma:g}"
        rows.append(EvalRow(setting, "input (noisy)", *noisy_score.mean(), len(noisy_score.psnr), 0.0))
        rows.append(EvalRow(setting, method, *ours.mean(), len(ours.psnr), t_ours))
        if baseline:
            note = f"crashed on {', '.join(base.failed)}" if base.failed else ""
            if sigma is None:
                note = ("sigma estimated per image; " + note).strip("; ")
            rows.append(EvalRow(setting, "CBM3D", *base.mean(), len(base.psnr), t_base, note))
    return rows


def save_metrics(enhancer: Any, rows: list[EvalRow], precision: str) -> None:
    """Merge measured rows into the model's JSON card (per precision), with size facts."""
    from . import weights
    from .flops import macs_per_megapixel

    path = enhancer.weights_path or enhancer.card.weights_path
    card = weights.read_card(path)
    metrics = card.setdefault("metrics", {})
    table = metrics.setdefault(precision, {})
    for r in rows:
        key = f"{r.setting} | {r.method}"
        table[key] = {"psnr": round(r.psnr, 3), "ssim": round(r.ssim, 4), "images": r.images}
    if "fp32" in metrics and "bf16" in metrics:
        drops = [
            metrics["fp32"][k]["psnr"] - v["psnr"]
            for k, v in metrics["bf16"].items()
            if k in metrics["fp32"] and not k.endswith("input (noisy)")
        ]
        if drops:
            metrics["bf16_psnr_drop_db"] = round(max(drops), 3)
    ours = {k: v for k, v in metrics.get("fp32", {}).items() if k.endswith(f"| {enhancer.name}")}
    headline = [f"{k.split(' | ')[0].replace('sigma ', 's')}: {v['psnr']:.2f}" for k, v in ours.items()]
    metrics["summary"] = ", ".join(headline[:4])
    card["params"] = sum(p.numel() for p in enhancer.model.parameters())
    card["gmacs_per_mp"] = round(macs_per_megapixel(enhancer.model.float().to("cpu")) / 1e9, 2)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
