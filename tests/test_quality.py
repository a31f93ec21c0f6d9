"""Quality regression of the shipped AWGN denoisers on small crops of the validation data.

Two kinds of bar: margins over what the same run measures for the noisy input and for a
classical Gaussian-blur denoiser (best of several widths), and the PSNR the shipped weights
gave on these crops when they were committed (minus 0.15 dB), so a worse model or a broken
pipeline fails while better weights pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from denoise_cli.engine import Enhancer
from denoise_cli.evaluate import add_noise, center_crop, load, noise_seed, quantize
from denoise_cli.metrics import psnr
from denoise_cli.registry import card
from denoise_cli.training.data import list_images
from denoise_cli.training.degrade import gaussian_blur

CBSD68 = Path(__file__).resolve().parents[2] / "shared" / "data" / "val" / "CBSD68"

pytestmark = pytest.mark.skipif(not CBSD68.is_dir(), reason="../shared/data/val is not beside the checkout")


# Mean PSNR of the shipped blind AWGN denoisers on these two crops, measured with this file's
# own computation when the weights were committed.
COMMITTED = {
    # weights/mallenet.safetensors (18000 steps + L2 fine-tunes of 1500, 3000, 2000 and 2000 steps), 2026-11-27
    ("mallenet", 25.0): 28.54,
    ("mallenet", 50.0): 25.51,
    # weights/panet-denoise.safetensors (2500 steps from panet-deblock's weights), 2026-11-28
    ("panet-denoise", 25.0): 28.32,
    ("panet-denoise", 50.0): 25.15,
}
MARGIN_OVER_NOISY = {25.0: 7.0, 50.0: 9.5}


@pytest.mark.parametrize(("name", "sigma"), sorted(COMMITTED))
def test_shipped_awgn_denoiser_beats_noise_and_blur_on_two_val_crops(name: str, sigma: float) -> None:
    if not card(name).weights_path.is_file():
        pytest.skip(f"{name} weights not shipped")
    enhancer = Enhancer(name, device="cpu", precision="fp32", tile=0)
    files = list_images([CBSD68])[:2]
    ours, noisy_db, blur_db = [], [], []
    for f in files:
        clean = center_crop(load(f), 128)
        noisy = add_noise(clean, sigma, noise_seed(f.name, sigma))
        ours.append(psnr(quantize(enhancer(noisy)), clean))
        noisy_db.append(psnr(quantize(noisy), clean))
        blur_db.append(
            max(psnr(quantize(gaussian_blur(noisy, torch.tensor([s]))), clean) for s in (0.8, 1.2, 1.6, 2.0))
        )
    mean = sum(ours) / len(ours)
    assert mean > sum(noisy_db) / 2 + MARGIN_OVER_NOISY[sigma]
    assert mean > sum(blur_db) / 2 + 2.0
    assert mean > COMMITTED[name, sigma] - 0.15
