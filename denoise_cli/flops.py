"""Multiply-accumulate count of one forward pass, by forward hooks.

Counts convolutions and linear layers, plus any module that reports its own arithmetic
through a ``macs(inputs, output) -> int`` method (e.g. MalleConv's slice-and-conv).
Element-wise work (activations, additions, interpolation) is not counted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def count_macs(model: nn.Module, height: int = 256, width: int = 256, channels: int = 3) -> int:
    total = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            # The input's channel count, not the layer's: slimmable convs use a prefix of theirs.
            total += output.numel() * (inputs[0].shape[1] // module.groups) * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif hasattr(module, "macs"):
            total += int(module.macs(inputs, output))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(torch.rand(1, channels, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def reads_packed_mosaic(model: nn.Module) -> bool:
    """A model whose ``in_channels`` is 4 reads a Bayer mosaic packed to half resolution."""
    return getattr(model, "in_channels", 3) == 4


def input_shape(model: nn.Module, side: int) -> tuple[int, int, int, int]:
    """The input of a ``side`` x ``side`` photo: RGB, or for a packed mosaic 4 planes of half the side."""
    return (1, 4, side // 2, side // 2) if reads_packed_mosaic(model) else (1, 3, side, side)


def macs_per_megapixel(model: nn.Module, side: int = 256) -> float:
    """MACs per megapixel of the input photo (for a packed mosaic, of the mosaic, not of its planes)."""
    _, channels, height, width = input_shape(model, side)
    return count_macs(model, height, width, channels) * 1e6 / (side * side)


def size_facts(model: nn.Module, max_tile: int | None = None) -> dict[str, float]:
    """The card's size fields: parameter count and GMACs per megapixel.

    A model that runs on tiles of at most ``max_tile`` input pixels (attention, quadratic in the
    tile area) is counted on one such tile, without the overlap, as it runs.
    """
    side = max_tile * (2 if reads_packed_mosaic(model) else 1) if max_tile else 256
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "gmacs_per_mp": round(macs_per_megapixel(model, side) / 1e9, 2),
    }
