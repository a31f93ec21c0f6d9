"""A minimal DNG writer: an uncompressed 16-bit Bayer mosaic with the camera facts LibRaw reads.

The file is a little-endian TIFF with one IFD (the raw image itself, NewSubFileType 0) and the
DNG 1.4 tags for a CFA image: pattern, black and white levels, ColorMatrix1 (XYZ -> camera,
D65) and AsShotNeutral. Tag codes and types follow the TIFF 6.0 and DNG 1.4 specifications.
``bayer_from_rgb`` makes the mosaic of a known linear colour image, so tests can check a
RAW -> RGB round trip against it; ``denoise eval`` writes its synthetic RAW test images with
``mosaic_codes`` and ``color_matrix_for`` so that LibRaw develops them like camera files.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .training.unprocess import XYZ_TO_CAMERA

# TIFF field types (TIFF 6.0, section 2) and their sizes in bytes.
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_SIZES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8}
_FORMATS = {BYTE: "B", ASCII: "B", SHORT: "H", LONG: "I", RATIONAL: "II", SRATIONAL: "ii"}

# CFAPattern codes (TIFF/EP): 0 red, 1 green, 2 blue.
_CFA_CODE = {"R": 0, "G": 1, "B": 2}
_CHANNEL = _CFA_CODE
ILLUMINANT_D65 = 21  # EXIF LightSource code, used by CalibrationIlluminant1
DEFAULT_COLOR_MATRIX = tuple(v / 10000 for v in XYZ_TO_CAMERA["Canon EOS 5D Mark II"])
RATIONAL_DENOMINATOR = 1_000_000

Tag = tuple[int, int, list[int]]  # (code, TIFF type, values; a rational is two ints)


def _rationals(values: Sequence[float]) -> list[int]:
    """Numerator/denominator pairs with a fixed denominator, flattened."""
    out: list[int] = []
    for value in values:
        out += [round(value * RATIONAL_DENOMINATOR), RATIONAL_DENOMINATOR]
    return out


def _ascii(text: str) -> list[int]:
    return [*text.encode("ascii"), 0]


def _count(kind: int, values: list[int]) -> int:
    return len(values) // 2 if kind in (RATIONAL, SRATIONAL) else len(values)


def _pack_values(kind: int, values: list[int]) -> bytes:
    return struct.pack("<" + _FORMATS[kind][-1] * len(values), *values)


def _black_levels(black: float | Sequence[float]) -> list[float]:
    """Four black levels, one per site of the 2x2 CFA cell in reading order."""
    levels = [float(black)] * 4 if isinstance(black, (int, float)) else [float(b) for b in black]
    if len(levels) != 4:
        raise ValueError(f"black must be one level or four (one per CFA site), got {len(levels)}")
    return levels


def _tags(
    height: int,
    width: int,
    pattern: str,
    black: list[float],
    white: int,
    as_shot_neutral: Sequence[float],
    color_matrix: Sequence[float],
    camera_model: str,
) -> list[Tag]:
    """Every IFD entry except the strip offset, which depends on the layout."""
    return [
        (254, LONG, [0]),  # NewSubFileType: main image
        (256, LONG, [width]),  # ImageWidth
        (257, LONG, [height]),  # ImageLength
        (258, SHORT, [16]),  # BitsPerSample
        (259, SHORT, [1]),  # Compression: none
        (262, SHORT, [32803]),  # PhotometricInterpretation: CFA
        (271, ASCII, _ascii("DenoiseCLI")),  # Make
        (272, ASCII, _ascii("Synthetic")),  # Model
        (274, SHORT, [1]),  # Orientation: top-left
        (277, SHORT, [1]),  # SamplesPerPixel
        (278, LONG, [height]),  # RowsPerStrip: one strip
        (279, LONG, [height * width * 2]),  # StripByteCounts
        (284, SHORT, [1]),  # PlanarConfiguration: chunky
        (33421, SHORT, [2, 2]),  # CFARepeatPatternDim
        (33422, BYTE, [_CFA_CODE[c] for c in pattern]),  # CFAPattern
        (50706, BYTE, [1, 4, 0, 0]),  # DNGVersion
        (50707, BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
        (50708, ASCII, _ascii(camera_model)),  # UniqueCameraModel
        (50710, BYTE, [0, 1, 2]),  # CFAPlaneColor: R, G, B
        (50711, SHORT, [1]),  # CFALayout: rectangular
        (50713, SHORT, [2, 2]),  # BlackLevelRepeatDim: one level per CFA site
        (50714, RATIONAL, _rationals(black)),  # BlackLevel
        (50717, LONG, [white]),  # WhiteLevel
        (50721, SRATIONAL, _rationals(color_matrix)),  # ColorMatrix1: XYZ -> camera
        (50728, RATIONAL, _rationals(as_shot_neutral)),  # AsShotNeutral
        (50778, SHORT, [ILLUMINANT_D65]),  # CalibrationIlluminant1
    ]


def _layout(tags: list[Tag], data: bytes) -> bytes:
    """Header, IFD (tags sorted, StripOffsets added), out-of-line values, then the strip."""
    tags = sorted([*tags, (273, LONG, [0])])
    ifd_size = 2 + 12 * len(tags) + 4
    extra_at = 8 + ifd_size
    extra = b""
    entries = []
    for code, kind, values in tags:
        raw = _pack_values(kind, values)
        if len(raw) > 4:
            if (extra_at + len(extra)) % 2:
                extra += b"\0"  # TIFF values start on word boundaries
            entries.append((code, kind, _count(kind, values), struct.pack("<I", extra_at + len(extra))))
            extra += raw
        else:
            entries.append((code, kind, _count(kind, values), raw.ljust(4, b"\0")))
    strip_at = extra_at + len(extra) + (extra_at + len(extra)) % 2
    body = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<H", len(entries))
    for code, kind, count, value in entries:
        if code == 273:
            value = struct.pack("<I", strip_at)
        body += struct.pack("<HHI", code, kind, count) + value
    body += struct.pack("<I", 0) + extra
    return body.ljust(strip_at, b"\0") + data


def write_dng(
    path: Path,
    mosaic_uint16: np.ndarray,
    pattern: str = "RGGB",
    black: float | Sequence[float] = 512,
    white: int = 16383,
    as_shot_neutral: Sequence[float] = (0.5, 1.0, 0.625),
    color_matrix: Sequence[float] | np.ndarray = DEFAULT_COLOR_MATRIX,
    camera_model: str = "DenoiseCLI Synthetic",
) -> Path:
    """Write an (H, W) uint16 Bayer mosaic as a DNG.

    ``black`` is one level or four (per site of the 2x2 cell, reading order); ``as_shot_neutral``
    is the DNG AsShotNeutral tag, the camera's (R, G, B) response to white, so the white-balance
    gains are its reciprocals; ``color_matrix`` is the 3x3 XYZ -> camera matrix (row-major).
    """
    mosaic = np.asarray(mosaic_uint16)
    if mosaic.ndim != 2 or mosaic.dtype != np.uint16:
        raise ValueError(f"expected an (H, W) uint16 mosaic, got {mosaic.dtype} {mosaic.shape}")
    if pattern not in ("RGGB", "BGGR", "GRBG", "GBRG"):
        raise ValueError(f"not a Bayer pattern: {pattern!r}")
    matrix = [float(v) for v in np.asarray(color_matrix, dtype=np.float64).ravel()]
    if len(matrix) != 9 or len(as_shot_neutral) != 3:
        raise ValueError("color_matrix must have 9 values and as_shot_neutral 3")
    height, width = mosaic.shape
    tags = _tags(height, width, pattern, _black_levels(black), white, as_shot_neutral, matrix, camera_model)
    path = Path(path)
    path.write_bytes(_layout(tags, mosaic.astype("<u2").tobytes()))
    return path


# ------------------------------------------------------------------------------- sensor data and colour


def mosaic_codes(mosaic: np.ndarray, black: float | Sequence[float] = 512, white: int = 16383) -> np.ndarray:
    """Normalised (H, W) sensor samples (0 = black, 1 = white) as the uint16 codes a DNG stores.

    Each site gets ``black + x * (white - black)`` with its own black level (one, or four in
    the reading order of the 2x2 cell), rounded and clipped only to the 16-bit container: like
    real sensor data, noise may fall below black and highlights may exceed white.
    """
    levels = _black_levels(black)
    samples = np.asarray(mosaic, dtype=np.float64)
    if samples.ndim != 2:
        raise ValueError(f"expected an (H, W) mosaic, got shape {samples.shape}")
    out = np.empty(samples.shape, dtype=np.float64)
    for index, level in enumerate(levels):
        dy, dx = divmod(index, 2)
        out[dy::2, dx::2] = level + samples[dy::2, dx::2] * (white - level)
    return np.clip(np.round(out), 0, 65535).astype(np.uint16)


def bayer_from_rgb(
    rgb: np.ndarray,
    pattern: str = "RGGB",
    black: float | Sequence[float] = 512,
    white: int = 16383,
    as_shot_neutral: Sequence[float] = (0.5, 1.0, 0.625),
) -> np.ndarray:
    """The raw (H, W) uint16 mosaic a camera with this neutral would record for white-balanced ``rgb``.

    Each site samples one colour of ``rgb`` (H, W, 3, in [0, 1]) times the neutral, scaled
    to [black, white] of its site and rounded; white balance with gains 1 / neutral restores ``rgb``.
    """
    camera = np.clip(np.asarray(rgb, dtype=np.float64) * np.asarray(as_shot_neutral, dtype=np.float64), 0.0, 1.0)
    sampled = np.empty(camera.shape[:2], dtype=np.float64)
    for index, letter in enumerate(pattern):
        dy, dx = divmod(index, 2)
        sampled[dy::2, dx::2] = camera[dy::2, dx::2, _CHANNEL[letter]]
    return mosaic_codes(sampled, black, white)


# Linear sRGB (D65) -> XYZ as dcraw/LibRaw use it (Lindbloom's values for IEC 61966-2-1), to turn a
# ColorMatrix1 into the camera -> sRGB matrix LibRaw applies.
LIBRAW_SRGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)


def color_matrix_for(cam_to_srgb: np.ndarray) -> np.ndarray:
    """The ColorMatrix1 (3x3 XYZ -> camera) from which LibRaw derives ``cam_to_srgb`` as its colour matrix.

    LibRaw makes sRGB -> camera as ColorMatrix1 times its sRGB -> XYZ, scales each row to sum
    to 1 and inverts it. For a camera -> sRGB matrix whose rows sum to 1 (grey stays grey,
    as ``unprocess.CameraParams.cam_to_srgb``), inv(cam_to_srgb) times XYZ -> sRGB inverts that
    exactly; other matrices come back with their rows rescaled.
    """
    matrix = np.asarray(cam_to_srgb, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got shape {matrix.shape}")
    return np.linalg.inv(matrix) @ np.linalg.inv(np.asarray(LIBRAW_SRGB_TO_XYZ))
