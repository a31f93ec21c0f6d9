"""The shipped models, listed explicitly; architectures are imported only when used.

A :class:`ModelCard` says what a model does and how to run it; its JSON card beside the
weights adds the architecture arguments, the recipe, the training steps and the measured
quality. ``load(name)`` returns the network in eval mode with its weights.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from . import weights

SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
INSTALLED_WEIGHTS = Path(sys.prefix) / "share" / "denoise" / "weights"


def weights_dir() -> Path:
    """``$DENOISE_WEIGHTS_DIR`` if set; else the checkout's weights/ (editable install), else
    the copy a regular install puts under ``<prefix>/share/denoise/weights``."""
    if os.environ.get("DENOISE_WEIGHTS_DIR"):
        return Path(os.environ["DENOISE_WEIGHTS_DIR"])
    return SHIPPED_WEIGHTS if SHIPPED_WEIGHTS.is_dir() or not INSTALLED_WEIGHTS.is_dir() else INSTALLED_WEIGHTS


ARCHITECTURES: dict[str, str] = {
    "mallenet": "denoise_cli.models.mallenet:MalleNet",
    "drn": "denoise_cli.models.drn:DRN",
    "drn-dual": "denoise_cli.models.drn:DualNet",  # training only: the dual regression companion
    "drc-companion": "denoise_cli.training.drc:DRCCompanion",  # training only: duals + frozen teacher
    "panet": "denoise_cli.models.panet:PANet",
    "ddsnet": "denoise_cli.models.ddsnet:DDSNet",
    "pa-edsr": "denoise_cli.models.edsr:PAEDSR",
    "hyperisp": "denoise_cli.models.hyperisp:RawToRGB",
    "vdn": "denoise_cli.models.vdn:VDN",
}


@dataclass(frozen=True)
class ModelCard:
    name: str
    """Name users pass to ``--model``; also the weights file stem."""
    task: str
    """Subcommand that runs it: denoise, sr, raw2rgb, demosaic or deblock."""
    arch: str
    """Key in ARCHITECTURES."""
    summary: str
    """One line for ``denoise models``."""
    paper: str
    scale: int = 1
    """Output size / input size."""
    overlap: int = 32
    """Tile overlap in input pixels: exact tiling for nets whose receptive-field radius is at most
    overlap / 4; seam-free blending otherwise (MalleNet: its kernel predictor sees the whole tile)."""
    tile_multiple: int = 1
    """Tile sides are rounded to a multiple of this."""
    memory_per_pixel: int = 2000
    """Peak inference memory in bytes per input pixel at fp32 (measured), for automatic tiling."""
    max_tile: int | None = None
    """Largest tile side the model runs at (attention whose memory is quadratic in the tile
    area); the engine never exceeds it, whatever --tile asks."""
    arch_args: dict[str, Any] = field(default_factory=dict)
    """Defaults; the JSON card's ``arch_args`` override them."""
    packed_bayer: bool = False
    """The input is an RGGB mosaic packed to four half-resolution planes (R, G1, G2, B): a flip or
    turn of it is another CFA pattern, so ``--self-ensemble`` turns the full-resolution mosaic and
    shifts it back to RGGB."""
    jpeg_qualities: tuple[int, int] | None = None
    """JPEG specialists: the estimated file qualities (inclusive) for which the task runs this
    model in place of its default when no ``--model`` is given."""
    jpeg_gray: bool = False
    """A JPEG specialist for greyscale files: it runs only on them, ahead of a colour specialist."""

    @property
    def weights_path(self) -> Path:
        return weights_dir() / f"{self.name}.safetensors"


DRN_PAPER = "Guo et al., Closed-loop Matters: Dual Regression Networks for Single Image Super-Resolution, CVPR 2020"
DRC_PAPER = "Guo et al., Towards Lightweight Super-Resolution with Dual Regression Learning, arXiv 2207.07929"


VDN_PAPER = "Yue et al., Variational Denoising Network: Toward Blind Noise Modeling and Removal, NeurIPS 2019"
HYPER_PAPER = (
    "Muller, Overparametrization of HyperNetworks at Fixed FLOP-Count Enables Fast Neural Image Enhancement, CVPRW 2021"
)


def vdn_card(name: str, what: str, paper: str) -> ModelCard:
    """A real-noise VDN card. Its U-Net sees about 90 px each way, so tiles are blended, not exact."""
    summary = f"blind real camera noise (shot, read, demosaicking, JPEG), {what}; reports the noise level"
    # memory_per_pixel not measured alone: with the tiles it gives, a 12 MP photo peaked at 1.39 GB in all
    return ModelCard(name, "denoise", "vdn", summary, paper, overlap=48, tile_multiple=8, memory_per_pixel=2000)


def isp_card(name: str, what: str) -> ModelCard:
    """A RAW-to-RGB card: packed RGGB at half resolution in, RGB at full resolution out. Its
    receptive field is 14 packed pixels each way, so an overlap of 64 tiles exactly."""
    summary = f"camera RAW to sRGB (demosaic, denoise; the file's white balance and colour matrix), {what}"
    return ModelCard(
        name, "raw2rgb", "hyperisp", summary, HYPER_PAPER, scale=2, overlap=64, memory_per_pixel=2000, packed_bayer=True
    )


def drn_card(name: str, scale: int, what: str, memory_per_pixel: int, paper: str = DRN_PAPER) -> ModelCard:
    """A DRN super-resolution card. Overlap is in LR pixels; channel attention pools over the
    tile, so tiling is close to the whole-image result, not exact."""
    summary = f"x{scale} super-resolution, {what}"
    return ModelCard(name, "sr", "drn", summary, paper, scale=scale, overlap=16, memory_per_pixel=memory_per_pixel)


PANET_PAPER = "Mei et al., Pyramid Attention Networks for Image Restoration, IJCV 2023"


def panet_card(name: str, task: str, summary: str, **tiling: Any) -> ModelCard:
    """A PANet card. Attention memory is quadratic in the tile area, so every PANet states the
    largest tile it runs at (``max_tile``, in input pixels) and the engine keeps to it; the
    attention spans the whole tile, so tiles are blended, not exact."""
    return ModelCard(name, task, "panet", summary, PANET_PAPER, **tiling)


PANET_RGB_TILING: dict[str, Any] = {
    "overlap": 16,
    "tile_multiple": 2,  # the body runs at half resolution (space-to-depth)
    "max_tile": 64,
    "memory_per_pixel": 45_000,  # at most one max_tile tile at a time: panet-deblock peaked at 0.34 GB
}
"""Tiles of the same-size RGB PANets (deblocking, denoising): one network shape, one tiling."""

Q10_QUALITIES = (1, 12)
"""Estimated file qualities that ``denoise deblock`` sends to panet-deblock-q10 (trained on 8-12)."""


EDSR_PAPER = "Lim et al., Enhanced Deep Residual Networks for Single Image Super-Resolution, CVPRW 2017"


def edsr_card(scale: int, attention: bool, memory_per_pixel: int) -> ModelCard:
    """PA-EDSR (EDSR-baseline trunk with one pyramid attention block) or its twin without the
    attention. Tiles are in LR pixels; PA-EDSR's attention runs on tiles of at most 48 LR
    pixels, the paper's LR training patch, since its memory is quadratic in the tile area."""
    if attention:
        name, what, paper = (
            f"pa-edsr-x{scale}",
            "EDSR-baseline trunk with pyramid attention",
            f"{PANET_PAPER}; {EDSR_PAPER}",
        )
    else:
        name, what, paper = f"edsr-x{scale}", "EDSR-baseline trunk, no attention (pa-edsr's twin)", EDSR_PAPER
    summary = f"x{scale} super-resolution, {what}"
    tiling = {"max_tile": 48} if attention else {}
    return ModelCard(
        name, "sr", "pa-edsr", summary, paper, scale=scale, overlap=16, memory_per_pixel=memory_per_pixel, **tiling
    )


CARDS: dict[str, ModelCard] = {
    card.name: card
    for card in [
        ModelCard(
            name="mallenet",
            task="denoise",
            arch="mallenet",
            summary="blind colour Gaussian denoising (sigma 0-55), malleable convolutions",
            paper="Jiang et al., Fast and High-Quality Image Denoising via Malleable Convolutions, ECCV 2022",
            overlap=48,
            tile_multiple=16,
            memory_per_pixel=1000,  # measured peak RSS growth: 907 B/px at 512^2, 685 B/px at 1024^2
        ),
        ModelCard(
            name="ddsnet",
            task="denoise",
            arch="ddsnet",
            summary="blind colour Gaussian denoising (sigma 0-55), dynamic slimmable: a gate picks the width per image",
            paper="Jiang et al., Dynamic Slimmable Denoising Network, IEEE TIP 2023",
            overlap=48,  # 18 convs at half resolution: 36 px each way
            tile_multiple=2,
            memory_per_pixel=600,  # peak RSS above the 0.23 GB import: 152 / 294 MB at 512^2 / 1024^2 (--tile 0)
        ),
        vdn_card("vdn-hyper", "VDN with HyperConv kernels", f"{VDN_PAPER}; {HYPER_PAPER}"),
        vdn_card("vdn-plain", "VDN with plain convs (vdn-hyper's twin)", VDN_PAPER),
        isp_card("hyperisp", "HyperConv kernels from an MLP"),
        isp_card("hyperisp-plain", "plain convs (hyperisp's twin at the same MACs)"),
        drn_card("drn-x2", 2, "dual regression (narrow DRN-S)", memory_per_pixel=4000),
        drn_card("drn-x4", 4, "dual regression (narrow DRN-S)", memory_per_pixel=12000),  # measured 11.6 kB
        drn_card("drn-light-x4", 4, "drn-x4 pruned (DRC) and distilled", 12000, paper=f"{DRN_PAPER}; {DRC_PAPER}"),
        edsr_card(2, attention=True, memory_per_pixel=4000),  # max_tile rules: 2000^2 LR peaked at 1.19 GB
        edsr_card(2, attention=False, memory_per_pixel=2500),  # peak RSS 0.44 / 0.93 GB at 256^2 / 512^2 LR
        edsr_card(4, attention=True, memory_per_pixel=8000),  # max_tile rules: 512^2 LR peaked at 0.63 GB
        edsr_card(4, attention=False, memory_per_pixel=9000),  # peak RSS 0.83 / 2.50 GB at 256^2 / 512^2 LR
        panet_card(
            "panet-demosaic",
            "demosaic",
            "Bayer demosaicking (any pattern, or a camera RAW), pyramid attention; corrects Malvar-He-Cutler",
            scale=2,  # packed RGGB in, full-resolution RGB out: tiles are in packed pixels
            packed_bayer=True,
            overlap=8,
            max_tile=32,  # packed px (64 image px); on held-out training photos 0.05 dB above 64 and 3x faster
            memory_per_pixel=180_000,  # at most one max_tile tile at a time: the process peaked at 0.37 GB
        ),
        panet_card(
            "panet-deblock",
            "deblock",
            "blind JPEG artefact removal (quality 10-60, colour or grey), pyramid attention",
            **PANET_RGB_TILING,
        ),
        panet_card(
            "panet-deblock-q10",
            "deblock",
            "JPEG artefact removal at quality 8-12 (the paper's per-quality model), pyramid attention;"
            f" runs by default on files estimated at quality {Q10_QUALITIES[0]}-{Q10_QUALITIES[1]}",
            jpeg_qualities=Q10_QUALITIES,
            **PANET_RGB_TILING,
        ),
        panet_card(
            "panet-deblock-q10-gray",
            "deblock",
            "JPEG artefact removal for greyscale files at quality 8-12 (the paper's grey per-quality model), pyramid"
            f" attention; runs by default on grey files estimated at quality {Q10_QUALITIES[0]}-{Q10_QUALITIES[1]}",
            jpeg_qualities=Q10_QUALITIES,
            jpeg_gray=True,
            **PANET_RGB_TILING,
        ),
        panet_card(
            "panet-denoise",
            "denoise",
            "blind colour Gaussian denoising (sigma 0-55), pyramid attention",
            **PANET_RGB_TILING,
        ),
    ]
}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return f"unknown model {self.args[0]!r}; known: {', '.join(sorted(CARDS))}"


def card(name: str) -> ModelCard:
    try:
        return CARDS[name]
    except KeyError:
        raise UnknownModelError(name) from None


def resolve(name: str, scale: int | None = None, task: str | None = None) -> str:
    """The card a ``--model NAME [--scale S]`` pair means: ``NAME-xS`` if that exists, else NAME.

    Within a subcommand, a family named by task (``panet-demosaic``, ``panet-denoise``) is
    also reached by its family name: ``denoise denoise --model panet`` runs ``panet-denoise``.

    Without a scale, a family of scales (``drn-x2``, ``drn-x4``) gives its largest member whose
    weights ship (its largest member if none do, so the error names the missing file).
    An unknown name is an UnknownModelError; a model of another scale is a ValueError.
    """
    if task and name not in CARDS and f"{name}-{task}" in CARDS:
        return f"{name}-{task}"
    if scale and f"{name}-x{scale}" in CARDS:
        return f"{name}-x{scale}"
    family = sorted(c.scale for c in CARDS.values() if c.name == f"{name}-x{c.scale}")
    if family and not scale:
        shipped = [s for s in family if CARDS[f"{name}-x{s}"].weights_path.is_file()]
        return f"{name}-x{(shipped or family)[-1]}"
    if family:
        shown = ", ".join(f"x{s}" for s in family)
        raise ValueError(f"model {name!r} comes in {shown}, not x{scale}")
    found = card(name)
    if scale and found.scale != scale:
        raise ValueError(f"model {name!r} works at x{found.scale}, not x{scale}")
    return name


def jpeg_specialist(default: str, quality: int | None, gray: bool = False) -> str:
    """The model to run on a file of estimated JPEG ``quality`` instead of the task's
    ``default``: a card of the same task made for that quality whose weights ship (for a
    greyscale file a grey specialist first), else ``default``."""
    if quality is None:
        return default
    task = card(default).task
    fits = [
        found
        for found in CARDS.values()
        if found.jpeg_qualities is not None
        and found.task == task
        and found.jpeg_qualities[0] <= quality <= found.jpeg_qualities[1]
        and (gray or not found.jpeg_gray)
        and found.weights_path.is_file()
    ]
    fits.sort(key=lambda found: found.jpeg_gray != gray)
    return fits[0].name if fits else default


def build(arch: str, **arch_args: Any) -> nn.Module:
    """Instantiate an architecture by key, importing its module on first use."""
    module_name, _, class_name = ARCHITECTURES[arch].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**arch_args)


def build_from_card(name: str, meta: dict[str, Any]) -> nn.Module:
    """The named architecture with the card's arguments (untrained); bad arguments are a WeightsError."""
    c = card(name)
    args = {**c.arch_args, **meta.get("arch_args", {})}
    try:
        return build(c.arch, **args)
    except (TypeError, ValueError, KeyError) as e:
        raise weights.WeightsError(f"{c.weights_path.with_suffix('.json')}: bad arch_args {args} ({e})") from None


def load(name: str, weights_path: Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The named model with its shipped (or given) weights, in eval mode, and its JSON card."""
    path = weights_path or card(name).weights_path
    meta = weights.read_card(path)
    model = build_from_card(name, meta)
    weights.load_into(model, path)
    return model.eval(), meta
