import time
import tracemalloc

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, DistortionLookupTable, FITSFixedWarning, Sip
from drizzle.utils import calc_pixmap, estimate_pixel_scale_ratio

from astro_offsets.maps import default_wcs, offsets_to_wcs

SHAPE = (40, 57)  # (ny, nx), deliberately non-square


def make_maps(shape=SHAPE, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    x_offset = rng.normal(0.0, scale, shape).astype(np.float32)
    y_offset = rng.normal(0.0, scale, shape).astype(np.float32)
    return x_offset, y_offset


def reference_pixmap(x_offset, y_offset):
    y, x = np.indices(x_offset.shape, dtype=np.float64)
    return np.dstack([x - x_offset, y - y_offset])


def tan_wcs(shape=SHAPE):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [30.0, 18.5]
    w.wcs.cd = [[-1.1e-4, 2.0e-5], [1.5e-5, 1.2e-4]]
    w.wcs.set()
    return w


def linear_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["X", "Y"]
    w.wcs.crpix = [5.0, 7.0]
    w.wcs.crval = [100.0, -3.0]
    w.wcs.cdelt = [0.5, 2.0]
    return w


def tpv_wcs(shape=SHAPE):
    ny, nx = shape
    header = fits.Header()
    header.update(
        NAXIS=2,
        NAXIS1=nx,
        NAXIS2=ny,
        CTYPE1="RA---TPV",
        CTYPE2="DEC--TPV",
        CRVAL1=150.1,
        CRVAL2=2.2,
        CRPIX1=30.0,
        CRPIX2=20.0,
        CD1_1=-0.05,
        CD1_2=0.0,
        CD2_1=0.0,
        CD2_2=0.05,
    )
    header.update(PV1_1=1.0, PV1_4=0.05, PV1_7=0.02, PV2_1=1.0, PV2_5=-0.03, PV2_9=0.01)
    return WCS(header)


def pix2foc(w, shape=SHAPE):
    y, x = np.indices(shape, dtype=np.float64)
    fx, fy = w.p4_pix2foc(x, y, 0)
    return np.dstack([fx, fy])


# --- contract 1: p4_pix2foc(x, y, 0) is the pixmap -------------------------------


@pytest.mark.parametrize("make_wcs", [None, tan_wcs, linear_wcs], ids=["default", "tan", "linear"])
def test_p4_pix2foc_equals_pixmap(make_wcs):
    x_offset, y_offset = make_maps()
    w = offsets_to_wcs(x_offset, y_offset, None if make_wcs is None else make_wcs())
    # Table nodes sit on pixel centres, so the lookup is exact up to the
    # +1/-1 origin shift astropy applies internally.
    np.testing.assert_allclose(pix2foc(w), reference_pixmap(x_offset, y_offset), rtol=0, atol=1e-9)


def test_lookup_is_bilinear_between_pixels():
    x_offset, y_offset = make_maps()
    w = offsets_to_wcs(x_offset, y_offset)
    fx, fy = w.p4_pix2foc(np.array([10.5]), np.array([7.0]), 0)
    np.testing.assert_allclose(fx, 10.5 - (x_offset[7, 10] + x_offset[7, 11]) / 2.0, atol=1e-6)
    np.testing.assert_allclose(fy, 7.0 - (y_offset[7, 10] + y_offset[7, 11]) / 2.0, atol=1e-6)


def test_result_metadata():
    x_offset, y_offset = make_maps()
    w = offsets_to_wcs(x_offset, y_offset, tan_wcs())
    assert w.pixel_shape == (SHAPE[1], SHAPE[0])
    assert w.array_shape == SHAPE
    assert w.sip is None
    assert w.det2im1 is None
    assert w.det2im2 is None
    for table, offset in ((w.cpdis1, x_offset), (w.cpdis2, y_offset)):
        assert isinstance(table, DistortionLookupTable)
        assert table.data.dtype == np.float32
        np.testing.assert_array_equal(table.data, -offset)
        np.testing.assert_array_equal(table.crpix, [1.0, 1.0])
        np.testing.assert_array_equal(table.crval, [1.0, 1.0])
        np.testing.assert_array_equal(table.cdelt, [1.0, 1.0])


# --- contract 2: drizzle.utils.calc_pixmap reproduces the pixmap -------------


@pytest.mark.parametrize("make_wcs", [tan_wcs, linear_wcs, tpv_wcs], ids=["tan", "linear", "tpv"])
def test_calc_pixmap_user_wcs(make_wcs):
    x_offset, y_offset = make_maps()
    base = make_wcs()
    pixmap = calc_pixmap(offsets_to_wcs(x_offset, y_offset, base), base)
    assert pixmap.shape == (*SHAPE, 2)
    np.testing.assert_allclose(pixmap, reference_pixmap(x_offset, y_offset), rtol=0, atol=1e-6)


def test_calc_pixmap_default_wcs():
    x_offset, y_offset = make_maps()
    pixmap = calc_pixmap(offsets_to_wcs(x_offset, y_offset), default_wcs(SHAPE))
    np.testing.assert_allclose(pixmap, reference_pixmap(x_offset, y_offset), rtol=0, atol=1e-6)


def test_calc_pixmap_base_is_result_without_tables():
    x_offset, y_offset = make_maps()
    w = offsets_to_wcs(x_offset, y_offset)
    base = w.deepcopy()
    base.cpdis1 = base.cpdis2 = None
    np.testing.assert_allclose(
        calc_pixmap(w, base), reference_pixmap(x_offset, y_offset), rtol=0, atol=1e-6
    )


def test_default_wcs():
    w = default_wcs(SHAPE)
    assert w.array_shape == SHAPE
    assert not w.has_distortion
    assert list(w.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    ny, nx = SHAPE
    ra, dec = w.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
    np.testing.assert_allclose([ra, dec], [180.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(w.pixel_scale_matrix), np.eye(2) / 3600.0, atol=1e-15)
    # drizzle reads world coordinates as sky degrees; a celestial default
    # keeps its pixel-scale estimate meaningful.
    omap = offsets_to_wcs(np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32))
    assert estimate_pixel_scale_ratio(omap, w) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("shape", [(0, 3), (3,), (2, 3, 4)])
def test_default_wcs_bad_shape(shape):
    with pytest.raises(ValueError, match="shape must be two positive integers"):
        default_wcs(shape)


# --- contract 3: FITS round trip ---------------------------------------------


def test_fits_round_trip_in_memory():
    x_offset, y_offset = make_maps()
    w = offsets_to_wcs(x_offset, y_offset, tan_wcs())
    hdul = w.to_fits()
    assert [hdu.name for hdu in hdul[1:]] == ["WCSDVARR", "WCSDVARR"]
    assert hdul[0].header["CPDIS1"] == "LOOKUP"
    assert hdul[0].header["CPDIS2"] == "LOOKUP"
    # astropy quirk: to_fits() writes a data-less primary HDU (NAXIS = 0), so
    # reading it back warns that the WCS has more axes than the image.
    with pytest.warns(FITSFixedWarning, match="more axes"):
        w2 = WCS(hdul[0].header, hdul)
    np.testing.assert_array_equal(pix2foc(w2), pix2foc(w))


def test_fits_round_trip_on_disk(tmp_path):
    x_offset, y_offset = make_maps(seed=3)
    w = offsets_to_wcs(x_offset, y_offset)
    hdul = w.to_fits()
    # An image HDU records NAXISn, which restores pixel_shape on reading.
    hdul[0].data = np.zeros(SHAPE, dtype=np.float32)
    path = tmp_path / "omap.fits"
    hdul.writeto(path)
    with fits.open(path) as f:
        w2 = WCS(f[0].header, f)
        assert w2.array_shape == SHAPE
        np.testing.assert_array_equal(pix2foc(w2), pix2foc(w))
        np.testing.assert_allclose(
            calc_pixmap(w2, default_wcs(SHAPE)),
            reference_pixmap(x_offset, y_offset),
            rtol=0,
            atol=1e-6,
        )


# --- input handling ------------------------------------------------------------


def test_caller_wcs_not_modified():
    x_offset, y_offset = make_maps()
    base = tan_wcs()
    before = base.to_header_string(relax=True)
    offsets_to_wcs(x_offset, y_offset, base)
    assert base.cpdis1 is None
    assert base.cpdis2 is None
    assert base.pixel_shape is None
    assert base.to_header_string(relax=True) == before


def test_caller_maps_not_modified_or_shared():
    x_offset, y_offset = make_maps()
    x_copy, y_copy = x_offset.copy(), y_offset.copy()
    w = offsets_to_wcs(x_offset, y_offset)
    np.testing.assert_array_equal(x_offset, x_copy)
    np.testing.assert_array_equal(y_offset, y_copy)
    assert not np.shares_memory(w.cpdis1.data, x_offset)
    assert not np.shares_memory(w.cpdis2.data, y_offset)


def test_matching_pixel_shape_accepted():
    x_offset, y_offset = make_maps()
    base = tan_wcs()
    base.array_shape = SHAPE
    assert offsets_to_wcs(x_offset, y_offset, base).array_shape == SHAPE


def test_float64_and_non_contiguous_input():
    x_offset, y_offset = make_maps(shape=SHAPE[::-1])
    x64, y64 = x_offset.T.astype(np.float64), y_offset.T  # F-ordered views / copies
    w = offsets_to_wcs(x64, y64)
    assert w.cpdis1.data.flags.c_contiguous
    np.testing.assert_allclose(
        pix2foc(w), reference_pixmap(x_offset.T, y_offset.T), rtol=0, atol=1e-9
    )


def test_integer_maps():
    x_offset = np.ones(SHAPE, dtype=np.int16)
    w = offsets_to_wcs(x_offset, -x_offset)
    np.testing.assert_allclose(pix2foc(w), reference_pixmap(x_offset, -x_offset), atol=1e-12)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_maps(value):
    x_offset, y_offset = make_maps()
    y_offset[5, 7] = value
    with pytest.raises(ValueError, match=r"y_offset (contains NaN|has infinite values)"):
        offsets_to_wcs(x_offset, y_offset)


def test_float64_overflow_is_non_finite():
    x_offset = np.zeros(SHAPE)
    x_offset[0, 0] = 1e300
    with pytest.raises(ValueError, match="x_offset has infinite values or values beyond float32"):
        offsets_to_wcs(x_offset, np.zeros(SHAPE))


def test_wcs_wrong_type():
    x_offset, y_offset = make_maps()
    with pytest.raises(TypeError, match=r"astropy\.wcs\.WCS or None"):
        offsets_to_wcs(x_offset, y_offset, tan_wcs().to_header())


def test_wcs_not_2d():
    x_offset, y_offset = make_maps()
    w = WCS(naxis=3)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN", "WAVE"]
    with pytest.raises(ValueError, match="exactly 2 axes, got 3"):
        offsets_to_wcs(x_offset, y_offset, w)


@pytest.mark.parametrize(
    ("ctype", "match"),
    [
        (["WAVE", "X"], "celestial .* or 2-D linear"),
        (["STOKES", "X"], "celestial .* or 2-D linear"),
        (["RA---TAN", "LINEAR"], "not a valid 2-D celestial or linear WCS"),
    ],
)
def test_wcs_not_celestial_or_linear(ctype, match):
    x_offset, y_offset = make_maps()
    w = WCS(naxis=2)
    w.wcs.ctype = ctype
    with pytest.raises(ValueError, match=match):
        offsets_to_wcs(x_offset, y_offset, w)


def _with_sip(w):
    a = np.zeros((3, 3))
    a[2, 0] = 1e-6
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.sip = Sip(a, np.zeros((3, 3)), None, None, w.wcs.crpix)
    return w


def _with_cpdis(w):
    w.cpdis1 = DistortionLookupTable(np.zeros((3, 3), np.float32), (1, 1), (1, 1), (1, 1))
    return w


def _with_det2im(w):
    w.det2im2 = DistortionLookupTable(np.zeros((3, 3), np.float32), (1, 1), (1, 1), (1, 1))
    return w


@pytest.mark.parametrize(
    ("add", "name"), [(_with_sip, "sip"), (_with_cpdis, "cpdis1"), (_with_det2im, "det2im2")]
)
def test_wcs_with_distortion_rejected(add, name):
    x_offset, y_offset = make_maps()
    with pytest.raises(ValueError, match=rf"already has astropy-level distortion \({name}\)"):
        offsets_to_wcs(x_offset, y_offset, add(tan_wcs()))


def test_wcs_pixel_shape_mismatch():
    x_offset, y_offset = make_maps()
    w = tan_wcs()
    w.array_shape = (SHAPE[1], SHAPE[0])
    with pytest.raises(ValueError, match=r"does not match the map shape \(40, 57\)"):
        offsets_to_wcs(x_offset, y_offset, w)


# --- performance --------------------------------------------------------


def test_large_map_speed_and_memory():
    shape = (1000, 1500)
    x_offset, y_offset = make_maps(shape=shape, seed=7)
    frame_bytes = x_offset.nbytes
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        w = offsets_to_wcs(x_offset, y_offset, default_wcs(shape))
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    # The two float32 tables are the only full-frame allocations.
    assert peak < 2.25 * frame_bytes
    rows = np.array([0, 1, 499, 998, 999])
    cols = np.array([0, 750, 3, 1498, 1499])
    fx, fy = w.p4_pix2foc(cols.astype(float), rows.astype(float), 0)
    np.testing.assert_allclose(fx, cols - x_offset[rows, cols], rtol=0, atol=1e-9)
    np.testing.assert_allclose(fy, rows - y_offset[rows, cols], rtol=0, atol=1e-9)
