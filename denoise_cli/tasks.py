"""What each subcommand does to one image: read, enhance, write.

Every task is the same flow; a task only names its default model and output suffix, and
(at most) a small pre/post step around the Enhancer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batch import STDIO, Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    name: str
    default_model: str | None
    """None: no model for this task is built yet."""
    suffix: str
    help: str
    scales: tuple[int, ...] = ()
    """Up-scaling tasks: the factors ``--scale`` offers (the last is the default)."""


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "denoise",
            "mallenet",
            "_denoised",
            "Remove noise from photos.\n\n"
            "\b\nExamples:\n"
            "  denoise denoise photo.jpg              # writes photo_denoised.jpg\n"
            "  denoise denoise shots/ -r -o clean/    # a folder tree into clean/\n"
            "  denoise denoise - -o - < in.png > out.png",
        ),
        Task(
            "sr",
            None,
            "_sr",
            "Upscale images (super-resolution) by --scale; alpha is upscaled with bicubic.",
            scales=(2, 4),
        ),
        Task("raw2rgb", None, "_rgb", "Convert camera RAW files to RGB with a learned pipeline."),
        Task("demosaic", None, "_demosaic", "Demosaick Bayer mosaics."),
        Task("deblock", None, "_deblocked", "Remove JPEG blocking artefacts."),
    ]
}


def image_processor(
    enhancer_factory: Callable[[], Any],
    quality: int | None,
    max_pixels: int,
    tile_progress: Callable[[int, int], None] | None = None,
) -> Callable[[Job], dict[str, Any]]:
    """The per-item function for image-to-image tasks.

    The model is created on the first item that needs it, so a dry run, or a batch whose
    outputs all exist, never loads it.
    """
    import numpy as np
    import torch

    from .imageio import FORMATS, encode_image, from_chw, output_warnings, read_image, to_chw, write_image

    state: dict[str, Any] = {}

    def process(job: Job) -> dict[str, Any]:
        if "enhancer" not in state:
            state["enhancer"] = enhancer_factory()
        enhancer = state["enhancer"]
        source = sys.stdin.buffer.read() if job.source == STDIO else Path(job.source)
        picture = read_image(source, max_pixels=max_pixels)
        x = torch.from_numpy(np.ascontiguousarray(to_chw(picture)))[None]
        y = enhancer(x, progress=tile_progress)
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
        return dict(enhancer.facts, scale=enhancer.card.scale, size=[width, height], bit_depth=picture.bit_depth)

    return process
