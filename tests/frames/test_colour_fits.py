"""The colours of FITS frames: Bayer cards (BAYERPAT, XBAYROFF, YBAYROFF, ROWORDER) and cubes."""

import re

import numpy as np
import pytest
from astropy.io import fits
from mosaics import expected_colors

from astro_offsets import Calibration
from astro_offsets.datasets import write_dng, write_fits_cfa, write_fits_rgb
from astro_offsets.frames import bayer_colors, frame_shape, read_frame

R, G, B, G2 = 0, 1, 2, 3  # rawpy's colour indices; G2 is the green in the blue rows


def write(path, shape=(4, 6), **cards):
    fits.PrimaryHDU(np.zeros(shape, np.float32), fits.Header(cards)).writeto(path)
    return path


@pytest.mark.parametrize(
    ("cards", "ny", "top_left"),
    [
        # The cell as named, from the first row of the file (TOP-DOWN).
        ({"BAYERPAT": "RGGB"}, 4, [[R, G], [G2, B]]),
        ({"BAYERPAT": "RGGB", "ROWORDER": "TOP-DOWN"}, 4, [[R, G], [G2, B]]),
        ({"BAYERPAT": "bggr"}, 4, [[B, G2], [G, R]]),
        ({"BAYERPAT": "GRBG"}, 4, [[G, R], [B, G2]]),
        ({"BAYERPAT": "GBRG"}, 4, [[G2, B], [R, G]]),
        # XBAYROFF moves the cell's origin one column, YBAYROFF one row.
        ({"BAYERPAT": "RGGB", "XBAYROFF": 1}, 4, [[G, R], [B, G2]]),
        ({"BAYERPAT": "RGGB", "YBAYROFF": 1}, 4, [[G2, B], [R, G]]),
        ({"BAYERPAT": "RGGB", "XBAYROFF": 1, "YBAYROFF": 1}, 4, [[B, G2], [G, R]]),
        ({"BAYERPAT": "RGGB", "XBAYROFF": 2, "YBAYROFF": 0}, 4, [[R, G], [G2, B]]),
        # BOTTOM-UP: the cell names the image's top rows, the file's last:
        # with an even number of rows the file starts on the cell's second row.
        ({"BAYERPAT": "RGGB", "ROWORDER": "BOTTOM-UP"}, 4, [[G2, B], [R, G]]),
        ({"BAYERPAT": "RGGB", "ROWORDER": "BOTTOM-UP"}, 5, [[R, G], [G2, B]]),
        ({"BAYERPAT": "RGGB", "ROWORDER": "BOTTOM-UP", "YBAYROFF": 1}, 4, [[R, G], [G2, B]]),
        ({"BAYERPAT": "RGGB", "ROWORDER": "BOTTOM-UP", "XBAYROFF": 1}, 5, [[G, R], [B, G2]]),
    ],
)
def test_bayer_cards_give_each_pixel_its_colour(tmp_path, cards, ny, top_left):
    path = write(tmp_path / "frame.fits", (ny, 6), **cards)
    frame = read_frame(path)
    assert frame.data.shape == frame_shape(path) == (ny, 6)
    np.testing.assert_array_equal(frame.data, np.zeros((ny, 6), np.float32))  # never flipped
    assert frame.colors.dtype == np.uint8
    assert frame.colors[:2, :2].tolist() == top_left
    # A Bayer mosaic: the 2 x 2 cell repeats.
    np.testing.assert_array_equal(frame.colors[2:], frame.colors[:-2])
    np.testing.assert_array_equal(frame.colors[:, 2:], frame.colors[:, :-2])


@pytest.mark.parametrize(
    "cards", [{}, {"BAYERPAT": "NONE"}, {"XBAYROFF": 1, "ROWORDER": "TOP-DOWN"}]
)
def test_fits_without_a_bayer_pattern_is_mono(tmp_path, cards):
    assert read_frame(write(tmp_path / "frame.fits", **cards)).colors is None


@pytest.mark.parametrize(
    ("cards", "message"),
    [
        ({"BAYERPAT": "RGBG"}, "BAYERPAT = 'RGBG' is not a Bayer pattern that is understood"),
        ({"BAYERPAT": "GGRGGBGGBGGRBRGRBGGGBGGRGGRGGBRBGBRG"}, "BAYERPAT = 'GGRGGBGGB"),
        ({"BAYERPAT": 12}, "BAYERPAT = 12 is not a Bayer pattern"),
        ({"BAYERPAT": "RGGB", "XBAYROFF": -1}, "XBAYROFF = -1 is not an offset"),
        ({"BAYERPAT": "RGGB", "YBAYROFF": 0.5}, "YBAYROFF = 0.5 is not an offset"),
        ({"BAYERPAT": "RGGB", "YBAYROFF": "1"}, "YBAYROFF = '1' is not an offset"),
        ({"BAYERPAT": "RGGB", "ROWORDER": "LEFT-RIGHT"}, "ROWORDER = 'LEFT-RIGHT' is neither"),
    ],
)
def test_bad_bayer_cards(tmp_path, cards, message):
    path = write(tmp_path / "frame.fits", **cards)
    # The message itself, not wrapped in "not a readable FITS file".
    with pytest.raises(ValueError, match="^" + re.escape(f"{path}: {message}")):
        read_frame(path)


@pytest.mark.parametrize("depth", [2, 4])
@pytest.mark.parametrize("reader", [frame_shape, read_frame])
def test_cube_of_another_depth(tmp_path, depth, reader):
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.zeros((depth, 4, 6), np.float32)).writeto(path)
    message = f"{path}: a FITS cube of {depth} planes (NAXIS3 = {depth}); a colour frame has 3"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        reader(path)


def test_cube_of_one_plane_is_mono(tmp_path):
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.ones((1, 4, 6), np.float32)).writeto(path)
    frame = read_frame(path)
    assert frame.data.shape == frame_shape(path) == (4, 6)
    assert frame.colors is None


def test_rgb_cube_reads_back(tmp_path):
    planes = np.random.default_rng(0).normal(100, 5, (3, 30, 40)).astype(np.float32)
    write_fits_rgb(tmp_path / "rgb.fits", planes, exptime=20.0)
    frame = read_frame(tmp_path / "rgb.fits")
    np.testing.assert_array_equal(frame.data, planes)
    assert frame.colors is None
    assert frame.exptime == 20.0
    np.testing.assert_allclose(frame.luminance, planes.mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match=re.escape("planes must be a (3, ny, nx) array")):
        write_fits_rgb(tmp_path / "bad.fits", planes[:2])


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize(("xoffset", "yoffset"), [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("row_order", ["TOP-DOWN", "BOTTOM-UP"])
@pytest.mark.parametrize("ny", [24, 25])
def test_every_variant_holds_the_raw_files_colours(tmp_path, cfa, xoffset, yoffset, row_order, ny):
    # One sensor image, written as DNG and as FITS with every kind of Bayer
    # cards: each pixel has the colour that rawpy gives it in the DNG file.
    shape = (ny, 30)
    mosaic = np.arange(ny * 30, dtype=np.uint16).reshape(shape) + 512
    write_dng(tmp_path / "raw.dng", mosaic, cfa=cfa)
    raw = read_frame(tmp_path / "raw.dng")
    write_fits_cfa(
        tmp_path / "cfa.fits",
        mosaic - 512,
        cfa=cfa,
        xoffset=xoffset,
        yoffset=yoffset,
        row_order=row_order,
    )
    frame = read_frame(tmp_path / "cfa.fits")
    flip = slice(None, None, -1 if row_order == "BOTTOM-UP" else 1)
    np.testing.assert_array_equal(frame.data, raw.data[flip])
    np.testing.assert_array_equal(frame.colors, raw.colors[flip])
    np.testing.assert_array_equal(bayer_colors(shape, cfa), expected_colors(cfa, shape))


def test_write_fits_cfa_bad_arguments(tmp_path):
    mosaic = np.zeros((4, 6), np.uint16)
    for kwargs, message in [
        ({"cfa": "RGBG"}, "cfa must be one of RGGB, BGGR, GRBG, GBRG, got 'RGBG'"),
        ({"xoffset": 2}, "xoffset must be 0 or 1, got 2"),
        ({"row_order": "UP"}, "row_order must be 'TOP-DOWN' or 'BOTTOM-UP', got 'UP'"),
        ({"exptime": -1.0}, "exptime"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            write_fits_cfa(tmp_path / "frame.fits", mosaic, **kwargs)
    with pytest.raises(ValueError, match="pattern must be one of"):
        bayer_colors((2, 2), "RGBG")


def test_colour_fits_calibrated_per_colour(tmp_path):
    # Flats of cubes are combined and normalised plane by plane, flats of
    # Bayer FITS colour by colour (as raw flats): a light of the flats'
    # colour comes out flat and keeps its colour balance.
    rng = np.random.default_rng(1)
    shape = (40, 60)
    vignetting = 1.0 - 0.3 * np.linspace(0.0, 1.0, shape[1])
    balance = np.array([0.5, 1.0, 0.8])
    for k in range(3):
        cube = 1000.0 * balance[:, None, None] * vignetting + rng.normal(0, 1, (3, *shape))
        write_fits_rgb(tmp_path / f"flat_{k}.fits", cube.astype(np.float32))
        mosaic = np.choose(expected_colors("RGGB", shape), [*cube, cube[1]])
        write_fits_cfa(tmp_path / f"cfa_flat_{k}.fits", mosaic.astype(np.float32))
    light = 100.0 * balance[:, None, None] * vignetting * np.ones(shape)
    write_fits_rgb(tmp_path / "light.fits", light.astype(np.float32))
    write_fits_cfa(
        tmp_path / "cfa_light.fits",
        np.choose(expected_colors("RGGB", shape), [*light, light[1]]).astype(np.float32),
    )
    flats = [tmp_path / f"flat_{k}.fits" for k in range(3)]
    calibrated = Calibration.from_files(flat=flats).read(tmp_path / "light.fits")
    assert calibrated.data.shape == (3, *shape)
    levels = np.median(calibrated.data, axis=(1, 2))
    np.testing.assert_allclose(calibrated.data, levels[:, None, None] * np.ones(shape), rtol=0.01)
    np.testing.assert_allclose(levels / levels[1], balance, rtol=0.01)
    flats = [tmp_path / f"cfa_flat_{k}.fits" for k in range(3)]
    calibrated = Calibration.from_files(flat=flats).read(tmp_path / "cfa_light.fits")
    for colour, expected in zip((R, G, B), balance, strict=True):
        pixels = calibrated.data[calibrated.colors == colour]
        np.testing.assert_allclose(
            pixels / np.median(calibrated.data[calibrated.colors == G]), expected, rtol=0.02
        )
