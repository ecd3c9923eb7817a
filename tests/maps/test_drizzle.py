"""Our pixmap through real drizzle: stars land where the reference has them."""

import numpy as np
import pytest
from drizzle.resample import Drizzle
from photutils.centroids import centroid_com, centroid_sources

from astro_offsets import OffsetModel
from astro_offsets.datasets import render_stars

SHAPE = (160, 200)


@pytest.fixture(scope="module")
def reference_stars():
    rng = np.random.default_rng(11)
    n = 40
    x = rng.uniform(15, SHAPE[1] - 15, n)
    y = rng.uniform(15, SHAPE[0] - 15, n)
    flux = rng.uniform(2e3, 2e4, n)
    return x, y, flux


def drizzle_onto_reference(frame, pixmap, kernel="square"):
    driz = Drizzle(kernel=kernel, out_shape=SHAPE)
    driz.add_image(frame, exptime=1.0, pixmap=pixmap, pixfrac=1.0)
    return driz.out_img, driz.out_wht


@pytest.mark.parametrize("shift", [(0.37, -0.62), (-3.25, 1.8)])
def test_shifted_field_lands_on_reference(reference_stars, shift):
    x, y, flux = reference_stars
    reference = render_stars(SHAPE, x, y, flux)
    # Offsets are position in this frame minus position in the reference.
    frame = render_stars(SHAPE, x + shift[0], y + shift[1], flux)
    model = OffsetModel(
        x + shift[0], y + shift[1], np.full(len(x), shift[0]), np.full(len(x), shift[1])
    )
    image, _weight = drizzle_onto_reference(frame, model.to_map(SHAPE).pixmap())

    # Isolated stars: a neighbour in the centroid box would move both
    # centroids by different amounts, as drizzle smooths it differently.
    separation = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(separation, np.inf)
    inside = separation.min(axis=1) > 12
    assert inside.sum() >= 15
    ref_x, ref_y = centroid_sources(
        reference, x[inside], y[inside], box_size=9, centroid_func=centroid_com
    )
    out_x, out_y = centroid_sources(
        image, x[inside], y[inside], box_size=9, centroid_func=centroid_com
    )
    error = np.hypot(out_x - ref_x, out_y - ref_y)
    assert np.median(error) < 0.01
    assert error.max() < 0.02


def test_flux_is_conserved(reference_stars):
    x, y, flux = reference_stars
    shift = (1.3, 0.45)
    frame = render_stars(SHAPE, x + shift[0], y + shift[1], flux)
    model = OffsetModel(
        x + shift[0], y + shift[1], np.full(len(x), shift[0]), np.full(len(x), shift[1])
    )
    image, weight = drizzle_onto_reference(frame, model.to_map(SHAPE).pixmap())
    # Pixels of the reference grid fully covered by the shifted frame.
    covered = weight > 0.999
    assert covered.sum() > 0.9 * covered.size
    reference = render_stars(SHAPE, x, y, flux)
    np.testing.assert_allclose(image[covered].sum(), reference[covered].sum(), rtol=2e-3)
