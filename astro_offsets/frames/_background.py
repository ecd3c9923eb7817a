"""The sky level of a frame, per colour channel."""

import numpy as np
from astropy.stats import sigma_clipped_stats

from ._cfa import _CHANNELS, CFA_CHANNEL

__all__ = ["sky_levels"]

# Pixels sampled per channel: enough for a median good to a small fraction
# of the noise, few enough to cost milliseconds on a 42-Mpix frame.
_SAMPLES = 100_000


def sky_levels(data, colors=None):
    """Return the sky level of a frame: the sigma-clipped median of its pixels, per channel.

    Stars and other sources are clipped (3 sigma, median-centred, until no
    more pixels go); non-finite pixels are left out. A large frame is
    sampled on a regular grid.

    Parameters
    ----------
    data : array-like
        The frame, ``(ny, nx)``, or a colour cube ``(3, ny, nx)``.
    colors : array-like or `None`, optional
        rawpy's ``raw_colors_visible`` of a raw frame: the levels are then
        per channel of a colour stack (red, green, blue); `None` for a mono
        frame.

    Returns
    -------
    `~numpy.ndarray`
        One level per channel: one for a mono frame, three for a colour one (NaN
        for a channel without any finite pixel).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import sky_levels
    >>> rng = np.random.default_rng(0)
    >>> frame = rng.normal(100.0, 5.0, (200, 300))
    >>> frame[50:53, 60:63] = 5000.0  # a star
    >>> [round(float(level)) for level in sky_levels(frame)]
    [100]
    """
    data = np.asarray(data)
    if data.ndim == 3:  # a colour cube: one level per plane
        return np.concatenate([sky_levels(plane) for plane in data])
    count = 1 if colors is None else _CHANNELS
    # A regular grid of rows and columns, the same stride along both axes;
    # odd, so that a 2 x 2 mosaic's colours are all sampled.
    stride = max(1, int(np.sqrt(data.size / (count * _SAMPLES))))
    stride += stride % 2 == 0 and stride > 1
    sample = data[::stride, ::stride]
    channels = None if colors is None else CFA_CHANNEL[np.asarray(colors)[::stride, ::stride]]
    levels = np.full(count, np.nan)
    for channel in range(count):
        values = sample if channels is None else sample[channels == channel]
        values = values[np.isfinite(values)]
        if values.size:
            levels[channel] = sigma_clipped_stats(
                values, sigma=3.0, maxiters=None, cenfunc="median", stdfunc="mad_std"
            )[1]
    return levels
