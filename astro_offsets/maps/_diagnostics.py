"""Diagnostics of offset maps: pixel-to-pixel jumps, residuals at the stars."""

from typing import NamedTuple

import numpy as np
from scipy.ndimage import map_coordinates

__all__ = ["StarOffsets", "jump_map", "largest_jump", "star_residuals", "star_rms"]

_ROWS = 256  # rows per block: no full-frame temporaries on large maps


class StarOffsets(NamedTuple):
    """The stars a map was made from, as the map records them.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import StarOffsets
    >>> stars = StarOffsets(np.array([3.0]), np.array([4.0]), np.array([0.5]),
    ...                     np.array([0.0]), np.array([False]))
    >>> len(stars.x)
    1
    """

    x: np.ndarray
    """Centroids in the frame (px)."""
    y: np.ndarray
    """Centroids in the frame (px)."""
    x_offset: np.ndarray
    """Offsets, this frame minus the reference (px)."""
    y_offset: np.ndarray
    """Offsets, this frame minus the reference (px)."""
    clipped: np.ndarray
    """Which stars the field left out (sigma-clipping)."""


def largest_jump(x_offset, y_offset):
    """Return the largest difference between neighbouring pixels of either map (px).

    The original notebook's author checked Laplacians for pixel-to-pixel jumps:
    a jump over 1 px moves neighbouring input pixels apart (or onto each
    other) in the drizzled output.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import largest_jump
    >>> x = np.zeros((4, 5), np.float32)
    >>> x[:, 3:] = 1.5
    >>> float(largest_jump(x, np.zeros((4, 5), np.float32)))
    1.5
    """
    largest = 0.0
    ny = x_offset.shape[0]
    for start in range(0, ny, _ROWS):
        stop = min(start + _ROWS + 1, ny)  # one row of overlap for the vertical steps
        for m in (x_offset, y_offset):
            block = m[start:stop]
            if block.shape[1] > 1:
                largest = max(largest, float(np.nanmax(np.abs(np.diff(block, axis=1)))))
            if block.shape[0] > 1:
                largest = max(largest, float(np.nanmax(np.abs(np.diff(block, axis=0)))))
    return largest


def jump_map(x_offset, y_offset, stride=1):
    """Return, per pixel, the largest step to its right or upper neighbour in either map.

    ``stride`` samples every ``stride``-th pixel (steps are still between
    neighbours), for plots of large maps.
    """
    ny, nx = x_offset.shape
    rows = np.arange(0, ny, stride)
    cols = np.arange(0, nx, stride)
    out = np.zeros((len(rows), len(cols)), np.float32)
    right = np.minimum(cols + 1, nx - 1)
    up = np.minimum(rows + 1, ny - 1)
    for m in (x_offset, y_offset):
        here = m[np.ix_(rows, cols)]
        np.maximum(out, np.abs(m[np.ix_(rows, right)] - here), out=out)
        np.maximum(out, np.abs(m[np.ix_(up, cols)] - here), out=out)
    return out


def star_residuals(x_offset, y_offset, x, y, x_star, y_star):
    """Return the map (bilinearly interpolated) minus the stars' offsets, at the stars.

    Stars outside the map are left out.

    Returns
    -------
    dx, dy : `~numpy.ndarray`
        Residuals in x and y, one per star inside the map.
    """
    ny, nx = x_offset.shape
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    coords = np.vstack([y[inside], x[inside]])
    dx = map_coordinates(x_offset, coords, order=1) - x_star[inside]
    dy = map_coordinates(y_offset, coords, order=1) - y_star[inside]
    return dx, dy


def star_rms(x_offset, y_offset, stars):
    """Return the RMS (px) over the stars of the map minus the stars' offsets, or `None`.

    ``stars`` is a `StarOffsets` (or any object with its attributes, such as
    an `~astro_offsets.OffsetModel`); the stars it left out by
    sigma-clipping are left out here too. `None` when no star lies inside
    the map.
    """
    kept = ~np.asarray(stars.clipped)
    dx, dy = star_residuals(
        x_offset,
        y_offset,
        stars.x[kept],
        stars.y[kept],
        stars.x_offset[kept],
        stars.y_offset[kept],
    )
    return float(np.sqrt(np.mean(dx * dx + dy * dy))) if len(dx) else None
