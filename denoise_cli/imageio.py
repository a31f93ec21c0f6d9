"""Image files <-> float RGB arrays, keeping alpha, greyscale, bit depth, ICC profile and EXIF.

Reading goes through Pillow and takes the first frame of anything it opens: PNG, JPEG, TIFF, WebP,
BMP and more. These modes are supported: 1, L, LA, La, P, PA, RGB, RGBA, RGBX, RGBa, CMYK, YCbCr,
HSV, I;16/I;16B/I;16L/I;16N and unsigned 16-bit I. Pillow has no 16-bit colour modes. Even so,
16-bit colour PNG (RGB, RGBA, grey+alpha) and chunky 16-bit TIFF (RGB, RGBX, RGBA, premultiplied
RGBA) are read at full precision. The file is decoded twice by Pillow's own decoders, once keeping
the high bytes of each sample and once keeping the low bytes. Not supported (ImageReadError):
float (F), 32-bit or signed integer, LAB, and 16-bit grey+alpha TIFF, which Pillow cannot open.

Writing: 8-bit PNG, JPEG, WebP and BMP are encoded by Pillow. 16-bit PNG and every TIFF are
encoded here with numpy and zlib. The TIFFs use Deflate compression with the horizontal
predictor. Pillow cannot write 16-bit colour, so this code does it. PNG and TIFF keep 16 bits;
JPEG, WebP and BMP hold 8. Information an output format cannot hold (alpha in JPEG, 16 bits in
JPEG/WebP/BMP, ICC/EXIF in BMP, an ICC profile for the wrong colour model) is dropped. Each drop is
reported as a warning string.

No torch here: this module must stay importable without it.
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from PIL import Image, ImageCms, TiffImagePlugin, TiffTags, UnidentifiedImageError

from .fsutil import atomic_write_bytes

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "ImageFormat",
    "ImageReadError",
    "Picture",
    "encode_image",
    "format_for_path",
    "from_chw",
    "output_warnings",
    "read_image",
    "to_chw",
    "write_image",
]

DEFAULT_MAX_PIXELS = 200_000_000

_ORIENTATION = 0x0112
_EXIF_HEADER = b"Exif\x00\x00"
_JPEG_MAX_MARKER = 65533  # bytes in one JPEG APP segment, which is all an EXIF block may use
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_PNG_FILTER_BLOCK = 4 << 20  # bytes of raw rows filtered at once
_TIFF_STRIP_BYTES = 256 << 10
# TIFF tags that describe a file's pixel layout or carry bulky application blobs. They are removed
# when a TIFF's tags are turned into EXIF, and never copied from EXIF into a TIFF.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284}
    | {290, 291, 292, 293, 317, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347}
    | {512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532, 34377, 34675, 37724}
)
_GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Modes Pillow converts losslessly (or, for YCbCr/HSV, by its standard formula) to a working mode.
_CONVERT = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "RGB": "RGB",
    "RGBA": "RGBA",
    "RGBX": "RGB",
    "RGBa": "RGBA",
    "PA": "RGBA",
    "YCbCr": "RGB",
    "HSV": "RGB",
}
_WIDE_RAWMODE = re.compile(r"(RGB|RGBX|RGBA|RGBa);16([BLN])")


# Camera RAW files (decoded by raw.py with rawpy, not here); listed here so planning stays light.
RAW_SUFFIXES = frozenset(
    {".3fr", ".ari", ".arw", ".bay", ".cap", ".cr2", ".cr3", ".crw", ".dcr", ".dcs", ".dng", ".drf", ".eip"}
    | {".erf", ".fff", ".gpr", ".iiq", ".k25", ".kdc", ".mdc", ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf"}
    | {".pef", ".ptx", ".pxn", ".raf", ".raw", ".rw2", ".rwl", ".rwz", ".sr2", ".srf", ".srw", ".x3f"}
)


class ImageReadError(Exception):
    """An input could not be decoded. The message is one line with the reason; the caller adds the file name."""


@dataclass(eq=False)
class Picture:
    """A decoded image plus what is needed to write a processed version of it faithfully.

    ``rgb`` is float32 HxWx3 in [0, 1]; grey inputs have three equal channels. ``alpha`` is float32
    HxW in [0, 1] or None. ``gray`` means the output should be greyscale. ``bit_depth`` (8 or 16)
    comes from the file's sample type. ``exif`` starts with ``b"Exif\\0\\0"``, and its Orientation
    is already applied to the pixels and reset to 1. ``format`` is Pillow's name for the source
    format ("PNG", "JPEG", ...).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    gray: bool = False
    bit_depth: int = 8
    icc: bytes | None = None
    exif: bytes | None = None
    format: str = ""


class ImageFormat(NamedTuple):
    """An output format: canonical name, Pillow name, preferred extension and what it can hold."""

    name: str
    pil: str
    extension: str
    max_bit_depth: int
    alpha: bool
    metadata: bool  # can carry an ICC profile and EXIF


_PNG = ImageFormat("png", "PNG", ".png", 16, True, True)
_JPEG = ImageFormat("jpeg", "JPEG", ".jpg", 8, False, True)
_TIFF = ImageFormat("tiff", "TIFF", ".tif", 16, True, True)
_WEBP = ImageFormat("webp", "WEBP", ".webp", 8, True, True)
_BMP = ImageFormat("bmp", "BMP", ".bmp", 8, True, False)

FORMATS: dict[str, ImageFormat] = {
    "png": _PNG,
    "jpg": _JPEG,
    "jpeg": _JPEG,
    "tif": _TIFF,
    "tiff": _TIFF,
    "webp": _WEBP,
    "bmp": _BMP,
}


def _lookup_format(fmt: str) -> ImageFormat:
    """The ImageFormat for a user or Pillow format name ("jpg", "JPEG", ".tif", ...)."""
    try:
        return FORMATS[fmt.lower().lstrip(".")]
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r} (use one of: {', '.join(FORMATS)})") from None


def format_for_path(path: Path | str) -> str:
    """The canonical format name ("png", "jpeg", "tiff", "webp", "bmp") for a path's extension."""
    suffix = Path(path).suffix
    if not suffix:
        raise ValueError(f"cannot tell the image format of {str(path)!r}: it has no extension")
    try:
        return _lookup_format(suffix).name
    except ValueError:
        raise ValueError(
            f"cannot tell the image format from the extension {suffix!r} (use one of: {', '.join(FORMATS)})"
        ) from None


# --------------------------------------------------------------------------------------------- reading


def read_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode an image file (a path, or the bytes of one) into a Picture.

    The format is sniffed from the content; messages leave the file name to the caller.
    Images above ``max_pixels`` are refused before any pixel data is decoded. The whole image
    is decoded, so truncated files fail. Every failure raises ImageReadError. For the duration of
    the call Pillow's global MAX_IMAGE_PIXELS is disabled; ``max_pixels`` takes its place.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _decode(io.BytesIO(bytes(source)), max_pixels)
        with open(Path(source), "rb") as fp:
            return _decode(fp, max_pixels)
    except ImageReadError:
        raise
    except Exception as e:  # Pillow's plugins raise many kinds of errors on malformed data
        raise ImageReadError(_reason(e)) from e


def one_line(text: str) -> str:
    return " ".join(text.split())


def _reason(e: BaseException) -> str:
    """A one-line, file-name-free reason for a read failure."""
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image file"
    if isinstance(e, MemoryError):
        return "not enough memory to decode the image"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError) and e.errno is not None:
        return one_line(e.strerror or str(e))
    text = one_line(str(e))
    if isinstance(e, EOFError) or "truncated" in text.lower():
        return "file is truncated"
    if not text:
        return f"corrupt image data ({type(e).__name__})"
    return f"corrupt or unreadable image data ({type(e).__name__}: {text})"


def _open_pil(fp: IO[bytes]) -> Image.Image:
    """Image.open with Pillow's global pixel limit switched off; read_image applies its own."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(fp)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _tile_rawmode(im: Image.Image) -> str | None:
    """The single raw mode all of a not-yet-loaded image's tiles decode with, or None."""
    found = set()
    for tile in im.tile:
        args = tile.args
        if isinstance(args, tuple) and args:
            args = args[0]
        found.add(args if isinstance(args, str) else None)
    return found.pop() if len(found) == 1 else None


def _set_rawmode(im: Image.Image, rawmode: str) -> None:
    """Make a not-yet-loaded image decode with another raw mode that has the same bits per pixel."""
    im.tile = [
        tile._replace(args=rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:])) for tile in im.tile
    ]


def _decode(fp: IO[bytes], max_pixels: int) -> Picture:
    with _open_pil(fp) as im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageReadError(
                f"image is too large: {width}x{height} = {width * height / 1e6:.1f} megapixels "
                f"exceeds the limit of {max_pixels / 1e6:.1f}"
            )
        if width == 0 or height == 0:
            raise ImageReadError("image has no pixels")
        source_format = "JPEG" if im.format == "MPO" else (im.format or "")
        rawmode = _tile_rawmode(im)
        premultiplied = False
        if rawmode is not None and (rawmode == "LA;16B" or _WIDE_RAWMODE.fullmatch(rawmode)):
            pixels, gray, premultiplied = _decode_wide(im, fp, rawmode)
            depth = 16
            icc = im.info.get("icc_profile") or None
        else:
            im.load()
            icc = im.info.get("icc_profile") or None
            pixels, gray, depth, icc = _pixels(im, rawmode, icc)
        exif, orientation = _read_exif(im, source_format)

    pixels = _orient(pixels, orientation)
    data = np.divide(pixels, 65535.0 if depth == 16 else 255.0, dtype=np.float32)
    channels = data.shape[2]
    alpha = np.ascontiguousarray(data[..., -1]) if channels in (2, 4) else None
    if gray:
        rgb = np.repeat(data[..., :1], 3, axis=2)
    else:
        rgb = np.ascontiguousarray(data[..., :3])
        if premultiplied and alpha is not None:
            np.divide(rgb, alpha[..., None], out=rgb, where=alpha[..., None] > 0)
            np.clip(rgb, 0.0, 1.0, out=rgb)
    return Picture(rgb=rgb, alpha=alpha, gray=gray, bit_depth=depth, icc=icc, exif=exif, format=source_format)


def _decode_wide(im: Image.Image, fp: IO[bytes], rawmode: str) -> tuple[np.ndarray, bool, bool]:
    """16-bit colour samples as uint16 HxWxC, using Pillow's decoders twice (high and low bytes).

    Swapping the raw mode for one with the same bits per pixel leaves decompression and PNG
    unfiltering unchanged; only the final unpacking differs. "RGB;16L" keeps byte 1 of each
    sample and "RGB;16B" keeps byte 0, so together they recover both bytes.
    """
    if rawmode == "LA;16B":  # PNG grey+alpha: 4 bytes per pixel, unpacked verbatim as "RGBA"
        _set_rawmode(im, "RGBA")
        im.load()
        raw = np.asarray(im).astype(np.uint16)
        grey = (raw[..., 0] << 8) | raw[..., 1]
        alpha = (raw[..., 2] << 8) | raw[..., 3]
        return np.stack([grey, alpha], axis=2), True, False
    match = _WIDE_RAWMODE.fullmatch(rawmode)
    if match is None:  # pragma: no cover - guarded by the caller
        raise ImageReadError(f"unsupported 16-bit pixel layout {rawmode}")
    layout, order = match.groups()
    if order == "N":
        order = "L" if sys.byteorder == "little" else "B"
    other = "B" if order == "L" else "L"
    unpack = "RGBA" if layout == "RGBa" else layout  # undo premultiplication afterwards, in float
    _set_rawmode(im, f"{unpack};16{order}")
    im.load()
    high = np.asarray(im).astype(np.uint16)
    fp.seek(0)
    with _open_pil(fp) as low_im:
        if low_im.size != im.size or _tile_rawmode(low_im) != rawmode:  # pragma: no cover - same bytes
            raise ImageReadError("image changed while it was being read")
        _set_rawmode(low_im, f"{unpack};16{other}")
        low_im.load()
        low = np.asarray(low_im).astype(np.uint16)
    pixels = (high << 8) | low
    return _add_key_alpha(pixels, im.info.get("transparency")), False, layout == "RGBa"


def _pixels(im: Image.Image, rawmode: str | None, icc: bytes | None) -> tuple[np.ndarray, bool, int, bytes | None]:
    """Pixels of a loaded 8-bit or 16-bit grey image as uint8/uint16 HxWxC, with gray, bit depth and ICC."""
    mode = im.mode
    key = im.info.get("transparency")
    if mode in _GRAY16_MODES:
        pixels = np.asarray(im).astype(np.uint16)[..., None]
        return _add_key_alpha(pixels, key), True, 16, icc
    if mode == "I":
        if rawmode is None or not re.fullmatch(r"I;16[BLN]?", rawmode):
            raise ImageReadError(f"unsupported sample type ({rawmode or 'I'}): only 8- and 16-bit unsigned images")
        pixels = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)[..., None]
        return _add_key_alpha(pixels, key), True, 16, icc
    if mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc)
        target = "RGB"
    elif mode == "P":
        target = "RGBA" if key is not None else "RGB"
    elif mode in _CONVERT:
        target = _CONVERT[mode]
    else:
        raise ImageReadError(f"unsupported image mode {mode}")
    if im.mode != target:
        im = im.convert(target)
    pixels = np.asarray(im)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if mode in ("L", "RGB"):
        pixels = _add_key_alpha(pixels, key)
    return pixels, target in ("L", "LA"), 8, icc


def _add_key_alpha(pixels: np.ndarray, key: object) -> np.ndarray:
    """Turn a PNG/TIFF colour key (tRNS for grey or RGB) into an alpha channel."""
    channels = pixels.shape[2]
    if channels == 1 and isinstance(key, int):
        opaque = pixels[..., 0] != key
    elif channels == 3 and isinstance(key, tuple) and len(key) == 3:
        opaque = np.any(pixels != np.asarray(key), axis=2)
    else:
        return pixels
    top = np.iinfo(pixels.dtype).max
    alpha = np.where(opaque, top, 0).astype(pixels.dtype)
    return np.concatenate([pixels, alpha[..., None]], axis=2)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """CMYK to RGB: through the embedded profile to sRGB when there is one, else Pillow's naive formula."""
    if icc:
        try:
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode="RGB")
            if converted is not None:
                return converted, ImageCms.ImageCmsProfile(srgb).tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return im.convert("RGB"), None


def _read_exif(im: Image.Image, source_format: str) -> tuple[bytes | None, int]:
    """EXIF bytes (header included, Orientation reset to 1) and the orientation to apply; unreadable EXIF is dropped."""
    try:
        exif = im.getexif()
        value = exif.get(_ORIENTATION, 1)
        orientation = value if isinstance(value, int) and 1 <= value <= 8 else 1
        needs_reset = _ORIENTATION in exif and value != 1
        raw = im.info.get("exif")
        if isinstance(raw, bytes) and raw and source_format != "TIFF":
            if not raw.startswith(_EXIF_HEADER):
                raw = _EXIF_HEADER + raw
            return (_reset_orientation(raw) if needs_reset else raw), orientation
        # TIFF keeps its EXIF tags in the image's own directory: keep only the descriptive ones.
        for tag in [tag for tag in exif if tag in _TIFF_LAYOUT_TAGS]:
            del exif[tag]
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        return (exif.tobytes() if len(exif) else None), orientation
    except Exception:
        return None, 1


def _reset_orientation(raw: bytes) -> bytes:
    """Set Orientation to 1 in an EXIF block, patched in place so maker notes and thumbnails stay intact."""
    base = len(_EXIF_HEADER)
    try:
        order = {b"II": "<", b"MM": ">"}[raw[base : base + 2]]
        buf = bytearray(raw)
        (ifd,) = struct.unpack_from(order + "I", buf, base + 4)
        (count,) = struct.unpack_from(order + "H", buf, base + ifd)
        for i in range(count):
            pos = base + ifd + 2 + 12 * i
            tag, kind, n = struct.unpack_from(order + "HHI", buf, pos)
            if tag == _ORIENTATION and kind == 3 and n == 1:  # one SHORT, stored in the entry itself
                struct.pack_into(order + "H", buf, pos + 8, 1)
                return bytes(buf)
    except (KeyError, struct.error):
        pass
    exif = Image.Exif()
    exif.load(raw)
    exif[_ORIENTATION] = 1
    return exif.tobytes()


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HxWxC array, as PIL.ImageOps.exif_transpose does."""
    if orientation in (5, 6, 7, 8):
        pixels = pixels.swapaxes(0, 1)
    flips = {2: (False, True), 3: (True, True), 4: (True, False), 6: (False, True), 7: (True, True), 8: (True, False)}
    flip_rows, flip_cols = flips.get(orientation, (False, False))
    return pixels[:: -1 if flip_rows else 1, :: -1 if flip_cols else 1]


# --------------------------------------------------------------------------------------------- writing


@dataclass
class _Plan:
    fmt: ImageFormat
    layout: str  # "L", "LA", "RGB" or "RGBA"
    depth: int
    icc: bytes | None
    exif: bytes | None
    warnings: list[str]


def _icc_space(icc: bytes) -> bytes:
    return icc[16:20] if len(icc) >= 128 else b""


def _plan(picture: Picture, fmt_name: str) -> _Plan:
    """Decide the layout, depth and metadata of an output, and what has to be given up."""
    fmt = _lookup_format(fmt_name)
    warnings: list[str] = []
    has_alpha = picture.alpha is not None
    if has_alpha and not fmt.alpha:
        warnings.append(f"{fmt.pil} has no alpha channel: transparency dropped")
        has_alpha = False
    depth = 16 if picture.bit_depth == 16 and fmt.max_bit_depth == 16 else 8
    if picture.bit_depth == 16 and depth == 8:
        warnings.append(f"{fmt.pil} holds 8 bits per channel: 16-bit input written as 8-bit")
    # WebP has no grey mode, BMP no grey+alpha, and Pillow cannot read 16-bit grey+alpha TIFF.
    gray = picture.gray and fmt is not _WEBP
    if gray and has_alpha and (fmt is _BMP or (fmt is _TIFF and depth == 16)):
        gray = False
    layout = ("L" if gray else "RGB") + ("A" if has_alpha else "")

    icc = picture.icc or None
    if icc and not fmt.metadata:
        warnings.append(f"{fmt.pil} cannot hold an ICC profile: dropped")
        icc = None
    elif icc and _icc_space(icc) != (b"GRAY" if gray else b"RGB "):
        space = _icc_space(icc).decode("latin-1").strip() or "invalid"
        warnings.append(f"ICC profile ({space}) does not fit {'grey' if gray else 'RGB'} {fmt.pil} output: dropped")
        icc = None
    exif = picture.exif or None
    if exif and not exif.startswith(_EXIF_HEADER):
        exif = _EXIF_HEADER + exif
    if exif and not fmt.metadata:
        warnings.append(f"{fmt.pil} cannot hold EXIF: dropped")
        exif = None
    elif exif and fmt is _JPEG and len(exif) > _JPEG_MAX_MARKER:
        warnings.append(f"EXIF block of {len(exif)} bytes is too large for JPEG: dropped")
        exif = None
    return _Plan(fmt, layout, depth, icc, exif, warnings)


def _fit_alpha(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """Alpha at the output size; bicubic when the result was resized (e.g. upscaled)."""
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.shape == (height, width):
        return alpha
    if alpha.ndim != 2:
        raise ValueError(f"picture.alpha must be HxW, got shape {alpha.shape}")
    resized = Image.fromarray(np.ascontiguousarray(alpha)).resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _quantise(picture: Picture, plan: _Plan) -> np.ndarray:
    """Samples for the planned layout as uint8/uint16 HxWxC, rounded and clipped."""
    rgb = np.asarray(picture.rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"picture.rgb must be HxWx3, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    parts = [rgb.mean(axis=2, keepdims=True) if plan.layout.startswith("L") else rgb]
    if plan.layout.endswith("A") and picture.alpha is not None:
        parts.append(_fit_alpha(picture.alpha, height, width)[..., None])
    data = np.concatenate(parts, axis=2) if len(parts) > 1 else parts[0].copy()
    top = 65535 if plan.depth == 16 else 255
    np.nan_to_num(data, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    data *= top
    np.rint(data, out=data)
    np.clip(data, 0, top, out=data)
    return data.astype(np.uint16 if plan.depth == 16 else np.uint8)


def _quality(fmt: ImageFormat, quality: int | None) -> int | None:
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
    if fmt is _JPEG:
        return 95 if quality is None else quality
    if fmt is _WEBP:
        return 90 if quality is None else quality
    return None  # lossless formats ignore it


def output_warnings(picture: Picture, fmt: str) -> list[str]:
    """What writing ``picture`` as ``fmt`` would lose (alpha, bit depth, metadata), one sentence each."""
    return list(_plan(picture, fmt).warnings)


def _encode(picture: Picture, fmt: str, quality: int | None) -> tuple[bytes, list[str]]:
    plan = _plan(picture, fmt)
    q = _quality(plan.fmt, quality)
    samples = _quantise(picture, plan)
    warnings = list(plan.warnings)
    if plan.fmt is _TIFF:
        try:
            data = _encode_tiff(samples, plan.icc, plan.exif)
        except Exception as e:  # EXIF that Pillow's TIFF directory writer cannot serialise
            if plan.exif is None:
                raise
            warnings.append(f"EXIF could not be written to TIFF ({one_line(str(e))}): dropped")
            data = _encode_tiff(samples, plan.icc, None)
    elif plan.fmt is _PNG and plan.depth == 16:
        data = _encode_png16(samples, plan.icc, plan.exif)
    else:
        data = _encode_pillow(samples, plan, q)
    return data, warnings


def encode_image(picture: Picture, fmt: str, quality: int | None = None) -> bytes:
    """Encode a Picture as ``fmt`` ("png", "jpg", "tiff", ...). Use output_warnings() for what gets lost."""
    return _encode(picture, fmt, quality)[0]


def write_image(picture_like: Picture, path: Path, fmt: str | None = None, quality: int | None = None) -> list[str]:
    """Encode and write atomically (temporary '.<name>.*.part' beside ``path``, then rename); return warnings.

    ``fmt`` defaults to the one the extension names. ``quality`` applies to JPEG (default 95) and
    WebP (default 90). An existing file at ``path`` is left untouched if anything fails.
    """
    path = Path(path)
    data, warnings = _encode(picture_like, fmt or format_for_path(path), quality)
    atomic_write_bytes(path, data)
    return warnings


def _encode_pillow(samples: np.ndarray, plan: _Plan, quality: int | None) -> bytes:
    image = Image.fromarray(samples[..., 0] if samples.shape[2] == 1 else samples)
    options: dict[str, object] = {}
    if plan.icc:
        options["icc_profile"] = plan.icc
    if plan.exif:
        options["exif"] = plan.exif
    if quality is not None:
        options["quality"] = quality
    buf = io.BytesIO()
    image.save(buf, format=plan.fmt.pil, **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_filtered_rows(raw: np.ndarray, bpp: int) -> Iterable[bytes]:
    """PNG scanlines with a per-row adaptive filter (smallest sum of absolute signed bytes, as libpng does)."""
    height, stride = raw.shape
    rows_per_block = max(1, _PNG_FILTER_BLOCK // max(stride, 1))
    previous = np.zeros(stride, dtype=np.uint8)
    for start in range(0, height, rows_per_block):
        block = raw[start : start + rows_per_block]
        up = np.concatenate([previous[None], block[:-1]])
        left = np.zeros_like(block)
        left[:, bpp:] = block[:, :-bpp]
        up_left = np.zeros_like(block)
        up_left[:, bpp:] = up[:, :-bpp]
        a, b, c = (x.astype(np.int16) for x in (left, up, up_left))
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)
        average = ((a + b) >> 1).astype(np.uint8)
        candidates = np.stack([block, block - left, block - up, block - average, block - paeth])
        scores = np.abs(candidates.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)
        choice = scores.argmin(axis=0)
        rows = np.empty((block.shape[0], stride + 1), dtype=np.uint8)
        rows[:, 0] = choice
        rows[:, 1:] = candidates[choice, np.arange(block.shape[0])]
        yield rows.tobytes()
        previous = block[-1]


def _encode_png16(samples: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA) written directly; Pillow cannot write 16-bit colour."""
    height, width, channels = samples.shape
    raw = samples.astype(">u2").reshape(height, width * channels).view(np.uint8)
    compressor = zlib.compressobj(6)
    idat = b"".join(compressor.compress(rows) for rows in _png_filtered_rows(raw, 2 * channels)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", ihdr)]
    if icc:
        parts.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        parts.append(_png_chunk(b"eXIf", exif.removeprefix(_EXIF_HEADER)))
    parts.extend(_png_chunk(b"IDAT", idat[i : i + (1 << 20)]) for i in range(0, len(idat), 1 << 20))
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _encode_tiff(samples: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A Deflate-compressed TIFF, horizontal predictor, 8 or 16 bits, 1-4 samples, with ICC and EXIF tags."""
    height, width, channels = samples.shape
    bits = samples.dtype.itemsize * 8
    deltas = samples.copy()
    deltas[:, 1:] -= samples[:, :-1]  # TIFF predictor 2; unsigned arithmetic wraps as the spec requires
    raw = deltas.astype("<u2" if bits == 16 else np.uint8).reshape(height, width * channels).view(np.uint8)
    rows_per_strip = max(1, min(height, _TIFF_STRIP_BYTES // raw.shape[1]))
    strips = [zlib.compress(raw[y : y + rows_per_strip].tobytes(), 6) for y in range(0, height, rows_per_strip)]

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif:
        tags = Image.Exif()
        tags.load(exif)
        for tag in tags:
            if tag not in _TIFF_LAYOUT_TAGS:
                ifd[tag] = tags.get_ifd(tag) if tag in TiffTags.TAGS_V2_GROUPS else tags[tag]
    ifd[256] = width
    ifd[257] = height
    ifd[258] = (bits,) * channels
    ifd[259] = 8  # Adobe Deflate
    ifd[262] = 1 if channels <= 2 else 2  # BlackIsZero or RGB
    ifd[277] = channels
    ifd[278] = rows_per_strip
    ifd[284] = 1  # chunky
    ifd[317] = 2  # horizontal differencing
    if channels in (2, 4):
        ifd[338] = 2  # unassociated alpha
    if icc:
        ifd[34675] = icc
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in strips])[:-1]])
    ifd[273] = tuple(int(o) for o in offsets)  # relative: the directory writer adds where the data starts
    ifd[279] = tuple(len(s) for s in strips)
    ifd.tagtype[273] = ifd.tagtype[279] = TiffTags.LONG
    buf = io.BytesIO()
    ifd.save(buf)
    for strip in strips:
        buf.write(strip)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- model tensors


def to_chw(picture: Picture) -> np.ndarray:
    """The RGB samples as a contiguous float32 3xHxW array."""
    return np.ascontiguousarray(np.asarray(picture.rgb, dtype=np.float32).transpose(2, 0, 1))


def from_chw(picture: Picture, chw: np.ndarray) -> Picture:
    """A copy of ``picture`` with RGB replaced by a 3xHxW (or 1xHxW) result.

    Grey pictures get the channel mean in all three channels, so writing them gives one channel.
    """
    data = np.asarray(chw, dtype=np.float32)
    if data.ndim != 3 or data.shape[0] not in (1, 3):
        raise ValueError(f"expected a 3xHxW array, got shape {data.shape}")
    hwc = data.transpose(1, 2, 0)
    if picture.gray or data.shape[0] == 1:
        rgb = np.repeat(hwc.mean(axis=2, keepdims=True), 3, axis=2)
    else:
        rgb = np.ascontiguousarray(hwc)
    return dataclasses.replace(picture, rgb=rgb)
