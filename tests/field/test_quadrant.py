"""The compiled field against the literal definition, and independence of the tiling."""

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_field import reference_field

from astro_offsets import OffsetModel


def grid_reference(model, shape):
    ny, nx = shape
    j, i = np.mgrid[0:ny, 0:nx]
    dx, dy = reference_field(
        i.ravel(), j.ravel(), model.x, model.y, model.x_offset, model.y_offset, model.power
    )
    return (dx.reshape(shape).astype(np.float32), dy.reshape(shape).astype(np.float32))


def assert_map_equals_reference(model, shape, **kwargs):
    omap = model.to_map(shape, **kwargs)
    ref_x, ref_y = grid_reference(model, shape)
    np.testing.assert_array_equal(omap.x_offset, ref_x)
    np.testing.assert_array_equal(omap.y_offset, ref_y)
    return omap


# Coordinates that stress the half-open quadrants: whole pixels (stars on a
# pixel's row, column or centre), half pixels, and arbitrary values, inside
# and outside a frame of up to 24 x 24 pixels. Arbitrary to 2**-20 px: a star
# 1e-150 px from a pixel's centre overflows its inverse-distance weight there
# (the map then refuses its infinite values), and centroids are never so fine.
coordinates = st.one_of(
    st.integers(-6, 30).map(float),
    st.integers(-12, 60).map(lambda k: k / 2),
    st.floats(-40, 60, allow_nan=False).map(lambda v: round(v * 2**20) / 2**20),
)
offsets = st.one_of(
    st.just(0.0),
    st.floats(-5, 5, allow_nan=False),
    st.floats(-1e6, 1e6, allow_nan=False),
)


@st.composite
def star_tables(draw, max_stars=14):
    n = draw(st.integers(1, max_stars))
    x = [draw(coordinates) for _ in range(n)]
    y = [draw(coordinates) for _ in range(n)]
    # Coincident stars: repeat some positions with other offsets.
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.integers(0, len(x) - 1))
        x.append(x[k])
        y.append(y[k])
    n = len(x)
    u = [draw(offsets) for _ in range(n)]
    v = [draw(offsets) for _ in range(n)]
    if draw(st.booleans()):  # all stars in one corner
        x = [abs(a) % 4 for a in x]
        y = [abs(b) % 4 for b in y]
    return np.array(x), np.array(y), np.array(u), np.array(v)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stars=star_tables(),
    shape=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    block=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    power=st.sampled_from([1.0, 1.0, 2.0, 0.5]),
)
def test_map_equals_reference_on_generated_tables(stars, shape, block, power):
    model = OffsetModel(*stars, power=power, trend=None)
    if power == 1.0:
        assert_map_equals_reference(model, shape, block_size=block)
    else:
        # Other powers go through pow(), whose last bit may differ between
        # the C library and numpy's vectorised implementation.
        omap = model.to_map(shape, block_size=block)
        ref_x, ref_y = grid_reference(model, shape)
        np.testing.assert_allclose(omap.x_offset, ref_x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(omap.y_offset, ref_y, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    stars=star_tables(),
    points=st.lists(st.tuples(coordinates, coordinates), min_size=1, max_size=20),
)
def test_points_equal_reference(stars, points):
    model = OffsetModel(*stars, trend=None)
    px, py = np.array(points).T
    dx, dy = model(px, py)
    ref_dx, ref_dy = reference_field(px, py, *stars)
    np.testing.assert_array_equal(dx, ref_dx)
    np.testing.assert_array_equal(dy, ref_dy)


def test_points_at_stars_give_their_offsets():
    x = np.array([3.25, 7.0, 7.0, 1.0])
    y = np.array([4.5, 2.0, 2.0, 9.0])
    u = np.array([1.0, 2.0, 4.0, 0.0])
    v = np.array([-1.0, 0.5, 1.5, 0.0])
    dx, dy = OffsetModel(x, y, u, v)(x, y)
    # Coincident stars give their mean; a star with zero offset gives zero,
    # not a hole.
    np.testing.assert_array_equal(dx, [1.0, 3.0, 3.0, 0.0])
    np.testing.assert_array_equal(dy, [-1.0, 1.0, 1.0, 0.0])


def test_single_star_gives_its_offset_everywhere():
    omap = OffsetModel([10.3], [-4.0], [2.5], [-0.75]).to_map((7, 9))
    assert np.all(omap.x_offset == np.float32(2.5))
    assert np.all(omap.y_offset == np.float32(-0.75))


def test_quadrants_are_half_open():
    # A pixel at (5, 5) with one star on each axis direction: each falls in
    # exactly one quadrant, so all four take part with weight 1/d.
    x = np.array([7.0, 5.0, 3.0, 5.0])  # right, above, left, below
    y = np.array([5.0, 8.0, 5.0, 1.0])
    u = np.array([1.0, 2.0, 3.0, 4.0])
    dx, _ = OffsetModel(x, y, u, u, trend=None)(5.0, 5.0)
    w = 1 / np.array([2.0, 3.0, 2.0, 4.0])
    # right: dx<0, dy=0 -> Q3; above: dx=0, dy<0 -> Q4; left: dx>0, dy=0 -> Q1;
    # below: dx=0, dy>0 -> Q2. Sum in Q1..Q4 order: left, below, right, above.
    order = [2, 3, 0, 1]
    expected = sum(w[k] * u[k] for k in order) / sum(w[k] for k in order)
    assert dx == expected


def test_equal_distance_lowest_row_wins():
    # Two stars in Q1 of the point at equal distance; row 1 wins over row 2
    # only because it comes first.
    x = np.array([10.0, 3.0, 4.0])
    y = np.array([10.0, 4.0, 3.0])
    u = np.array([0.0, 1.0, 7.0])
    dx, _ = OffsetModel(x, y, u, u, trend=None)(5.0, 5.0)
    d_far = np.sqrt(50.0)
    w = [1 / np.sqrt(5.0), 1 / d_far]
    assert dx == (w[0] * 1.0 + w[1] * 0.0) / (w[0] + w[1])
    dx_swapped, _ = OffsetModel(x[[0, 2, 1]], y[[0, 2, 1]], u[[0, 2, 1]], u[[0, 2, 1]], trend=None)(
        5.0, 5.0
    )
    assert dx_swapped == (w[0] * 7.0 + w[1] * 0.0) / (w[0] + w[1])


def test_first_row_counts_like_any_other():
    # The original notebook dropped row 0 from the numerator but not the denominator.
    model = OffsetModel([0.0, 100.0], [0.0, 100.0], [50.0, 50.0], [50.0, 50.0])
    omap = model.to_map((101, 101))
    assert np.all(omap.x_offset == 50.0)


@pytest.fixture(scope="module")
def random_model():
    rng = np.random.default_rng(20261124)
    n = 300
    return OffsetModel(
        rng.uniform(-20, 420, n),
        rng.uniform(-20, 320, n),
        rng.normal(0, 30, n),
        rng.normal(0, 30, n),
        trend=None,
    )


@pytest.mark.parametrize("n_jobs", [1, 2, -1])
@pytest.mark.parametrize("block_size", ["auto", (1, 1000), (17, 23), (300, 1), (64, 64)])
def test_result_independent_of_n_jobs_and_block_size(random_model, n_jobs, block_size):
    shape = (300, 400)
    serial = random_model.to_map(shape, n_jobs=1, block_size=(300, 400))
    other = random_model.to_map(shape, n_jobs=n_jobs, block_size=block_size)
    assert np.array_equal(serial.x_offset, other.x_offset)
    assert np.array_equal(serial.y_offset, other.y_offset)


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading", "sequential"])
def test_result_independent_of_joblib_backend(random_model, backend):
    shape = (120, 90)
    expected = random_model.to_map(shape)
    with joblib.parallel_config(backend=backend, n_jobs=2):
        got = random_model.to_map(shape, block_size=(31, 50))
    assert np.array_equal(expected.x_offset, got.x_offset)
    assert np.array_equal(expected.y_offset, got.y_offset)


def test_map_matches_model_at_pixel_centres(random_model):
    shape = (50, 70)
    omap = random_model.to_map(shape)
    j, i = np.mgrid[0 : shape[0], 0 : shape[1]]
    dx, dy = random_model(i, j)
    assert np.array_equal(omap.x_offset, dx.astype(np.float32))
    assert np.array_equal(omap.y_offset, dy.astype(np.float32))


@pytest.mark.slow
def test_full_frame_sampled_pixels_equal_reference():
    # A 12-Mpix DSLR frame (4256 x 2848) with 500 stars: sampled pixels, plus
    # the pixels around every star where quadrants change most, equal the
    # literal definition exactly.
    rng = np.random.default_rng(500)
    ny, nx, n = 2848, 4256, 500
    x = rng.uniform(0, nx, n)
    y = rng.uniform(0, ny, n)
    x[:50] = np.round(x[:50])  # stars on pixel rows, columns and centres
    y[:25] = np.round(y[:25])
    u = rng.normal(0, 20, n)
    v = rng.normal(0, 20, n)
    model = OffsetModel(x, y, u, v, trend=None)
    omap = model.to_map((ny, nx), n_jobs=-1)
    jj = rng.integers(0, ny, 2500)
    ii = rng.integers(0, nx, 2500)
    near_j = np.clip(np.round(y[:, None]) + np.arange(-1, 2)[None, :], 0, ny - 1)
    near_i = np.clip(np.round(x[:, None]) + np.arange(-1, 2)[None, :], 0, nx - 1)
    jj = np.concatenate([jj, near_j.ravel()]).astype(int)
    ii = np.concatenate([ii, near_i.ravel()]).astype(int)
    ref_x, ref_y = reference_field(ii, jj, x, y, u, v)
    np.testing.assert_array_equal(omap.x_offset[jj, ii], ref_x.astype(np.float32))
    np.testing.assert_array_equal(omap.y_offset[jj, ii], ref_y.astype(np.float32))


def test_non_finite_points_give_nan(random_model):
    dx, dy = random_model(np.array([1.0, np.nan, 3.0]), np.array([np.inf, 2.0, 3.0]))
    assert np.isnan(dx[:2]).all()
    assert np.isnan(dy[:2]).all()
    assert np.isfinite(dx[2])


def test_points_broadcast(random_model):
    dx, dy = random_model(np.arange(4.0)[:, None], np.arange(3.0)[None, :])
    assert dx.shape == dy.shape == (4, 3)
    assert dx.dtype == np.float64
    scalar_dx, _ = random_model(2.0, 1.0)
    assert scalar_dx.shape == ()
    assert scalar_dx == dx[2, 1]
