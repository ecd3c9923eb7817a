"""Cosmetic defects of frames: hot pixels."""

import numpy as np
from astropy.stats import sigma_clipped_stats
from scipy.ndimage import maximum_filter, median_filter

__all__ = ["hot_pixels"]


def hot_pixels(data, colors=None, *, sigma=8.0):
    """Return a mask of hot pixels: isolated spikes far above their neighbours.

    A pixel is hot when it stands more than ``sigma`` times the noise above
    the median of its eight nearest neighbours of the same colour filter
    (every other pixel in a Bayer mosaic), and more than four times higher
    above the background than the brightest of them and than the brightest
    of its eight adjacent pixels of any colour. A star is never so isolated:
    its light reaches the adjacent pixels, however sharp it is. Two hot
    pixels side by side (or two of one colour next to each other) are not
    isolated either, and are not found.

    Parameters
    ----------
    data : array-like
        A frame ``(ny, nx)``: an image, or a raw Bayer mosaic.
    colors : array-like or `None`, optional
        rawpy's ``raw_colors_visible`` for a raw frame.
    sigma : float, optional
        Detection threshold in units of the background noise. The default
        is 8.

    Returns
    -------
    `~numpy.ndarray`
        bool mask, `True` on hot pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import hot_pixels
    >>> frame = np.random.default_rng(0).normal(100, 3, (40, 40))
    >>> frame[10, 12] = 900
    >>> [tuple(map(int, p)) for p in np.argwhere(hot_pixels(frame))]
    [(10, 12)]
    """
    data = np.asarray(data, dtype=np.float32)
    # Height above the background of each pixel's own colour channel.
    if colors is None:
        above = data - sigma_clipped_stats(data[::3, ::3], sigma=3.0)[1]
        step = 1
    else:
        colors = np.asarray(colors)
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
