"""OffsetMap.to_sip: the FITS SIP convention on every pixel, the degree, the error, the file."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from astro_offsets import OffsetMap, OffsetModel
from astro_offsets.maps import (
    MAX_SIP_DEGREE,
    default_wcs,
    offsets_to_sip,
    reference_wcs,
    sip_header,
    write_sip,
)
from astro_offsets.maps._sip import _FIT_NODES

SHAPE = (150, 211)  # (ny, nx): non-square, odd, CRPIX off the pixel grid in x


def sip_values(w, shape):
    """Return ``x + A(u, v)`` and ``y + B(u, v)`` on every pixel, by the convention's letter.

    The coefficients are read from ``w.sip`` and summed term by term here:
    nothing shared with the code under test.
    """
    y, x = np.indices(shape, dtype=np.float64)
    u = x + 1.0 - w.wcs.crpix[0]
    v = y + 1.0 - w.wcs.crpix[1]
    out = []
    for base, coefficients in ((x, w.sip.a), (y, w.sip.b)):
        total = np.zeros(shape)
        for p in range(coefficients.shape[0]):
            for q in range(coefficients.shape[1]):
                if coefficients[p, q]:
                    total += coefficients[p, q] * u**p * v**q
        out.append(base + total)
    return np.dstack(out)


def true_error(w, omap):
    """The largest distance over every pixel between the SIP position and the pixmap."""
    difference = sip_values(w, omap.shape) - omap.pixmap()
    return np.nanmax(np.hypot(difference[..., 0], difference[..., 1]))


def polynomial_map(shape=SHAPE, degree=3, seed=0, amplitude=2.0):
    """A map whose offsets are a polynomial of ``degree`` in x, y (every term of that degree)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    # Powers of (x, y) scaled and not centred on CRPIX: s**i along a row, t**j down a column.
    s = ((np.arange(nx) - 0.3 * nx) / nx)[np.newaxis, :] ** np.arange(degree + 1)[:, np.newaxis]
    t = ((np.arange(ny) - 0.6 * ny) / ny)[:, np.newaxis] ** np.arange(degree + 1)[np.newaxis, :]
    total = np.add.outer(np.arange(degree + 1), np.arange(degree + 1))
    maps = []
    for _ in range(2):
        c = np.where(total <= degree, rng.normal(0, amplitude, total.shape), 0.0)  # c[i, j]
        maps.append(t @ c.T @ s)
    return OffsetMap(*maps)


def shift_map():
    return OffsetMap(np.full(SHAPE, 3.25), np.full(SHAPE, -7.5))


def rotation_scale_map():
    # pixmap = R s (x - c) + c + shift: the offset is x minus that.
    y, x = np.indices(SHAPE, dtype=np.float64)
    angle, scale = np.radians(1.7), 1.0004
    cx, cy = 90.0, 40.0
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    px = c * (x - cx) - s * (y - cy) + cx + 4.0
    py = s * (x - cx) + c * (y - cy) + cy - 2.5
    return OffsetMap(x - px, y - py)


def realistic_map(shape=SHAPE, method=None):
    """The default field of 60 noisy stars of a turned, drifting frame (or of ``method``)."""
    rng = np.random.default_rng(3)
    ny, nx = shape
    x, y = rng.uniform(0, nx, 60), rng.uniform(0, ny, 60)
    angle = np.radians(0.2)
    fx = np.cos(angle) * (x - nx / 2) - np.sin(angle) * (y - ny / 2) + nx / 2 + 6.0
    fy = np.sin(angle) * (x - nx / 2) + np.cos(angle) * (y - ny / 2) + ny / 2 - 3.0
    fx += 1e-6 * (fx - nx / 2) ** 3  # a little distortion
    noise = rng.normal(0, 0.03, (2, 60))
    options = {} if method is None else {"method": method}
    model = OffsetModel(fx, fy, fx - x + noise[0], fy - y + noise[1], **options)
    return model.to_map(shape)


def to_sip(omap, **kwargs):
    """`OffsetMap.to_sip`, its warning (that max_error is not reached) not raised."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the SIP polynomial", AstropyUserWarning)
        return omap.to_sip(**kwargs)


# --- the convention, on every pixel -------------------------------------------------


@pytest.mark.parametrize(
    ("make", "exact"),
    [
        (shift_map, True),
        (rotation_scale_map, True),
        (polynomial_map, True),
        (realistic_map, False),
    ],
    ids=["shift", "rotation+scale", "polynomial-3", "realistic"],
)
def test_sip_reproduces_pixmap_on_every_pixel(make, exact):
    omap = make()
    w = to_sip(omap)
    assert w.sip is not None
    assert np.allclose(w.wcs.crpix, [(SHAPE[1] + 1) / 2, (SHAPE[0] + 1) / 2])  # frame centre
    error = true_error(w, omap)
    # The error recorded is the true largest over every pixel.
    assert error == pytest.approx(w.sip_error, abs=1e-9)
    assert w.sip_pixels == omap.x_offset.size
    if exact:
        # float32 maps of offsets up to ~10 px: rounded to about 1e-6 px.
        assert error < 2e-6
        assert w.sip.a_order == w.sip.b_order == 2 + (make is polynomial_map)
    else:
        assert error < 0.2


def test_polynomial_field_of_degree_3_needs_degree_3():
    omap = polynomial_map(degree=3)
    w = omap.to_sip(max_error=1e-5)
    assert w.sip.a_order == 3
    assert w.sip_error < 2e-6
    # Degree 2 does not reach it: 3 is the lowest.
    assert to_sip(omap, degree=2).sip_error > 1e-5


def test_default_field_within_recorded_error():
    omap = realistic_map()
    w = to_sip(omap, max_error=0.005)
    assert true_error(w, omap) == pytest.approx(w.sip_error, abs=1e-9)


@pytest.mark.parametrize("max_error", [0.2, 0.05, 0.01])
def test_degree_is_the_lowest_reaching_max_error(max_error):
    omap = realistic_map(method="polynomial")  # degree 3 on the affine trend, and noise
    w = to_sip(omap, max_error=max_error)
    degree = w.sip.a_order
    if degree > 2:
        assert to_sip(omap, degree=degree - 1).sip_error > max_error
    if w.sip_error > max_error:
        assert degree == MAX_SIP_DEGREE
    for d in range(2, degree):
        assert to_sip(omap, degree=d).sip_error > max_error


def test_sip_to_all_pix2world_and_pix2foc():
    omap = polynomial_map()
    w = omap.to_sip()
    y, x = np.indices(SHAPE, dtype=np.float64)
    pixmap = omap.pixmap()
    # sip_pix2foc counts from CRPIX: of 1-based pixels, u + A(u, v) ...
    fu, fv = w.sip_pix2foc(x.ravel() + 1, y.ravel() + 1, 1)
    assert np.allclose(fu + w.wcs.crpix[0] - 1, pixmap[..., 0].ravel(), atol=2e-6, rtol=0)
    assert np.allclose(fv + w.wcs.crpix[1] - 1, pixmap[..., 1].ravel(), atol=2e-6, rtol=0)
    # ... and of 0-based ones, one less.
    fu, fv = w.sip_pix2foc(x.ravel(), y.ravel(), 0)
    assert np.allclose(fu + w.wcs.crpix[0], pixmap[..., 0].ravel(), atol=2e-6, rtol=0)
    # The sky of pixel (x, y) is the reference's at the pixmap.
    base = default_wcs(SHAPE)
    world = w.all_pix2world(x.ravel(), y.ravel(), 0)
    target = base.wcs_pix2world(pixmap[..., 0].ravel(), pixmap[..., 1].ravel(), 0)
    arcsec = 3600 * np.hypot(world[0] - target[0], world[1] - target[1])
    assert arcsec.max() < 2e-6  # the default WCS: 1 arcsec pixels


def test_given_wcs_keeps_its_crpix():
    omap = polynomial_map()
    base = WCS(naxis=2)
    base.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    base.wcs.crval = [150.1, 2.2]
    base.wcs.crpix = [30.0, 18.5]  # far from the centre
    base.wcs.cd = [[-1.1e-4, 2.0e-5], [1.5e-5, 1.2e-4]]
    w = omap.to_sip(wcs=base)
    assert list(w.wcs.crpix) == [30.0, 18.5]
    assert list(base.wcs.ctype) == ["RA---TAN", "DEC--TAN"]  # not modified
    assert base.sip is None
    assert true_error(w, omap) < 2e-6
    y, x = np.indices(SHAPE, dtype=np.float64)
    pixmap = omap.pixmap()
    world = w.all_pix2world(x.ravel(), y.ravel(), 0)
    target = base.wcs_pix2world(pixmap[..., 0].ravel(), pixmap[..., 1].ravel(), 0)
    assert np.abs(np.subtract(world, target)).max() < 1e-9  # degrees: pixels of 0.4 arcsec
    with pytest.raises(ValueError, match="already has astropy-level distortion"):
        omap.to_sip(wcs=omap.to_wcs(base))  # lookup tables: not composed


def test_a_plate_solved_references_sip_is_composed_with_the_map():
    # A plate solver's TAN-SIP (a lens's barrel): the frame's SIP puts each
    # of its pixels on the sky where the reference's whole WCS puts its pixmap.
    omap = polynomial_map(degree=2)
    base = WCS(naxis=2)
    base.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    base.wcs.crval = [150.1, 2.2]
    base.wcs.crpix = [100.0, 70.0]
    base.wcs.cd = [[-1.1e-4, 2.0e-5], [1.5e-5, 1.2e-4]]
    a, b = np.zeros((4, 4)), np.zeros((4, 4))
    a[2, 0], a[0, 2], a[3, 0], b[0, 3], b[1, 1] = 2e-4, -1e-4, 3e-7, -2e-7, 1.5e-4
    from astropy.wcs import Sip

    base.sip = Sip(a, b, None, None, base.wcs.crpix)
    base.wcs.set()
    w = omap.to_sip(wcs=base, max_error=1e-4)
    assert list(w.wcs.crpix) == [100.0, 70.0]
    assert w.sip.ap is None
    assert base.sip.a[2, 0] == 2e-4  # not modified
    y, x = np.indices(SHAPE, dtype=np.float64)
    pixmap = omap.pixmap()
    world = np.array(w.all_pix2world(x.ravel(), y.ravel(), 0))
    target = np.array(base.all_pix2world(pixmap[..., 0].ravel(), pixmap[..., 1].ravel(), 0))
    # Within the error recorded, in pixels of about 0.43 arcsec.
    assert w.sip_error <= 1e-4
    assert np.abs(world - target).max() * 3600 < 0.45 * w.sip_error + 1e-9
    # Without composing, the reference's barrel would be missed by about a pixel.
    plain = omap.to_sip(wcs=reference_free(base))
    world = np.array(plain.all_pix2world(x.ravel(), y.ravel(), 0))
    assert np.abs(world - target).max() * 3600 > 0.1


def reference_free(wcs):
    """The WCS without its SIP."""
    out = wcs.deepcopy()
    out.sip = None
    out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    out.wcs.set()
    return out


def test_every_pixel_is_measured_not_only_the_fit_grid():
    # A bump on one pixel between the fit nodes: only the full measurement sees it.
    ny, nx = 300, 700
    x_offset = np.zeros((ny, nx))
    assert nx > _FIT_NODES
    x_offset[151, 351] = 0.5
    with pytest.warns(AstropyUserWarning, match="off the map by up to 0.5"):
        w = OffsetMap(x_offset, np.zeros((ny, nx))).to_sip()
    assert w.sip_error == pytest.approx(0.5, abs=1e-3)
    assert w.sip.a_order == MAX_SIP_DEGREE


def test_well_conditioned_at_degree_9_on_a_7000_px_frame():
    # A degree-9 field, strong in its high terms, across 7000 x 700 pixels.
    shape = (700, 7000)
    omap = polynomial_map(shape, degree=9, seed=5, amplitude=3.0)
    w = omap.to_sip(degree=9, max_error=1e-4)
    assert w.sip.a_order == 9
    assert w.sip_error < 1e-5
    # The highest terms of the SIP are tiny (3500**9 ~ 8e31) and still right.
    assert 0 < abs(w.sip.a[9, 0]) < 1e-28


def test_nan_pixels_are_left_out():
    omap = polynomial_map()
    x_offset = omap.x_offset.copy()
    x_offset[10:40, 50:90] = np.nan
    holed = OffsetMap(x_offset, omap.y_offset)
    w = holed.to_sip()
    assert w.sip_pixels == x_offset.size - 30 * 40
    assert w.sip_error < 2e-6
    assert true_error(w, omap) < 2e-6  # the field under the hole too


def test_quadrant_field_warns_when_max_error_is_not_reached():
    rng = np.random.default_rng(11)
    model = OffsetModel(
        rng.uniform(0, 211, 40),
        rng.uniform(0, 150, 40),
        rng.normal(0, 0.5, 40),
        rng.normal(0, 0.5, 40),
        method="quadrant",
        trend=None,
    )
    omap = model.to_map(SHAPE)
    with pytest.warns(AstropyUserWarning, match=r"degree 9 .* more than max_error=0.01.*kinks"):
        w = omap.to_sip(max_error=0.01)
    assert w.sip.a_order == MAX_SIP_DEGREE
    assert w.sip_error > 0.01
    assert true_error(w, omap) == pytest.approx(w.sip_error, abs=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"degree": 1}, "degree must be None or an integer from 2 to 9, got 1"),
        ({"degree": 10}, "from 2 to 9, got 10"),
        ({"degree": 3.0}, "got 3.0"),
        ({"max_error": 0}, "max_error must be a positive number of pixels, got 0"),
        ({"max_error": "0.1"}, "got '0.1'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shift_map().to_sip(**kwargs)


def test_no_finite_pixel():
    with pytest.raises(ValueError, match="no pixel with finite offsets"):
        OffsetMap(np.full((5, 6), np.nan), np.zeros((5, 6))).to_sip()


def test_too_few_finite_pixels():
    x_offset = np.full((50, 60), np.nan)
    x_offset[10, 10:14] = 1.0  # four pixels on a line
    with pytest.raises(ValueError, match="too few for a SIP of degree 2"):
        OffsetMap(x_offset, np.zeros((50, 60))).to_sip()


# --- the header and the file -----------------------------------------------------


def read_wcs(path):
    header = fits.getheader(path)
    with warnings.catch_warnings():  # NAXIS = 0: fewer axes than the WCS
        warnings.filterwarnings("ignore", "The WCS transformation has more axes", FITSFixedWarning)
        return header, WCS(header)


def test_sip_file_reads_back_with_astropy(tmp_path):
    omap = realistic_map(method="polynomial")
    w = to_sip(omap, max_error=0.001)
    path = tmp_path / "frame.sip.fits"
    cards = [("SRCTABLE", "frame.offsets_table.fits", "star table")]
    write_sip(path, w, cards, ["The WCS is the default one."])
    with fits.open(path) as hdul:
        assert len(hdul) == 1
        assert hdul[0].data is None
    header, back = read_wcs(path)
    assert back.sip is not None
    assert header["PRODUCT"] == "SIP distortion"
    assert header["SIPERR"] == pytest.approx(w.sip_error, rel=1e-12)
    assert header["SIPGOAL"] == 0.001
    assert header["A_ORDER"] == w.sip.a_order
    assert (header["IMAGEW"], header["IMAGEH"]) == (SHAPE[1], SHAPE[0])
    assert header["SRCTABLE"] == "frame.offsets_table.fits"
    assert "default" in str(header["COMMENT"])
    # The same numbers: the convention on every pixel, the sky.
    assert np.abs(sip_values(back, SHAPE) - sip_values(w, SHAPE)).max() < 1e-9
    assert true_error(back, omap) <= header["SIPERR"] + 1e-9
    y, x = np.indices(SHAPE, dtype=np.float64)
    difference = np.subtract(
        back.all_pix2world(x.ravel(), y.ravel(), 0), w.all_pix2world(x.ravel(), y.ravel(), 0)
    )
    assert np.abs(difference).max() < 1e-12  # degrees; pixels of 1 arcsec
    with pytest.raises(FileExistsError):
        write_sip(path, w)


def test_sip_header_needs_a_sip_of_to_sip():
    with pytest.raises(ValueError, match="no SIP polynomials"):
        sip_header(default_wcs(SHAPE))


def test_reference_wcs(tmp_path):
    shape = (20, 30)
    tan = WCS(naxis=2)
    tan.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    tan.wcs.crval = [10.0, 20.0]
    tan.wcs.crpix = [15.0, 10.0]
    tan.wcs.cdelt = [-1e-4, 1e-4]
    header = tan.to_header()
    header["DATE-OBS"] = "2024-01-01T00:00:00"  # a card wcslib fixes, with a warning unless quiet
    fits.PrimaryHDU(np.zeros(shape, dtype=np.float32), header).writeto(tmp_path / "tan.fits")
    w, comments = reference_wcs(str(tmp_path / "tan.fits"), shape)
    assert list(w.wcs.crval) == [10.0, 20.0]
    assert comments == (f"WCS of the reference frame {tmp_path / 'tan.fits'}.",)
    # The reference's WCS carries the polynomials.
    assert list(polynomial_map(shape).to_sip(wcs=w).wcs.crval) == [10.0, 20.0]

    sip = offsets_to_sip(np.ones(shape), np.zeros(shape), wcs=tan)  # a plate-solved TAN-SIP
    fits.PrimaryHDU(np.zeros(shape, dtype=np.float32), sip.to_header(relax=True)).writeto(
        tmp_path / "tan-sip.fits"
    )
    fits.PrimaryHDU(np.zeros(shape, dtype=np.float32)).writeto(tmp_path / "none.fits")
    fits.PrimaryHDU(np.zeros((5, 5), dtype=np.float32), header).writeto(tmp_path / "small.fits")
    # A plate-solved TAN-SIP is taken, its SIP composed with the map's.
    w, comments = reference_wcs(str(tmp_path / "tan-sip.fits"), shape)
    assert w.sip is not None
    assert comments == (f"WCS of the reference frame {tmp_path / 'tan-sip.fits'}.",)
    for name, why in [
        ("none.fits", "no celestial WCS"),
        ("small.fits", "does not match the map shape"),
        ("missing.fits", "No such file"),
    ]:
        w, comments = reference_wcs(str(tmp_path / name), shape)
        assert w is None
        assert comments[0].startswith(f"Reference frame {tmp_path / name}: ")
        assert why in comments[0]
        assert "default one" in comments[1]
    assert reference_wcs(None, shape)[0] is None
