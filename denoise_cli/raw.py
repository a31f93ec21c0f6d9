"""Camera RAW files and Bayer mosaics: reading, CFA normalisation, packing and classical demosaicking.

Tensors are float32 NCHW in [0, 1]. A mosaic is (N, 1, H, W), one sample per pixel, and the
letters of a CFA pattern name the colours of its 2x2 cell in reading order (row 0, then row 1).
Everything after reading works on RGGB: ``to_rggb`` brings the other three patterns to it by
adding one mirrored row on top and/or one mirrored column on the left, and ``from_rggb_crop``
takes them off a full-resolution result again. Reflect padding is used throughout because a
pixel and its mirror image are an even distance apart, so padding never breaks the mosaic.

The packed form is (N, 4, H/2, W/2) with channels R, G1 (the green in the red rows), G2, B.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rawpy
import torch
import torch.nn.functional as F

from .imageio import DEFAULT_MAX_PIXELS, RAW_SUFFIXES, ImageReadError, Picture, one_line, read_image

__all__ = [
    "CFA_PATTERNS",
    "RAW_SUFFIXES",
    "RawMosaic",
    "RawReadError",
    "apply_ccm",
    "apply_gains",
    "balanced_to_srgb",
    "bayer_from_picture",
    "demosaic_bilinear",
    "demosaic_malvar",
    "develop_classic",
    "from_rggb_crop",
    "gamma_compress",
    "is_raw_path",
    "mosaic",
    "orient",
    "pack",
    "pad_to_even",
    "read_bayer_image",
    "read_raw",
    "rggb_offset",
    "smoothstep",
    "sparse_rgb",
    "to_rggb",
    "unpack",
    "white_balance_gains",
    "white_balance_packed",
]

CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

_CHANNEL = {"R": 0, "G": 1, "B": 2}

# Demosaicking kernels, each scaled by 8, in the order: green at R/B sites; the colour whose two
# neighbours lie in the same row, at G sites; the colour whose two neighbours lie in the same
# column, at G sites; the opposite colour (B at R, R at B), whose neighbours are diagonal.
_BILINEAR_KERNELS = (
    ((0, 2, 0), (2, 0, 2), (0, 2, 0)),
    ((0, 0, 0), (4, 0, 4), (0, 0, 0)),
    ((0, 4, 0), (0, 0, 0), (0, 4, 0)),
    ((2, 0, 2), (0, 0, 0), (2, 0, 2)),
)
# Malvar, He and Cutler (ICASSP 2004), Fig. 2: bilinear plus a gain-weighted Laplacian of the
# colour that was sampled at the site, with the published coefficients.
_MALVAR_KERNELS = (
    ((0, 0, -1, 0, 0), (0, 0, 2, 0, 0), (-1, 2, 4, 2, -1), (0, 0, 2, 0, 0), (0, 0, -1, 0, 0)),
    ((0, 0, 0.5, 0, 0), (0, -1, 0, -1, 0), (-1, 4, 5, 4, -1), (0, -1, 0, -1, 0), (0, 0, 0.5, 0, 0)),
    ((0, 0, -1, 0, 0), (0, -1, 4, -1, 0), (0.5, 0, 5, 0, 0.5), (0, -1, 4, -1, 0), (0, 0, -1, 0, 0)),
    ((0, 0, -1.5, 0, 0), (0, 2, 0, 2, 0), (-1.5, 0, 6, 0, -1.5), (0, 2, 0, 2, 0), (0, 0, -1.5, 0, 0)),
)
# For each RGGB site, where its R, G and B come from: the sample itself or one of the kernels above.
_SOURCES = {
    (0, 0): ("sample", "green", "diagonal"),
    (0, 1): ("row", "sample", "column"),
    (1, 0): ("column", "sample", "row"),
    (1, 1): ("diagonal", "green", "sample"),
}
_KERNEL_NAMES = ("green", "row", "column", "diagonal")


class RawReadError(Exception):
    """A RAW file could not be decoded. The message is one line with the reason; the caller adds the file name."""


# ----------------------------------------------------------------------- camera pipeline steps
# Shared by raw2rgb and the unprocessing that makes its training data.

GAMMA = 2.2
GAMMA_EPS = 1e-8  # Brooks et al.: the gamma curve is applied to max(x, 1e-8), which keeps its gradient finite.


def apply_gains(image: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Multiply each channel of (N, 3, H, W) by its (N, 3, 1, 1) gain."""
    return image * gains


def apply_ccm(image: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """Apply an (N, 3, 3) colour matrix to every pixel of (N, 3, H, W): out_i = sum_j ccm_ij in_j."""
    return torch.einsum("nij,njhw->nihw", ccm.to(image.dtype), image)


def gamma_compress(linear: torch.Tensor) -> torch.Tensor:
    """Linear to display values with the paper's gamma curve max(x, eps) ** (1 / 2.2)."""
    return linear.clamp(min=GAMMA_EPS) ** (1 / GAMMA)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """The paper's global tone curve 3x^2 - 2x^3 on [0, 1] (an S-curve that adds mid-tone contrast)."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def balanced_to_srgb(linear: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """White-balanced linear camera RGB (N, 3, H, W) to sRGB in [0, 1]: the steps after white balance.

    Clip (sensor saturation), the (N, 3, 3) camera-to-sRGB colour matrix, clip, gamma and tone
    curve. raw2rgb runs this on the network's output, and unprocessing's ``process`` after its gains.
    """
    image = apply_ccm(linear.clamp(0.0, 1.0), ccm).clamp(0.0, 1.0)
    return smoothstep(gamma_compress(image))


def white_balance_packed(packed: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Multiply packed (N, 4, h, w) planes R, G1, G2, B by (N, 3, 1, 1) gains (R, G, B)."""
    per_plane = torch.cat([gains[:, :1], gains[:, 1:2], gains[:, 1:2], gains[:, 2:3]], dim=1)
    return packed * per_plane.to(packed)


# ------------------------------------------------------------------------------------ CFA patterns


def _check_pattern(pattern: str) -> str:
    """The pattern in upper case; ValueError for anything but the four Bayer patterns."""
    name = pattern.upper()
    if name not in CFA_PATTERNS:
        raise ValueError(f"unknown CFA pattern {pattern!r} (use one of: {', '.join(CFA_PATTERNS)})")
    return name


def _check_shape(tensor: torch.Tensor, channels: int, min_size: int, what: str) -> None:
    """ValueError unless ``tensor`` is (N, channels, H, W) with H, W >= min_size."""
    if tensor.dim() != 4 or tensor.shape[1] != channels:
        raise ValueError(f"{what} must be (N, {channels}, H, W), got shape {tuple(tensor.shape)}")
    if min(tensor.shape[-2:]) < min_size:
        raise ValueError(f"{what} must be at least {min_size}x{min_size} pixels, got {tuple(tensor.shape[-2:])}")


def rggb_offset(pattern: str) -> tuple[int, int]:
    """Rows and columns ``to_rggb`` adds on top and on the left: the position of R in the pattern's cell."""
    return divmod(_check_pattern(pattern).index("R"), 2)


def to_rggb(mosaic: torch.Tensor, pattern: str) -> torch.Tensor:
    """An (N, 1, H, W) mosaic in ``pattern``, shifted to RGGB by mirrored rows/columns on top/left.

    The result is (N, 1, H + top, W + left) with ``(top, left) = rggb_offset(pattern)``; undo it
    on a full-resolution output with ``from_rggb_crop``.
    """
    _check_shape(mosaic, 1, 2, "a mosaic")
    top, left = rggb_offset(pattern)
    if top or left:
        mosaic = F.pad(mosaic, (left, 0, top, 0), mode="reflect")
    return mosaic


def from_rggb_crop(image: torch.Tensor, pattern: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Remove what ``to_rggb`` added from a full-resolution (..., H, W) result, so it lines up with the input.

    ``size`` (height, width) also crops the bottom and right, e.g. the rows and columns
    ``pad_to_even`` added before packing.
    """
    top, left = rggb_offset(pattern)
    image = image[..., top:, left:]
    if size is not None:
        height, width = size
        if image.shape[-2] < height or image.shape[-1] < width:
            raise ValueError(f"cannot crop {tuple(image.shape[-2:])} (after the CFA shift) to {size}")
        image = image[..., :height, :width]
    return image


def _cfa_mask(pattern: str, like: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) one-hot map of which colour ``pattern`` samples at each pixel of ``like``."""
    height, width = like.shape[-2:]
    mask = torch.zeros(1, 3, height, width, dtype=like.dtype, device=like.device)
    for index, letter in enumerate(_check_pattern(pattern)):
        dy, dx = divmod(index, 2)
        mask[:, _CHANNEL[letter], dy::2, dx::2] = 1
    return mask


def mosaic(rgb: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Sample an (N, 3, H, W) image through a colour filter array: (N, 1, H, W), one colour per pixel."""
    _check_shape(rgb, 3, 1, "an RGB image")
    return (rgb * _cfa_mask(pattern, rgb)).sum(dim=1, keepdim=True)


def sparse_rgb(mosaic: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """An (N, 1, H, W) mosaic as (N, 3, H, W) with each sample in its own colour and zeros elsewhere.

    This is the input form of mosaic-to-RGB networks such as PANet's demosaicking model.
    """
    _check_shape(mosaic, 1, 1, "a mosaic")
    return mosaic * _cfa_mask(pattern, mosaic)


# ------------------------------------------------------------------------------------------- packing


def pad_to_even(mosaic: torch.Tensor) -> torch.Tensor:
    """Add one mirrored row at the bottom and/or column at the right where H or W is odd.

    Mirroring keeps every colour on its CFA site, so the result is still a valid mosaic.
    """
    _check_shape(mosaic, 1, 2, "a mosaic")
    height, width = mosaic.shape[-2:]
    if height % 2 or width % 2:
        mosaic = F.pad(mosaic, (0, width % 2, 0, height % 2), mode="reflect")
    return mosaic


def pack(mosaic: torch.Tensor) -> torch.Tensor:
    """An RGGB (N, 1, H, W) mosaic as (N, 4, ceil(H/2), ceil(W/2)) with channels R, G1, G2, B.

    Odd sizes are first made even by ``pad_to_even``; ``unpack`` then returns the padded size,
    and ``from_rggb_crop(..., size=...)`` or slicing restores the original.
    """
    return F.pixel_unshuffle(pad_to_even(mosaic), 2)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of ``pack``: (N, 4, h, w) with channels R, G1, G2, B to an RGGB (N, 1, 2h, 2w) mosaic."""
    _check_shape(packed, 4, 1, "a packed mosaic")
    return F.pixel_shuffle(packed, 2)


# -------------------------------------------------------------------------------------- demosaicking


def _demosaic(mosaic: torch.Tensor, pattern: str, kernels: tuple[tuple[tuple[float, ...], ...], ...]) -> torch.Tensor:
    """Fill in the two missing colours of every pixel with four linear CFA kernels (scaled by 8)."""
    size = len(kernels[0])
    _check_shape(mosaic, 1, size // 2 + 1, "a mosaic")
    original = mosaic.shape[-2:]
    rggb = to_rggb(mosaic, pattern)
    weight = torch.tensor(kernels, dtype=rggb.dtype, device=rggb.device).unsqueeze(1) / 8
    radius = size // 2
    estimates = F.conv2d(F.pad(rggb, (radius,) * 4, mode="reflect"), weight)
    planes = dict(zip(_KERNEL_NAMES, estimates.unbind(1), strict=True))
    planes["sample"] = rggb[:, 0]
    rgb = torch.empty(rggb.shape[0], 3, *rggb.shape[-2:], dtype=rggb.dtype, device=rggb.device)
    for (dy, dx), sources in _SOURCES.items():
        for channel, source in enumerate(sources):
            rgb[:, channel, dy::2, dx::2] = planes[source][:, dy::2, dx::2]
    return from_rggb_crop(rgb, pattern, (original[0], original[1]))


def demosaic_bilinear(mosaic: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Bilinear demosaicking of an (N, 1, H, W) mosaic to (N, 3, H, W): the classical baseline.

    Each missing colour is the mean of its nearest samples (2 or 4), as when each sparse colour
    plane is convolved with the usual 3x3 bilinear kernel; borders are mirrored.
    """
    return _demosaic(mosaic, pattern, _BILINEAR_KERNELS)


def demosaic_malvar(mosaic: torch.Tensor, pattern: str = "RGGB") -> torch.Tensor:
    """Malvar-He-Cutler (2004) gradient-corrected linear demosaicking: (N, 1, H, W) -> (N, 3, H, W).

    The 5x5 filters use the other channels' detail, which is why they beat bilinear on natural
    images at the same cost. Their negative taps can overshoot at edges, so the output is
    clipped to [0, 1]. Borders are mirrored.
    """
    return _demosaic(mosaic, pattern, _MALVAR_KERNELS).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------- RAW reading


@dataclass(frozen=True, eq=False)
class RawMosaic:
    """The sensor data of a Bayer RAW file and the camera facts needed to develop it."""

    mosaic: torch.Tensor
    """(1, 1, H + top, W + left) float32 RGGB mosaic in [0, 1]: black level subtracted per site,
    divided by (white - black), clipped. ``from_rggb_crop(result, pattern)`` undoes the CFA shift."""
    pattern: str
    """The sensor's own CFA pattern, one of CFA_PATTERNS."""
    size: tuple[int, int]
    """(height, width) of the visible sensor area, before the shift to RGGB."""
    wb_gains: tuple[float, float, float]
    """(R, G, B) multipliers with G = 1: as shot if the file records them, else the camera's daylight
    balance, else (1, 1, 1)."""
    daylight_gains: tuple[float, float, float] | None
    """(R, G, B) multipliers for daylight from the camera's colour data (G = 1), or None."""
    black_level: tuple[float, float, float, float]
    """Black level per RGGB site (R, G1, G2, B) in raw units."""
    white_level: int
    """Saturation level in raw units."""
    xyz_to_camera: np.ndarray | None
    """3x3 matrix from XYZ to camera RGB (LibRaw's ``rgb_xyz_matrix``), or None if unknown."""
    camera_to_srgb: np.ndarray | None
    """3x3 matrix from white-balanced camera RGB to linear sRGB (LibRaw's ``color_matrix``), or None."""
    flip: int
    """LibRaw's orientation code (0 none, 3 180 degrees, 5 90 degrees CCW, 6 90 degrees CW), to apply last."""


def is_raw_path(path: Path | str) -> bool:
    """Whether a file name has a camera-RAW suffix, so it should be read with ``read_raw``."""
    return Path(path).suffix.lower() in RAW_SUFFIXES


def _raw_reason(e: BaseException) -> str:
    """A one-line, file-name-free reason for a RAW read failure."""
    if isinstance(e, rawpy.LibRawFileUnsupportedError):
        return "not a RAW file LibRaw can decode (unknown format or corrupt header)"
    if isinstance(e, (MemoryError, rawpy.LibRawUnsufficientMemoryError)):
        return "not enough memory to decode the RAW file"
    if isinstance(e, rawpy.LibRawTooBigError):
        return "RAW image is too large to decode"
    if isinstance(e, (rawpy.LibRawIOError, rawpy.LibRawDataError)):
        return "corrupt or truncated RAW data"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a RAW file"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError) and e.strerror:
        return one_line(e.strerror)
    text = one_line(str(e).removeprefix("b'").removesuffix("'"))
    return f"unreadable RAW data ({type(e).__name__}{': ' + text if text else ''})"


def _bayer_pattern(raw: rawpy.RawPy) -> str:
    """The sensor's CFA pattern as letters; RawReadError for anything that is not an RGB 2x2 Bayer sensor."""
    if raw.raw_type != rawpy.RawType.Flat:
        raise RawReadError("the file holds full-colour pixels (linear DNG or similar), not a Bayer mosaic")
    cfa = raw.raw_pattern
    if cfa is None:
        raise RawReadError("the sensor has no colour filter array (Foveon or monochrome)")
    cfa = np.asarray(cfa)
    if cfa.shape == (6, 6):
        raise RawReadError("X-Trans sensors (6x6 colour filter array) are not supported, only 2x2 Bayer")
    if cfa.shape != (2, 2):
        raise RawReadError(f"a {cfa.shape[0]}x{cfa.shape[1]} colour filter array is not supported, only 2x2 Bayer")
    desc = raw.color_desc.decode("ascii", "replace")
    letters = "".join(desc[i] if i < len(desc) else "?" for i in cfa.ravel())  # both greens map to "G"
    if letters not in CFA_PATTERNS:
        raise RawReadError(f"colour filter array {letters} is not an RGB Bayer pattern")
    return letters


def _colour_rows(raw: rawpy.RawPy) -> list[int]:
    """LibRaw's colour indices of R, G and B (the first G; the second green may have index 3)."""
    desc = raw.color_desc.decode("ascii", "replace")
    return [desc.index(letter) for letter in "RGB"]


def _normalised_gains(values: list[float], rgb: list[int]) -> tuple[float, float, float] | None:
    """(R, G, B) gains with G = 1, or None when LibRaw has no complete set."""
    r, g, b = (float(values[i]) for i in rgb)
    return (r / g, 1.0, b / g) if min(r, g, b) > 0 else None


def _wb_gains(raw: rawpy.RawPy) -> tuple[float, float, float]:
    """(R, G, B) white-balance gains normalised to G = 1, from the first complete source."""
    rgb = _colour_rows(raw)
    for gains in (raw.camera_whitebalance, raw.daylight_whitebalance):
        found = _normalised_gains(gains, rgb)
        if found is not None:
            return found
    return 1.0, 1.0, 1.0


def _matrix(values: np.ndarray | None, rows: list[int] | None, cols: list[int] | None) -> np.ndarray | None:
    """A 3x3 float32 sub-matrix, or None when LibRaw left it empty."""
    if values is None:
        return None
    matrix = np.asarray(values, dtype=np.float32)
    matrix = matrix[rows] if rows is not None else matrix[:3]
    matrix = matrix[:, cols] if cols is not None else matrix[:, :3]
    if matrix.shape != (3, 3) or not np.any(matrix) or not np.all(np.isfinite(matrix)):
        return None
    return np.ascontiguousarray(matrix)


def _normalise(data: np.ndarray, blacks: list[float], white: float) -> np.ndarray:
    """(data - black) / (white - black) per 2x2 site, clipped at 1 (saturation), as float32.

    Not clipped at 0: read noise around the black level stays zero-mean, as in the synthetic
    RAW the network was trained on (clipping would brighten the shadows of noisy shots)."""
    out = data.astype(np.float32)
    for index, black in enumerate(blacks):
        dy, dx = divmod(index, 2)
        if white <= black:
            raise RawReadError(f"invalid levels: white level {white:g} is not above black level {black:g}")
        site = out[dy::2, dx::2]
        site -= black
        site /= white - black
    return np.minimum(out, 1.0, out=out)


def _to_raw_mosaic(raw: rawpy.RawPy) -> RawMosaic:
    pattern = _bayer_pattern(raw)
    data = raw.raw_image_visible
    if data.ndim != 2 or min(data.shape) < 2:
        raise RawReadError(f"unexpected sensor data of shape {data.shape}")
    cfa = np.asarray(raw.raw_pattern)
    levels = list(raw.black_level_per_channel)
    blacks = [float(levels[cfa[dy, dx]]) for dy in (0, 1) for dx in (0, 1)]  # per site of the sensor's cell
    white = float(raw.white_level)
    normalised = torch.from_numpy(_normalise(data, blacks, white))[None, None]
    top, left = rggb_offset(pattern)
    rggb_blacks = [blacks[2 * ((dy - top) % 2) + (dx - left) % 2] for dy in (0, 1) for dx in (0, 1)]
    rgb = _colour_rows(raw)
    return RawMosaic(
        mosaic=to_rggb(normalised, pattern),
        pattern=pattern,
        size=(int(data.shape[0]), int(data.shape[1])),
        wb_gains=_wb_gains(raw),
        daylight_gains=_normalised_gains(raw.daylight_whitebalance, rgb),
        black_level=(rggb_blacks[0], rggb_blacks[1], rggb_blacks[2], rggb_blacks[3]),
        white_level=int(white),
        xyz_to_camera=_matrix(raw.rgb_xyz_matrix, rgb, None),
        camera_to_srgb=_matrix(raw.color_matrix, None, rgb),
        flip=int(raw.sizes.flip),
    )


@contextmanager
def _open_raw(path: Path) -> Iterator[rawpy.RawPy]:
    """``rawpy.imread`` whose every failure (also inside the block) is a one-line RawReadError."""
    try:
        Path(path).open("rb").close()  # OSError reasons (missing, directory, permission) that LibRaw would hide
        with rawpy.imread(str(path)) as raw:
            yield raw
    except RawReadError:
        raise
    except Exception as e:  # LibRaw reports malformed files with many error types
        raise RawReadError(_raw_reason(e)) from e


def read_raw(path: Path) -> RawMosaic:
    """Decode a Bayer camera RAW file with rawpy (LibRaw) into a normalised RGGB mosaic and camera facts.

    Every failure, including non-Bayer sensors, raises RawReadError with a one-line reason.
    """
    with _open_raw(path) as raw:
        return _to_raw_mosaic(raw)


WHITE_BALANCES = ("camera", "auto", "daylight")


def white_balance_gains(raw: RawMosaic, mode: str) -> tuple[float, float, float]:
    """(R, G, B) gains for ``mode``: the camera's as-shot balance, grey world on the unclipped
    sensor data (auto), or the camera's daylight balance (as shot when the file has none)."""
    if mode == "camera":
        return raw.wb_gains
    if mode == "daylight":
        return raw.daylight_gains or raw.wb_gains
    if mode != "auto":
        raise ValueError(f"unknown white balance {mode!r} (use one of: {', '.join(WHITE_BALANCES)})")
    planes = pack(raw.mosaic)[0]
    unclipped = (planes < 0.98).all(dim=0)
    if unclipped.sum() < 16:
        return raw.wb_gains
    r, g1, g2, b = (plane[unclipped].mean().item() for plane in planes)
    green = 0.5 * (g1 + g2)
    return (green / max(r, 1e-6), 1.0, green / max(b, 1e-6))


def develop_classic(path: Path, white_balance: str, linear: bool = False) -> np.ndarray:
    """LibRaw's own pipeline (rawpy ``postprocess``): 16-bit sRGB, HxWx3 uint16, orientation applied.

    No automatic brightening, as for the network; the same white-balance modes. LibRaw's
    tone is its default BT.709 curve (gamma 2.222, slope 4.5); ``linear`` leaves it out
    (linear sRGB primaries), for callers that apply a tone curve of their own.
    """
    if white_balance not in WHITE_BALANCES:
        raise ValueError(f"unknown white balance {white_balance!r} (use one of: {', '.join(WHITE_BALANCES)})")
    with _open_raw(path) as raw:
        _bayer_pattern(raw)  # the same refusal of non-Bayer sensors as the network path
        return raw.postprocess(
            use_camera_wb=white_balance == "camera",
            use_auto_wb=white_balance == "auto",
            output_color=rawpy.ColorSpace.sRGB,
            output_bps=16,
            no_auto_bright=True,
            adjust_maximum_thr=0.0,  # else LibRaw lowers the white level to a bright image's maximum (brightening it)
            gamma=(1.0, 1.0) if linear else None,
        )


def orient(image: torch.Tensor, flip: int) -> torch.Tensor:
    """Apply LibRaw's orientation code to (N, C, H, W): 3 = 180 degrees, 5 = 90 CCW, 6 = 90 CW."""
    turns = {3: 2, 5: 1, 6: 3}.get(flip, 0)
    return torch.rot90(image, turns, dims=(2, 3)) if turns else image


def read_bayer_image(
    source: Path | bytes,
    pattern: str,
    black_level: float = 0.0,
    white_level: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """A single-channel 8- or 16-bit PNG/TIFF mosaic as a (1, 1, H + top, W + left) RGGB float tensor in [0, 1].

    See :func:`bayer_from_picture`; failures raise ImageReadError with a one-line reason.
    """
    return bayer_from_picture(read_image(source, max_pixels), pattern, black_level, white_level)


def bayer_from_picture(
    picture: Picture, pattern: str, black_level: float = 0.0, white_level: float | None = None
) -> torch.Tensor:
    """The mosaic held in a decoded single-channel picture, normalised to RGGB.

    ``black_level`` and ``white_level`` are in the file's code values (white defaults to the
    full scale, 255 or 65535), for sensors whose data does not fill the container, e.g. 10-bit
    samples in a 16-bit PNG. Alpha is ignored. A colour picture (three different channels) is
    an ImageReadError.
    """
    _check_pattern(pattern)
    rgb = picture.rgb
    if not picture.gray and not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise ImageReadError("not a single-channel Bayer mosaic: the image has three different colour channels")
    full_scale = 65535.0 if picture.bit_depth == 16 else 255.0
    white = full_scale if white_level is None else float(white_level)
    if white <= black_level:
        raise ValueError(f"white level {white:g} must be above black level {black_level:g}")
    codes = np.rint(rgb[..., 0].astype(np.float64) * full_scale)
    values = np.clip((codes - black_level) / (white - black_level), 0.0, 1.0).astype(np.float32)
    return to_rggb(torch.from_numpy(values)[None, None], pattern)
