"""``python -m denoise_cli.bench``: CPU megapixels per second, ours against a DnCNN-shaped reference.

Speeds are in input megapixels (for a packed Bayer mosaic, megapixels of the photo); the
last column gives output megapixels (input times the scale squared, for super-resolution).

The reference is a plain 17-layer, 64-channel 3x3 conv denoiser (random weights: only its
speed matters). Every network runs in the same process, on the same input, in fp32 and bf16,
in channels-last layout as the engine runs it; the best of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from . import registry
from .device import autocast, cpu_name, set_threads
from .flops import input_shape, macs_per_megapixel, reads_packed_mosaic


def dncnn_reference(depth: int = 17, width: int = 64) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(width, 3, 3, padding=1))
    return nn.Sequential(*layers)


def megapixels_per_second(model: nn.Module, side: int, precision: str, repeats: int) -> float:
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.rand(*input_shape(model, side)).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode(), autocast(torch.device("cpu"), precision):
        model(x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return side * side / 1e6 / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m denoise_cli.bench", description=__doc__)
    parser.add_argument("--models", nargs="+", default=["mallenet"])
    parser.add_argument("--side", type=int, default=512, help="square input side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    set_threads()

    nets: dict[str, nn.Module] = {}
    for name in args.models:
        nets[name] = registry.build_from_card(name, _card(name))
    nets["dncnn-17x64 (reference)"] = dncnn_reference()

    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.side}x{args.side}")
    print("| network | GMACs/MP | fp32 MP/s | bf16 MP/s | fp32 speed-up vs reference | fp32 output MP/s |")
    print("|---|---|---|---|---|---|")
    speeds = {
        name: {p: megapixels_per_second(net, args.side, p, args.repeats) for p in ("fp32", "bf16")}
        for name, net in nets.items()
    }
    reference = speeds["dncnn-17x64 (reference)"]["fp32"]
    for name, net in nets.items():
        s = speeds[name]
        gmacs = macs_per_megapixel(net) / 1e9
        # packed mosaics are already counted in photo pixels
        scale = registry.card(name).scale if name in registry.CARDS and not reads_packed_mosaic(net) else 1
        cells = [f"{gmacs:.0f}", f"{s['fp32']:.3f}", f"{s['bf16']:.3f}", f"{s['fp32'] / reference:.2f}x"]
        print(f"| {name} | {' | '.join(cells)} | {s['fp32'] * scale * scale:.3f} |")


def _card(name: str) -> dict:
    """The shipped JSON card when present (else the architecture defaults are used)."""
    from .weights import WeightsError, read_card

    try:
        return read_card(registry.card(name).weights_path)
    except WeightsError:
        return {}


if __name__ == "__main__":
    main()
