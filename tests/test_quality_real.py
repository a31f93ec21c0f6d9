"""Quality regression of the shipped real-noise model on crops of real camera photos.

real/ is for evaluation only; these crops are read from ../shared/data at test time, never
trained on. Bars: a margin over the noisy input measured by the same run, and the PSNR the
shipped weights gave when committed (minus 0.15 dB). (``--strength`` is tested in test_vdn.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from denoise_cli.engine import Enhancer
from denoise_cli.evaluate import center_crop, load, pairs, quantize
from denoise_cli.metrics import psnr
from denoise_cli.registry import card
from denoise_cli.tasks import TASKS

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MODEL = TASKS["denoise"].default_model or "mallenet"

pytestmark = [
    pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is not beside the checkout"),
    pytest.mark.skipif(MODEL == "mallenet" or not card(MODEL).weights_path.is_file(), reason="no real-noise model"),
]

# (set, pair index): heavy smartphone noise and mild JPEG'd DSLR noise.
CROPS = [("SIDD_samples", 0), ("PolyU_crops", 0)]
# PSNR of weights/vdn-hyper.safetensors (5000 steps + the 6500-step optics fine-tune, residual
# cap 1.3) on these 160-px centre crops, measured on 2026-12-07 with this file's computation (the
# noisy crops: 24.19 and 40.31 dB; without the cap 35.78 and 41.77; the 5000-step weights gave
# 34.33 and 41.33).
COMMITTED = {"SIDD_samples": 35.77, "PolyU_crops": 41.76}
MARGIN_OVER_NOISY = {"SIDD_samples": 4.0, "PolyU_crops": 0.5}


def crop_pair(folder: str, index: int) -> tuple[object, object]:
    _, noisy, clean = list(pairs(REAL / folder))[index]
    return center_crop(load(noisy), 160), center_crop(load(clean), 160)


@pytest.mark.parametrize(("folder", "index"), CROPS)
def test_shipped_real_noise_model_gains_over_the_noisy_photo(folder: str, index: int) -> None:
    noisy, clean = crop_pair(folder, index)
    enhancer = Enhancer(MODEL, device="cpu", precision="fp32", tile=0)
    ours, before = psnr(quantize(enhancer(noisy)), clean), psnr(quantize(noisy), clean)
    assert ours > before + MARGIN_OVER_NOISY[folder]
    assert ours > COMMITTED[folder] - 0.15
