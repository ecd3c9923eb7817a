"""Synthetic stars: elongated stars, as wind shake makes them."""

import numpy as np
import pytest
from scipy.special import erf

from astro_offsets.datasets import observe, render_stars


def moments(image):
    """Centroid, the axes' sigmas and the major axis' angle (degrees) of an image."""
    yy, xx = np.indices(image.shape)
    total = image.sum()
    cx, cy = (image * xx).sum() / total, (image * yy).sum() / total
    vxx = (image * (xx - cx) ** 2).sum() / total
    vyy = (image * (yy - cy) ** 2).sum() / total
    vxy = (image * (xx - cx) * (yy - cy)).sum() / total
    minor, major = np.sqrt(np.linalg.eigvalsh([[vxx, vxy], [vxy, vyy]]))
    return cx, cy, major, minor, np.degrees(0.5 * np.arctan2(2 * vxy, vxx - vyy))


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_elongated_stars(angle):
    image = render_stars((81, 81), [40.3], [39.7], [1000.0], 2.0, elongation=2.5, angle=angle)
    cx, cy, major, minor, direction = moments(image)
    assert image.sum() == pytest.approx(1000.0, rel=1e-12)
    assert (cx, cy) == pytest.approx((40.3, 39.7), abs=1e-9)
    # A pixel's width adds 1/12 to each variance.
    assert major == pytest.approx(np.sqrt(5.0**2 + 1 / 12), rel=1e-4)
    assert minor == pytest.approx(np.sqrt(2.0**2 + 1 / 12), rel=1e-4)
    assert (direction - angle + 90) % 180 - 90 == pytest.approx(0, abs=0.01)


def test_elongated_stars_cut_by_the_edge():
    image = render_stars((30, 40), [38.0, -30.0], [15.0, 15.0], [1000.0, 1000.0], elongation=3.0)
    # The first star's light left of the image's edge at x = 39.5, none of the second's.
    inside = 1000.0 * 0.5 * (1 + erf(1.5 / (np.sqrt(2) * 4.5)))
    assert image.sum() == pytest.approx(inside, rel=1e-9)


def test_round_stars_unchanged():
    rng = np.random.default_rng(0)
    x, y, flux = rng.uniform(0, 60, 20), rng.uniform(0, 50, 20), rng.uniform(1e3, 1e4, 20)
    round_stars = render_stars((50, 60), x, y, flux, 1.7)
    assert np.array_equal(render_stars((50, 60), x, y, flux, 1.7, elongation=1.0), round_stars)
    assert np.allclose(
        render_stars((50, 60), x, y, flux, 1.7, elongation=1 + 1e-9, angle=20.0),
        round_stars,
        atol=1e-6,
    )
    noisy = observe(np.random.default_rng(1), (50, 60), x, y, flux, elongation=2.0, angle=45)
    assert noisy.shape == (50, 60)


def test_elongation_must_be_positive():
    with pytest.raises(ValueError, match="elongation must be a positive number, got 0"):
        render_stars((10, 10), [5.0], [5.0], [1.0], elongation=0)
