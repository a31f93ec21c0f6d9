"""JPEG helpers for deblocking: quality estimation from a file's quantisation tables and a training degradation.

Tables are handled in natural (row-major) order throughout. Since 8.3 (python-pillow/Pillow#4989), so in every
version this project supports, Pillow reads ``Image.quantization`` and takes ``qtables=`` in natural order, although
the DQT segment in the file stores them in zig-zag order; tests/test_jpeg.py checks this against the raw bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile


def _frozen(rows: list[list[int]]) -> np.ndarray:
    """A read-only flat int table from 8 rows of 8."""
    table = np.array(rows, dtype=np.int64).reshape(64)
    table.flags.writeable = False
    return table


# ITU-T T.81 Annex K.1 (Table K.1 luminance, Table K.2 chrominance), natural order; libjpeg's quality-50 tables.
LUMA_TABLE = _frozen(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)
CHROMA_TABLE = _frozen(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ]
)

# Pillow's RGB -> 'L' weights (ITU-R 601-2 luma in 16-bit fixed point), so float targets match its conversion.
_PILLOW_LUMA = (19595 / 65536, 38470 / 65536, 7471 / 65536)


@dataclass(frozen=True)
class QualityEstimate:
    """Estimated IJG quality of a JPEG; ``exact`` when its tables are libjpeg's at that quality."""

    quality: int
    exact: bool
    gray: bool


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """``base`` scaled to ``quality`` like libjpeg's ``jpeg_set_quality`` (forced baseline, so entries 1..255)."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    scaled = (np.asarray(base, dtype=np.int64) * scale + 50) // 100
    return np.clip(scaled, 1, 255)


@lru_cache(maxsize=1)
def _ijg_bank() -> tuple[np.ndarray, np.ndarray]:
    """Luma and chroma IJG tables for qualities 1..100, shape (100, 64) each."""
    luma = np.stack([ijg_table(LUMA_TABLE, q) for q in range(1, 101)])
    chroma = np.stack([ijg_table(CHROMA_TABLE, q) for q in range(1, 101)])
    return luma, chroma


def _describe(source: Path | bytes) -> str:
    """A short name for ``source`` in error messages."""
    return f"<{len(source)} bytes>" if isinstance(source, bytes | bytearray) else str(source)


def read_tables(source: Path | bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Luma and chroma (None when there is none) quantisation tables of a JPEG, natural order, shape (64,).

    Only the header is parsed (``Image.open`` is lazy), so this is cheap on big or truncated files. The
    tables are picked by the components that use them: the first component's is luma, the first other table
    used by a later component is chroma.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        image = Image.open(stream)
    except UnidentifiedImageError:
        raise ValueError(f"not a JPEG file: {_describe(source)} (unrecognised image data)") from None
    with image:
        if not isinstance(image, JpegImageFile):  # also admits MPO, a sequence of JPEGs
            raise ValueError(f"not a JPEG file: {_describe(source)} (it is {image.format})")
        tables = {index: np.asarray(values, dtype=np.int64) for index, values in image.quantization.items()}
        used = [component[3] for component in image.layer]
    luma_index = used[0]
    chroma_index = next((index for index in used[1:] if index != luma_index), None)
    if luma_index not in tables or (chroma_index is not None and chroma_index not in tables):
        raise ValueError(f"malformed JPEG: {_describe(source)} (a component uses a missing quantisation table)")
    return tables[luma_index], None if chroma_index is None else tables[chroma_index]


def estimate_quality(source: Path | bytes) -> QualityEstimate:
    """The IJG quality whose tables are closest (least squares) to the file's; exact for libjpeg-style encoders."""
    luma, chroma = read_tables(source)
    bank_luma, bank_chroma = _ijg_bank()
    error = ((bank_luma - luma) ** 2).sum(axis=1)
    if chroma is not None:
        error = error + ((bank_chroma - chroma) ** 2).sum(axis=1)
    best = int(np.argmin(error))  # ties go to the lower quality
    return QualityEstimate(quality=best + 1, exact=bool(error[best] == 0), gray=chroma is None)


def to_gray(batch: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) -> its luma replicated to 3 channels, with the weights Pillow's ``convert('L')`` uses."""
    weights = torch.tensor(_PILLOW_LUMA, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch * weights).sum(dim=1, keepdim=True).expand_as(batch).contiguous()


def _roundtrip_one(image: torch.Tensor, quality: int, gray: bool) -> torch.Tensor:
    """Encode one (3,H,W) [0,1] image as an in-memory JPEG and decode it back to float (3,H,W)."""
    pixels = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(pixels)
    if gray:
        picture = picture.convert("L")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")  # subsampling is ignored for 'L'
    with Image.open(buffer) as decoded:
        array = np.asarray(decoded.convert("L" if gray else "RGB"))
    out = torch.from_numpy(array.copy()).to(dtype=image.dtype, device=image.device) / 255
    return out.expand(3, -1, -1).contiguous() if gray else out.permute(2, 0, 1).contiguous()


def _check_batch(batch: torch.Tensor) -> None:
    """Reject anything but an (N,3,H,W) floating batch."""
    if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
        raise ValueError(f"expected a float (N,3,H,W) batch, got {tuple(batch.shape)} {batch.dtype}")


def _check_qualities(qualities: torch.Tensor | list[int], count: int) -> list[int]:
    """One integer quality in 1..100 per image."""
    values = [int(q) for q in (qualities.tolist() if isinstance(qualities, torch.Tensor) else qualities)]
    if len(values) != count:
        raise ValueError(f"need one quality per image: {len(values)} qualities for {count} images")
    if any(not 1 <= q <= 100 for q in values):
        raise ValueError(f"JPEG qualities must be in 1..100, got {values}")
    return values


def jpeg_roundtrip(batch: torch.Tensor, qualities: torch.Tensor | list[int], gray: bool = False) -> torch.Tensor:
    """JPEG-compress each image of a float [0,1] (N,3,H,W) batch at its quality with Pillow and decode it.

    Colour images use Pillow's 4:2:0 chroma subsampling; ``gray`` encodes Pillow's 'L' conversion and
    returns it replicated to 3 channels. Same shape, dtype and device as ``batch``.
    """
    _check_batch(batch)
    values = _check_qualities(qualities, batch.shape[0])
    if batch.shape[0] == 0:
        return batch.clone()
    return torch.stack([_roundtrip_one(image, q, gray) for image, q in zip(batch, values, strict=True)])


def random_jpeg(
    quality_range: tuple[int, int], gray_fraction: float = 0.0
) -> Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
    """A training degradation: JPEG at a quality drawn uniformly from ``quality_range`` (inclusive) per image.

    About ``gray_fraction`` of the images become grayscale, input and target alike (luma on 3 channels), so
    the net also learns gray files. All draws use the given generator, so a seed reproduces a batch.
    """
    low, high = quality_range
    if not 1 <= low <= high <= 100:
        raise ValueError(f"quality range must satisfy 1 <= low <= high <= 100, got {quality_range}")
    if not 0.0 <= gray_fraction <= 1.0:
        raise ValueError(f"gray_fraction must be in [0, 1], got {gray_fraction}")

    def degrade(clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(clean)
        count = clean.shape[0]
        qualities = torch.randint(low, high + 1, (count,), generator=generator).tolist()
        gray = (torch.rand(count, generator=generator) < gray_fraction).tolist()
        degraded = [_roundtrip_one(image, q, g) for image, q, g in zip(clean, qualities, gray, strict=True)]
        mask = torch.tensor(gray, dtype=torch.bool, device=clean.device).view(-1, 1, 1, 1)
        target = torch.where(mask, to_gray(clean), clean)
        return (torch.stack(degraded) if degraded else clean.clone()), target

    return degrade
