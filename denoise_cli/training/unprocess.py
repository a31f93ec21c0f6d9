"""Synthetic camera RAW from sRGB photos ("unprocessing"), after Brooks et al., CVPR 2019,
"Unprocessing Images for Learned Raw Denoising".

A simple camera pipeline maps linear camera RGB to sRGB: white balance and digital gain,
a camera-to-sRGB colour matrix, a 1/2.2 gamma and a smoothstep tone curve (``process``).
Unprocessing runs the exact inverse of each step on an sRGB photo, samples the result
through an RGGB colour filter array and adds heteroscedastic shot/read noise, which gives
(noisy RAW, clean RAW, sRGB target) training triples without a RAW data set. Every random
camera fact is drawn from a ``torch.Generator``, so a seed fixes the whole sample.

Images are float32 NCHW in [0, 1]; RAW output is packed (N, 4, H/2, W/2) as R, G1, G2, B
(see ``denoise_cli.raw``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..raw import (  # the forward pipeline steps live with the RAW code that develops real files
    GAMMA,
    GAMMA_EPS,
    apply_ccm,
    apply_gains,
    balanced_to_srgb,
    gamma_compress,
    mosaic,
    pack,
    smoothstep,
    white_balance_packed,
)
from .data import load_rgb

__all__ = [
    "CameraParams",
    "add_noise",
    "apply_ccm",
    "apply_gains",
    "gamma_compress",
    "gamma_expand",
    "image_seed",
    "inverse_smoothstep",
    "process",
    "random_camera",
    "safe_invert_gains",
    "smoothstep",
    "synthetic_pair",
    "synthetic_test_set",
    "unprocess",
    "unprocess_rgb",
]

# Linear sRGB (D65) to CIE XYZ, IEC 61966-2-1:1999 (the sRGB standard), rounded to 4 digits as published there.
SRGB_TO_XYZ = (
    (0.4124, 0.3576, 0.1805),
    (0.2126, 0.7152, 0.0722),
    (0.0193, 0.1192, 0.9505),
)

# XYZ -> camera matrices for D65 light (Adobe DNG Converter's ColorMatrix2, in units of 1/10000), as tabulated
# in LibRaw's ``adobe_coeff`` (src/tables/colordata.cpp). The paper likewise mixes the matrices of four cameras.
XYZ_TO_CAMERA = {
    "Canon EOS 5D Mark II": (4716, 603, -830, -7798, 15474, 2480, -1496, 1937, 6651),
    "Canon EOS 5D Mark IV": (6446, -366, -864, -4436, 12204, 2513, -952, 2496, 6348),
    "Nikon D850": (10405, -3755, -1270, -5461, 13787, 1793, -1040, 2015, 6785),
    "Sony ILCE-7M3": (7374, -2389, -551, -5435, 13162, 2519, -1006, 1795, 6552),
}

# Brooks et al., Sec. 3.2: red and blue white-balance gains uniform in these ranges; the inverse of the
# digital gain normal with this mean and standard deviation.
RED_GAIN_RANGE = (1.9, 2.4)
BLUE_GAIN_RANGE = (1.5, 1.9)
INVERSE_DIGITAL_GAIN = (0.8, 0.1)
# Our guard (4 sigma): keeps the normal draw positive and the gain finite.
INVERSE_DIGITAL_GAIN_CLAMP = (0.4, 1.2)

# Brooks et al., Sec. 3.3: shot-noise variance log-uniform in this range, and the read-noise variance from
# the paper's fit to the Darmstadt Noise Dataset, ln(read) = 2.18 ln(shot) + 1.20 + N(0, 0.26^2).
SHOT_NOISE_RANGE = (1e-4, 0.012)
READ_NOISE_FIT = (2.18, 1.20, 0.26)

HIGHLIGHT_THRESHOLD = 0.9  # Brooks et al.: intensity above which inverse white balance fades out (safe gains).


# ------------------------------------------------------------------------------------ camera draws


@dataclass(frozen=True, eq=False)
class CameraParams:
    """The random camera of a batch: one row per image, all float32 tensors on one device."""

    red_gain: torch.Tensor
    """(N,) white-balance gain of red (green is 1)."""
    blue_gain: torch.Tensor
    """(N,) white-balance gain of blue."""
    digital_gain: torch.Tensor
    """(N,) overall gain applied with the white balance (brightness)."""
    cam_to_srgb: torch.Tensor
    """(N, 3, 3) white-balanced camera RGB to linear sRGB; rows sum to 1, so grey stays grey."""
    shot_noise: torch.Tensor
    """(N,) shot-noise factor: the noise variance grows by this much per unit of signal."""
    read_noise: torch.Tensor
    """(N,) read-noise variance, independent of the signal."""

    def __len__(self) -> int:
        return self.red_gain.shape[0]

    def gains(self) -> torch.Tensor:
        """(N, 3, 1, 1) per-channel multipliers of ``process``: digital gain times (red, 1, blue)."""
        ones = torch.ones_like(self.red_gain)
        return (torch.stack([self.red_gain, ones, self.blue_gain], dim=1) * self.digital_gain[:, None])[..., None, None]

    def srgb_to_cam(self) -> torch.Tensor:
        """(N, 3, 3) inverse of ``cam_to_srgb``, computed in float64 for accuracy."""
        return torch.linalg.inv(self.cam_to_srgb.double()).to(self.cam_to_srgb.dtype)

    def to(self, device: torch.device | str) -> CameraParams:
        return CameraParams(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


def _random_cam_to_srgb(generator: torch.Generator, n: int) -> torch.Tensor:
    """(N, 3, 3) float64: a random convex mix of the XYZ->camera matrices, turned into camera->sRGB.

    The mix is made into sRGB->camera with SRGB_TO_XYZ, its rows are scaled to sum to 1 (so white
    balance alone decides the colour of grey), and it is inverted.
    """
    cameras = torch.tensor(list(XYZ_TO_CAMERA.values()), dtype=torch.float64).view(-1, 3, 3) / 10000
    weights = torch.rand(n, len(cameras), generator=generator, dtype=torch.float64) + 1e-8
    weights = weights / weights.sum(dim=1, keepdim=True)
    xyz_to_cam = torch.einsum("nk,kij->nij", weights, cameras)
    srgb_to_cam = xyz_to_cam @ torch.tensor(SRGB_TO_XYZ, dtype=torch.float64)
    srgb_to_cam = srgb_to_cam / srgb_to_cam.sum(dim=2, keepdim=True)
    return torch.linalg.inv(srgb_to_cam)


def _random_noise(
    generator: torch.Generator, n: int, shot_range: tuple[float, float] = SHOT_NOISE_RANGE
) -> tuple[torch.Tensor, torch.Tensor]:
    """(shot, read) variances: shot log-uniform, read from the paper's log-linear fit plus jitter."""
    log_shot = _uniform(generator, n, math.log(shot_range[0]), math.log(shot_range[1]))
    slope, intercept, jitter = READ_NOISE_FIT
    log_read = slope * log_shot + intercept + jitter * torch.randn(n, generator=generator, dtype=torch.float64)
    return log_shot.exp(), log_read.exp()


def random_camera(
    generator: torch.Generator, n: int = 1, shot_range: tuple[float, float] = SHOT_NOISE_RANGE
) -> CameraParams:
    """Draw ``n`` cameras (gains, colour matrix, noise levels) as in Brooks et al., from ``generator`` only.

    ``shot_range`` bounds the shot-noise variance (the read noise follows it along the fit).
    """
    red = _uniform(generator, n, *RED_GAIN_RANGE)
    blue = _uniform(generator, n, *BLUE_GAIN_RANGE)
    mean, std = INVERSE_DIGITAL_GAIN
    inverse_digital = (torch.randn(n, generator=generator, dtype=torch.float64) * std + mean).clamp(
        *INVERSE_DIGITAL_GAIN_CLAMP
    )
    ccm = _random_cam_to_srgb(generator, n)
    shot, read = _random_noise(generator, n, shot_range)
    return CameraParams(
        red_gain=red.float(),
        blue_gain=blue.float(),
        digital_gain=(1 / inverse_digital).float(),
        cam_to_srgb=ccm.float(),
        shot_noise=shot.float(),
        read_noise=read.float(),
    )


# ------------------------------------------------------------------------------- pipeline steps


def gamma_expand(display: torch.Tensor) -> torch.Tensor:
    """The inverse of ``gamma_compress``: max(y, eps) ** 2.2."""
    return display.clamp(min=GAMMA_EPS) ** GAMMA


def inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    """The closed-form inverse of ``smoothstep`` on [0, 1]: 1/2 - sin(asin(1 - 2y) / 3)."""
    y = y.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


def safe_invert_gains(image: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Divide by the white-balance gains, but fade the division out in highlights (Brooks et al., Sec. 3.2).

    Plain division would turn saturated white into grey that no real camera records; instead,
    with intensity x (the pixel's channel mean) and a = (max(x - t, 0) / (1 - t))^2, t = 0.9,
    the result is max(x / g, (1 - a) x / g + a x). Below t this is exactly x / g.
    """
    intensity = image.mean(dim=1, keepdim=True)
    alpha = ((intensity - HIGHLIGHT_THRESHOLD).clamp(min=0.0) / (1.0 - HIGHLIGHT_THRESHOLD)) ** 2
    divided = image / gains
    return torch.maximum(divided, (1.0 - alpha) * divided + alpha * image)


def add_noise(
    raw: torch.Tensor, shot: torch.Tensor, read: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Heteroscedastic Gaussian sensor noise: variance = shot * x + read, one (shot, read) per image.

    ``shot`` and ``read`` are (N,). The noise is drawn on the CPU (where ``generator`` lives) and
    the result is not clipped, as real black-subtracted RAW data is not.
    """
    scale = [-1] + [1] * (raw.dim() - 1)
    variance = shot.view(scale).to(raw) * raw.clamp(min=0.0) + read.view(scale).to(raw)
    noise = torch.randn(raw.shape, generator=generator, dtype=raw.dtype).to(raw.device)
    return raw + noise * variance.sqrt()


# ------------------------------------------------------------------------------- whole pipelines


def process(linear: torch.Tensor, params: CameraParams) -> torch.Tensor:
    """Camera pipeline: (N, 3, H, W) linear camera RGB -> sRGB in [0, 1].

    White balance and digital gain, clip (sensor saturation), colour matrix, clip, gamma, tone curve.
    """
    return balanced_to_srgb(apply_gains(linear, params.gains().to(linear)), params.cam_to_srgb.to(linear.device))


def unprocess_rgb(srgb: torch.Tensor, params: CameraParams) -> torch.Tensor:
    """The inverse of ``process``: (N, 3, H, W) sRGB -> linear camera RGB in [0, 1], before the CFA.

    Exact where nothing is clipped: out-of-gamut colours (negative after the inverse colour
    matrix) and highlights treated by ``safe_invert_gains`` do not come back exactly.
    """
    image = gamma_expand(inverse_smoothstep(srgb))
    image = apply_ccm(image, params.srgb_to_cam().to(srgb.device)).clamp(0.0, 1.0)
    return safe_invert_gains(image, params.gains().to(srgb)).clamp(0.0, 1.0)


def _even(image: torch.Tensor) -> torch.Tensor:
    """Crop (..., H, W) to even H and W, so the RGGB mosaic packs without padding."""
    return image[..., : image.shape[-2] // 2 * 2, : image.shape[-1] // 2 * 2]


def _check_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) from (N, 3, H, W) or (3, H, W); ValueError for anything else or sizes below 2x2."""
    if rgb.dim() == 3:
        rgb = rgb[None]
    if rgb.dim() != 4 or rgb.shape[1] != 3 or min(rgb.shape[-2:]) < 2:
        raise ValueError(f"expected an (N, 3, H, W) image of at least 2x2 pixels, got shape {tuple(rgb.shape)}")
    return rgb


def _unprocess_with(
    srgb: torch.Tensor, params: CameraParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy packed, clean packed, clean linear camera RGB) of an even-sized (N, 3, H, W) image."""
    linear = unprocess_rgb(srgb, params)
    clean = pack(mosaic(linear, "RGGB"))
    noisy = add_noise(clean, params.shot_noise, params.read_noise, generator)
    return noisy, clean, linear


def unprocess(rgb: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, CameraParams]:
    """Synthetic RAW of an (N, 3, H, W) sRGB batch: (noisy packed, clean packed, cameras), one camera per image.

    Packed tensors are (N, 4, H/2, W/2) (R, G1, G2, B); odd sizes lose their last row/column.
    ``process(demosaicked clean, params)`` develops the clean RAW back to (nearly) ``rgb``.
    """
    rgb = _even(_check_rgb(rgb))
    params = random_camera(generator, rgb.shape[0]).to(rgb.device)
    noisy, clean, _ = _unprocess_with(rgb, params, generator)
    return noisy, clean, params


def synthetic_raw(srgb: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A RAW-to-RGB training pair: (noisy packed RAW, white-balanced; clean linear RGB, white-balanced).

    The white balance (and digital gain) is applied before the network, as the raw2rgb
    command applies the file's; the colour matrix, gamma and tone curve come after it.
    """
    rgb = _even(_check_rgb(srgb))
    params = random_camera(generator, rgb.shape[0]).to(rgb.device)
    noisy, _, linear = _unprocess_with(rgb, params, generator)
    gains = params.gains().to(rgb)
    return white_balance_packed(noisy, gains), apply_gains(linear, gains).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- fixed test sets


def synthetic_pair(rgb: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, CameraParams]:
    """A deterministic RAW-to-RGB test pair of one sRGB image: (noisy packed RAW, sRGB target, camera).

    ``rgb`` is (3, H, W) or (1, 3, H, W); everything random comes from ``seed``. The target is
    ``process`` of the clean linear image, i.e. the input (cropped to even size) except where
    unprocessing had to clip, so that a perfect RAW-to-RGB model can reach it exactly.
    """
    rgb = _even(_check_rgb(rgb))
    if rgb.shape[0] != 1:
        raise ValueError(f"synthetic_pair takes one image, got a batch of {rgb.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    params = random_camera(generator, 1).to(rgb.device)
    noisy, _, linear = _unprocess_with(rgb, params, generator)
    return noisy, process(linear, params), params


def image_seed(name: str, base_seed: int = 0) -> int:
    """A stable per-image seed from a file name (CRC-32), so adding files does not change the others."""
    return (zlib.crc32(name.encode("utf-8")) + base_seed) % 2**63


def synthetic_test_set(
    paths: list[Path], base_seed: int = 0
) -> Iterator[tuple[Path, torch.Tensor, torch.Tensor, CameraParams]]:
    """``(path, noisy packed RAW, sRGB target, camera)`` of every image, each seeded by its file name."""
    for path in paths:
        rgb = torch.tensor(load_rgb(path)).permute(2, 0, 1).float() / 255.0
        yield (path, *synthetic_pair(rgb, image_seed(Path(path).name, base_seed)))
