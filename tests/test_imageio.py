"""Tests for denoise_cli.imageio: exact round trips, 16-bit, alpha, metadata, orientation, errors, atomic writes."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from denoise_cli import imageio
from denoise_cli.imageio import ImageReadError, Picture, read_image, write_image

RNG = np.random.default_rng(1234)


def q8(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 255).astype(np.uint8)


def q16(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 65535).astype(np.uint16)


def pil_bytes(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes(**tags: object) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = tags.get("make", "TestCam")  # Make
    if "orientation" in tags:
        exif[0x0112] = tags["orientation"]
    return exif.tobytes()


def hand_png16(samples: np.ndarray) -> bytes:
    """A 16-bit PNG with no row filters, written independently of the module under test."""
    height, width, channels = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples.reshape(height, -1))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def hand_tiff_rgb16_be(samples: np.ndarray) -> bytes:
    """An uncompressed big-endian 16-bit RGB TIFF, written independently of the module under test."""
    height, width, _ = samples.shape
    pixels = samples.astype(">u2").tobytes()
    n_entries = 10
    bps_offset = 8 + 2 + 12 * n_entries + 4
    data_offset = bps_offset + 6

    def short(tag: int, value: int) -> bytes:
        return struct.pack(">HHIHH", tag, 3, 1, value, 0)

    def long(tag: int, value: int) -> bytes:
        return struct.pack(">HHII", tag, 4, 1, value)

    entries = [
        long(256, width),
        long(257, height),
        struct.pack(">HHII", 258, 3, 3, bps_offset),
        short(259, 1),
        short(262, 2),
        long(273, data_offset),
        short(277, 3),
        long(278, height),
        long(279, len(pixels)),
        short(284, 1),
    ]
    ifd = struct.pack(">H", n_entries) + b"".join(entries) + struct.pack(">I", 0)
    return b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">HHH", 16, 16, 16) + pixels


# ------------------------------------------------------------------------------------------ round trips


def test_rgb8_png_round_trip_exact(tmp_path: Path) -> None:
    src = RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    path = tmp_path / "in.png"
    Image.fromarray(src).save(path)

    pic = read_image(path)
    assert pic.rgb.dtype == np.float32 and pic.rgb.shape == (13, 17, 3)
    assert (pic.bit_depth, pic.gray, pic.alpha, pic.format) == (8, False, None, "PNG")
    assert np.array_equal(q8(pic.rgb), src)

    out = tmp_path / "out.png"
    assert write_image(pic, out) == []
    with Image.open(out) as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), src)


@pytest.mark.parametrize("out_fmt", ["png", "tiff"])
def test_gray16_round_trip_keeps_low_bits(tmp_path: Path, out_fmt: str) -> None:
    src = RNG.integers(0, 65536, (9, 14), dtype=np.uint16)
    src[0, :4] = [0, 1, 65534, 65535]
    assert np.any(src % 257 != 0)  # values an 8-bit path could not carry
    path = tmp_path / "gray16.png"
    Image.fromarray(src).save(path)  # Pillow writes mode I;16 as a 16-bit grey PNG

    pic = read_image(path)
    assert (pic.bit_depth, pic.gray) == (16, True)
    assert np.array_equal(pic.rgb[..., 0], pic.rgb[..., 2])
    assert np.array_equal(q16(pic.rgb[..., 0]), src)

    out = tmp_path / f"out.{out_fmt}"
    assert write_image(pic, out) == []
    with Image.open(out) as im:
        assert im.mode.startswith("I;16")
        assert np.array_equal(np.asarray(im).astype(np.uint16), src)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_reads_16bit_colour_and_alpha_png_exactly(channels: int) -> None:
    src = RNG.integers(0, 65536, (7, 11, channels), dtype=np.uint16)
    pic = read_image(hand_png16(src))
    assert pic.bit_depth == 16
    assert pic.gray is (channels == 2)
    colour = np.repeat(src[..., :1], 3, axis=2) if channels == 2 else src[..., :3]
    assert np.array_equal(q16(pic.rgb), colour)
    if channels in (2, 4):
        assert pic.alpha is not None and np.array_equal(q16(pic.alpha), src[..., -1])
    else:
        assert pic.alpha is None


def test_reads_uncompressed_big_endian_16bit_rgb_tiff_exactly() -> None:
    src = RNG.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    pic = read_image(hand_tiff_rgb16_be(src))
    assert (pic.format, pic.bit_depth, pic.gray) == ("TIFF", 16, False)
    assert np.array_equal(q16(pic.rgb), src)


@pytest.mark.parametrize("out_fmt", ["png", "tiff"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_16bit_colour_written_as_16bit(tmp_path: Path, out_fmt: str, with_alpha: bool) -> None:
    src = RNG.integers(0, 65536, (21, 15, 4), dtype=np.uint16)
    src[:5] = np.arange(15, dtype=np.uint16)[None, :, None] * 4000  # smooth rows exercise every PNG filter
    alpha = (src[..., 3] / 65535).astype(np.float32) if with_alpha else None
    pic = Picture(rgb=(src[..., :3] / 65535).astype(np.float32), alpha=alpha, bit_depth=16)
    out = tmp_path / f"out.{out_fmt}"
    assert write_image(pic, out) == []

    with Image.open(out) as im:  # Pillow's own decode keeps the high byte of each sample
        assert im.mode == ("RGBA" if with_alpha else "RGB")
        channels = 4 if with_alpha else 3
        assert np.array_equal(np.asarray(im), (src[..., :channels] >> 8).astype(np.uint8))
    back = read_image(out)
    assert back.bit_depth == 16
    assert np.array_equal(q16(back.rgb), src[..., :3])
    if with_alpha:
        assert back.alpha is not None and np.array_equal(q16(back.alpha), src[..., 3])


# ----------------------------------------------------------------------------------- grey, alpha, palette


@pytest.mark.parametrize("out_fmt", ["png", "jpeg", "tiff", "bmp"])
def test_gray_in_gray_out(tmp_path: Path, out_fmt: str) -> None:
    src = RNG.integers(0, 256, (8, 12), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(src).save(path)
    pic = read_image(path)
    assert pic.gray and pic.bit_depth == 8

    chw = imageio.to_chw(pic)
    chw[0] += 0.1  # a model that drifts in colour must still give a grey file
    result = imageio.from_chw(pic, chw)
    assert np.array_equal(result.rgb[..., 0], result.rgb[..., 1])

    out = tmp_path / f"out.{out_fmt}"
    write_image(result, out)
    with Image.open(out) as im:
        assert im.mode == "L"
        if out_fmt != "jpeg":
            expected = np.clip(np.rint(src.astype(np.float32) + 255 * 0.1 / 3), 0, 255)
            assert np.abs(np.asarray(im).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("out_fmt", ["png", "tiff"])
def test_rgba_alpha_preserved_exactly(tmp_path: Path, out_fmt: str) -> None:
    src = RNG.integers(0, 256, (10, 9, 4), dtype=np.uint8)
    src[0, :3, 3] = [0, 1, 255]
    path = tmp_path / "rgba.png"
    Image.fromarray(src).save(path)

    pic = read_image(path)
    assert pic.alpha is not None and pic.alpha.shape == (10, 9)
    assert np.array_equal(q8(pic.alpha), src[..., 3])

    out = tmp_path / f"out.{out_fmt}"
    write_image(pic, out)
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.asarray(im), src)


def test_palette_with_transparency(tmp_path: Path) -> None:
    index = RNG.integers(0, 4, (6, 8), dtype=np.uint8)
    im = Image.frombytes("P", (8, 6), index.tobytes())
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]
    im.putpalette(palette)
    path = tmp_path / "pal.png"
    im.save(path, transparency=2)

    pic = read_image(path)
    assert not pic.gray and pic.alpha is not None
    assert np.array_equal(pic.alpha == 0, index == 2)
    assert np.all(pic.alpha[index != 2] == 1)
    colours = np.array(palette, dtype=np.uint8).reshape(4, 3)
    opaque = index != 2
    assert np.array_equal(q8(pic.rgb)[opaque], colours[index][opaque])

    out = tmp_path / "out.png"
    write_image(pic, out)
    with Image.open(out) as back:
        assert back.mode == "RGBA"
        assert np.array_equal(np.asarray(back)[..., 3] == 0, index == 2)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_colour_key_becomes_alpha(mode: str) -> None:
    src = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    src[2, 3] = src[4, 1] = 7
    image = Image.fromarray(src).convert(mode)
    pixels = np.asarray(image)
    key_mask = pixels == 7 if mode == "L" else np.all(pixels == 7, axis=2)
    pic = read_image(pil_bytes(image, transparency=7 if mode == "L" else (7, 7, 7)))
    assert pic.alpha is not None and pic.gray is (mode == "L")
    assert np.array_equal(pic.alpha == 0, key_mask) and np.all(pic.alpha[~key_mask] == 1)


@pytest.mark.parametrize(
    ("mode", "fmt", "gray", "has_alpha"),
    [
        ("1", "PNG", True, False),
        ("LA", "PNG", True, True),
        ("CMYK", "JPEG", False, False),
        ("RGB", "BMP", False, False),
    ],
)
def test_other_modes_read(mode: str, fmt: str, gray: bool, has_alpha: bool) -> None:
    source = Image.fromarray(RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8), mode="RGBA").convert(mode)
    data = pil_bytes(source, fmt)
    pic = read_image(data)
    assert (pic.gray, pic.alpha is not None, pic.format) == (gray, has_alpha, fmt)
    with Image.open(io.BytesIO(data)) as reference:
        expected = np.asarray(reference.convert("RGB"))
    assert np.array_equal(q8(pic.rgb), expected)


# --------------------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("out_fmt", ["png", "jpeg", "webp", "tiff"])
def test_exif_and_icc_copied_from_jpeg(tmp_path: Path, out_fmt: str) -> None:
    icc = srgb_icc()
    path = tmp_path / "in.jpg"
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path, icc_profile=icc, exif=exif_bytes())
    pic = read_image(path)
    assert pic.icc == icc
    assert pic.exif is not None and pic.exif.startswith(b"Exif\x00\x00")

    out = tmp_path / f"out.{out_fmt}"
    assert write_image(pic, out) == []
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc
        assert im.getexif().get(0x010F) == "TestCam"


@pytest.mark.parametrize("out_fmt", ["png", "tiff"])
def test_exif_and_icc_written_by_16bit_encoders(tmp_path: Path, out_fmt: str) -> None:
    icc = srgb_icc()
    pic = Picture(rgb=RNG.random((5, 6, 3), dtype=np.float32), bit_depth=16, icc=icc, exif=exif_bytes())
    out = tmp_path / f"out.{out_fmt}"
    assert write_image(pic, out) == []
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == icc
        assert im.getexif().get(0x010F) == "TestCam"


def test_icc_for_wrong_colour_model_is_dropped_with_warning(tmp_path: Path) -> None:
    pic = Picture(rgb=np.full((4, 4, 3), 0.5, np.float32), gray=True, icc=srgb_icc())
    out = tmp_path / "gray.png"
    warnings = write_image(pic, out)
    assert any("ICC" in w for w in warnings)
    with Image.open(out) as im:
        assert im.mode == "L" and "icc_profile" not in im.info


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    src = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    data = pil_bytes(Image.fromarray(src), exif=exif_bytes(orientation=orientation))
    pic = read_image(data)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(q8(pic.rgb), expected)


def test_orientation_6_rotates_and_resets_tag(tmp_path: Path) -> None:
    src = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)  # 5 wide, 3 high
    path = tmp_path / "rotated.jpg"
    original_exif = exif_bytes(orientation=6)
    Image.fromarray(src).save(path, quality=100, exif=original_exif)

    pic = read_image(path)
    assert pic.rgb.shape == (5, 3, 3)
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"
    # The tag is patched in place: same length, only the orientation value differs.
    assert pic.exif is not None and len(pic.exif) == len(original_exif)
    assert sum(a != b for a, b in zip(pic.exif, original_exif, strict=True)) == 1

    out = tmp_path / "out.png"
    write_image(pic, out)
    with Image.open(out) as im:
        assert im.size == (3, 5)
        assert im.getexif()[0x0112] == 1


# ----------------------------------------------------------------------------------------------- errors


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


NOISE = RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"this is not an image at all", "not a recognised image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(RNG.integers(0, 256, 200, dtype=np.uint8)), ""),
        (_truncated(pil_bytes(Image.fromarray(NOISE))), "truncated"),
        (_truncated(pil_bytes(Image.fromarray(NOISE), "JPEG")), "truncated"),
        (_truncated(hand_png16(NOISE.astype(np.uint16) * 257)), "truncated"),
    ],
    ids=["not-an-image", "corrupt-png", "truncated-png", "truncated-jpeg", "truncated-png16"],
)
def test_bad_input_raises_one_line_image_read_error(data: bytes, needle: str) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(data)
    message = str(info.value)
    assert message and "\n" not in message
    assert needle in message


def test_missing_file_raises_image_read_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_max_pixels_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pil_bytes(Image.new("RGB", (10, 10)))
    with pytest.raises(ImageReadError, match="too large"):
        read_image(data, max_pixels=99)
    # Our limit replaces Pillow's global one (which would refuse this image) and leaves it as it was.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    assert read_image(data, max_pixels=100).rgb.shape == (10, 10, 3)
    assert Image.MAX_IMAGE_PIXELS == 10


# ------------------------------------------------------------------------------------------------ writes


def test_atomic_write_replaces_target_and_leaves_no_part_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_image(Picture(rgb=np.zeros((4, 4, 3), np.float32)), target)
    assert target.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_encoder_failure_does_not_touch_existing_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(imageio, "_encode_pillow", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        write_image(Picture(rgb=np.zeros((4, 4, 3), np.float32)), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_interrupt_during_rename_removes_part_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.tif"
    target.write_bytes(b"old")
    seen: list[Path] = []

    def interrupted_replace(src: str, dst: str) -> None:
        seen.append(Path(src))
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        write_image(Picture(rgb=np.zeros((4, 4, 3), np.float32)), target)
    assert len(seen) == 1 and seen[0].parent == tmp_path
    assert seen[0].name.startswith(".") and seen[0].name.endswith(".part")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_jpeg_quality_option() -> None:
    pic = Picture(rgb=RNG.random((64, 64, 3), dtype=np.float32))
    low = imageio.encode_image(pic, "jpg", quality=30)
    high = imageio.encode_image(pic, "jpg", quality=95)
    assert len(low) < len(high)
    assert imageio.encode_image(pic, "jpeg") == high  # default is 95
    with pytest.raises(ValueError, match="quality"):
        imageio.encode_image(pic, "jpeg", quality=0)


def test_jpeg_drops_alpha_and_16bit_with_warnings(tmp_path: Path) -> None:
    pic = Picture(rgb=np.full((4, 4, 3), 0.5, np.float32), alpha=np.ones((4, 4), np.float32), bit_depth=16)
    warnings = write_image(pic, tmp_path / "out.jpg")
    assert any("alpha" in w for w in warnings)
    assert any("8-bit" in w for w in warnings)
    assert imageio.output_warnings(pic, "jpeg") == warnings
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "RGB"


def test_alpha_resized_to_upscaled_result(tmp_path: Path) -> None:
    alpha = np.zeros((4, 6), np.float32)
    alpha[:, 3:] = 1.0
    pic = Picture(rgb=np.full((8, 12, 3), 0.25, np.float32), alpha=alpha)
    out = tmp_path / "up.png"
    write_image(pic, out)
    with Image.open(out) as im:
        assert im.size == (12, 8) and im.mode == "RGBA"
        written = np.asarray(im)[..., 3]
    assert np.all(written[:, :4] == 0) and np.all(written[:, -4:] == 255)
    assert np.all(np.diff(written.astype(int), axis=1) >= 0)  # a clean edge, no wrap-around


def test_formats_and_format_for_path(tmp_path: Path) -> None:
    assert imageio.format_for_path(Path("a/b.JPG")) == "jpeg"
    assert imageio.format_for_path("x.tif") == "tiff"
    assert imageio.FORMATS["jpg"].pil == "JPEG" and imageio.FORMATS["tiff"].extension == ".tif"
    with pytest.raises(ValueError, match="extension"):
        imageio.format_for_path("x.xyz")
    with pytest.raises(ValueError, match="unknown image format"):
        imageio.encode_image(Picture(rgb=np.zeros((2, 2, 3), np.float32)), "gif")
    out = tmp_path / "noext"
    write_image(Picture(rgb=np.zeros((2, 2, 3), np.float32)), out, fmt="WEBP")  # Pillow names work too
    with Image.open(out) as im:
        assert im.format == "WEBP"


def test_chw_helpers() -> None:
    rgb = RNG.random((5, 7, 3), dtype=np.float32)
    pic = Picture(rgb=rgb)
    chw = imageio.to_chw(pic)
    assert chw.shape == (3, 5, 7) and chw.dtype == np.float32 and chw.flags.c_contiguous
    back = imageio.from_chw(pic, chw)
    assert back is not pic and np.array_equal(back.rgb, rgb) and back.rgb.flags.c_contiguous
    with pytest.raises(ValueError, match="3xHxW"):
        imageio.from_chw(pic, chw[:2])


def test_module_does_not_import_torch() -> None:
    code = "import sys, denoise_cli.imageio; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
