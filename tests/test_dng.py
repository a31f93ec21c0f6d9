"""Tests for the DNG writer (denoise_cli/dng.py): rawpy/LibRaw and denoise_cli.raw.read_raw read back what it wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy
import torch

from denoise_cli.dng import LIBRAW_SRGB_TO_XYZ, bayer_from_rgb, write_dng
from denoise_cli.metrics import psnr
from denoise_cli.raw import CFA_PATTERNS, demosaic_malvar, from_rggb_crop, read_raw, to_rggb

from .conftest import smooth_scene

BLACKS = (500, 510, 520, 530)  # one per site of the 2x2 cell, reading order: distinct, to catch mix-ups
WHITE = 16000
NEUTRAL = (0.5, 1.0, 0.625)  # camera response to white: WB gains 2.0, 1.0, 1.6
SRGB_TO_XYZ = np.array(LIBRAW_SRGB_TO_XYZ)
# For each pattern, the site of its own cell (reading order) that becomes R, G1, G2, B after the shift to RGGB.
RGGB_SITES = {"RGGB": (0, 1, 2, 3), "BGGR": (3, 2, 1, 0), "GRBG": (1, 0, 3, 2), "GBRG": (2, 3, 0, 1)}
MATRIX = np.array([[0.7374, -0.2389, -0.0551], [-0.5435, 1.3162, 0.2519], [-0.1006, 0.1795, 0.6552]])


def make_dng(folder: Path, pattern: str, black: int | tuple[int, ...] = BLACKS) -> tuple[Path, np.ndarray]:
    data = bayer_from_rgb(smooth_scene(), pattern, black, WHITE, NEUTRAL)
    path = write_dng(folder / f"{pattern}.dng", data, pattern, black, WHITE, NEUTRAL, MATRIX)
    return path, data


def letters(raw: rawpy.RawPy) -> str:
    """The pattern as LibRaw reports it: colour indices into color_desc (b'RGBG', second green is 3)."""
    desc = raw.color_desc.decode()
    return "".join(desc[i] for i in raw.raw_pattern.ravel())


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_rawpy_reads_the_pattern_and_the_samples(tmp_path: Path, pattern: str) -> None:
    path, data = make_dng(tmp_path, pattern)
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_type == rawpy.RawType.Flat
        assert letters(raw) == pattern
        assert raw.raw_image_visible.shape == data.shape == (48, 64)
        assert np.array_equal(raw.raw_image_visible, data)
        assert raw.sizes.flip == 0


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_rawpy_reads_per_site_black_and_white_levels(tmp_path: Path, pattern: str) -> None:
    path, _ = make_dng(tmp_path, pattern)
    with rawpy.imread(str(path)) as raw:
        # black_level_per_channel is indexed by colour (R, G, B, G2), not by site.
        per_site = [raw.black_level_per_channel[i] for i in raw.raw_pattern.ravel()]
        assert per_site == list(BLACKS)
        assert raw.white_level == WHITE
    (tmp_path / "one").mkdir()
    single, _ = make_dng(tmp_path / "one", pattern, 256)
    with rawpy.imread(str(single)) as raw:
        assert list(raw.black_level_per_channel) == [256] * 4


def test_rawpy_reads_the_as_shot_white_balance_and_colour_matrix(tmp_path: Path) -> None:
    path, _ = make_dng(tmp_path, "RGGB")
    with rawpy.imread(str(path)) as raw:
        # LibRaw turns AsShotNeutral into multipliers 1 / neutral, normalised to green; the fourth (G2) stays 0.
        assert raw.camera_whitebalance == pytest.approx([2.0, 1.0, 1.6, 0.0], abs=1e-6)
    facts = read_raw(path)
    assert facts.wb_gains == pytest.approx((2.0, 1.0, 1.6), abs=1e-6)
    # ColorMatrix1 arrives as LibRaw's camera -> sRGB matrix: the inverse of the row-normalised sRGB -> camera.
    srgb_to_cam = MATRIX @ SRGB_TO_XYZ
    srgb_to_cam /= srgb_to_cam.sum(axis=1, keepdims=True)
    assert facts.camera_to_srgb is not None
    np.testing.assert_allclose(facts.camera_to_srgb, np.linalg.inv(srgb_to_cam), atol=1e-4)


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_read_raw_normalises_per_site_and_shifts_to_rggb(tmp_path: Path, pattern: str) -> None:
    path, data = make_dng(tmp_path, pattern)
    facts = read_raw(path)
    assert facts.pattern == pattern and facts.size == (48, 64) and facts.white_level == WHITE
    blacks = np.empty(data.shape)
    for index, black in enumerate(BLACKS):
        blacks[index // 2 :: 2, index % 2 :: 2] = black
    expected = torch.from_numpy(((data - blacks) / (WHITE - blacks)).astype(np.float32))[None, None]
    assert torch.allclose(facts.mosaic, to_rggb(expected, pattern), atol=1e-6)
    assert facts.black_level == tuple(float(BLACKS[i]) for i in RGGB_SITES[pattern])


@pytest.mark.parametrize("pattern", CFA_PATTERNS)
def test_developing_the_dng_returns_the_scene(tmp_path: Path, pattern: str) -> None:
    """Demosaic, crop back and white-balance with the file's gains: the known linear scene comes back."""
    path, _ = make_dng(tmp_path, pattern)
    facts = read_raw(path)
    rgb = from_rggb_crop(demosaic_malvar(facts.mosaic), pattern, facts.size)
    balanced = rgb * torch.tensor(facts.wb_gains).view(1, 3, 1, 1)
    scene = torch.from_numpy(smooth_scene()).float().permute(2, 0, 1)[None]
    assert psnr(balanced, scene, shave=4) > 40


def test_write_dng_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint16"):
        write_dng(tmp_path / "a.dng", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="Bayer"):
        write_dng(tmp_path / "a.dng", np.zeros((4, 4), dtype=np.uint16), pattern="RGBG")
    with pytest.raises(ValueError, match="four"):
        write_dng(tmp_path / "a.dng", np.zeros((4, 4), dtype=np.uint16), black=(1, 2))
