"""The DNG writer: files that rawpy (LibRaw) reads back exactly, and every bad input."""

import os

import numpy as np
import pytest
import rawpy
from mosaics import COLORS, expected_colors, mosaic

from astro_offsets.datasets import write_dng
from astro_offsets.frames import frame_shape, read_frame


@pytest.mark.parametrize(
    ("cfa", "shape"),
    [("RGGB", (64, 96)), ("BGGR", (63, 97)), ("GRBG", (64, 95)), ("GBRG", (22, 23))],
)
def test_dng_round_trips_through_rawpy(tmp_path, cfa, shape):
    path = tmp_path / "frame.dng"
    values = mosaic(shape)
    write_dng(path, values, cfa=cfa)
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image_visible.dtype == np.uint16
        np.testing.assert_array_equal(raw.raw_image_visible, values)
        np.testing.assert_array_equal(raw.raw_colors_visible, expected_colors(cfa, shape))
        assert raw.black_level_per_channel == [512] * 4
        assert raw.white_level == 2**14 - 1


def test_dng_cfa_is_case_insensitive(tmp_path):
    write_dng(tmp_path / "frame.dng", mosaic(), cfa="bggr")
    assert read_frame(tmp_path / "frame.dng").colors[:2, :2].tolist() == COLORS["BGGR"]


@pytest.mark.parametrize(
    ("bits", "black_level", "white_level", "expected_white"),
    [(16, 0, None, 65535), (12, 256, 4000, 4000), (8, 16, None, 255)],
)
def test_dng_levels(tmp_path, bits, black_level, white_level, expected_white):
    path = tmp_path / "frame.dng"
    values = mosaic(bits=bits)
    write_dng(path, values, bits=bits, black_level=black_level, white_level=white_level)
    with rawpy.imread(str(path)) as raw:
        np.testing.assert_array_equal(raw.raw_image_visible, values)
        assert raw.black_level_per_channel == [black_level] * 4
        assert raw.white_level == expected_white


def test_dng_exposure_and_iso(tmp_path):
    path = tmp_path / "frame.dng"
    write_dng(path, mosaic(), exptime=1 / 8000, iso=1600)
    with rawpy.imread(str(path)) as raw:
        assert raw.other.shutter_speed == pytest.approx(1 / 8000)
        assert raw.other.iso_speed == 1600
    write_dng(path, mosaic(), exptime=300)
    with rawpy.imread(str(path)) as raw:
        assert raw.other.shutter_speed == pytest.approx(300)
        assert raw.other.iso_speed == 0


@pytest.mark.parametrize("name", ["frame", "frame.DNG", "frame.tmp.dng"])
def test_dng_lands_exactly_at_path(tmp_path, name):
    write_dng(str(tmp_path / name), mosaic())
    assert os.listdir(tmp_path) == [name]
    assert frame_shape(tmp_path / name) == (64, 96)


def test_dng_replaces_existing_file(tmp_path):
    path = tmp_path / "frame.dng"
    write_dng(path, mosaic(seed=1))
    write_dng(path, mosaic(seed=2))
    # read_frame subtracts the black level (512 by default).
    np.testing.assert_array_equal(read_frame(path).data, mosaic(seed=2) - 512.0)
    assert os.listdir(tmp_path) == ["frame.dng"]


ZEROS = np.zeros((64, 96), np.uint16)


@pytest.mark.parametrize(
    ("values", "options", "match"),
    [
        (
            np.zeros((2, 64, 96), np.uint16),
            {},
            r"2-D \(ny, nx\) array, got 3-D with shape \(2, 64, 96\)",
        ),
        (np.zeros(64, np.uint16), {}, r"got 1-D with shape \(64,\)"),
        (ZEROS.astype(np.float32), {}, "integer dtype, got float32"),
        (ZEROS.astype(bool), {}, "integer dtype, got bool"),
        (np.full((64, 96), 2**14), {}, r"within 0\.\.16383 for bits=14, found 16384\.\.16384"),
        (np.arange(-1, 64 * 96 - 1).reshape(64, 96), {"bits": 16}, r"found -1\.\.6142"),
        (np.zeros((21, 96), np.uint16), {}, r"at least 22 pixels .* got shape \(21, 96\)"),
        (ZEROS, {"cfa": "RGBG"}, "cfa must be one of RGGB, BGGR, GRBG, GBRG, got 'RGBG'"),
        (ZEROS, {"bits": 17}, r"bits must be an integer in \[1, 16\], got 17"),
        (ZEROS, {"bits": 14.0}, r"bits must be an integer in \[1, 16\], got 14\.0"),
        (
            ZEROS,
            {"black_level": 16383},
            r"black_level must be an integer in \[0, 16382\], got 16383",
        ),
        (
            ZEROS,
            {"white_level": 70000},
            r"white_level must be an integer in \[1, 65535\], got 70000",
        ),
        (ZEROS, {"exptime": 0}, r"exptime must be a number in \(0, 4\.29497e\+09\), got 0"),
        (
            ZEROS,
            {"exptime": float("nan")},
            r"exptime must be a number in \(0, 4\.29497e\+09\), got nan",
        ),
        (ZEROS, {"exptime": 1e-12}, "too short to store as a TIFF rational: 1e-12"),
        (ZEROS, {"exptime": "30"}, r"exptime must be a number in \(0, 4\.29497e\+09\), got '30'"),
        (ZEROS, {"iso": 0}, r"iso must be an integer in \[1, 65535\], got 0"),
        (ZEROS, {"make": "\u00c4stro"}, "make must be an ASCII string, got '\u00c4stro'"),
    ],
)
def test_dng_rejects_bad_input_and_writes_nothing(tmp_path, values, options, match):
    with pytest.raises(ValueError, match=match):
        write_dng(tmp_path / "frame.dng", values, **options)
    assert os.listdir(tmp_path) == []


def test_dng_needs_existing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_dng(tmp_path / "missing" / "frame.dng", mosaic())
