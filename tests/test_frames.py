"""Frame sizes and pixels from real DNG and FITS files, and the DNG writer behind them."""

import bz2
import gzip
import os
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from astro_offsets._dng import write_dng
from astro_offsets._frames import frame_shape, read_frame

rawpy = pytest.importorskip("rawpy")


# rawpy's raw_colors: 0 red, 1 green, 2 blue, 3 the green in the blue rows.
COLORS = {
    "RGGB": [[0, 1], [3, 2]],
    "BGGR": [[2, 3], [1, 0]],
    "GRBG": [[1, 0], [2, 3]],
    "GBRG": [[3, 2], [0, 1]],
}


def mosaic(shape=(64, 96), bits=14, seed=0):
    """Random sensor values covering the whole range of ``bits``, both ends included."""
    values = np.random.default_rng(seed).integers(0, 2**bits, shape, dtype=np.uint16)
    values.flat[:2] = [0, 2**bits - 1]
    return values


def expected_colors(cfa, shape):
    ny, nx = shape
    return np.tile(np.array(COLORS[cfa], dtype=np.uint8), ((ny + 1) // 2, (nx + 1) // 2))[:ny, :nx]


def write_fits(path, hdus):
    fits.HDUList(hdus).writeto(path)
    return path


# --- write_dng --------------------------------------------------------------


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
    write_dng(path, mosaic(), exposure_time=1 / 8000, iso=1600)
    with rawpy.imread(str(path)) as raw:
        assert raw.other.shutter_speed == pytest.approx(1 / 8000)
        assert raw.other.iso_speed == 1600
    write_dng(path, mosaic(), exposure_time=300)
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
        (ZEROS, {"bits": 17}, r"bits must be within 1\.\.16, got 17"),
        (ZEROS, {"bits": 14.0}, r"bits must be an integer, got 14\.0"),
        (ZEROS, {"black_level": 16383}, r"black_level must be within 0\.\.16382, got 16383"),
        (ZEROS, {"white_level": 70000}, r"white_level must be within 1\.\.65535, got 70000"),
        (ZEROS, {"exposure_time": 0}, "exposure_time must be positive and finite seconds, got 0"),
        (ZEROS, {"exposure_time": float("nan")}, "positive and finite seconds, got nan"),
        (ZEROS, {"exposure_time": 1e-12}, "too short to store as a TIFF rational: 1e-12"),
        (ZEROS, {"exposure_time": "30"}, "number of seconds, got '30'"),
        (ZEROS, {"iso": 0}, r"iso must be within 1\.\.65535, got 0"),
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


# --- frame_shape and read_frame on raw files ----------------------------------


@pytest.mark.parametrize(("cfa", "shape"), [("RGGB", (64, 96)), ("GRBG", (63, 97))])
def test_raw_frame(tmp_path, cfa, shape):
    path = tmp_path / "frame.dng"
    values = mosaic(shape)
    write_dng(path, values, cfa=cfa)
    assert frame_shape(path) == shape
    assert frame_shape(str(path)) == shape
    frame = read_frame(path)
    assert frame.data.dtype == np.float32
    assert frame.colors.dtype == np.uint8
    np.testing.assert_array_equal(frame.data, values - 512.0)
    np.testing.assert_array_equal(frame.colors, expected_colors(cfa, shape))
    assert frame.exptime is None


def test_raw_frame_black_level_and_exposure(tmp_path):
    path = tmp_path / "frame.dng"
    values = np.full((30, 40), 1000, dtype=np.uint16)
    write_dng(path, values, black_level=200, exposure_time=30.0)
    frame = read_frame(path)
    assert np.all(frame.data == 800.0)
    assert frame.exptime == 30.0


@pytest.mark.parametrize(
    ("card", "value", "expected"),
    [
        ("EXPTIME", 120.0, 120.0),
        ("EXPOSURE", 60, 60.0),
        ("EXPTIME", 0.0, None),
        ("OBJECT", "M31", None),
    ],
)
def test_fits_frame_exposure(tmp_path, card, value, expected):
    path = tmp_path / "frame.fits"
    hdu = fits.PrimaryHDU(np.zeros((4, 5), np.float32))
    hdu.header[card] = value
    hdu.writeto(path)
    assert read_frame(path).exptime == expected


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
@pytest.mark.parametrize("name", ["x.ARW", "x.fits"])
def test_missing_file(tmp_path, reader, name):
    with pytest.raises(FileNotFoundError, match=f"{name}: no such file"):
        reader(tmp_path / name)


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
def test_directory(tmp_path, reader):
    with pytest.raises(ValueError, match="is a directory, not a frame file"):
        reader(tmp_path)


# LibRaw calls a short file an I/O error and a longer one an unsupported format.
@pytest.mark.parametrize("reader", [frame_shape, read_frame])
@pytest.mark.parametrize(
    ("lines", "error"), [(1, "LibRawIOError"), (1000, "LibRawFileUnsupportedError")]
)
def test_text_file_is_not_raw(tmp_path, reader, lines, error):
    path = tmp_path / "x.ARW"
    path.write_text("not a raw file\n" * lines)
    with pytest.raises(ValueError, match=rf"x\.ARW: not a readable raw file \(LibRaw: {error}: "):
        reader(path)


# Cut in the header LibRaw fails on opening; cut in the pixels, on decoding.
@pytest.mark.parametrize("reader", [frame_shape, read_frame])
@pytest.mark.parametrize("keep", [0.01, 0.5, 0.99])
def test_truncated_dng(tmp_path, reader, keep):
    path = tmp_path / "frame.dng"
    write_dng(path, mosaic())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"frame\.dng: not a readable raw file \(LibRaw: "):
        reader(path)


# --- frame_shape and read_frame on FITS files ---------------------------------


def test_fits_primary_image(tmp_path):
    data = np.random.default_rng(0).normal(size=(64, 96)).astype(np.float32)
    path = write_fits(tmp_path / "frame.fits", [fits.PrimaryHDU(data)])
    assert frame_shape(path) == (64, 96)
    frame = read_frame(path)
    assert frame.colors is None
    assert frame.data.dtype == np.float32
    np.testing.assert_array_equal(frame.data, data)


def test_fits_scaled_integers(tmp_path):
    data = mosaic(bits=16)
    path = tmp_path / "frame.fit"
    fits.PrimaryHDU(data).writeto(path)  # stored as int16 with BZERO = 32768
    assert fits.getheader(path)["BZERO"] == 32768
    np.testing.assert_array_equal(read_frame(path).data, data.astype(np.float32))


def test_fits_image_in_extension(tmp_path):
    data = np.arange(64 * 96, dtype=np.int32).reshape(64, 96)
    path = write_fits(tmp_path / "frame.FTS", [fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")])
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_skips_hdus_without_a_2d_image(tmp_path):
    table = fits.BinTableHDU(Table({"x": [1.0, 2.0]}), name="STARS")
    data = np.ones((64, 96), np.float32)
    hdus = [fits.PrimaryHDU(np.ones(5)), table, fits.ImageHDU(data, name="SCI")]
    path = write_fits(tmp_path / "frame.fits", hdus)
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_colour_cube(tmp_path):
    cube = np.stack([np.full((64, 96), value, np.uint16) for value in (10, 20, 60)])
    path = write_fits(tmp_path / "frame.fits", [fits.PrimaryHDU(cube)])
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, np.full((64, 96), 30, np.float32))


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
def test_fits_without_image(tmp_path, reader):
    table = fits.BinTableHDU(Table({"x": [1.0, 2.0]}), name="STARS")
    path = write_fits(tmp_path / "stars.fits", [fits.PrimaryHDU(), table])
    found = "HDU 0 PrimaryHDU 'PRIMARY' shape (), HDU 1 BinTableHDU 'STARS'"
    with pytest.raises(ValueError, match=re.escape(f"no 2-D image in any HDU (found: {found})")):
        reader(path)


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".fits.gz", gzip.compress), (".FIT.BZ2", bz2.compress)]
)
def test_fits_compressed_file(tmp_path, suffix, compress):
    data = np.random.default_rng(0).normal(size=(64, 96)).astype(np.float32)
    plain = write_fits(tmp_path / "plain.fits", [fits.PrimaryHDU(data)])
    path = tmp_path / f"frame{suffix}"
    path.write_bytes(compress(plain.read_bytes()))
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_tile_compressed(tmp_path):
    data = np.arange(64 * 96, dtype=np.int16).reshape(64, 96)
    path = write_fits(tmp_path / "frame.fz", [fits.PrimaryHDU(), fits.CompImageHDU(data)])
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_shape_reads_only_the_header(tmp_path):
    path = write_fits(tmp_path / "frame.fits", [fits.PrimaryHDU(np.ones((64, 96)))])
    path.write_bytes(path.read_bytes()[: 2 * 2880])
    with pytest.warns(AstropyUserWarning, match="truncated"):
        assert frame_shape(path) == (64, 96)
    with (
        pytest.warns(AstropyUserWarning, match="truncated"),
        pytest.raises(ValueError, match=r"frame\.fits: not a readable FITS file \("),
    ):
        read_frame(path)


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
def test_corrupt_fits(tmp_path, reader):
    path = tmp_path / "frame.fits"
    path.write_text("not a FITS file\n" * 200)
    with pytest.raises(ValueError, match=r"frame\.fits: not a readable FITS file \(.*SIMPLE"):
        reader(path)
