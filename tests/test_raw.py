"""Tests for denoise_cli.raw: CFA normalisation, packing, classical demosaicking and RAW/mosaic reading."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rawpy
import torch
import torch.nn.functional as F
from PIL import Image

from denoise_cli import raw
from denoise_cli.imageio import ImageReadError
from denoise_cli.metrics import psnr
from denoise_cli.raw import (
    CFA_PATTERNS,
    RawReadError,
    demosaic_bilinear,
    demosaic_malvar,
    from_rggb_crop,
    is_raw_path,
    mosaic,
    pack,
    read_bayer_image,
    read_raw,
    sparse_rgb,
    to_rggb,
    unpack,
)

KODAK = Path("/work/shared/data/raw/RAW_KODAK_DC50.KDC")
HALIDE = Path("/work/shared/data/raw/halide_fcam/bayer_small.png")
# Where R sits in each pattern's 2x2 cell, i.e. the rows/columns to add on top/left to reach RGGB.
RED_AT = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}
DEMOSAICS = [demosaic_bilinear, demosaic_malvar]


def random_rgb(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def textured(height: int = 96, width: int = 128, seed: int = 0) -> torch.Tensor:
    """A colour image whose channels share their detail, as in natural photos: sinusoidal texture times a tint."""
    gen = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    luma = torch.zeros(height, width)
    for _ in range(6):
        fy, fx, phase = (torch.rand(3, generator=gen) * torch.tensor([0.8, 0.8, 6.28])).tolist()
        luma += torch.sin(fy * y + fx * x + phase)
    tint = torch.stack([0.9 + 0.2 * x / width, torch.ones_like(x), 1.1 - 0.2 * y / height])
    return ((0.5 + 0.08 * luma) * tint).clamp(0, 1)[None]


# ------------------------------------------------------------------------------------ CFA patterns


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_mosaic_samples_the_colour_the_pattern_names(pattern: str) -> None:
    rgb = random_rgb(5, 6)
    mosaicked = mosaic(rgb, pattern)
    assert mosaicked.shape == (1, 1, 5, 6)
    for y in range(5):
        for x in range(6):
            channel = "RGB".index(pattern[2 * (y % 2) + x % 2])
            assert mosaicked[0, 0, y, x] == rgb[0, channel, y, x]


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_to_rggb_mirrors_a_row_and_column_and_the_crop_restores_the_input(pattern: str) -> None:
    rgb = random_rgb(7, 9)  # odd sizes on purpose
    mosaicked = mosaic(rgb, pattern)
    normalised = to_rggb(mosaicked, pattern)
    top, left = RED_AT[pattern]
    assert normalised.shape == (1, 1, 7 + top, 9 + left)
    # The shifted mosaic is exactly an RGGB sampling of the image with the same mirrored row/column.
    expected = mosaic(F.pad(rgb, (left, 0, top, 0), mode="reflect"), "RGGB")
    assert torch.equal(normalised, expected)
    assert torch.equal(normalised[..., top:, left:], mosaicked)
    assert torch.equal(from_rggb_crop(normalised, pattern), mosaicked)


def test_grbg_gets_column_one_copied_in_front() -> None:
    mosaicked = torch.arange(12.0).reshape(1, 1, 3, 4)
    normalised = to_rggb(mosaicked, "GRBG")
    assert torch.equal(normalised[..., 0], mosaicked[..., 1])
    assert torch.equal(normalised[..., 1:], mosaicked)


def test_unknown_pattern_and_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown CFA pattern"):
        to_rggb(torch.zeros(1, 1, 4, 4), "RGBG")
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        to_rggb(torch.zeros(1, 3, 4, 4), "RGGB")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        mosaic(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="at least 3x3"):
        demosaic_malvar(torch.zeros(1, 1, 2, 8))


def test_lower_case_patterns_are_accepted() -> None:
    rgb = random_rgb(4, 4)
    assert torch.equal(mosaic(rgb, "bggr"), mosaic(rgb, "BGGR"))


def test_sparse_rgb_keeps_each_sample_in_its_own_colour() -> None:
    values = torch.rand(2, 1, 6, 8) + 0.1  # strictly positive, so zeros mark unsampled colours
    sparse = sparse_rgb(values)
    assert sparse.shape == (2, 3, 6, 8)
    assert torch.equal(sparse.sum(dim=1, keepdim=True), values)
    assert torch.equal((sparse != 0).sum(dim=1), torch.ones(2, 6, 8, dtype=torch.long))
    assert torch.all(sparse[:, 0, 0::2, 0::2] > 0) and torch.all(sparse[:, 2, 1::2, 1::2] > 0)
    assert torch.all(sparse[:, 1, 0::2, 1::2] > 0) and torch.all(sparse[:, 1, 1::2, 0::2] > 0)


# ------------------------------------------------------------------------------------------- packing


def test_pack_orders_channels_r_g1_g2_b_and_unpack_inverts_it() -> None:
    values = torch.rand(2, 1, 6, 8)
    packed = pack(values)
    assert packed.shape == (2, 4, 3, 4)
    assert torch.equal(packed[:, 0], values[:, 0, 0::2, 0::2])
    assert torch.equal(packed[:, 1], values[:, 0, 0::2, 1::2])
    assert torch.equal(packed[:, 2], values[:, 0, 1::2, 0::2])
    assert torch.equal(packed[:, 3], values[:, 0, 1::2, 1::2])
    assert torch.equal(unpack(packed), values)
    other = torch.rand(1, 4, 5, 3)
    assert torch.equal(pack(unpack(other)), other)


def test_pack_pads_odd_sizes_by_reflection_keeping_the_cfa() -> None:
    values = torch.rand(1, 1, 5, 7)
    packed = pack(values)
    assert packed.shape == (1, 4, 3, 4)
    restored = unpack(packed)
    assert restored.shape == (1, 1, 6, 8)
    assert torch.equal(restored[..., :5, :7], values)
    assert torch.equal(restored[..., 5, :7], values[..., 3, :])  # row 5 mirrors row 3: same colours
    assert torch.equal(restored[..., :5, 7], values[..., :, 5])


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_shift_pack_unpack_crop_round_trip_is_exact(pattern: str) -> None:
    mosaicked = mosaic(random_rgb(7, 10), pattern)
    packed = pack(to_rggb(mosaicked, pattern))
    assert torch.equal(from_rggb_crop(unpack(packed), pattern, size=(7, 10)), mosaicked)


# -------------------------------------------------------------------------------------- demosaicking


@pytest.mark.parametrize("demosaic", DEMOSAICS)
@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_demosaic_reproduces_a_constant_colour_everywhere(demosaic, pattern: str) -> None:
    colour = torch.tensor([0.2, 0.55, 0.8]).view(1, 3, 1, 1)
    rgb = colour.expand(1, 3, 9, 12).contiguous()
    out = demosaic(mosaic(rgb, pattern), pattern)
    assert out.shape == rgb.shape
    torch.testing.assert_close(out, rgb, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("demosaic", "border"), [(demosaic_bilinear, 1), (demosaic_malvar, 2)])
@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_demosaic_reproduces_linear_ramps_inside_the_border(demosaic, border: int, pattern: str) -> None:
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    rgb = torch.stack([0.1 + 0.02 * x + 0.01 * y, 0.7 - 0.01 * x + 0.015 * y, 0.2 + 0.03 * y])[None]
    out = demosaic(mosaic(rgb, pattern), pattern)
    inner = (..., slice(border, -border), slice(border, -border))
    torch.testing.assert_close(out[inner], rgb[inner], atol=1e-5, rtol=0)
    assert not torch.allclose(out, rgb, atol=1e-3)  # the mirrored border is not a ramp: proves the crop matters


def test_bilinear_equals_convolving_each_sparse_colour_plane() -> None:
    rgb = random_rgb(10, 14, seed=3)
    planes = F.pad(sparse_rgb(mosaic(rgb)), (1, 1, 1, 1), mode="reflect")
    red_blue = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
    green = torch.tensor([[0.0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4
    weight = torch.stack([red_blue, green, red_blue])[:, None]
    expected = F.conv2d(planes, weight, groups=3)
    torch.testing.assert_close(demosaic_bilinear(mosaic(rgb)), expected, atol=1e-6, rtol=0)


def test_malvar_follows_the_published_filters_at_every_site() -> None:
    values = 0.35 + 0.3 * torch.rand(1, 1, 10, 10, generator=torch.Generator().manual_seed(7))
    out = demosaic_malvar(values)

    def cross(y: int, x: int, d: int) -> float:  # the four samples at distance d along rows/columns
        return float(values[0, 0, y - d, x] + values[0, 0, y + d, x] + values[0, 0, y, x - d] + values[0, 0, y, x + d])

    def horizontal(y: int, x: int, d: int) -> float:
        return float(values[0, 0, y, x - d] + values[0, 0, y, x + d])

    def vertical(y: int, x: int, d: int) -> float:
        return float(values[0, 0, y - d, x] + values[0, 0, y + d, x])

    def diagonal(y: int, x: int) -> float:
        return float(sum(values[0, 0, y + dy, x + dx] for dy in (-1, 1) for dx in (-1, 1)))

    def centre(y: int, x: int) -> float:
        return float(values[0, 0, y, x])

    def green_at_rb(y: int, x: int) -> float:
        return (4 * centre(y, x) + 2 * cross(y, x, 1) - cross(y, x, 2)) / 8

    def opposite_at_rb(y: int, x: int) -> float:
        return (6 * centre(y, x) + 2 * diagonal(y, x) - 1.5 * cross(y, x, 2)) / 8

    def row_neighbours(y: int, x: int) -> float:  # R at G in an R row (and B at G in a B row)
        return (
            5 * centre(y, x) + 4 * horizontal(y, x, 1) - horizontal(y, x, 2) - diagonal(y, x) + 0.5 * vertical(y, x, 2)
        ) / 8

    def column_neighbours(y: int, x: int) -> float:
        return (
            5 * centre(y, x) + 4 * vertical(y, x, 1) - vertical(y, x, 2) - diagonal(y, x) + 0.5 * horizontal(y, x, 2)
        ) / 8

    expected = {
        (4, 4, 1): green_at_rb(4, 4),  # R site
        (4, 4, 2): opposite_at_rb(4, 4),
        (4, 5, 0): row_neighbours(4, 5),  # G in an R row, B column
        (4, 5, 2): column_neighbours(4, 5),
        (5, 4, 0): column_neighbours(5, 4),  # G in a B row, R column
        (5, 4, 2): row_neighbours(5, 4),
        (5, 5, 0): opposite_at_rb(5, 5),  # B site
        (5, 5, 1): green_at_rb(5, 5),
    }
    for (y, x, channel), value in expected.items():
        assert float(out[0, channel, y, x]) == pytest.approx(value, abs=1e-6), (y, x, channel)
    for y, x, channel in [(4, 4, 0), (4, 5, 1), (5, 4, 1), (5, 5, 2)]:
        assert out[0, channel, y, x] == values[0, 0, y, x]


def test_malvar_output_is_clipped_to_the_unit_range() -> None:
    stripes = torch.zeros(1, 3, 12, 12)
    stripes[..., :, 6:] = 1.0  # a hard edge makes the negative taps overshoot
    raw_out = raw._demosaic(mosaic(stripes), "RGGB", raw._MALVAR_KERNELS)
    assert raw_out.min() < 0 or raw_out.max() > 1
    out = demosaic_malvar(mosaic(stripes))
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_malvar_beats_bilinear_on_a_textured_colour_image(pattern: str) -> None:
    rgb = textured()
    mosaicked = mosaic(rgb, pattern)
    bilinear = psnr(demosaic_bilinear(mosaicked, pattern), rgb, shave=2)
    malvar = psnr(demosaic_malvar(mosaicked, pattern), rgb, shave=2)
    assert bilinear > 30  # a sane reconstruction, so the comparison means something
    assert malvar > bilinear + 3


# --------------------------------------------------------------------------------------- RAW reading


def test_is_raw_path_by_suffix() -> None:
    for name in ["a.DNG", "b.nef", "c.KDC", "dir/d.cr3", "e.arw", "f.raf", "g.rw2", "h.orf", "i.x3f"]:
        assert is_raw_path(name), name
    for name in ["a.png", "b.tif", "c.jpg", "noext", "raw.dng.png"]:
        assert not is_raw_path(Path(name)), name


def test_read_raw_kodak_dc50() -> None:
    result = read_raw(KODAK)
    assert result.pattern == "GRBG"
    assert result.size == (512, 768)
    assert result.mosaic.shape == (1, 1, 512, 769)  # one mirrored column in front
    assert result.mosaic.dtype == torch.float32
    assert float(result.mosaic.min()) >= 0 and float(result.mosaic.max()) <= 1
    assert 0.05 < float(result.mosaic.mean()) < 0.5
    assert result.wb_gains[1] == 1.0 and all(g > 0 for g in result.wb_gains)
    with rawpy.imread(str(KODAK)) as decoded:
        sensor = decoded.raw_image_visible.astype(np.float64)
        black = decoded.black_level_per_channel[0]
        white = decoded.white_level
    expected = np.clip((sensor - black) / (white - black), 0, 1)
    restored = from_rggb_crop(result.mosaic, result.pattern)[0, 0].double().numpy()
    np.testing.assert_allclose(restored, expected, atol=1e-6)


def test_read_raw_corrupt_file_gives_one_line_reason(tmp_path: Path) -> None:
    path = tmp_path / "broken.dng"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(RawReadError) as info:
        read_raw(path)
    message = str(info.value)
    assert message and "\n" not in message and "broken" not in message


def test_read_raw_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RawReadError, match="file not found"):
        read_raw(tmp_path / "nothing.nef")


class FakeRaw(SimpleNamespace):
    """Enough of rawpy.RawPy to drive read_raw without a RAW file of every kind."""

    def __enter__(self) -> FakeRaw:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def fake_bayer(**overrides: object) -> FakeRaw:
    fields: dict[str, object] = {
        "raw_type": rawpy.RawType.Flat,
        "raw_pattern": np.array([[0, 1], [3, 2]], dtype=np.uint8),
        "color_desc": b"RGBG",
        "raw_image_visible": np.full((4, 6), 100, dtype=np.uint16),
        "black_level_per_channel": [0, 0, 0, 0],
        "white_level": 1023,
        "camera_whitebalance": [2.0, 1.0, 1.5, 1.0],
        "daylight_whitebalance": [1.8, 1.0, 1.4, 0.0],
        "rgb_xyz_matrix": np.zeros((4, 3), dtype=np.float32),
        "color_matrix": np.zeros((3, 4), dtype=np.float32),
        "sizes": SimpleNamespace(flip=0),
    }
    fields.update(overrides)
    return FakeRaw(**fields)


def use_fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeRaw) -> Path:
    path = tmp_path / "fake.dng"
    path.write_bytes(b"stand-in")
    monkeypatch.setattr(rawpy, "imread", lambda _path: fake)
    return path


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"raw_pattern": np.zeros((6, 6), dtype=np.uint8)}, "X-Trans"),
        ({"raw_type": rawpy.RawType.Stack}, "linear DNG"),
        ({"raw_pattern": None}, "Foveon"),
        ({"color_desc": b"CMYG", "raw_pattern": np.array([[0, 1], [2, 3]])}, "not an RGB Bayer pattern"),
    ],
)
def test_read_raw_rejects_sensors_that_are_not_rgb_bayer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, overrides: dict[str, object], reason: str
) -> None:
    path = use_fake(monkeypatch, tmp_path, fake_bayer(**overrides))
    with pytest.raises(RawReadError, match=reason) as info:
        read_raw(path)
    assert "\n" not in str(info.value)


def test_read_raw_levels_second_green_and_white_balance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # BGGR with the second green as colour 3; each colour has its own black level.
    blacks = {0: 60.0, 1: 64.0, 2: 58.0, 3: 66.0}  # R, G, B, G2
    cfa = np.array([[2, 1], [3, 0]], dtype=np.uint8)
    white = 1023
    fractions = np.array([[0.25, 0.5], [0.75, 1.0]])
    sensor = np.zeros((4, 6), dtype=np.uint16)
    for dy in (0, 1):
        for dx in (0, 1):
            black = blacks[int(cfa[dy, dx])]
            sensor[dy::2, dx::2] = round(black + fractions[dy, dx] * (white - black))
    sensor[2, 2] = 10  # below black: negative (read noise stays zero-mean), not clipped
    sensor[3, 3] = 4000  # above white: clipped to 1
    xyz = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    fake = fake_bayer(
        raw_pattern=cfa,
        raw_image_visible=sensor,
        black_level_per_channel=[blacks[i] for i in range(4)],
        white_level=white,
        camera_whitebalance=[4.0, 2.0, 3.0, 2.0],
        rgb_xyz_matrix=xyz,
        sizes=SimpleNamespace(flip=6),
    )
    result = read_raw(use_fake(monkeypatch, tmp_path, fake))
    assert result.pattern == "BGGR" and result.size == (4, 6) and result.flip == 6
    assert result.mosaic.shape == (1, 1, 5, 7)
    restored = from_rggb_crop(result.mosaic, "BGGR")[0, 0].numpy()
    for dy in (0, 1):
        for dx in (0, 1):
            site = restored[dy::2, dx::2].copy()
            if (dy, dx) == (0, 0):
                assert site[1, 1] == pytest.approx((10 - 58) / (white - 58))  # the pixel at (2, 2), blue
                site[1, 1] = fractions[0, 0]
            if (dy, dx) == (1, 1):
                assert site[1, 1] == 1  # the pixel at (3, 3)
                site[1, 1] = fractions[1, 1]
            np.testing.assert_allclose(site, fractions[dy, dx], atol=1e-3)
    # RGGB sites R, G1, G2, B; G1 shares a row with R, which in this BGGR cell is colour 3.
    assert result.black_level == (blacks[0], blacks[3], blacks[1], blacks[2])
    assert result.white_level == white
    assert result.wb_gains == (2.0, 1.0, 1.5)
    np.testing.assert_array_equal(result.xyz_to_camera, xyz[:3])
    assert result.camera_to_srgb is None


def test_read_raw_white_balance_falls_back_to_daylight(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = fake_bayer(camera_whitebalance=[0.0, 0.0, 0.0, 0.0], daylight_whitebalance=[3.0, 1.5, 2.25, 0.0])
    assert read_raw(use_fake(monkeypatch, tmp_path, fake)).wb_gains == (2.0, 1.0, 1.5)


# ----------------------------------------------------------------------------------- Bayer images


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint16)])
def test_read_bayer_image_single_channel(tmp_path: Path, suffix: str, dtype: type) -> None:
    full = np.iinfo(dtype).max
    codes = np.random.default_rng(5).integers(0, full + 1, size=(6, 9)).astype(dtype)
    path = tmp_path / f"mosaic{suffix}"
    Image.fromarray(codes).save(path)
    result = read_bayer_image(path, "GBRG")
    assert result.shape == (1, 1, 7, 9) and result.dtype == torch.float32
    expected = codes.astype(np.float64) / full
    np.testing.assert_allclose(result[0, 0, 1:].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(result[0, 0, 0].numpy(), expected[1], atol=1e-6)  # mirrored row 1 on top


def test_read_bayer_image_black_and_white_levels(tmp_path: Path) -> None:
    codes = np.array([[64, 100], [1023, 2000], [10, 543]], dtype=np.uint16)
    path = tmp_path / "tenbit.png"
    Image.fromarray(codes).save(path)
    result = read_bayer_image(path, "RGGB", black_level=64, white_level=1023)
    expected = np.clip((codes - 64.0) / (1023 - 64), 0, 1)
    np.testing.assert_allclose(result[0, 0].numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="white level"):
        read_bayer_image(path, "RGGB", black_level=100, white_level=50)


def test_read_bayer_image_rejects_colour_images(tmp_path: Path) -> None:
    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[..., 0] = 200
    path = tmp_path / "colour.png"
    Image.fromarray(colour).save(path)
    with pytest.raises(ImageReadError, match="not a single-channel Bayer mosaic") as info:
        read_bayer_image(path, "RGGB")
    assert "\n" not in str(info.value)
    grey_as_rgb = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10, 3, axis=2)
    Image.fromarray(grey_as_rgb).save(path)
    np.testing.assert_allclose(read_bayer_image(path, "RGGB")[0, 0].numpy(), grey_as_rgb[..., 0] / 255, atol=1e-6)


def test_read_bayer_image_halide_grbg_puts_the_greens_together() -> None:
    result = read_bayer_image(HALIDE, "GRBG", white_level=1023)  # 10-bit samples in a 16-bit PNG
    assert result.shape == (1, 1, 344, 257)
    assert float(result.min()) >= 0 and float(result.max()) <= 1
    r, g1, g2, b = pack(result).mean(dim=(0, 2, 3)).tolist()
    # On a real photo the two green sites agree far better than either does with red or blue.
    assert abs(g1 - g2) < 0.1 * min(abs(g1 - r), abs(g1 - b))
