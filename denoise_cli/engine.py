"""Enhancer: one loaded model on one device at one precision; tensor in, tensor out.

Only tiles go to the device. Precision ``auto`` is fp16 on CUDA; on a CPU it is bf16 only
where the model card records that bf16 keeps quality *and* a short timing shows it is the
faster one here, else fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import registry
from .device import autocast, cpu_name, fastest_precision, pick_device, set_threads
from .tiling import run_tiled

log = logging.getLogger(__name__)

# bf16 may be used by ``--precision auto`` when it costs at most this much PSNR (card field).
BF16_MAX_DROP_DB = 0.05
# Automatic tiling keeps one tile's working memory under this share of free memory and
# this cap, leaving room for the whole-image buffers (input, blended output, weights).
MEMORY_SHARE = 0.15
MEMORY_CAP = 1 << 30


def available_memory() -> int:
    """Bytes of memory available to this process (Linux), or a conservative 4 GB."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


@dataclass
class Enhancer:
    """Run a registered model on (1, 3, H, W) tensors in [0, 1], tiling when needed."""

    name: str
    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    """Tile side in input pixels; 0 = whole image; None = chosen from image size and memory."""
    overlap: int | None = None
    weights_path: Path | None = None
    width: float | None = None
    """Slimmable models: run the sub-network with this share of the full MACs (else the gate picks)."""
    self_ensemble: bool = False
    """Average the results on the 8 flips and 90-degree turns of the input (8x the time)."""
    facts: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        set_threads()
        self.card = registry.card(self.name)
        self.torch_device = pick_device(self.device)
        model, self.meta = registry.load(self.name, self.weights_path)
        if self.torch_device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.torch_device)
        if self.width is not None:
            self._force_width(self.width)
        if self.overlap is None:
            self.overlap = self.card.overlap
        self.precision = self._choose_precision(self.precision)
        self.facts = {"model": self.name, "device": str(self.torch_device), "precision": self.precision}
        if self.self_ensemble:
            self.facts["self_ensemble"] = len(DIHEDRAL)
        log.info("model %s on %s (%s), precision %s", self.name, self.torch_device, cpu_name(), self.precision)

    def _force_width(self, width: float) -> None:
        shares = getattr(self.model, "shares", None)
        if shares is None:
            raise ValueError(f"model {self.name} has one width; --width is for slimmable models (ddsnet)")
        options = shares()
        index = min(range(len(options)), key=lambda i: abs(options[i] - width))
        if abs(options[index] - width) > 0.1:
            shown = ", ".join(f"{s:.2f}" for s in options)
            raise ValueError(f"model {self.name} has no sub-network near width {width:g} (it has {shown})")
        self.model.use(index)

    def _choose_precision(self, requested: str) -> str:
        if requested != "auto":
            if self.torch_device.type == "cpu" and requested == "fp16":
                raise ValueError("fp16 is not supported on the CPU; use fp32 or bf16")
            return requested
        if self.torch_device.type == "cuda":
            return "fp16"
        if self.torch_device.type != "cpu":
            return "fp32"
        drop = self.meta.get("metrics", {}).get("bf16_psnr_drop_db")
        if drop is None or drop > BF16_MAX_DROP_DB:
            return "fp32"
        probe = torch.rand(1, getattr(self.model, "in_channels", 3), 128, 128)  # 4: a packed mosaic
        return fastest_precision(self.torch_device, lambda p: self._forward(probe, p))

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        x = x.to(self.torch_device)
        if self.torch_device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.torch_device, precision):
            y = self.model(x)
        return y.float()

    def _forward_checked(self, x: torch.Tensor) -> torch.Tensor:
        """Forward one tile; redo it in fp32 if reduced precision gave NaN or Inf."""
        y = self._forward(x, self.precision)
        if self.precision != "fp32" and not torch.isfinite(y).all():
            log.warning("non-finite output at %s; recomputing the tile in fp32", self.precision)
            y = self._forward(x, "fp32")
        return y.cpu()

    def auto_tile(self, height: int, width: int) -> int:
        """Whole image when it fits the memory budget, else the largest square tile that does."""
        per_pixel = self.card.memory_per_pixel
        budget = min(available_memory() * MEMORY_SHARE, MEMORY_CAP)
        if self.torch_device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.torch_device)
            budget = free * 0.5
        max_pixels = max(budget / per_pixel, 128 * 128)
        if height * width <= max_pixels:
            return 0
        side = int(max_pixels**0.5)
        multiple = max(self.card.tile_multiple, 8)
        return max(multiple * 8, side // multiple * multiple)

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Enhance a (1, 3, H, W) float tensor in [0, 1]; the result is clamped to [0, 1].

        When tiling, the image is padded to the card's ``tile_multiple`` and tile sides and
        overlap are rounded up to it, so every tile sits on the same pixel grid phase as
        the whole image (space-to-depth pyramids and kernel grids stay aligned). With
        ``self_ensemble`` the padded image is also turned and flipped, so each view keeps
        that phase, and the views' results are turned back and averaged (a packed Bayer mosaic
        is turned at full resolution and shifted back to RGGB).
        """
        height, width = image.shape[-2:]
        decide = getattr(self.model, "decide", None)
        if decide is not None:  # a whole-image choice (DDS-Net's width) that every tile then follows
            self.facts.update(decide(image.to(self.torch_device)))
        tile = self.tile if self.tile is not None else self.auto_tile(height, width)
        limit = self.card.max_tile
        if limit and (tile <= 0 or tile > limit) and max(height, width) > limit:
            log.info("%s runs on tiles of at most %d px (quadratic attention memory)", self.name, limit)
            tile = limit
        self.facts["tile"] = tile
        whole = tile <= 0 or (tile >= height and tile >= width)
        m = 1 if whole else self.card.tile_multiple
        padded = F.pad(image, (0, -width % m, 0, -height % m), mode="replicate") if m > 1 else image
        if whole:
            tile = overlap = 0
        else:
            tile, overlap = _round_up(tile, m), _round_up(self.overlap or 0, m)
        scale = self.card.scale

        def run(view: torch.Tensor, counted: Callable[[int, int], None] | None) -> torch.Tensor:
            return run_tiled(view, self._forward_checked, tile, overlap, scale, counted)

        if self.self_ensemble:
            out = torch.zeros(())
            for index, (view, back) in enumerate(_views(padded, self.card.packed_bayer)):
                out = out + back(run(view, _views_progress(progress, index)))
            out /= len(DIHEDRAL)
        else:
            out = run(padded, progress)
        return out[..., : height * scale, : width * scale].clamp_(0.0, 1.0)


DIHEDRAL = [(turns, flip) for flip in (False, True) for turns in range(4)]
"""The 8 views of an image: quarter turns, without and with a left-right flip first."""


def _turn(image: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    return torch.rot90(image.flip(-1) if flip else image, turns, (-2, -1))


def _unturn(image: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    back = torch.rot90(image, -turns, (-2, -1))
    return back.flip(-1) if flip else back


def _views(image: torch.Tensor, packed_bayer: bool) -> Iterator[tuple[torch.Tensor, Callable[..., torch.Tensor]]]:
    """The 8 dihedral views of a model input, each with the function that turns a result on it back."""
    from .raw import pack, to_rggb, unpack

    for turns, flip in DIHEDRAL:
        if not packed_bayer:
            yield _turn(image, turns, flip), partial(_unturn, turns=turns, flip=flip)
            continue
        mosaic = _turn(unpack(image), turns, flip)
        pattern = turned_pattern(turns, flip)
        back = partial(_unturn_mosaic, pattern=pattern, size=tuple(mosaic.shape[-2:]), turns=turns, flip=flip)
        yield pack(to_rggb(mosaic, pattern)), back


def turned_pattern(turns: int, flip: bool) -> str:
    """The CFA pattern an RGGB mosaic of even size has after ``_turn``: the 2x2 cell turns with it."""
    cell = _turn(torch.arange(4).view(1, 1, 2, 2), turns, flip)
    return "".join("RGGB"[i] for i in cell.flatten().tolist())


def _unturn_mosaic(image: torch.Tensor, pattern: str, size: tuple[int, int], turns: int, flip: bool) -> torch.Tensor:
    """Undo a mosaic view on the model's full-resolution result: the RGGB shift, then the turn."""
    from .raw import from_rggb_crop

    return _unturn(from_rggb_crop(image, pattern, size=size), turns, flip)


def _views_progress(progress: Callable[[int, int], None] | None, index: int) -> Callable[[int, int], None] | None:
    """Tile progress of one view, counted over all views."""
    if progress is None:
        return None
    return lambda done, total: progress(index * total + done, len(DIHEDRAL) * total)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
