"""The stack's WCS, observation cards and row order, from its reference frame's file."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning
from photutils.centroids import centroid_2dg, centroid_sources
from PIL import Image

from astro_offsets import OffsetModel, Stack, stack_frames
from astro_offsets._cli import main
from astro_offsets.datasets import render_stars, write_dng
from astro_offsets.stack._header import flipped_wcs, grid_wcs

SHAPE = (96, 128)
# A wide field (20 arcsec pixels), turned, so that RA and Dec mix.
TAN = {
    "CTYPE1": "RA---TAN",
    "CTYPE2": "DEC--TAN",
    "CRVAL1": 83.82,
    "CRVAL2": -5.39,
    "CRPIX1": 60.3,
    "CRPIX2": 41.7,
    "CD1_1": -5.5e-3,
    "CD1_2": 0.6e-3,
    "CD2_1": 0.6e-3,
    "CD2_2": 5.5e-3,
    "RADESYS": "FK5",
    "EQUINOX": 2000.0,
}
# A lens's distortion as SIP: several pixels at the corners, so that a
# polynomial dropped or scaled wrongly moves the stars there by more.
SIP = {
    **TAN,
    "CTYPE1": "RA---TAN-SIP",
    "CTYPE2": "DEC--TAN-SIP",
    "A_ORDER": 3,
    "B_ORDER": 3,
    "A_2_0": 4e-4,
    "A_1_1": -2e-4,
    "A_0_2": 1e-4,
    "A_3_0": 2e-6,
    "B_0_2": -3e-4,
    "B_1_1": 1.5e-4,
    "B_2_0": 2e-4,
    "B_0_3": -2e-6,
}
OBSERVATION = {
    "OBJECT": "M 42",
    "DATE-OBS": "2026-01-15T21:03:04.5",
    "TELESCOP": "Redcat 51",
    "INSTRUME": "ZWO ASI2600MM Pro",
    "FILTER": "Ha",
    "OBSERVER": "A. Stargazer",
    "EXPTIME": 120.0,
}
# Frame k's stars: the reference's shifted and turned (a tracking drift).
MOTIONS = ((0.0, 0.0, 0.0), (1.7, -1.2, 0.3), (-2.3, 0.8, -0.2))


def _moved(x, y, motion):
    dx, dy, degrees = motion
    cy, cx = (SHAPE[0] - 1) / 2, (SHAPE[1] - 1) / 2
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return cx + c * (x - cx) - s * (y - cy) + dx, cy + s * (x - cx) + c * (y - cy) + dy


def _stars():
    """Stars over the whole frame, corners included (where the distortion is largest)."""
    rng = np.random.default_rng(22)
    y, x = np.meshgrid(
        np.linspace(5, SHAPE[0] - 6, 6), np.linspace(5, SHAPE[1] - 6, 8), indexing="ij"
    )
    x = np.clip(x.ravel() + rng.uniform(-1.5, 1.5, x.size), 4.5, SHAPE[1] - 5.5)
    y = np.clip(y.ravel() + rng.uniform(-1.5, 1.5, y.size), 4.5, SHAPE[0] - 5.5)
    flux = rng.uniform(4e3, 2e4, x.size)
    return x, y, flux


def _sequence(directory, wcs_cards, extra=None):
    """Write a sequence of 3 FITS frames and the maps of the two that move; return the frames."""
    x, y, flux = _stars()
    frames = []
    for k, motion in enumerate(MOTIONS):
        fx, fy = _moved(x, y, motion)
        image = render_stars(SHAPE, fx, fy, flux) + 100.0
        header = fits.Header({**OBSERVATION, **(extra or {})})
        if k == 0:
            header.update(wcs_cards)
        path = directory / f"light_{k}.fits"
        fits.PrimaryHDU(image.astype(np.float32), header).writeto(path)
        if k:
            model = OffsetModel(fx, fy, fx - x, fy - y)
            model.to_map(SHAPE).write(directory / f"light_{k}.offsets.fits")
        frames.append(str(path))
    return frames


def _isolated(x, y, radius=8.0):
    apart = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(apart, np.inf)
    return apart.min(axis=1) > radius


def _reference_wcs(path):
    """Return the WCS of a frame file as astropy reads it (which adds MJD-OBS, and says so)."""
    with pytest.warns(FITSFixedWarning, match="MJD-OBS"):
        return WCS(fits.getheader(path))


def _reference_pixels(sky_wcs, stack_wcs, px, py):
    """Return where ``sky_wcs`` puts the sky positions of ``stack_wcs``'s pixels (px, py)."""
    return sky_wcs.world_to_pixel(stack_wcs.pixel_to_world(px, py))


@pytest.mark.parametrize("cards", [TAN, SIP], ids=["TAN", "TAN-SIP"])
@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_stack_carries_the_reference_wcs(tmp_path, cards, scale):
    frames = _sequence(tmp_path, cards)
    stack, _ = stack_frames(frames, scale=scale, reject=False, kernel="square")
    out = tmp_path / "stack.fits"
    stack.write(out)
    # As one image too: the stack the primary HDU, its weights beside it.
    stack.write(tmp_path / "image.fits", layout="image")
    reference = _reference_wcs(frames[0])
    ny, nx = stack.images["SCI"].shape
    images = [(out, "SCI"), (out, "WHT"), (tmp_path / "image.fits", 0)]
    for path, hdu in [*images, (tmp_path / "image.weights.fits", "WHT")]:
        wcs = WCS(fits.getheader(path, hdu))
        assert wcs.has_celestial
        assert (wcs.sip is not None) == (cards is SIP)
        # Every pixel of the stack, corners included, is at the sky position
        # of the reference pixel under it: output p is reference (p + 0.5) / s - 0.5.
        py, px = np.mgrid[0 : ny : ny // 8, 0 : nx : nx // 8]
        px = np.concatenate([px.ravel(), [0, nx - 1, 0, nx - 1]])
        py = np.concatenate([py.ravel(), [0, 0, ny - 1, ny - 1]])
        rx, ry = _reference_pixels(reference, wcs, px, py)
        error = np.hypot(rx - ((px + 0.5) / scale - 0.5), ry - ((py + 0.5) / scale - 0.5))
        assert error.max() < 1e-3
    # The stars as drizzled: measured in the stack, at the reference's sky positions.
    wcs = WCS(fits.getheader(out, "SCI"))
    x, y, _ = _stars()
    inside = _isolated(x, y)
    image = stack.images["SCI"] - np.nanmedian(stack.images["SCI"])  # per second: no 100
    image = np.nan_to_num(image)
    box = 7 if scale == 1 else 13
    sx, sy = centroid_sources(
        image,
        scale * (x[inside] + 0.5) - 0.5,
        scale * (y[inside] + 0.5) - 0.5,
        box_size=box,
        centroid_func=centroid_2dg,
    )
    star = render_stars(SHAPE, x[inside], y[inside], _stars()[2][inside])
    truth_x, truth_y = centroid_sources(
        star, x[inside], y[inside], box_size=7, centroid_func=centroid_2dg
    )
    rx, ry = _reference_pixels(reference, wcs, sx, sy)
    error = np.hypot(rx - truth_x, ry - truth_y)
    assert inside.all()
    print(f"scale {scale}: stars within {error.max():.4f} reference px")
    assert error.max() < 0.05


def test_sip_rescaled_not_dropped():
    header = fits.Header(SIP)
    grid = grid_wcs(header, 2.0, (2 * SHAPE[0], 2 * SHAPE[1]))
    # A term of degree n is in pixels to the power 1 - n: twice as fine, times 2 ** (1 - n).
    assert grid.sip.a[2, 0] == pytest.approx(SIP["A_2_0"] / 2)
    assert grid.sip.a[3, 0] == pytest.approx(SIP["A_3_0"] / 4)
    assert grid.sip.b[0, 3] == pytest.approx(SIP["B_0_3"] / 4)
    assert grid.wcs.crpix.tolist() == pytest.approx([2 * 60.3 - 0.5, 2 * 41.7 - 0.5])
    np.testing.assert_allclose(grid.wcs.cd, np.array([[-5.5e-3, 0.6e-3], [0.6e-3, 5.5e-3]]) / 2)


def test_observation_cards_and_roworder(tmp_path):
    frames = _sequence(tmp_path, TAN, extra={"XPIXSZ": 3.76, "BZERO": 0, "BSCALE": 1})
    stack, _ = stack_frames(frames, scale=2.0, reject=False)
    out = tmp_path / "stack.fits"
    stack.write(out)
    header = fits.getheader(out)
    for key in ("OBJECT", "DATE-OBS", "TELESCOP", "INSTRUME", "FILTER", "OBSERVER"):
        assert header[key] == OBSERVATION[key], key
    image = fits.getheader(out, "SCI")
    assert image["RADESYS"] == "FK5"
    assert image["EQUINOX"] == 2000.0
    # The stack's own exposure: per second, its frames' total; the pixels, the stack's.
    assert "EXPTIME" not in header
    assert header["TEXPTIME"] == 360.0
    assert header["XPIXSZ"] == pytest.approx(1.88)
    # FITS frames without ROWORDER run bottom-up, as the stack does.
    assert header["ROWORDER"] == "BOTTOM-UP"
    assert image["ROWORDER"] == "BOTTOM-UP"


def _bright_star_sequence(directory, top_rows, roworder=None):
    """Write 2 FITS frames with a bright star in rows near ``top_rows``; return them."""
    x, y, flux = _stars()
    y = np.where(np.arange(x.size) == 0, top_rows, y)
    flux = np.where(np.arange(x.size) == 0, 1e6, flux)
    frames = []
    for k, motion in enumerate(MOTIONS[:2]):
        fx, fy = _moved(x, y, motion)
        header = fits.Header({"ROWORDER": roworder} if roworder else {})
        path = directory / f"light_{k}.fits"
        image = (render_stars(SHAPE, fx, fy, flux) + 100.0).astype(np.float32)
        fits.PrimaryHDU(image, header).writeto(path)
        if k:
            OffsetModel(fx, fy, fx - x, fy - y).to_map(SHAPE).write(
                directory / f"light_{k}.offsets.fits"
            )
        frames.append(str(path))
    return frames


@pytest.mark.parametrize(
    ("roworder", "row", "top"),
    [
        (None, SHAPE[0] - 8.0, True),  # FITS's last row: the top, as DS9 shows it
        (None, 7.0, False),
        ("TOP-DOWN", 7.0, True),  # its first row is the top, as the card says
    ],
)
def test_preview_shows_the_fits_as_displayed(tmp_path, roworder, row, top):
    frames = _bright_star_sequence(tmp_path, row, roworder)
    stack, _ = stack_frames(frames, reject=False)
    assert stack.meta["roworder"] == (roworder or "BOTTOM-UP")
    png = tmp_path / "stack.png"
    stack.write_preview(png)
    picture = np.asarray(Image.open(png))
    brightest = np.unravel_index(np.argmax(picture), picture.shape)[0]
    assert (brightest < SHAPE[0] / 4) if top else (brightest > 3 * SHAPE[0] / 4)


def test_raw_stack_is_written_bottom_up_without_wcs(tmp_path):
    rng = np.random.default_rng(3)
    values = (rng.poisson(600.0, (64, 80)) + 512).astype(np.uint16)
    values[6:8, 40:42] = 15000  # a star near the photo's top: its first rows
    frames = []
    for k in range(2):
        path = tmp_path / f"raw_{k}.dng"
        write_dng(path, values)
        frames.append(str(path))
    OffsetModel([10.0, 60.0], [10.0, 50.0], [0.0, 0.0], [0.0, 0.0]).to_map((64, 80)).write(
        tmp_path / "raw_1.offsets.fits"
    )
    stack, _ = stack_frames(frames, reject=False)
    assert stack.meta["roworder"] == "TOP-DOWN"
    assert stack.meta["wcs"] is None
    assert stack.meta["observation"] == []
    out = tmp_path / "stack.fits"
    stack.write(out, context=True, layout="extensions")
    # As Siril converts raw files: upside down, bottom-up, so that DS9 and
    # Siril show the photo's top at the top.
    with fits.open(out) as hdul:
        assert hdul[0].header["ROWORDER"] == "BOTTOM-UP"
        for hdu in hdul[1:-1]:  # the images, weights and contexts; then FRAMES
            assert hdu.header["ROWORDER"] == "BOTTOM-UP"
            assert not any(key.startswith(("CTYPE", "CRVAL", "CD1_")) for key in hdu.header)
        np.testing.assert_array_equal(hdul["GREEN"].data, stack.images["GREEN"][::-1])
        np.testing.assert_array_equal(hdul["GREEN_WHT"].data, stack.weights["GREEN"][::-1])
        np.testing.assert_array_equal(hdul["GREEN_CTX"].data, stack.contexts["GREEN"][:, ::-1])
        green = np.nan_to_num(hdul["GREEN"].data)
    assert np.unravel_index(np.argmax(green), green.shape)[0] > 64 - 16
    # The cube (the default) likewise, its weights beside it, and both
    # read back as the stack was.
    cube = tmp_path / "cube.fits"
    stack.write(cube, context=True)
    with fits.open(cube) as hdul:
        assert hdul[0].header["ROWORDER"] == "BOTTOM-UP"
        np.testing.assert_array_equal(hdul[0].data[1], stack.images["GREEN"][::-1])
    with fits.open(tmp_path / "cube.weights.fits") as hdul:
        for name in ("WHT", "CTX"):
            assert hdul[name].header["ROWORDER"] == "BOTTOM-UP"
        np.testing.assert_array_equal(hdul["WHT"].data[1], stack.weights["GREEN"][::-1])
    for path in (out, cube):
        again = Stack.read(path)
        assert again.meta["roworder"] == "TOP-DOWN"
        for name in stack.channels:
            np.testing.assert_array_equal(again.images[name], stack.images[name])
            np.testing.assert_array_equal(again.weights[name], stack.weights[name])
            np.testing.assert_array_equal(again.contexts[name], stack.contexts[name])
    preview = stack.preview()
    assert np.unravel_index(np.argmax(preview.sum(axis=2)), preview.shape[:2])[0] < 16


def test_top_down_fits_written_bottom_up_with_its_wcs(tmp_path):
    frames = _sequence(tmp_path, SIP, extra={"ROWORDER": "TOP-DOWN"})
    stack, _ = stack_frames(frames, scale=2.0, reject=False)
    assert stack.meta["roworder"] == "TOP-DOWN"
    out = tmp_path / "stack.fits"
    stack.write(out)
    header = fits.getheader(out, "SCI")
    assert header["ROWORDER"] == "BOTTOM-UP"
    np.testing.assert_array_equal(fits.getdata(out, "SCI"), stack.images["SCI"][::-1])
    # The file's pixel (px, py) is the stack's row ny - 1 - py, over the reference pixel under it.
    wcs = WCS(header)
    ny, nx = stack.images["SCI"].shape
    py, px = np.mgrid[0:ny:12, 0:nx:16]
    px = np.concatenate([px.ravel(), [0, nx - 1, 0, nx - 1]])
    py = np.concatenate([py.ravel(), [0, 0, ny - 1, ny - 1]])
    rx, ry = _reference_pixels(_reference_wcs(frames[0]), wcs, px, py)
    error = np.hypot(rx - ((px + 0.5) / 2 - 0.5), ry - ((ny - 1 - py + 0.5) / 2 - 0.5))
    assert error.max() < 1e-3
    # Read back, the stack is as it was: its rows, its WCS, its observation.
    again = Stack.read(out)
    np.testing.assert_array_equal(again.images["SCI"], stack.images["SCI"])
    assert again.meta["roworder"] == "TOP-DOWN"
    assert again.meta["observation"] == stack.meta["observation"]
    sky = stack.meta["wcs"].pixel_to_world(px, py)
    assert sky.separation(again.meta["wcs"].pixel_to_world(px, py)).max().arcsec < 1e-6


def test_fits_without_wcs_writes_none(tmp_path):
    frames = _sequence(tmp_path, {})
    stack, _ = stack_frames(frames, reject=False)
    assert stack.meta["wcs"] is None
    out = tmp_path / "stack.fits"
    stack.write(out)
    assert not any(
        key.startswith(("CTYPE", "CRVAL", "WCSAXES")) for key in fits.getheader(out, "SCI")
    )


@pytest.mark.parametrize(
    ("cards", "why"),
    [
        ({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0, "CDELT2": 1.0}, "not celestial"),
        ({**TAN, "CPDIS1": "LOOKUP", "DP1": "NAXES: 2"}, "lookup tables"),
    ],
)
def test_wcs_that_cannot_be_carried_is_left_out_with_a_warning(tmp_path, cards, why):
    frames = _sequence(tmp_path, cards)
    with pytest.warns(
        AstropyUserWarning, match=f"light_0.fits: its WCS is left out.*{why}"
    ) as caught:
        stack, _ = stack_frames(frames, reject=False)
    assert len([w for w in caught if "WCS" in str(w.message)]) == 1
    assert stack.meta["wcs"] is None
    out = tmp_path / "stack.fits"
    stack.write(out)
    assert "CTYPE1" not in fits.getheader(out, "SCI")


@pytest.mark.parametrize("command", ["stack", "run"])
def test_cli_stack_and_run_carry_the_wcs(tmp_path, capsys, command):
    frames = _sequence(tmp_path, SIP)
    if command == "run":  # which makes the maps itself
        for k in (1, 2):
            (tmp_path / f"light_{k}.offsets.fits").unlink()
    out = tmp_path / "stack.fits"
    assert main([command, *frames, "--out", str(out), "--scale", "2", "--no-reject"]) == 0
    capsys.readouterr()
    header = fits.getheader(out, "SCI")
    wcs = WCS(header)
    assert wcs.sip is not None
    assert wcs.pixel_shape == (2 * SHAPE[1], 2 * SHAPE[0])
    assert header["ROWORDER"] == "BOTTOM-UP"
    assert fits.getheader(out)["OBJECT"] == "M 42"
    # The last pixel, the corner farthest from CRPIX: reference (255.5) / 2 - 0.5.
    reference = _reference_wcs(frames[0])
    rx, ry = _reference_pixels(reference, wcs, 2 * SHAPE[1] - 1.0, 2 * SHAPE[0] - 1.0)
    assert np.hypot(rx - (SHAPE[1] - 0.75), ry - (SHAPE[0] - 0.75)) < 1e-3


def test_bayer_fits_stack_carries_the_wcs_on_the_full_grid(tmp_path):
    # A colour mosaic (BAYERPAT): each colour is drizzled onto the full frame's grid.
    x, y, flux = _stars()
    frames = []
    for k, motion in enumerate(MOTIONS):
        fx, fy = _moved(x, y, motion)
        image = (render_stars(SHAPE, fx, fy, 4 * flux) + 100.0).astype(np.float32)
        header = fits.Header({"BAYERPAT": "RGGB", **(TAN if k == 0 else {})})
        path = tmp_path / f"cfa_{k}.fits"
        fits.PrimaryHDU(image, header).writeto(path)
        if k:
            OffsetModel(fx, fy, fx - x, fy - y).to_map(SHAPE).write(
                tmp_path / f"cfa_{k}.offsets.fits"
            )
        frames.append(str(path))
    stack, _ = stack_frames(frames, scale=2.0, reject=False, kernel="square")
    assert stack.channels == ("RED", "GREEN", "BLUE")
    out = tmp_path / "stack.fits"
    stack.write(out)
    # One 3-plane cube, as Siril and PixInsight open colour; its WCS the grid's.
    header = fits.getheader(out)
    assert (header["NAXIS"], header["NAXIS3"]) == (3, 3)
    wcs = WCS(header).celestial  # the planes' axis is not the sky's
    assert wcs.pixel_shape == (2 * SHAPE[1], 2 * SHAPE[0])
    green = stack.images["GREEN"]
    image = np.nan_to_num(green - np.nanmedian(green))
    sx, sy = centroid_sources(
        image,
        2 * (x + 0.5) - 0.5,
        2 * (y + 0.5) - 0.5,
        box_size=13,
        centroid_func=centroid_2dg,
    )
    truth_x, truth_y = centroid_sources(
        render_stars(SHAPE, x, y, flux), x, y, box_size=7, centroid_func=centroid_2dg
    )
    reference = WCS(fits.Header(TAN))
    rx, ry = _reference_pixels(reference, wcs, sx, sy)
    error = np.hypot(rx - truth_x, ry - truth_y)
    print(f"Bayer, scale 2: stars within {error.max():.4f} reference px")
    assert error.max() < 0.05


@pytest.mark.parametrize(
    "cards",
    [
        {
            **TAN,
            "CTYPE1": "RA---TPV",
            "CTYPE2": "DEC--TPV",
            "PV1_1": 1.0,
            "PV1_4": 0.02,
            "PV2_1": 1.0,
            "PV2_5": -0.01,
        },
        {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": 10.0,
            "CRVAL2": 60.0,
            "CRPIX1": 40.0,
            "CRPIX2": 30.0,
            "CDELT1": -1e-3,
            "CDELT2": 1e-3,
            "CROTA2": 12.0,
        },
    ],
    ids=["TPV", "CROTA2"],
)
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_other_celestial_wcs_carried_and_turned_upside_down(cards, scale):
    shape = (round(SHAPE[0] * scale), round(SHAPE[1] * scale))
    grid = grid_wcs(fits.Header(cards), scale, shape)
    reference = WCS(fits.Header(cards))
    for wcs, flip in ((grid, False), (flipped_wcs(grid, shape), True)):
        written = WCS(wcs.to_header(relax=True))
        py, px = np.mgrid[0 : shape[0] : 7, 0 : shape[1] : 9].reshape(2, -1)
        rx, ry = _reference_pixels(reference, written, px, py)
        row = shape[0] - 1 - py if flip else py
        error = np.hypot(rx - ((px + 0.5) / scale - 0.5), ry - ((row + 0.5) / scale - 0.5))
        assert error.max() < 1e-6
