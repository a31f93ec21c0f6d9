"""Quality regression of the shipped PANet weights on small crops, by ``denoise eval``'s code.

Demosaicking: 128-px centre crops of three McMaster images, a margin over our Malvar-He-Cutler
measured in the same run. Deblocking (the blind model and the q10 ones, colour and grey): 128-px centre crops of
three Classic5 images at JPEG quality 10, a margin over the JPEG input. All also keep the PSNR
the shipped weights gave on these crops when they were committed (minus 0.15 dB).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from denoise_cli.engine import Enhancer
from denoise_cli.evaluate import evaluate_deblock, evaluate_demosaic
from denoise_cli.registry import CARDS

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"

# PSNR of the shipped weights on these crops (fp32, on the card's attention tiles), measured with
# this file's computation when the weights were committed.
COMMITTED = {
    "panet-demosaic": 34.78,  # weights/panet-demosaic.safetensors (four cosines, 15243 steps), 2026-12-07; Malvar 32.81
    "panet-deblock": 27.18,  # weights/panet-deblock.safetensors (6000 steps), 2026-11-27; JPEG q10 26.31
    "panet-deblock-q10": 27.68,  # weights/panet-deblock-q10.safetensors (6000 + 3386 steps), 2026-11-28
    "panet-deblock-q10-gray": 27.83,  # weights/panet-deblock-q10-gray.safetensors (+ 3638 grey steps), 2026-12-07
}

pytestmark = pytest.mark.skipif(not VAL.is_dir(), reason="../shared/data/val is not beside the checkout")


def shipped(name: str) -> Enhancer:
    if not CARDS[name].weights_path.is_file():
        pytest.skip(f"{name} weights not shipped")
    return Enhancer(name, device="cpu", precision="fp32", tile=0)


def test_shipped_demosaicking_beats_malvar_on_mcmaster_crops() -> None:
    rows = evaluate_demosaic(shipped("panet-demosaic"), "panet-demosaic", VAL / "McMaster", crop=128, limit=3)
    psnr = {row.method: row.psnr for row in rows}
    assert psnr["panet-demosaic"] > psnr["Malvar-He-Cutler"] + 0.6
    assert psnr["panet-demosaic"] > COMMITTED["panet-demosaic"] - 0.15


@pytest.mark.parametrize("name", ["panet-deblock", "panet-deblock-q10", "panet-deblock-q10-gray"])
def test_shipped_deblocking_beats_the_jpeg_input_on_classic5_crops(name: str) -> None:
    rows = evaluate_deblock(shipped(name), name, VAL / "Classic5", [10], crop=128, limit=3)
    psnr = {row.method: row.psnr for row in rows}
    assert psnr[name] > psnr["input (JPEG)"] + 0.5
    assert psnr[name] > COMMITTED[name] - 0.15
