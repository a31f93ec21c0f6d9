"""What each subcommand does to one image: read, enhance, write.

Every task is the same flow; a task only names its default model and output suffix, and
(at most) a reader: the pre/post step that turns an input file into the model's input
tensor, a picture to write the result like, per-file facts, and a finish step for the output.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import READABLE_SUFFIXES, STDIO, Job
from .imageio import RAW_SUFFIXES

if TYPE_CHECKING:
    import torch

    from .imageio import Picture

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One input, ready for the model."""

    picture: Picture
    """Template for the output: bit depth, grey or colour, alpha, ICC/EXIF."""
    tensor: torch.Tensor | None
    """The model input, (1, C, h, w); None when the reader made the result itself (``done``)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Per-file facts for the result record (e.g. the estimated JPEG quality)."""
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None
    """Turns the model output into the (1, 3, H, W) image to write (e.g. crops padding)."""
    done: torch.Tensor | None = None
    """The (1, 3, H, W) result when no model runs (raw2rgb --engine classic)."""


@dataclass(frozen=True)
class ReadOptions:
    max_pixels: int
    pattern: str | None = None
    """CFA pattern of single-channel mosaics (demosaic); RAW files carry their own."""
    white_balance: str = "camera"
    """raw2rgb: camera, auto or daylight."""
    bits: int = 16
    """raw2rgb: bits per sample of PNG/TIFF outputs."""
    classic: bool = False
    """raw2rgb: LibRaw's own pipeline instead of the network."""
    jpeg_quality: int | None = None
    """deblock: the quality the inputs were compressed at, in place of the estimate."""


Reader = Callable[[Path | bytes, ReadOptions], Prepared]


def read_rgb(source: Path | bytes, options: ReadOptions) -> Prepared:
    """The default reader: the picture's RGB as the model input."""
    import numpy as np
    import torch

    from .imageio import read_image, to_chw

    picture = read_image(source, max_pixels=options.max_pixels)
    return Prepared(picture, torch.from_numpy(np.ascontiguousarray(to_chw(picture)))[None])


def read_jpeg(source: Path | bytes, options: ReadOptions) -> Prepared:
    """Deblocking: the RGB input plus its JPEG quality, as given (``--quality-factor``: files
    whose tables are gone, or to override) or estimated from its quantisation tables."""
    from .jpeg import estimate_quality

    prepared = read_rgb(source, options)
    if options.jpeg_quality is not None:
        prepared.facts["jpeg_quality"] = options.jpeg_quality
        prepared.facts["jpeg_tables"] = "not read (--quality-factor)"
        return prepared
    try:
        estimate = estimate_quality(source)
    except ValueError:
        log.warning("%s: not a JPEG file; removing blocking artefacts anyway", _name(source))
        prepared.facts["jpeg_quality"] = None
    else:
        prepared.facts["jpeg_quality"] = estimate.quality
        prepared.facts["jpeg_tables"] = "ijg" if estimate.exact else "custom"
    return prepared


def read_mosaic(source: Path | bytes, options: ReadOptions) -> Prepared:
    """Demosaicking: a camera RAW file (its own CFA pattern and black/white levels), or a
    single-channel PNG/TIFF mosaic with ``--pattern``; the model sees the RGGB mosaic packed
    to four half-resolution planes and the result is cropped back to the mosaic's size."""
    import dataclasses

    import numpy as np

    from .imageio import Picture, read_image
    from .raw import bayer_from_picture, from_rggb_crop, is_raw_path, pack, read_raw

    if isinstance(source, Path) and is_raw_path(source):
        raw = read_raw(source)
        mosaic, pattern, (height, width) = raw.mosaic, raw.pattern, raw.size
        picture = Picture(rgb=np.zeros((0, 0, 3), np.float32), bit_depth=16, format="RAW")
        facts: dict[str, Any] = {"pattern": pattern, "white_level": raw.white_level, "linear": True}
    else:
        pattern = options.pattern or "RGGB"
        picture = read_image(source, max_pixels=options.max_pixels)
        height, width = picture.rgb.shape[:2]
        mosaic = bayer_from_picture(picture, pattern)
        picture = dataclasses.replace(picture, gray=False, alpha=None)
        facts = {"pattern": pattern}
    return Prepared(picture, pack(mosaic), facts, lambda y: from_rggb_crop(y, pattern, size=(height, width)))


def read_raw_to_rgb(source: Path | bytes, options: ReadOptions) -> Prepared:
    """raw2rgb: the file's Bayer data, white-balanced and packed for the network; after it,
    the file's colour matrix, gamma and tone curve, then its orientation. With the classic
    engine, LibRaw develops the file and no network runs."""
    import numpy as np
    import torch

    from .imageio import ImageReadError, Picture
    from .raw import (
        balanced_to_srgb,
        develop_classic,
        from_rggb_crop,
        orient,
        pack,
        read_raw,
        white_balance_gains,
        white_balance_packed,
    )

    if not isinstance(source, Path):
        raise ImageReadError("RAW files cannot be read from stdin; give the file name")
    picture = Picture(rgb=np.zeros((0, 0, 3), np.float32), bit_depth=options.bits, format="RAW")
    facts: dict[str, Any] = {"white_balance": options.white_balance}
    if options.classic:
        developed = develop_classic(source, options.white_balance).astype(np.float32) / 65535.0
        done = torch.from_numpy(developed).permute(2, 0, 1)[None]
        return Prepared(picture, None, {**facts, "engine": "classic"}, done=done)

    raw = read_raw(source)
    gains = white_balance_gains(raw, options.white_balance)
    packed = white_balance_packed(pack(raw.mosaic), torch.tensor(gains).view(1, 3, 1, 1))
    if raw.camera_to_srgb is None:
        log.warning("%s: the file has no colour matrix; camera RGB is written as sRGB", source)
        ccm = torch.eye(3)
    else:
        ccm = torch.from_numpy(raw.camera_to_srgb).float()

    def finish(linear: torch.Tensor) -> torch.Tensor:
        srgb = balanced_to_srgb(from_rggb_crop(linear, raw.pattern, size=raw.size), ccm[None])
        return orient(srgb, raw.flip)

    facts.update(engine="network", pattern=raw.pattern, wb_gains=[round(g, 4) for g in gains])
    return Prepared(picture, packed, facts, finish)


def _name(source: Path | bytes) -> str:
    return "stdin" if isinstance(source, bytes) else str(source)


@dataclass(frozen=True)
class Task:
    name: str
    default_model: str | None
    """None: no model for this task is built yet."""
    suffix: str
    help: str
    scales: tuple[int, ...] = ()
    """Up-scaling tasks: the factors ``--scale`` offers."""
    reader: Reader = read_rgb
    inputs: frozenset[str] | None = None
    """File suffixes taken from folders (default: the image formats)."""
    patterns: bool = False
    """Offer ``--pattern`` (the CFA layout of single-channel mosaics)."""
    widths: bool = False
    """Offer ``--width`` (slimmable models: force a sub-network instead of the gate's choice)."""
    default_format: str | None = None
    """Output format when --format is not given and the input's own cannot be written."""
    raw_options: bool = False
    """Offer ``--wb``, ``--bits`` and ``--engine`` (raw2rgb)."""
    strength: bool = False
    """Offer ``--strength`` (blend the result with the input; same-size tasks)."""
    quality_factor: bool = False
    """Offer ``--quality-factor`` (deblock: the inputs' JPEG quality instead of the estimate)."""


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "denoise",
            "vdn-hyper",  # best on real camera noise (README); --model mallenet is the AWGN specialist
            "_denoised",
            "Remove noise from photos.\n\n"
            "\b\nExamples:\n"
            "  denoise denoise photo.jpg              # writes photo_denoised.jpg\n"
            "  denoise denoise shots/ -r -o clean/    # a folder tree into clean/\n"
            "  denoise denoise - -o - < in.png > out.png",
            widths=True,
            strength=True,
        ),
        Task(
            "sr",
            "drn",
            "_sr",
            "Upscale images (super-resolution) by --scale; alpha is upscaled with bicubic.\n\n"
            "\b\nExamples:\n"
            "  denoise sr photo.png                # writes photo_sr.png at the largest shipped scale\n"
            "  denoise sr shots/ -o big/ --scale 2 # a folder into big/ (same names)",
            scales=(2, 4),
        ),
        Task(
            "raw2rgb",
            "hyperisp",
            "_rgb",
            "Develop camera RAW files (DNG, CR2, NEF, ARW, RAF, ORF, KDC, ...) to sRGB: 16-bit TIFF by"
            " default. The file's white balance (--wb) and colour matrix are applied; nothing is"
            " brightened automatically. --engine classic uses LibRaw's own pipeline instead.",
            reader=read_raw_to_rgb,
            inputs=RAW_SUFFIXES,
            default_format="tif",
            raw_options=True,
        ),
        Task(
            "demosaic",
            "panet-demosaic",
            "_demosaic",
            "Demosaick Bayer mosaics: single-channel 8/16-bit PNG or TIFF files (layout from --pattern)"
            " or camera RAW files (their own layout, black and white levels). RAW files give the linear"
            " camera RGB scaled to the full 16-bit range: no white balance, colour matrix or gamma"
            " (see raw2rgb for a finished picture).",
            reader=read_mosaic,
            inputs=READABLE_SUFFIXES | RAW_SUFFIXES,
            patterns=True,
        ),
        Task(
            "deblock",
            "panet-deblock",
            "_deblocked",
            "Remove JPEG blocking artefacts. The JPEG quality is estimated from each file's"
            " quantisation tables and reported with --json; without --model, a file goes to the"
            " per-quality model made for its quality if one ships (the paper's approach; `denoise"
            " models` gives their ranges), else to the blind panet-deblock. --quality-factor gives"
            " the quality instead (a PNG saved from a JPEG has no tables to read).",
            reader=read_jpeg,
            quality_factor=True,
        ),
    ]
}


def image_processor(
    enhancer_factory: Callable[[str], Any],
    choose_model: Callable[[Prepared], str],
    reader: Reader,
    options: ReadOptions,
    quality: int | None,
    tile_progress: Callable[[int, int], None] | None = None,
    strength: float = 1.0,
) -> Callable[[Job], dict[str, Any]]:
    """The per-item function for image-to-image tasks.

    ``choose_model`` names the model for each prepared input (a JPEG specialist for its
    quality, say). Each model is created on the first item that needs it, so a dry run, or a
    batch whose outputs all exist, never loads one. ``strength`` below 1 blends the model's
    result with the input (same-size tasks).
    """
    from .imageio import FORMATS, encode_image, from_chw, output_warnings, write_image

    enhancers: dict[str, Any] = {}

    def process(job: Job) -> dict[str, Any]:
        source = sys.stdin.buffer.read() if job.source == STDIO else Path(job.source)
        prepared = reader(source, options)
        picture = prepared.picture
        if prepared.done is not None:
            y, facts = prepared.done, dict(prepared.facts)
        else:
            name = choose_model(prepared)
            if name not in enhancers:
                enhancers[name] = enhancer_factory(name)
            enhancer = enhancers[name]
            y = enhancer(prepared.tensor, progress=tile_progress)
            if strength < 1.0:
                y = prepared.tensor + strength * (y - prepared.tensor)
            if prepared.finish is not None:
                y = prepared.finish(y)
            facts = dict(enhancer.facts, **prepared.facts)
            if enhancer.card.scale > 1:
                facts["scale"] = enhancer.card.scale
        result = from_chw(picture, y[0].numpy())
        if job.target == STDIO:
            fmt = job.fmt or (picture.format.lower() if picture.format.lower() in FORMATS else "png")
            data = encode_image(result, fmt, quality)
            warnings = output_warnings(result, fmt)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            warnings = write_image(result, Path(job.target), job.fmt, quality)
        for warning in warnings:
            log.warning("%s: %s", "stdin" if job.source == STDIO else job.source, warning)
        height, width = result.rgb.shape[:2]
        return dict(facts, size=[width, height], bit_depth=picture.bit_depth)

    return process
