"""Quality regression of the shipped super-resolution weights on small Set5 crops.

The benchmark protocol of ``denoise eval`` (MATLAB bicubic down-scaling, Y-channel PSNR with
the scale shaved), on 128x128 centre crops of three Set5 images. Two bars: a margin over
bicubic up-scaling measured in the same run, and the PSNR the shipped weights gave on these
crops when they were committed (minus 0.15 dB).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from denoise_cli.engine import Enhancer
from denoise_cli.evaluate import evaluate_sr
from denoise_cli.registry import CARDS

SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "val" / "Set5"

# Y PSNR of the shipped weights on these crops, measured with this file's computation when
# the weights were committed, and the margin over bicubic they must keep.
COMMITTED = {
    "drn-x2": 41.04,  # weights/drn-x2.safetensors (7000 steps), 2026-11-27; bicubic 35.61
    "drn-x4": 34.90,  # weights/drn-x4.safetensors (15000 steps), 2026-11-27; bicubic 29.71
    "drn-light-x4": 34.72,  # weights/drn-light-x4.safetensors (DRC, 2000 + 1500 fine-tuning steps), 2026-11-27
    "edsr-x2": 40.63,  # weights/edsr-x2.safetensors (2000 steps), 2026-11-27
    "pa-edsr-x2": 40.62,  # weights/pa-edsr-x2.safetensors (2000 steps), 2026-11-27; attention on 48-px LR tiles
    "edsr-x4": 34.98,  # weights/edsr-x4.safetensors (7601-step trunk + 800), 2026-11-28
    "pa-edsr-x4": 34.97,  # weights/pa-edsr-x4.safetensors (the same trunk + 800 with attention), 2026-11-28
}
MARGIN_OVER_BICUBIC = {2: 4.0, 4: 2.0}

pytestmark = pytest.mark.skipif(not SET5.is_dir(), reason="../shared/data/val is not beside the checkout")


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_shipped_sr_beats_bicubic_on_set5_crops(name: str) -> None:
    card = CARDS[name]
    if not card.weights_path.is_file():
        pytest.skip(f"{name} weights not shipped")
    enhancer = Enhancer(name, device="cpu", precision="fp32", tile=0)
    bicubic, ours = evaluate_sr(enhancer, name, SET5, card.scale, crop=128, limit=3)
    assert ours.psnr > bicubic.psnr + MARGIN_OVER_BICUBIC[card.scale]
    assert ours.psnr > COMMITTED[name] - 0.15
