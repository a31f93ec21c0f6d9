"""Realistic camera noise on clean sRGB photos, for training denoisers of real photos.

Camera noise is made on the sensor, not in sRGB: it grows with the signal (shot noise) on a
floor (read noise), is spread over neighbouring pixels and colours by demosaicking, bent by
the tone curve and reshaped by JPEG. So each clean training crop is

0. softened by the camera's optics (lens and anti-aliasing filter: a Gaussian of
   ``OPTICS_SIGMA`` px). Training photos are down-scaled and sharp to the pixel, which no
   sensor sees; mosaicking and demosaicking them left errors (std 7 of 255 with Malvar, 13
   bilinear, on BSDS crops) larger than much camera noise in the targets, and a model learns
   such colour patterns as content, real noise among them,
1. unprocessed to linear camera RAW with a random camera (Brooks et al. 2019; the raw2rgb
   code in ``unprocess``),
2. given Poisson-Gaussian sensor noise, variance ``shot * x + read``, with the shot level
   log-uniform over ``SHOT_RANGE`` and the read level following it along Brooks et al.'s
   log-linear fit (a camera's ISO curve),
3. developed back by a cheap camera pipeline: bilinear or Malvar demosaicking, white balance
   and digital gain, colour matrix, gamma, tone curve; then stored as 8 bits,
4. for ``NR_FRACTION`` of the images, given the camera's own noise reduction: the noise's
   chroma (and a little of its luma) is low-passed, as in-camera denoisers smooth colour
   noise hardest. Modelled as an ideal edge-preserving filter, i.e. it acts on the noise only,
   which leaves low-frequency, spatially correlated noise as real camera JPEGs carry,
5. for ``JPEG_FRACTION`` of the images, JPEG-compressed at a quality in ``JPEG_QUALITY``.

``AWGN_FRACTION`` of the images get plain Gaussian noise (sigma in ``AWGN_SIGMA``, 8-bit
units) instead, so the model is not brittle. The target is the noise-free mosaic developed
by the same pipeline, demosaicker included: the residual is noise only. (A target of the
clean photo itself made the demosaicker's errors, about 14 of 255 in standard deviation on
BSDS crops, part of the "noise": `python -m denoise_cli.training.noisestats`.) Real
references keep their camera's demosaicking too: SIDD's ground truth and PolyU's means.
"""

from __future__ import annotations

import torch

from ..jpeg import jpeg_roundtrip
from ..raw import demosaic_bilinear, demosaic_malvar, mosaic
from .degrade import gaussian_blur
from .unprocess import CameraParams, _check_rgb, _even, add_noise, process, random_camera, unprocess_rgb

# Shot-noise variance (linear RAW in [0, 1]): 1e-4 is a clean base-ISO exposure; 2e-2, about
# 7.6 stops of gain above it, is phone-camera noise in a dim room (ISO ~100 to ~12800).
SHOT_RANGE = (1e-4, 2e-2)
OPTICS_SIGMA = (0.6, 1.2)
"""Gaussian width (pixels) of the optics' blur on the clean photo, uniform per image; after 0.7 px
the demosaicking errors are 2 (Malvar) and 5 (bilinear) of 255, after 1.0 px 1.3 and 3.1."""
MALVAR_FRACTION = 0.75
NR_FRACTION = 0.5
NR_CHROMA_SIGMA = (0.5, 2.5)
NR_LUMA_SIGMA = (0.0, 1.0)
"""Gaussian low-pass widths (pixels) of the in-camera noise reduction, uniform per image."""
JPEG_FRACTION = 0.3
JPEG_QUALITY = (60, 95)
AWGN_FRACTION = 0.15
AWGN_SIGMA = (0.0, 50.0)

RANGES = [
    f"optics: the clean photo blurred by a Gaussian of sigma {OPTICS_SIGMA} px before the camera",
    f"shot-noise variance log-uniform in {SHOT_RANGE} (linear RAW, [0, 1]); read variance"
    " ln(read) = 2.18 ln(shot) + 1.20 + N(0, 0.26^2) (Brooks et al.)",
    "camera: Brooks et al.'s white-balance gains, digital gain and a random mix of four cameras' colour matrices",
    f"demosaicking: Malvar-He-Cutler for {MALVAR_FRACTION:.0%} of the images, bilinear for the rest",
    f"in-camera noise reduction for {NR_FRACTION:.0%} of the images: the noise's chroma low-passed by a Gaussian of"
    f" sigma {NR_CHROMA_SIGMA} px, its luma by {NR_LUMA_SIGMA} px (noise only: an ideal edge-preserving filter)",
    f"8-bit output; JPEG at quality {JPEG_QUALITY[0]}-{JPEG_QUALITY[1]} (4:2:0) for {JPEG_FRACTION:.0%}",
    f"{AWGN_FRACTION:.0%} of the images: AWGN sigma uniform in {AWGN_SIGMA} (8-bit units) on the clean photo instead",
]
"""What the model card records about the training noise."""


def quantize8(image: torch.Tensor) -> torch.Tensor:
    return image.clamp(0.0, 1.0).mul(255.0).round().div(255.0)


def _fraction(generator: torch.Generator, count: int, share: float) -> torch.Tensor:
    """(count,) bool: each image independently with probability ``share``."""
    return torch.rand(count, generator=generator) < share


def camera_noise_reduction(noise: torch.Tensor, chroma_sigma: torch.Tensor, luma_sigma: torch.Tensor) -> torch.Tensor:
    """Low-pass the chroma of an (N, 3, H, W) noise field by ``chroma_sigma`` and its luma
    (the mean of R, G and B) by ``luma_sigma``, one width per image."""
    luma = noise.mean(1, keepdim=True)
    return gaussian_blur(noise - luma, chroma_sigma) + gaussian_blur(luma, luma_sigma)


def sensor_noise(
    rgb: torch.Tensor,
    camera: CameraParams,
    malvar: torch.Tensor,
    generator: torch.Generator,
    reduction: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-4 for an even-sized (N, 3, H, W) sRGB batch: (noisy 8-bit sRGB, clean target).

    ``malvar`` (N,) bool picks Malvar demosaicking per image, bilinear otherwise.
    ``reduction``: per-image (chroma, luma) low-pass widths of the camera's noise reduction,
    none if not given.
    """
    malvar = malvar.view(-1, 1, 1, 1)

    def develop(raw: torch.Tensor) -> torch.Tensor:
        return process(torch.where(malvar, demosaic_malvar(raw), demosaic_bilinear(raw).clamp(0.0, 1.0)), camera)

    clean_raw = mosaic(unprocess_rgb(rgb, camera))
    noisy_raw = add_noise(clean_raw, camera.shot_noise, camera.read_noise, generator)
    target = develop(clean_raw)
    noisy = develop(noisy_raw)
    if reduction is not None:
        noisy = target + camera_noise_reduction(noisy - target, *reduction)
    return quantize8(noisy), target


def camera_noise(clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A training degradation: (noisy 8-bit sRGB, clean target) of an (N, 3, H, W) sRGB batch.

    Odd sizes lose their last row or column (the Bayer mosaic needs even sides).
    """
    rgb = _even(_check_rgb(clean))
    count = rgb.shape[0]
    optics = torch.empty(count).uniform_(*OPTICS_SIGMA, generator=generator)
    rgb = gaussian_blur(rgb, optics)
    camera = random_camera(generator, count, SHOT_RANGE)
    malvar = _fraction(generator, count, MALVAR_FRACTION)
    reduce = _fraction(generator, count, NR_FRACTION)
    chroma = torch.empty(count).uniform_(*NR_CHROMA_SIGMA, generator=generator) * reduce
    luma = torch.empty(count).uniform_(*NR_LUMA_SIGMA, generator=generator) * reduce
    noisy, target = sensor_noise(rgb, camera, malvar, generator, (chroma, luma))

    compress = _fraction(generator, count, JPEG_FRACTION)
    qualities = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (count,), generator=generator)
    if compress.any():
        noisy[compress] = jpeg_roundtrip(noisy[compress], qualities[compress].tolist())

    gaussian = _fraction(generator, count, AWGN_FRACTION)
    sigma = torch.empty(count).uniform_(*AWGN_SIGMA, generator=generator).view(-1, 1, 1, 1) / 255.0
    awgn = quantize8(target + torch.randn(target.shape, generator=generator) * sigma)
    noisy = torch.where(gaussian.view(-1, 1, 1, 1), awgn, noisy)
    return noisy, target
