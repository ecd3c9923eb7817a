"""Hot pixels: found, and never confused with stars, however sharp."""

import numpy as np
import pytest

from astro_offsets.datasets import observe, render_stars, star_field
from astro_offsets.frames import hot_pixels

SHAPE = (200, 260)


@pytest.mark.parametrize("sigma_psf", [0.7, 1.3, 2.5])
@pytest.mark.parametrize("bayer", [False, True])
def test_hot_pixels_found_and_stars_spared(sigma_psf, bayer):
    rng = np.random.default_rng(3)
    x, y, flux = star_field(rng, 150, SHAPE, margin=0, faintest=2000.0)
    image = observe(rng, SHAPE, x, y, flux, sigma=sigma_psf)
    colors = None
    if bayer:
        colors = np.zeros(SHAPE, np.uint8)
        colors[0::2, 1::2] = 1
        colors[1::2, 0::2] = 3
        colors[1::2, 1::2] = 2
        image *= np.array([0.6, 1.0, 0.8, 1.0])[colors]  # the filters' gains differ
    hot = (rng.integers(2, SHAPE[0] - 2, 60), rng.integers(2, SHAPE[1] - 2, 60))
    image[hot] += rng.uniform(1500, 8000, 60)
    mask = hot_pixels(image, colors)
    truth = np.zeros(SHAPE, bool)
    truth[hot] = True
    # Hot pixels away from the stars' light are all found (on a star's halo
    # a pixel is not isolated, and is left alone).
    starlight = render_stars(SHAPE, x, y, flux, sigma_psf)
    # (Two hot pixels within two pixels of each other are not isolated
    # either; the rare such pair is left out of the count.)
    crowded = np.zeros(SHAPE, int)
    for j, i in zip(*hot, strict=True):
        crowded[max(j - 2, 0) : j + 3, max(i - 2, 0) : i + 3] += 1
    dark = truth & (starlight < 20) & (crowded == 1)
    assert dark.sum() > 40
    assert mask[dark].all()
    # No star pixel is ever taken for a hot one.
    assert not np.any(mask & ~truth)
