"""Device and precision choice: CUDA, then MPS, then CPU; precision measured, not assumed."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator

import torch

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple MPS, then the CPU."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA was asked for but this PyTorch build sees no CUDA device")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("MPS was asked for but is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_name() -> str:
    """The CPU model as the kernel reports it (for logs and benchmark tables)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def set_threads() -> None:
    """Use every core the process may run on (PyTorch's default can be lower in containers)."""
    with contextlib.suppress(AttributeError):
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for ``bf16`` / ``fp16``; a no-op for ``fp32``."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=DTYPES[precision]):
        yield


def fastest_precision(
    device: torch.device, run: Callable[[str], object], candidates: tuple[str, ...] | None = None, repeats: int = 2
) -> str:
    """Time ``run(precision)`` for each candidate and return the fastest.

    On CUDA fp16 is taken without timing. On CPU bf16 is several times faster on AMX
    Xeons and ten times slower on AVX2-only EPYCs, so it is measured: one warm-up call
    each, then the best of ``repeats`` timed calls each, taken in turns so that a burst of
    other work on the machine slows every candidate alike.
    """
    if device.type == "cuda":
        return "fp16"
    if device.type == "mps":
        return "fp32"
    candidates = candidates or ("fp32", "bf16")
    for precision in candidates:
        run(precision)
    timings = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeats):
        for precision in candidates:
            start = time.perf_counter()
            run(precision)
            timings[precision] = min(timings[precision], time.perf_counter() - start)
    choice = min(timings, key=timings.__getitem__)
    log.info(
        "CPU %s: %s -> %s",
        cpu_name(),
        ", ".join(f"{p} {t * 1000:.0f} ms" for p, t in timings.items()),
        choice,
    )
    return choice
