"""``denoise eval``: score a model (and a classical baseline) on clean or paired images.

Synthetic noise follows the usual protocol: AWGN with a fixed seed per image and sigma,
not clipped; outputs are quantised to 8 bits; PSNR/SSIM on RGB. Paired real-noise folders
(``noisy/`` + ``gt/``, or PolyU's ``*_real`` / ``*_mean``) are scored as they are.

Demosaicking mosaics each clean image with RGGB and scores RGB with a 4-pixel border
ignored, beside bilinear and Malvar-He-Cutler. Deblocking encodes each image with libjpeg
(Pillow) at each quality, grey images as one-channel JPEGs, and scores RGB (grey images on
their one channel) beside the JPEG input.

RAW-to-RGB unprocesses each image into a synthetic camera RAW (``training.unprocess``: a
random camera and sensor noise, fixed per file name) and scores the developed sRGB against
the camera pipeline's rendering of the clean image: RGB, 4-pixel border ignored, beside
Malvar-He-Cutler with the known camera and LibRaw developing the same mosaic as a DNG.

Super-resolution follows the benchmark protocol of the SR papers: the HR image is cropped
to a multiple of the scale, shrunk with MATLAB-style bicubic and stored as 8 bits; PSNR/SSIM
on the Y channel with ``scale`` border pixels shaved; bicubic up-scaling is the baseline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .imageio import read_image
from .metrics import psnr, ssim
from .training.data import list_images
from .training.degrade import imresize

if TYPE_CHECKING:
    from .training.unprocess import CameraParams

BASELINE_TIMEOUT_S = 600


@dataclass
class Score:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    shave: int = 0
    y_only: bool = False

    def add(self, out: torch.Tensor, ref: torch.Tensor) -> None:
        self.psnr.append(psnr(out, ref, self.shave, self.y_only))
        self.ssim.append(ssim(out, ref, self.shave, self.y_only))

    def mean(self) -> tuple[float, float]:
        return float(np.mean(self.psnr)) if self.psnr else float("nan"), float(
            np.mean(self.ssim)
        ) if self.ssim else float("nan")


def quantize(t: torch.Tensor) -> torch.Tensor:
    return (t.clamp(0, 1) * 255.0).round() / 255.0


def load(path: Path) -> torch.Tensor:
    """An image file as (1, 3, H, W) float in [0, 1] (orientation applied, any bit depth)."""
    return torch.from_numpy(read_image(path).rgb.copy()).permute(2, 0, 1)[None]


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


@dataclass
class EvalRow:
    setting: str
    method: str
    psnr: float
    ssim: float
    images: int
    seconds: float
    note: str = ""


REAL_NOISE_SIGMAS = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0)
"""CBM3D on real noise runs at each of these and reports the best over the set (an oracle)."""
MIXED_SIGMAS = (5.0, 15.0, 25.0, 50.0)
"""The ``mixed`` setting gives each image one of these levels, fixed by its name."""


def sigma_for(name: str, sigma: float | str) -> float:
    return MIXED_SIGMAS[noise_seed(name, 0) % len(MIXED_SIGMAS)] if sigma == "mixed" else float(sigma)


def evaluate_model(
    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    data: Path,
    sigmas: list[float | str],
    crop: int | None = None,
    limit: int | None = None,
    baseline: bool = False,
    jobs: int = 1,
    baseline_sigmas: tuple[float, ...] = (),
) -> list[EvalRow]:
    """Score each method (noisy (1,3,H,W) -> clean) on ``data``; sigma rows, or one row for pairs.

    A sigma of ``"mixed"`` gives each image a level from MIXED_SIGMAS. A method whose
    ``facts`` report a ``width`` (DDS-Net) gets its mean width in the row's note. The CBM3D
    baseline sees exactly the same noisy inputs; ``jobs`` runs that many CBM3D processes at
    once (each is single-threaded). On noisy/clean pairs it is run at each of ``baseline_sigmas``
    (default REAL_NOISE_SIGMAS) and the best single sigma over the set is reported.
    """
    rows: list[EvalRow] = []
    paired = list(pairs(data))
    if paired:
        items = paired[:limit] if limit else paired
        settings: list[float | str | None] = [None]
    else:
        items = [(f.name, None, f) for f in first_images(data, limit)]
        settings = list(sigmas)
    for sigma in settings:
        cases = []
        for name, noisy_path, clean_path in items:
            clean = center_crop(load(clean_path), crop)
            if noisy_path is not None:
                noisy = center_crop(load(noisy_path), crop)
            else:
                assert sigma is not None
                level = sigma_for(name, sigma)
                noisy = add_noise(clean, level, noise_seed(name, level))
            cases.append((name, clean, noisy))
        if sigma is None:
            setting = data.name
        elif sigma == "mixed":
            setting = f"{data.name} sigma mixed"
        else:
            setting = f"{data.name} sigma {float(sigma):g}"

        noisy_score = Score()
        for _, clean, noisy in cases:
            noisy_score.add(quantize(noisy), clean)
        rows.append(EvalRow(setting, "input (noisy)", *noisy_score.mean(), len(noisy_score.psnr), 0.0))
        for method, run in methods.items():
            ours, widths = Score(), []
            start = time.perf_counter()
            for _, clean, noisy in cases:
                ours.add(quantize(run(noisy)), clean)
                width = getattr(run, "facts", {}).get("width")
                if width is not None:
                    widths.append(width)
            notes = [f"mean width {np.mean(widths):.3f}"] if widths else []
            if sigma is None:  # real noise: a denoiser must not make any photo worse
                gains = [o - n for o, n in zip(ours.psnr, noisy_score.psnr, strict=True)]
                below = sum(g < 0 for g in gains)
                notes.append(f"worst image {min(gains):+.2f} dB over the input, {below} of {len(gains)} below it")
            row = EvalRow(setting, method, *ours.mean(), len(ours.psnr), time.perf_counter() - start, "; ".join(notes))
            rows.append(row)
        if baseline:
            rows.append(_baseline_row(cases, setting, data.name, sigma, crop, jobs, baseline_sigmas))
    return rows


def evaluate_sr(
    run: Callable[[torch.Tensor], torch.Tensor],
    method: str,
    data: Path,
    scale: int,
    crop: int | None = None,
    limit: int | None = None,
) -> list[EvalRow]:
    """Score ``run`` (LR (1,3,h,w) -> HR) on the HR images in ``data``, beside bicubic."""
    files = first_images(data, limit)
    setting = f"{data.name} x{scale}"
    bicubic, ours = Score(shave=scale, y_only=True), Score(shave=scale, y_only=True)
    seconds = 0.0
    for path in files:
        hr = center_crop(load(path), crop)
        h, w = hr.shape[-2:]
        hr = hr[..., : h - h % scale, : w - w % scale]
        lr = quantize(imresize(hr, 1.0 / scale))
        bicubic.add(quantize(imresize(lr, float(scale))), hr)
        start = time.perf_counter()
        ours.add(quantize(run(lr)), hr)
        seconds += time.perf_counter() - start
    return [
        EvalRow(setting, "bicubic", *bicubic.mean(), len(bicubic.psnr), 0.0),
        EvalRow(setting, method, *ours.mean(), len(ours.psnr), seconds),
    ]


def first_images(data: Path, limit: int | None) -> list[Path]:
    """The images of ``data`` in name order, only the first ``limit`` if given (``--limit``)."""
    files = list_images([data])
    return files[:limit] if limit else files


def method_rows(
    setting: str, scores: dict[str, Score], method: str, seconds: float, notes: dict[str, str] | None = None
) -> list[EvalRow]:
    """One row per scored method; only ``method`` (the model) is charged the measured ``seconds``."""
    return [
        EvalRow(
            setting,
            name,
            *score.mean(),
            len(score.psnr),
            seconds if name == method else 0.0,
            (notes or {}).get(name, ""),
        )
        for name, score in scores.items()
    ]


DEMOSAIC_BORDER = 4  # pixels ignored at each side (the PANet / IRCNN protocol)


def evaluate_demosaic(
    run: Callable[[torch.Tensor], torch.Tensor],
    method: str,
    data: Path,
    crop: int | None = None,
    limit: int | None = None,
) -> list[EvalRow]:
    """Score ``run`` (packed RGGB (1,4,h,w) -> RGB (1,3,2h,2w)) beside the classical baselines."""
    from .raw import demosaic_bilinear, demosaic_malvar, mosaic, pack

    files = first_images(data, limit)
    scores = {name: Score(shave=DEMOSAIC_BORDER) for name in ("bilinear", "Malvar-He-Cutler", method)}
    seconds = 0.0
    for path in files:
        clean = center_crop(load(path), crop)
        h, w = clean.shape[-2:]
        clean = clean[..., : h - h % 2, : w - w % 2]
        bayer = mosaic(clean)
        scores["bilinear"].add(quantize(demosaic_bilinear(bayer)), clean)
        scores["Malvar-He-Cutler"].add(quantize(demosaic_malvar(bayer)), clean)
        start = time.perf_counter()
        scores[method].add(quantize(run(pack(bayer))), clean)
        seconds += time.perf_counter() - start
    return method_rows(data.name, scores, method, seconds)


RAW_BLACK, RAW_WHITE = 2048, 16383
"""Levels of the DNGs LibRaw develops: a 14-bit sensor with room below black for the noise."""


def _crop_raw_pair(packed: torch.Tensor, target: torch.Tensor, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop a packed mosaic (N, 4, h, w) and its full-resolution target to ``size`` (rounded
    down to even) at the same place, keeping the crop on the RGGB grid."""
    if not size:
        return packed, target
    half = max(1, size // 2)
    h, w = packed.shape[-2:]
    top, left = max(0, (h - half) // 2), max(0, (w - half) // 2)
    packed = packed[..., top : top + half, left : left + half]
    return packed, target[..., 2 * top : 2 * (top + half), 2 * left : 2 * (left + half)]


def _libraw_develop(folder: Path, name: str, noisy: torch.Tensor, params: CameraParams) -> dict[str, torch.Tensor]:
    """LibRaw's rendering of a synthetic RAW, through a DNG with the camera's white balance and colour matrix.

    Returns ``{"classic": as raw2rgb --engine classic, "linear": without LibRaw's tone curve,
    then our gamma and tone curve}``. The DNG holds the mosaic times the camera's digital gain,
    which LibRaw has no step for.
    """
    from .dng import color_matrix_for, mosaic_codes, write_dng
    from .raw import develop_classic, gamma_compress, smoothstep, unpack

    exposed = unpack(noisy)[0, 0].double().numpy() * float(params.digital_gain[0])
    neutral = (1.0 / float(params.red_gain[0]), 1.0, 1.0 / float(params.blue_gain[0]))
    matrix = color_matrix_for(params.cam_to_srgb[0].double().numpy())
    codes = mosaic_codes(exposed, RAW_BLACK, RAW_WHITE)
    path = write_dng(folder / f"{Path(name).stem}.dng", codes, "RGGB", RAW_BLACK, RAW_WHITE, neutral, matrix)
    out = {}
    for key, linear in (("classic", False), ("linear", True)):
        developed = develop_classic(path, "camera", linear=linear).astype(np.float32) / 65535.0
        out[key] = torch.from_numpy(developed).permute(2, 0, 1)[None]
    out["linear"] = smoothstep(gamma_compress(out["linear"]))
    return out


RAW2RGB_MALVAR = "Malvar-He-Cutler + known camera"
RAW2RGB_LIBRAW = "LibRaw (raw2rgb --engine classic)"
RAW2RGB_LIBRAW_LINEAR = "LibRaw linear + same tone curve"


def evaluate_raw2rgb(
    run: Callable[[torch.Tensor], torch.Tensor],
    method: str,
    data: Path,
    crop: int | None = None,
    limit: int | None = None,
) -> list[EvalRow]:
    """Score ``run`` (white-balanced packed RGGB (1,4,h,w) -> white-balanced linear RGB (1,3,2h,2w))
    on synthetic RAW made from the images in ``data``, beside two classical pipelines.

    The model sees what training fed it (``unprocess.synthetic_raw``): the noisy mosaic times the
    camera's white-balance and digital gains; its output goes through the same colour matrix, gamma
    and tone curve as the target (``raw.balanced_to_srgb``). Malvar-He-Cutler demosaicks that same
    input and is developed the same way (no denoising). LibRaw develops the mosaic written as a DNG
    with the camera's as-shot white balance and colour matrix, as ``raw2rgb --engine classic``
    does, and once more with linear output and our tone curve.
    """
    import tempfile

    from .raw import balanced_to_srgb, demosaic_malvar, unpack, white_balance_packed
    from .training.unprocess import synthetic_test_set

    files = first_images(data, limit)
    names = (RAW2RGB_MALVAR, RAW2RGB_LIBRAW, RAW2RGB_LIBRAW_LINEAR, method)
    scores = {name: Score(shave=DEMOSAIC_BORDER) for name in names}
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="denoise-eval-") as folder:
        for path, noisy_full, target_full, params in synthetic_test_set(files):
            noisy, target = _crop_raw_pair(noisy_full, target_full, crop)
            balanced = white_balance_packed(noisy, params.gains())
            ccm = params.cam_to_srgb
            scores[RAW2RGB_MALVAR].add(quantize(balanced_to_srgb(demosaic_malvar(unpack(balanced)), ccm)), target)
            libraw = _libraw_develop(Path(folder), path.name, noisy, params)
            scores[RAW2RGB_LIBRAW].add(quantize(libraw["classic"]), target)
            scores[RAW2RGB_LIBRAW_LINEAR].add(quantize(libraw["linear"]), target)
            start = time.perf_counter()
            out = run(balanced)
            seconds += time.perf_counter() - start
            scores[method].add(quantize(balanced_to_srgb(out, ccm)), target)
    dng = "DNG of the mosaic times the digital gain, as-shot white balance and colour matrix"
    notes = {
        RAW2RGB_MALVAR: "no denoising; the camera's gains and colour matrix, then gamma 1/2.2 and tone curve",
        RAW2RGB_LIBRAW: f"{dng}; LibRaw's tone is BT.709 gamma, no S-curve: not the target's tone, not comparable",
        RAW2RGB_LIBRAW_LINEAR: f"{dng}; LibRaw AHD and colour matrix, linear output, then gamma 1/2.2 and tone curve",
        method: "white-balanced noisy mosaic in; colour matrix, gamma 1/2.2 and tone curve after",
    }
    return method_rows(f"{data.name} synthetic RAW", scores, method, seconds, notes)


def evaluate_deblock(
    run: Callable[[torch.Tensor], torch.Tensor],
    method: str,
    data: Path,
    qualities: list[int],
    crop: int | None = None,
    limit: int | None = None,
) -> list[EvalRow]:
    """Score ``run`` (JPEG-decoded (1,3,H,W) -> clean) at each JPEG quality, beside the JPEG input."""
    from .jpeg import jpeg_roundtrip

    files = first_images(data, limit)
    images = [center_crop(load(path), crop) for path in files]
    rows = []
    for quality in qualities:
        jpeg, ours = Score(), Score()
        seconds = 0.0
        for clean in images:
            gray = bool((clean[:, 0] == clean[:, 1]).all() and (clean[:, 0] == clean[:, 2]).all())
            compressed = jpeg_roundtrip(clean, [quality], gray=gray)
            ref = clean[:, :1] if gray else clean
            jpeg.add(compressed[:, :1] if gray else compressed, ref)
            start = time.perf_counter()
            out = run(compressed)
            seconds += time.perf_counter() - start
            ours.add(quantize(out.mean(dim=1, keepdim=True) if gray else out), ref)
        setting = f"{data.name} q{quality}"
        rows.append(EvalRow(setting, "input (JPEG)", *jpeg.mean(), len(jpeg.psnr), 0.0))
        rows.append(EvalRow(setting, method, *ours.mean(), len(ours.psnr), seconds))
    return rows


def _baseline_row(
    cases: list[tuple[str, torch.Tensor, torch.Tensor]],
    setting: str,
    data_name: str,
    sigma: float | str | None,
    crop: int | None,
    jobs: int,
    real_sigmas: tuple[float, ...] = (),
) -> EvalRow:
    from concurrent.futures import ThreadPoolExecutor

    def one(case: tuple[str, torch.Tensor, torch.Tensor], level: float) -> np.ndarray | None:
        name, _, noisy = case
        key = f"{data_name}-{name}-{'real-' if sigma is None else ''}{level:g}-{crop or 0}"
        return cbm3d(noisy[0].permute(1, 2, 0).numpy(), level, key)

    def score_at(levels: list[float]) -> Score:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            outputs = list(pool.map(one, cases, levels))
        score = Score()
        for (name, clean, _), out in zip(cases, outputs, strict=True):
            if out is None:
                score.failed.append(name)
            else:
                score.add(quantize(torch.from_numpy(out).permute(2, 0, 1)[None]), clean)
        return score

    start = time.perf_counter()
    notes = []
    if sigma is None:  # real noise: the oracle single sigma for the whole set
        tried = {level: score_at([level] * len(cases)) for level in real_sigmas or REAL_NOISE_SIGMAS}
        best = max(tried, key=lambda level: tried[level].mean()[0])
        score = tried[best]
        notes.append(f"best single sigma over the set: {best:g} (of {', '.join(f'{v:g}' for v in tried)})")
    else:
        score = score_at([sigma_for(name, sigma) for name, _, _ in cases])
    if score.failed:
        notes.append(f"CBM3D crashed on {', '.join(score.failed)}")
    return EvalRow(setting, "CBM3D", *score.mean(), len(score.psnr), time.perf_counter() - start, "; ".join(notes))


def save_metrics(enhancer: Any, rows: list[EvalRow], precision: str) -> None:
    """Merge measured rows into the model's JSON card (per precision), with size facts.

    Only whole-folder runs belong in the card: callers refuse ``--crop`` / ``--limit``.
    """
    from . import registry, weights
    from .flops import size_facts

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
    mine = (f"| {enhancer.name}", f"| {enhancer.name} (gate)")
    ours = {k: v for k, v in metrics.get("fp32", {}).items() if k.endswith(mine)}
    headline = [f"{k.split(' | ')[0].replace('sigma ', 's')}: {v['psnr']:.2f}" for k, v in ours.items()]
    metrics["summary"] = ", ".join(headline[:4])
    fresh = registry.build_from_card(enhancer.name, card).eval()
    card.update(size_facts(fresh, enhancer.card.max_tile))
    weights.write_card(path, card)
