"""Split an output grid into tiles and evaluate them in parallel through joblib.

Tiles are independent and the kernel gives every pixel the same value in any
tile, so the layout only decides speed and memory, never the result.
"""

import numpy as np
from joblib import Parallel, delayed

from ._field import field_grid
from ._validate import positive_pair

__all__ = ["resolve_block_size", "iter_tiles", "evaluate_grid"]

# "auto" tiles: whole rows of at most this many pixels, so that a 12-Mpix frame
# gives a few dozen tiles (enough to balance two to a few dozen workers) and a
# tile's two float32 results stay around a megabyte.
_AUTO_TILE_PIXELS = 256 * 1024


def resolve_block_size(shape, block_size):
    """Return the tile shape ``(ny, nx)`` for an output of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Output shape ``(ny, nx)``.
    block_size : ``"auto"`` or tuple of int
        ``"auto"``, or the tile shape ``(ny, nx)`` in output pixels. Tiles are
        clipped at the edges of the output, so any positive size is accepted.

    Returns
    -------
    tuple of int
        The tile shape.

    Raises
    ------
    ValueError
        If ``block_size`` is neither ``"auto"`` nor two positive integers.
    """
    ny, nx = shape
    if isinstance(block_size, str):
        if block_size != "auto":
            raise ValueError(
                f"block_size must be 'auto' or two positive integers (ny, nx), got {block_size!r}"
            )
        rows = max(1, min(ny, _AUTO_TILE_PIXELS // nx))
        return rows, nx
    return positive_pair(block_size, "block_size", alternative="'auto' or ")


def iter_tiles(shape, tile_shape):
    """Yield ``(y0, y1, x0, x1)`` of the tiles covering ``shape``, row by row."""
    ny, nx = shape
    by, bx = tile_shape
    for y0 in range(0, ny, by):
        for x0 in range(0, nx, bx):
            yield y0, min(y0 + by, ny), x0, min(x0 + bx, nx)


def _evaluate_tile(stars, power, y0, y1, x0, x1):
    # Returns its arrays instead of writing into shared output, so that the
    # tile runs unchanged on process-based and distributed joblib backends.
    out_u = np.empty((y1 - y0, x1 - x0), dtype=np.float32)
    out_v = np.empty_like(out_u)
    field_grid(*stars, power, x0, y0, out_u, out_v)
    return y0, x0, out_u, out_v


def evaluate_grid(stars, power, shape, *, n_jobs=None, block_size="auto"):
    """Evaluate the field at every pixel centre of ``shape``.

    Parameters
    ----------
    stars : tuple of `~numpy.ndarray`
        Contiguous float64 ``(x, y, x_offset, y_offset)``, one entry per star.
    power : float
        Inverse-distance power.
    shape : tuple of int
        Output shape ``(ny, nx)``.
    n_jobs : int or `None`, optional
        As in `joblib.Parallel`.
    block_size : ``"auto"`` or tuple of int, optional
        Tile shape; see `resolve_block_size`.

    Returns
    -------
    x_map, y_map : `~numpy.ndarray`
        float32 arrays of ``shape``.
    """
    tile_shape = resolve_block_size(shape, block_size)
    x_map = np.empty(shape, dtype=np.float32)
    y_map = np.empty(shape, dtype=np.float32)
    # Threads by default: the kernel releases the GIL, so threads share the
    # star arrays without copies. A backend set by the caller (loky, dask)
    # takes precedence over this preference.
    parallel = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator_unordered")
    tasks = (delayed(_evaluate_tile)(stars, power, *tile) for tile in iter_tiles(shape, tile_shape))
    for y0, x0, out_u, out_v in parallel(tasks):
        ty, tx = out_u.shape
        x_map[y0 : y0 + ty, x0 : x0 + tx] = out_u
        y_map[y0 : y0 + ty, x0 : x0 + tx] = out_v
    return x_map, y_map
