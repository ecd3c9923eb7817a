"""Folds of a pixmap: where neighbouring pixels would land out of order in drizzle's output.

Drizzle maps each input pixel through the pixmap and needs every mapped
pixel to keep its shape's orientation: its C code orients a polygon from two
vertices and the centroid, which holds for convex polygons only, and a
folded pixmap (one whose Jacobian determinant is <= 0 somewhere) gives
inverted polygons, infinite edge slopes and a crash. The discrete criterion
checked here: each quadrilateral of four neighbouring pixel centres, mapped
by the pixmap ``(x - x_offset, y - y_offset)``, is convex with positive
orientation, as it is for the identity. Its four corners' cross products
are the finite-difference Jacobian determinants of the cell, one per pair
of a horizontal edge (top, bottom) and a vertical edge (left, right); all
four must be > 0.
"""

from typing import NamedTuple

import numpy as np

__all__ = ["Folds", "find_folds"]

_ROWS = 64  # rows per block: temporaries of a megabyte or two, in the cache
# A block whose bound on the determinants exceeds this (the bound is computed
# from float32 steps, rounded) cannot fold.
_MARGIN = 1e-3


class Folds(NamedTuple):
    """Where a map folds: the cells of four pixel centres whose mapped quadrilateral is not convex.

    Examples
    --------
    >>> from astro_offsets.maps import Folds
    >>> print(Folds(3, (10, 12), (0, 1), -0.25))
    3 pixels at x 10-12, y 0-1 (smallest Jacobian determinant -0.25)
    """

    n_pixels: int
    """Folded cells, each named by its first pixel ``[j, i]``."""
    x_range: tuple
    """The least and greatest ``x`` of the folded cells' first pixels."""
    y_range: tuple
    """The least and greatest ``y`` of the folded cells' first pixels."""
    worst: float
    """The smallest finite-difference Jacobian determinant (1 for the identity)."""

    def __str__(self):
        return (
            f"{self.n_pixels} pixel{'s' if self.n_pixels != 1 else ''} at "
            f"x {self.x_range[0]}-{self.x_range[1]}, y {self.y_range[0]}-{self.y_range[1]} "
            f"(smallest Jacobian determinant {self.worst:.3g})"
        )


def _range(values):
    """Return the least and greatest of an array (NaN if it holds any)."""
    return float(values.min()), float(values.max())


def _product_range(a, b):
    """Return the least and greatest products of values in the intervals ``a`` and ``b``."""
    products = [p * q for p in a for q in b]
    return min(products), max(products)


def _lower_bound(x_block, y_block, step):
    """Return a lower bound of the block's corner determinants, from the ranges of its steps.

    Each edge's components lie within the least and greatest steps of the
    offsets along its axis, so each determinant ``hx vy - hy vx`` is at least
    the least product ``hx vy`` minus the greatest ``hy vx`` over those
    intervals. Tight where the map is smooth, whatever its rotation (a
    meridian flip turns every edge the same way): such blocks need no more.
    NaN if the block holds NaN.
    """
    lo, hi = _range(np.diff(x_block, axis=1))
    hx = (step - hi, step - lo)
    lo, hi = _range(np.diff(y_block, axis=1))
    hy = (-hi, -lo)
    lo, hi = _range(np.diff(x_block, axis=0))
    vx = (-hi, -lo)
    lo, hi = _range(np.diff(y_block, axis=0))
    vy = (step - hi, step - lo)
    return _product_range(hx, vy)[0] - _product_range(hy, vx)[1]


def _cell_determinants(x_block, y_block, step):
    """Return the smallest corner determinant of each cell, float64, ``(rows - 1, nx - 1)``."""
    xo = x_block.astype(np.float64)
    yo = y_block.astype(np.float64)
    # Horizontal edges (rows, nx - 1) and vertical edges (rows - 1, nx) of the mapped grid.
    hx = step - np.diff(xo, axis=1)
    hy = -np.diff(yo, axis=1)
    vx = -np.diff(xo, axis=0)
    vy = step - np.diff(yo, axis=0)
    smallest = None
    for h in (slice(None, -1), slice(1, None)):  # top, bottom edge of each cell
        for v in (slice(None, -1), slice(1, None)):  # left, right edge
            cross = hx[h] * vy[:, v] - hy[h] * vx[:, v]
            smallest = cross if smallest is None else np.fmin(smallest, cross)
    return smallest


def find_folds(x_offset, y_offset, *, step=1.0):
    """Return where the pixmap of two offset maps folds, or `None` where it never does.

    Parameters
    ----------
    x_offset, y_offset : `~numpy.ndarray`
        The offsets, 2-D, of one shape; NaN pixels (which drizzle skips)
        are left out.
    step : float, optional
        The spacing of the maps' pixels in frame pixels: 2 for a Bayer
        layer of every other pixel. The default is 1.

    Returns
    -------
    `Folds` or `None`

    Notes
    -----
    Fast where the map is smooth, whatever its rotation: a block of rows
    whose ranges of steps between neighbours bound its determinants above 0
    cannot fold, and only the other blocks have their determinants computed
    one by one. Row
    blocks keep the temporary arrays to a few megabytes.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import find_folds
    >>> x = np.zeros((4, 5), np.float32)
    >>> find_folds(x, x) is None
    True
    >>> x[:, 3:] = 1.5  # columns 3 and 4 land left of column 2
    >>> print(find_folds(x, np.zeros((4, 5), np.float32)))
    3 pixels at x 2-2, y 0-2 (smallest Jacobian determinant -0.5)
    """
    ny, nx = x_offset.shape
    if ny < 2 or nx < 2:
        return None
    count, worst = 0, np.inf
    x_low = y_low = np.inf
    x_high = y_high = -np.inf
    for start in range(0, ny - 1, _ROWS):
        stop = min(start + _ROWS + 1, ny)  # one row of overlap: the cells across blocks
        x_block, y_block = x_offset[start:stop], y_offset[start:stop]
        if _lower_bound(x_block, y_block, step) > _MARGIN * step * step:
            continue
        determinants = _cell_determinants(x_block, y_block, step)
        folded = determinants <= 0  # NaN: a cell drizzle skips
        if not folded.any():
            continue
        rows, columns = np.nonzero(folded)
        count += rows.size
        worst = min(worst, float(determinants[rows, columns].min()))
        x_low, x_high = min(x_low, columns.min()), max(x_high, columns.max())
        y_low, y_high = min(y_low, start + rows.min()), max(y_high, start + rows.max())
    if not count:
        return None
    return Folds(count, (int(x_low), int(x_high)), (int(y_low), int(y_high)), worst / step**2)
