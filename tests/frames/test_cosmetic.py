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


def filtered_hot_pixels(data, colors=None, sigma=8.0):
    """The definition with whole-frame scipy filters, as hot_pixels was first written."""
    from astropy.stats import sigma_clipped_stats
    from scipy.ndimage import maximum_filter, median_filter

    data = np.asarray(data, dtype=np.float32)
    if colors is None:
        above = data - sigma_clipped_stats(data[::3, ::3], sigma=3.0)[1]
        step = 1
    else:
        levels = np.zeros(4, np.float32)
        for c in np.unique(colors):
            levels[c] = sigma_clipped_stats(data[colors == c][::5], sigma=3.0)[1]
        above = data - levels[colors]
        step = 2
    size = 2 * step + 1
    same = np.zeros((size, size), bool)
    same[::step, ::step] = True
    same[step, step] = False
    adjacent = np.ones((3, 3), bool)
    adjacent[1, 1] = False
    median = median_filter(above, footprint=same, mode="nearest")
    noise = sigma_clipped_stats((above - median)[::3, ::3], sigma=3.0)[2]
    return (
        (above - median > sigma * noise)
        & (above > 4 * maximum_filter(above, footprint=same, mode="nearest"))
        & (above > 4 * maximum_filter(above, footprint=adjacent, mode="nearest"))
    )


@pytest.mark.parametrize("seed", range(6))
def test_same_pixels_as_whole_frame_filters(seed):
    # Odd and even sizes, a Bayer mosaic starting on either colour, hot
    # pixels on the edges and corners: the pixels found are those of the
    # definition computed with whole-frame filters.
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 160)), int(rng.integers(20, 160)))
    x, y, flux = star_field(rng, 30, shape, margin=0, faintest=2000.0)
    image = observe(rng, shape, x, y, flux, sigma=float(rng.uniform(0.6, 2.5)))
    hot = (rng.integers(0, shape[0], 25), rng.integers(0, shape[1], 25))
    image[hot] += rng.uniform(500, 8000, 25)
    # Faint ones too, about the threshold: the noise and medians decide.
    faint = (rng.integers(0, shape[0], 200), rng.integers(0, shape[1], 200))
    image[faint] += rng.uniform(0, 20, 200) * np.std(image[image < np.median(image)])
    image[0, 0] += 6000
    image[-1, 1::9] += 4000
    colors = None
    if seed % 2:
        colors = np.zeros(shape, np.uint8)
        colors[0::2, 1::2] = 1
        colors[1::2, 0::2] = 3
        colors[1::2, 1::2] = 2
        colors = np.roll(colors, seed // 2, axis=1)
    expected = filtered_hot_pixels(image, colors)
    assert expected.sum() > 10
    np.testing.assert_array_equal(hot_pixels(image, colors), expected)
