"""JPEG quality estimation from quantisation tables and the JPEG training degradation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from denoise_cli.jpeg import (
    CHROMA_TABLE,
    LUMA_TABLE,
    estimate_quality,
    ijg_table,
    jpeg_roundtrip,
    random_jpeg,
    read_tables,
    to_gray,
)
from denoise_cli.metrics import psnr

from .conftest import photo


def encode(image: Image.Image, **options: object) -> bytes:
    """``image`` saved as an in-memory JPEG with Pillow."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def colour(seed: int = 0) -> Image.Image:
    """A small colour test photo."""
    return Image.fromarray(photo(48, 64, seed=seed))


def batch_of(*seeds: int) -> torch.Tensor:
    """Test photos as a float [0,1] (N,3,H,W) batch."""
    return torch.stack([torch.from_numpy(photo(48, 64, seed=s)).permute(2, 0, 1).float() / 255 for s in seeds])


def channels_equal(image: torch.Tensor) -> bool:
    """Whether a (3,H,W) image has three identical channels."""
    return bool(torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]))


def zigzag_to_natural() -> np.ndarray:
    """Natural (row-major) index of each zig-zag position, walked from T.81 Figure A.6's definition."""
    cells = [(i, j) for i in range(8) for j in range(8)]
    # Anti-diagonals in turn; odd ones run down-left (row rising), even ones up-right (column rising).
    cells.sort(key=lambda c: (c[0] + c[1], c[0] if (c[0] + c[1]) % 2 else c[1]))
    return np.array([8 * i + j for i, j in cells])


def dqt_tables(data: bytes) -> dict[int, np.ndarray]:
    """8-bit quantisation tables straight from a JPEG's DQT segments, in file (zig-zag) order."""
    tables, pos = {}, 2
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:  # walk marker segments up to the scan
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDB:
            body = data[pos + 4 : pos + 2 + length]
            for start in range(0, len(body), 65):
                assert body[start] >> 4 == 0, "test helper reads 8-bit tables only"
                tables[body[start] & 15] = np.frombuffer(body[start + 1 : start + 65], dtype=np.uint8).astype(int)
        pos += 2 + length
    return tables


def test_zigzag_helper_starts_like_the_standard() -> None:
    # T.81 Figure A.6: zig-zag positions 0..9 are (0,0) (0,1) (1,0) (2,0) (1,1) (0,2) (0,3) (1,2) (2,1) (3,0).
    assert zigzag_to_natural()[:10].tolist() == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]
    assert sorted(zigzag_to_natural().tolist()) == list(range(64))


def test_pillow_tables_come_in_natural_order() -> None:
    # An asymmetric table tells the orders apart: transposing or zig-zagging it changes it.
    luma = np.arange(1, 65)
    chroma = np.arange(64, 0, -1) + 10
    data = encode(colour(), qtables=[luma.tolist(), chroma.tolist()])
    in_file = dqt_tables(data)
    natural = {index: np.empty(64, dtype=int) for index in in_file}
    for index, zigzag in in_file.items():
        natural[index][zigzag_to_natural()] = zigzag
    read_luma, read_chroma = read_tables(data)
    assert np.array_equal(read_luma, natural[0])
    assert np.array_equal(read_chroma, natural[1])
    assert np.array_equal(read_luma, luma)  # and Pillow's qtables= argument is natural order too
    assert not np.array_equal(in_file[0], luma)  # the file itself is zig-zag


def test_annex_k_tables_are_libjpegs_quality_50() -> None:
    luma, chroma = read_tables(encode(colour(), quality=50))
    assert np.array_equal(luma, LUMA_TABLE)
    assert np.array_equal(chroma, CHROMA_TABLE)


def test_ijg_scaling_by_hand_and_clamping() -> None:
    assert ijg_table(LUMA_TABLE, 75)[0] == 8  # scale 50: (16 * 50 + 50) // 100
    assert ijg_table(LUMA_TABLE, 30)[1] == 18  # scale 5000 // 30 = 166: (11 * 166 + 50) // 100
    assert ijg_table(CHROMA_TABLE, 10)[0] == 85  # scale 500: (17 * 500 + 50) // 100
    assert ijg_table(LUMA_TABLE, 1).max() == 255  # baseline: 8-bit entries
    assert np.array_equal(ijg_table(LUMA_TABLE, 0), ijg_table(LUMA_TABLE, 1))
    assert np.array_equal(ijg_table(LUMA_TABLE, 250), np.ones(64))  # quality 100 is all ones


@pytest.mark.parametrize("quality", [5, 10, 20, 30, 40, 50, 60, 75, 90, 95])
def test_recovers_quality_of_colour_jpegs(quality: int) -> None:
    estimate = estimate_quality(encode(colour(quality), quality=quality))
    assert (estimate.quality, estimate.exact, estimate.gray) == (quality, True, False)


@pytest.mark.parametrize("quality", [8, 35, 70, 97])
def test_recovers_quality_of_gray_jpegs(quality: int, tmp_path: Path) -> None:
    path = tmp_path / "gray.jpg"
    colour(quality).convert("L").save(path, quality=quality)
    estimate = estimate_quality(path)
    assert (estimate.quality, estimate.exact, estimate.gray) == (quality, True, True)


def test_custom_tables_are_not_exact_but_close(tmp_path: Path) -> None:
    luma, chroma = ijg_table(LUMA_TABLE, 40).copy(), ijg_table(CHROMA_TABLE, 40).copy()
    luma[[3, 20, 45]] += [2, -3, 4]
    chroma[[0, 9]] -= [1, 2]
    path = tmp_path / "custom.jpg"
    colour().save(path, qtables=[luma.tolist(), chroma.tolist()])
    estimate = estimate_quality(path)
    assert not estimate.exact
    assert not estimate.gray
    assert abs(estimate.quality - 40) <= 2


def test_reads_the_header_only() -> None:
    data = encode(Image.fromarray(photo(256, 256)), quality=30)
    truncated = data[: data.index(b"\xff\xda") + 40]  # a few bytes into the entropy-coded scan
    with pytest.raises(OSError), Image.open(io.BytesIO(truncated)) as image:
        image.load()  # decoding really needs the missing data
    assert estimate_quality(truncated).quality == 30


def test_non_jpeg_raises_value_error(tmp_path: Path) -> None:
    png = tmp_path / "photo.png"
    colour().save(png)
    for source in (png, png.read_bytes(), b"not an image at all"):
        with pytest.raises(ValueError, match="not a JPEG") as info:
            estimate_quality(source)
        assert "\n" not in str(info.value)


def test_roundtrip_degrades_more_at_low_quality() -> None:
    clean = batch_of(0, 1)
    low, high = jpeg_roundtrip(clean, [10, 10]), jpeg_roundtrip(clean, torch.tensor([90, 90]))
    for out in (low, high):
        assert out.shape == clean.shape and out.dtype == clean.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out[:, 0], out[:, 1])  # still colour
    # 4:2:0 caps colour PSNR on these noisy photos, so luma shows the quality gap best.
    assert psnr(low, clean) + 3 < psnr(high, clean)
    assert psnr(low, clean, y_only=True) + 5 < psnr(high, clean, y_only=True)


def test_roundtrip_uses_each_images_quality() -> None:
    clean = batch_of(2, 2)
    mixed = jpeg_roundtrip(clean, [10, 90])
    assert torch.equal(mixed[0], jpeg_roundtrip(clean[:1], [10])[0])
    assert torch.equal(mixed[1], jpeg_roundtrip(clean[:1], [90])[0])
    with pytest.raises(ValueError, match="one quality per image"):
        jpeg_roundtrip(clean, [50])
    with pytest.raises(ValueError, match=r"in 1\.\.100"):
        jpeg_roundtrip(clean, [0, 50])


def test_gray_roundtrip_is_pillow_luma_on_three_channels() -> None:
    clean = batch_of(3)
    out = jpeg_roundtrip(clean, [95], gray=True)
    assert out.shape == clean.shape
    assert channels_equal(out[0])
    luma = np.asarray(Image.fromarray(photo(48, 64, seed=3)).convert("L"), dtype=np.float32) / 255
    assert psnr(out[0, 0], torch.from_numpy(luma)) > 38  # a plain channel mean would be ~22 dB off


def test_to_gray_matches_pillow_l() -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.float64)
    ours = to_gray(torch.from_numpy(pixels).permute(2, 0, 1)[None].double() / 255)
    assert torch.equal(ours[0, 0], ours[0, 2])
    assert np.abs(ours[0, 0].numpy() * 255 - pillow).max() <= 0.5 + 1e-9  # Pillow rounds the same sum


def test_random_jpeg_is_reproducible_and_draws_in_range() -> None:
    clean = batch_of(0, 1, 2, 3)
    degrade = random_jpeg((10, 60), gray_fraction=0.5)
    first = degrade(clean, torch.Generator().manual_seed(7))
    again = degrade(clean, torch.Generator().manual_seed(7))
    other = degrade(clean, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # A one-value range pins the quality: the result is exactly that round trip.
    fixed, target = random_jpeg((25, 25))(clean, torch.Generator().manual_seed(0))
    assert torch.equal(fixed, jpeg_roundtrip(clean, [25] * 4))
    assert torch.equal(target, clean)


def test_random_jpeg_gray_images_are_gray_in_input_and_target() -> None:
    clean = batch_of(*range(12))
    degraded, target = random_jpeg((90, 95), gray_fraction=0.5)(clean, torch.Generator().manual_seed(1))
    gray = [channels_equal(image) for image in target]
    assert 0 < sum(gray) < 12  # this seed makes some of each
    for i, is_gray in enumerate(gray):
        if is_gray:
            assert channels_equal(degraded[i])
            assert torch.allclose(target[i], to_gray(clean[i : i + 1])[0])
        else:
            assert torch.equal(target[i], clean[i])
            assert not torch.equal(degraded[i, 0], degraded[i, 1])
        # Input and target show the same picture: only JPEG error between them (~23 dB with another gray).
        assert psnr(degraded[i], target[i], y_only=True) > 35
