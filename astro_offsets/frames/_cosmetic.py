"""Cosmetic defects of frames: hot pixels."""

import math

import numpy as np
from astropy.stats import sigma_clipped_stats

__all__ = ["fill_hot_pixels", "hot_pixels"]

# The median of a pixel's eight same-colour neighbours, as scipy's
# median_filter takes it: the fifth smallest (rank 8 // 2).
_MEDIAN_RANK = 4
# The background and the noise are estimated on every third pixel (every
# fifth of a colour's), or more sparsely in large frames: on about this many.
_SAMPLES = 1 << 18
# Rows of the frame taken at a time: the arrays of a block stay in the cache.
_BLOCK_ROWS = 32


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
        A frame ``(ny, nx)``: an image, or a raw Bayer mosaic; or a
        colour cube ``(3, ny, nx)``, searched plane by plane.
    colors : array-like or `None`, optional
        rawpy's ``raw_colors_visible`` for a raw frame.
    sigma : float, optional
        Detection threshold in units of the background noise. The default
        is 8.

    Returns
    -------
    `~numpy.ndarray`
        bool mask of ``data``'s shape, `True` on hot pixels.

    Notes
    -----
    Neighbours beyond the frame's edges repeat the edge pixels. The
    background (of each colour) is the sigma-clipped median of every third
    pixel along each axis (every fifth pixel of a colour), and the noise the
    sigma-clipped standard deviation of those pixels' heights above the
    median of their neighbours; frames of more than about 2.4 million pixels
    (and mosaics of more than 5.2 million) are sampled more sparsely, on
    about 260 000 pixels. The frame is scanned a few rows at a time for the
    brightest neighbours; the medians, which cost more, are taken only at
    the few pixels four times brighter than those.

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
    if data.ndim == 3:  # a colour cube: plane by plane
        return np.stack([hot_pixels(plane, sigma=sigma) for plane in data])
    ny, nx = data.shape
    # The background of each pixel's own colour channel: one level for an
    # image (a float64 scalar, so heights are float64 as they always were),
    # one per colour index (float32) for a mosaic.
    if colors is None:
        levels, step = sigma_clipped_stats(data[_grid(data.shape)], sigma=3.0)[1], 1
    else:
        colors = np.asarray(colors)
        levels, step = _colour_levels(data, colors), 2

    def above(rows, cols):
        level = levels if colors is None else levels[colors[rows, cols]]
        return data[rows, cols] - level

    def padded_block(r0, r1):
        """Heights of rows r0 to r1 with ``step`` more on every side, edges repeated."""
        lo, hi = max(r0 - step, 0), min(r1 + step, ny)
        pad = ((step - (r0 - lo), step - (hi - r1)), (step, step))
        block = np.pad(data[lo:hi], pad, mode="edge")
        if colors is None:
            return block - levels
        return block - levels[np.pad(colors[lo:hi], pad, mode="edge")]

    # The pixels brighter than four times their brightest neighbours, of the
    # same colour and adjacent, a block of rows at a time.
    found = []
    for r0 in range(0, ny, _BLOCK_ROWS):
        block = padded_block(r0, min(r0 + _BLOCK_ROWS, ny))
        centre = block[step:-step, step:-step]
        isolated = centre > 4 * _ring_max(block, step, step)
        if step > 1:
            isolated &= centre > 4 * _ring_max(block, step, 1)
        j, i = np.nonzero(isolated)
        found.append((j + r0, i))
    rows, cols = (np.concatenate(axis) for axis in zip(*found, strict=True))

    def median_of_neighbours(rows, cols):
        """Return the median of the same-colour neighbours of pixels (rows, cols)."""
        ring = [
            above(np.clip(rows + dy, 0, ny - 1), np.clip(cols + dx, 0, nx - 1))
            for dy, dx in _ring(step)
        ]
        return np.partition(np.stack(ring, axis=-1), _MEDIAN_RANK, axis=-1)[..., _MEDIAN_RANK]

    grid_rows, grid_cols = (
        np.arange(n)[g] for n, g in zip(data.shape, _grid(data.shape), strict=True)
    )
    grid = np.ix_(grid_rows, grid_cols)
    noise = sigma_clipped_stats(above(*grid) - median_of_neighbours(*grid), sigma=3.0)[2]
    spike = above(rows, cols) - median_of_neighbours(rows, cols) > sigma * noise
    hot = np.zeros(data.shape, dtype=bool)
    hot[rows[spike], cols[spike]] = True
    return hot


def _grid(shape):
    """Return the slices of every third pixel, or sparser for a large frame."""
    stride = max(3, math.ceil(math.sqrt(shape[0] * shape[1] / _SAMPLES)))
    return slice(None, None, stride), slice(None, None, stride)


def _colour_levels(data, colors):
    """Return each colour index's sigma-clipped median (float32, by index 0 to 3)."""
    levels = np.zeros(4, np.float32)
    # Every fifth pixel of a colour; in a large mosaic, of every k-th pair
    # of rows only (a pair holds every colour of a Bayer mosaic).
    pairs = math.ceil(data.size / (5 * 4 * _SAMPLES))
    if pairs > 1:
        data = np.concatenate([data[0 :: 2 * pairs], data[1 :: 2 * pairs]])
        colors = np.concatenate([colors[0 :: 2 * pairs], colors[1 :: 2 * pairs]])
    for c in np.flatnonzero(np.bincount(colors.ravel(), minlength=4)):
        levels[c] = sigma_clipped_stats(data[colors == c][::5], sigma=3.0)[1]
    return levels


def _ring(distance):
    """Return the eight offsets ``(dy, dx)`` of the ring at ``distance``."""
    return [
        (dy, dx) for dy in (-distance, 0, distance) for dx in (-distance, 0, distance) if dy or dx
    ]


def _ring_max(padded, pad, distance):
    """Return, inside the ``pad`` margin, each pixel's greatest neighbour at ``distance``."""
    ny, nx = padded.shape[0] - 2 * pad, padded.shape[1] - 2 * pad
    # Each padded row's pixels at -distance and +distance, then with the centre.
    sides = np.maximum(
        padded[:, pad - distance : pad - distance + nx],
        padded[:, pad + distance : pad + distance + nx],
    )
    across = np.maximum(sides, padded[:, pad : pad + nx])
    ring = np.maximum(
        across[pad - distance : pad - distance + ny], across[pad + distance : pad + distance + ny]
    )
    return np.maximum(ring, sides[pad : pad + ny], out=ring)


def fill_hot_pixels(data, mask, colors=None):
    """Return ``data`` with the pixels of ``mask`` replaced by their neighbours' mean.

    Each masked pixel takes the mean of its four nearest neighbours of the
    same colour filter (along the row and the column; every other pixel in
    a Bayer mosaic) that are not masked, so that star finders see no spike
    there; a pixel with none keeps its value.

    Parameters
    ----------
    data : array-like
        The frame ``(ny, nx)``.
    mask : array-like
        bool, `True` on the pixels to replace (`hot_pixels`).
    colors : array-like or `None`, optional
        rawpy's ``raw_colors_visible`` for a raw frame.

    Returns
    -------
    `~numpy.ndarray`
        float32 copy of ``data``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import fill_hot_pixels
    >>> frame = np.full((5, 5), 10.0)
    >>> frame[2, 2] = 5000.0
    >>> float(fill_hot_pixels(frame, frame > 100)[2, 2])
    10.0
    """
    out = np.array(data, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    rows, columns = np.nonzero(mask)
    if not rows.size:
        return out
    step = 1 if colors is None else 2
    ny, nx = out.shape
    total = np.zeros(rows.size, np.float64)
    count = np.zeros(rows.size, np.int64)
    for dy, dx in ((0, step), (0, -step), (step, 0), (-step, 0)):
        r, c = rows + dy, columns + dx
        inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        r, c = np.where(inside, r, 0), np.where(inside, c, 0)
        usable = inside & ~mask[r, c] & np.isfinite(out[r, c])
        total += np.where(usable, out[r, c], 0.0)
        count += usable
    filled = count > 0
    out[rows[filled], columns[filled]] = total[filled] / count[filled]
    return out
