"""Weights on disk: ``<name>.safetensors`` beside a ``<name>.json`` card. No pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .fsutil import atomic_write_bytes


class WeightsError(Exception):
    """Weights or their card are missing, unreadable or do not fit the architecture."""


def save(model: nn.Module, path: Path, card: dict[str, Any], dtype: torch.dtype = torch.float32) -> None:
    """Save a state dict as safetensors (``dtype``: float16 halves a large model's file; loading
    casts back to the model's float32) and its card as JSON beside it."""
    from safetensors.torch import save as save_bytes

    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save_bytes(state))
    write_card(path, card)


def write_card(path: Path, card: dict[str, Any]) -> None:
    """(Re)write the JSON card beside a weights file, atomically."""
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(card, indent=2) + "\n").encode())


def read_card(path: Path) -> dict[str, Any]:
    """The JSON card beside a weights file."""
    card_path = path.with_suffix(".json")
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{card_path}: model card not found") from None
    except (OSError, ValueError) as e:
        raise WeightsError(f"{card_path}: unreadable model card ({e})") from None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def load_matching(model: nn.Module, path: Path) -> list[str]:
    """Load the tensors of ``path`` whose names and shapes ``model`` shares (e.g. an x2
    network's trunk into its x4 sibling); return the names of the model's tensors left as
    they were. Nothing in common is a WeightsError."""
    state = _read_state(path)
    own = model.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not shared:
        raise WeightsError(f"{path}: no tensor fits the architecture")
    model.load_state_dict(shared, strict=False)
    return [k for k in own if k not in shared]


def load_into(model: nn.Module, path: Path) -> None:
    """Strictly load safetensors weights into ``model``; any mismatch is a WeightsError."""
    state = _read_state(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        reason = first[1].strip() if len(first) > 1 else first[0]
        raise WeightsError(f"{path}: weights do not fit the architecture ({reason})") from None
