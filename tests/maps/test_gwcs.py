"""OffsetMap.to_gwcs: exact at the pixels, bilinear between, an inverse, through ASDF."""

import sys

import asdf
import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from test_architecture import loaded_after

from astro_offsets import OffsetMap
from astro_offsets.datasets import CameraMotion

SHAPE = (48, 71)  # (ny, nx), deliberately non-square


def motion_map(shape=SHAPE, **motion):
    """The map of a known camera motion at every pixel."""
    j, i = np.indices(shape, dtype=np.float64)
    return OffsetMap(*CameraMotion(shape, **motion).offset(i, j))


MOTIONS = {
    # A few degrees of field rotation about a pole off the frame, with lens
    # distortion: offsets of tens of pixels that change across the frame.
    "rotation": {"drift": (4.2, -2.7), "rotation_deg": 3.0, "pole": (-90.0, 520.0)},
    "shift": {"drift": (12.3, -7.8), "rotation_deg": 0.0, "barrel": 0.0},
    # A meridian flip: the frame half a turn round.
    "flip": {"drift": (1.5, 0.5), "rotation_deg": 180.4, "pole": (38.0, 21.0)},
}


def bilinear(pixmap, x, y):
    """The pixmap interpolated bilinearly at points inside the pixels' centres."""
    coords = np.vstack([y, x])
    return (
        map_coordinates(pixmap[..., 0], coords, order=1),
        map_coordinates(pixmap[..., 1], coords, order=1),
    )


def pixels(shape=SHAPE):
    j, i = np.indices(shape, dtype=np.float64)
    return i, j


@pytest.mark.parametrize("name", MOTIONS)
def test_forward_is_the_pixmap_at_every_pixel(name):
    omap = motion_map(**MOTIONS[name])
    w = omap.to_gwcs()
    x_ref, y_ref = w(*pixels())
    pixmap = omap.pixmap()
    np.testing.assert_allclose(x_ref, pixmap[..., 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y_ref, pixmap[..., 1], rtol=0, atol=1e-9)
    assert x_ref.dtype == np.float64


def test_forward_is_bilinear_between_pixels():
    omap = motion_map(**MOTIONS["rotation"])
    ny, nx = SHAPE
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, nx - 1, 2000), rng.uniform(0, ny - 1, 2000)
    x_ref, y_ref = omap.to_gwcs()(x, y)
    expected = bilinear(omap.pixmap(), x, y)
    np.testing.assert_allclose(x_ref, expected[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y_ref, expected[1], rtol=0, atol=1e-9)
    # By hand: the middle of four pixels is their mean.
    x_offset = np.zeros((2, 2))
    x_offset[1, 1] = 4.0
    w = OffsetMap(x_offset, np.zeros((2, 2))).to_gwcs()
    assert [float(v) for v in w(0.5, 0.5)] == [-0.5, 0.5]


def test_outside_the_pixels_edges_is_nan():
    omap = motion_map(**MOTIONS["rotation"])
    ny, nx = SHAPE
    w = omap.to_gwcs()
    x_ref, y_ref = w(np.array([-0.6, nx - 0.4, 3.0, -0.5, nx - 0.5]), np.array([3, 3, ny, -0.5, 0]))
    assert np.isnan(x_ref[:3]).all()
    assert np.isnan(y_ref[:3]).all()
    # Up to the edges the edge cells extend linearly.
    assert np.isfinite(x_ref[3:]).all()
    pixmap = omap.pixmap()
    edge = pixmap[0, 0] + 0.5 * (pixmap[0, 0] - pixmap[0, 1]) + 0.5 * (pixmap[0, 0] - pixmap[1, 0])
    np.testing.assert_allclose([x_ref[3], y_ref[3]], edge, atol=1e-6)
    assert w.pixel_shape == (nx, ny)
    assert w.input_frame.name == "frame"
    assert w.output_frame.name == "reference"
    assert [str(unit) for unit in w.output_frame.unit] == ["pix", "pix"]


@pytest.mark.parametrize("name", MOTIONS)
def test_the_inverse_round_trips(name):
    omap = motion_map(**MOTIONS[name])
    w = omap.to_gwcs()
    ny, nx = SHAPE
    rng = np.random.default_rng(2)
    # Every pixel, and points anywhere up to the pixels' edges.
    x = np.concatenate([pixels()[0].ravel(), rng.uniform(-0.5, nx - 0.5, 3000)])
    y = np.concatenate([pixels()[1].ravel(), rng.uniform(-0.5, ny - 0.5, 3000)])
    x_back, y_back = w.invert(*w(x, y))
    # Float32 rounding of offsets of up to ~70 px: below 1e-5 px.
    assert np.nanmax(np.hypot(x_back - x, y_back - y)) < 1e-5
    assert not np.isnan(x_back).any()
    # At reference pixels the inverse is solved: the forward map takes its
    # answer back there.
    (x_lo, y_lo), (x_hi, y_hi) = np.floor(w.footprint().min(axis=0)), w.footprint().max(axis=0)
    x_ref, y_ref = np.meshgrid(np.arange(x_lo, x_hi + 1), np.arange(y_lo, y_hi + 1))
    x_frame, y_frame = w.invert(x_ref, y_ref)
    # gwcs 1 sets each coordinate outside the bounding box to NaN on its own;
    # earlier ones return the tables' margin beyond the frame's edges.
    inside = (np.abs(x_frame - (nx - 1) / 2) <= nx / 2) & (np.abs(y_frame - (ny - 1) / 2) <= ny / 2)
    assert inside.sum() > 0.9 * nx * ny
    again = w(x_frame[inside], y_frame[inside])
    assert np.abs(again[0] - x_ref[inside]).max() < 1e-8
    assert np.abs(again[1] - y_ref[inside]).max() < 1e-8
    # Reference points that no frame pixel reaches: NaN.
    assert np.isnan(w.invert(-50.0, -50.0)).all()


def test_the_inverse_of_a_quadrant_field_is_within_its_steps():
    # A field through noisy stars has steps between pixels; the bilinear
    # inverse cannot follow them exactly (see OffsetMap.to_gwcs).
    from astro_offsets import OffsetModel
    from astro_offsets.datasets import star_offsets

    shape = (120, 160)
    motion = CameraMotion(shape, rotation_deg=3.0, pole=(-200.0, 1300.0))
    stars = star_offsets(np.random.default_rng(3), motion, shape, 60)[:4]
    omap = OffsetModel(*stars, method="quadrant").to_map(shape)
    w = omap.to_gwcs()
    x, y = pixels(shape)
    x_back, y_back = w.invert(*w(x, y))
    error = np.hypot(x_back - x, y_back - y)
    assert error.max() < omap.diagnostics()["max_jump"] / 2
    assert np.median(error) < 1e-3


def test_it_round_trips_through_asdf(tmp_path):
    omap = motion_map(**MOTIONS["rotation"])
    path = tmp_path / "frame.gwcs.asdf"
    asdf.AsdfFile({"wcs": omap.to_gwcs()}).write_to(path)
    with asdf.open(path, lazy_load=False, memmap=False) as af:
        w = af["wcs"]
        x, y = pixels()
        x_ref, y_ref = w(x, y)
        pixmap = omap.pixmap()
        np.testing.assert_allclose(x_ref, pixmap[..., 0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(y_ref, pixmap[..., 1], rtol=0, atol=1e-6)
        x_back, y_back = w.invert(x_ref, y_ref)
        assert np.abs(x_back - x).max() < 1e-5
        assert np.abs(y_back - y).max() < 1e-5
        assert w.pixel_shape == (SHAPE[1], SHAPE[0])
        assert np.isnan(w(-1.0, 0.0)).all()
        assert (w.input_frame.name, w.output_frame.name) == ("frame", "reference")


def test_nan_in_the_map_spreads_to_its_cells_only():
    omap = motion_map(**MOTIONS["rotation"])
    omap.x_offset[20, 30] = omap.y_offset[20, 30] = np.nan
    w = omap.to_gwcs()
    x_ref, y_ref = w(*pixels())
    pixmap = omap.pixmap()
    # The point (x, y) is in the cell of pixels floor(x), floor(x) + 1 (and
    # the same in y): the NaN pixel's cells hold its left and lower
    # neighbours.
    nan = np.zeros(SHAPE, bool)
    nan[19:21, 29:31] = True
    np.testing.assert_array_equal(np.isnan(x_ref), nan)
    np.testing.assert_array_equal(np.isnan(y_ref), nan)
    np.testing.assert_allclose(x_ref[~nan], pixmap[..., 0][~nan], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y_ref[~nan], pixmap[..., 1][~nan], rtol=0, atol=1e-9)
    # The inverse is NaN there and works elsewhere.
    x_back, _ = w.invert(x_ref, y_ref)
    assert np.isnan(x_back[nan]).all()
    x, y = pixels()
    far = np.hypot(x - 30, y - 20) > 3
    assert np.abs(x_back[far] - x[far]).max() < 1e-5


def test_the_wcs_keeps_its_own_copy_of_the_map():
    omap = motion_map(**MOTIONS["shift"])
    w = omap.to_gwcs()
    before = w(5.0, 6.0)
    omap.x_offset[:] = 0.0
    assert w(5.0, 6.0) == before


@pytest.mark.parametrize(
    ("x_offset", "match"),
    [
        (np.zeros((1, 5)), "at least 2 x 2 pixels"),
        (np.full((3, 4), np.nan), "all NaN"),
    ],
)
def test_maps_it_cannot_carry(x_offset, match):
    with pytest.raises(ValueError, match=match):
        OffsetMap(x_offset, np.zeros(x_offset.shape)).to_gwcs()


def test_without_gwcs_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gwcs", None)  # as if it were not installed
    omap = OffsetMap(np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(
        ImportError, match=r"^to_gwcs needs gwcs: pip install 'astro_offsets\[gwcs\]'$"
    ):
        omap.to_gwcs()


def test_the_package_does_not_import_gwcs(tmp_path):
    # gwcs and asdf are an optional extra: imported by to_gwcs alone.
    assert loaded_after("astro_offsets", ("gwcs", "asdf"), tmp_path) == "[]"
