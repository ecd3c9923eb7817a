"""Diagnostics of offset maps: pixel-to-pixel jumps, residuals at the stars."""

from typing import NamedTuple

import numpy as np
from scipy.ndimage import map_coordinates

__all__ = [
    "StarOffsets",
    "affine_slopes",
    "jump_map",
    "largest_jump",
    "star_residuals",
    "star_rms",
]

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


def affine_slopes(x_offset, y_offset, samples=64):
    """Return the slopes of the affine motion that best fits each map (least squares).

    ``((dX/dx, dX/dy), (dY/dx, dY/dy))``, fitted on a grid of up to
    ``samples`` x ``samples`` pixels (NaN left out; ``(0, 0)`` for a map of
    fewer than 3 finite samples). A frame turned by 180 degrees, or flipped
    over the meridian, has slopes of 2: its offsets change by 2 px from one
    pixel to the next, yet its pixels land side by side. Given to
    `jump_map` and `largest_jump`, they leave the jumps beyond that motion.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import affine_slopes
    >>> y, x = np.mgrid[:20, :30].astype(float)
    >>> slopes = affine_slopes(2 * x - 29, 2 * y - 19)  # turned by 180 degrees
    >>> round(slopes[0][0], 6), round(slopes[1][1], 6)
    (2.0, 2.0)
    """
    ny, nx = x_offset.shape
    rows = np.unique(np.linspace(0, ny - 1, min(ny, samples)).round().astype(int))
    cols = np.unique(np.linspace(0, nx - 1, min(nx, samples)).round().astype(int))
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    design = np.column_stack([np.ones(xx.size), xx.ravel(), yy.ravel()])
    slopes = []
    for m in (x_offset, y_offset):
        values = np.asarray(m[np.ix_(rows, cols)], dtype=float).ravel()
        finite = np.isfinite(values)
        if finite.sum() < 3:
            slopes.append((0.0, 0.0))
            continue
        coefficients = np.linalg.lstsq(design[finite], values[finite], rcond=None)[0]
        slopes.append((float(coefficients[1]), float(coefficients[2])))
    return tuple(slopes)


def _steps(slopes):
    """Return the ``(right, up)`` steps of each map to take from its differences."""
    return ((0.0, 0.0), (0.0, 0.0)) if slopes is None else slopes


def largest_jump(x_offset, y_offset, *, slopes=None):
    """Return the largest difference between neighbouring pixels of either map (px).

    The original notebook's author checked Laplacians for pixel-to-pixel jumps:
    a jump over 1 px moves neighbouring input pixels apart (or onto each
    other) in the drizzled output. With ``slopes`` (`affine_slopes`), the
    differences are taken beyond the frame's affine motion.

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
        for m, (right, up) in zip((x_offset, y_offset), _steps(slopes), strict=True):
            block = m[start:stop]
            for axis, slope in ((1, right), (0, up)):
                if block.shape[axis] > 1:
                    largest = max(largest, _largest_step(block, axis, slope))
    return largest


def _largest_step(block, axis, slope):
    """Return the largest ``|step - slope|`` between neighbours of ``block`` along ``axis``."""
    step = np.diff(block, axis=axis)
    if slope:
        step = step - slope
    # The largest of either sign: no array of absolute values.
    return max(float(np.nanmax(step)), -float(np.nanmin(step)))


def jump_map(x_offset, y_offset, stride=1, *, slopes=None):
    """Return, per pixel, the largest step to its right or upper neighbour in either map.

    ``stride`` samples every ``stride``-th pixel (steps are still between
    neighbours), for plots of large maps. With ``slopes`` (`affine_slopes`),
    the steps beyond the frame's affine motion.
    """
    ny, nx = x_offset.shape
    rows = np.arange(0, ny, stride)
    cols = np.arange(0, nx, stride)
    out = np.zeros((len(rows), len(cols)), np.float32)
    right = np.minimum(cols + 1, nx - 1)
    up = np.minimum(rows + 1, ny - 1)
    for m, (to_right, to_up) in zip((x_offset, y_offset), _steps(slopes), strict=True):
        here = m[np.ix_(rows, cols)]
        # (At the last column and row a pixel is its own neighbour: no step.)
        step_right = (right > cols)[np.newaxis, :] * to_right
        step_up = (up > rows)[:, np.newaxis] * to_up
        np.maximum(out, np.abs(m[np.ix_(rows, right)] - here - step_right), out=out)
        np.maximum(out, np.abs(m[np.ix_(up, cols)] - here - step_up), out=out)
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
