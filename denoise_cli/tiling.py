"""Overlapping tiles and a blending window. Pure tensor code, no I/O.

Along each axis tiles of ``tile`` pixels step by ``tile - overlap``; the last one is
aligned to the far edge. A tile's weight is zero within ``overlap // 4`` pixels of an
edge it shares with a neighbour, rises along a raised cosine over the next
``overlap // 2`` pixels and is one inside, and one right up to the image border. So an
output pixel only takes values from tiles in which it lies at least ``overlap // 4``
pixels from a cut, which makes tiling exact for a convolutional net whose receptive-field
radius is at most that, and seam-free for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    def crop(self, image: torch.Tensor, scale: int = 1) -> torch.Tensor:
        return image[
            ...,
            self.top * scale : (self.top + self.height) * scale,
            self.left * scale : (self.left + self.width) * scale,
        ]


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    out = list(range(0, length - tile, stride))
    out.append(length - tile)
    return out


def plan(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Cover a ``height`` x ``width`` image with overlapping tiles (``tile <= 0``: one tile)."""
    if tile <= 0:
        return [Tile(0, 0, height, width)]
    return [
        Tile(top, left, min(tile, height), min(tile, width))
        for top in starts(height, tile, overlap)
        for left in starts(width, tile, overlap)
    ]


def ramp(length: int, overlap: int, rise_start: bool, rise_end: bool) -> torch.Tensor:
    """1-D window: zero margin, raised-cosine rise, flat top; ends at image borders stay 1."""
    w = torch.ones(length)
    margin = overlap // 4
    rise = max(1, overlap - 2 * margin)
    t = (torch.arange(rise, dtype=torch.float32) + 0.5) / rise
    edge = torch.cat([torch.zeros(margin), 0.5 - 0.5 * torch.cos(math.pi * t)])[:length]
    if rise_start:
        w[: edge.numel()] = torch.minimum(w[: edge.numel()], edge)
    if rise_end:
        flipped = edge.flip(0)
        w[length - flipped.numel() :] = torch.minimum(w[length - flipped.numel() :], flipped)
    return w


def window(t: Tile, height: int, width: int, overlap: int, scale: int = 1) -> torch.Tensor:
    """(H, W) blending weights of one tile, in output pixels (``scale`` x the input grid)."""
    wy = ramp(t.height * scale, overlap * scale, t.top > 0, t.top + t.height < height)
    wx = ramp(t.width * scale, overlap * scale, t.left > 0, t.left + t.width < width)
    return wy[:, None] * wx[None, :]


def run_tiled(
    image: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    tile: int,
    overlap: int,
    scale: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``image`` (1, C, H, W) and blend the results.

    ``fn`` maps a (1, C, h, w) tile to (1, C', h * scale, w * scale); tiles stay where
    ``image`` is (usually the CPU) until ``fn`` moves them. With one tile, ``fn`` runs
    on the whole image.
    """
    height, width = image.shape[-2:]
    tiles = plan(height, width, tile, overlap)
    if len(tiles) == 1:
        out = fn(image)
        if progress:
            progress(1, 1)
        return out
    acc: torch.Tensor | None = None
    norm = torch.zeros(1, 1, height * scale, width * scale)
    for i, t in enumerate(tiles):
        result = fn(t.crop(image)).float().cpu()
        if acc is None:
            acc = torch.zeros(1, result.shape[1], height * scale, width * scale)
        w = window(t, height, width, overlap, scale)
        t.crop(acc, scale).add_(result * w)
        t.crop(norm, scale).add_(w)
        if progress:
            progress(i + 1, len(tiles))
    assert acc is not None
    return acc.div_(norm.clamp_min_(1e-8))
