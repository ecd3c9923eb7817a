"""Split an output grid into tiles and evaluate them in parallel through joblib.

Tiles are independent and the kernel gives every pixel the same value in any
tile, so the layout only decides speed and memory, never the result.
"""

import numpy as np
from joblib import Parallel, delayed
from joblib.parallel import SequentialBackend, get_active_backend

from .._utils.validation import positive_pair

__all__ = ["resolve_block_size", "iter_tiles", "evaluate_grid", "output_maps"]

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


def output_maps(shape, out=None):
    """Return the two float32 output maps: ``out`` checked, or new arrays.

    Raises
    ------
    ValueError
        If ``out`` is not two writeable C-contiguous float32 arrays of ``shape``.
    """
    if out is None:
        return np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
    try:
        x_out, y_out = out
    except (TypeError, ValueError):
        raise ValueError("out must be a pair of arrays (x_offset, y_offset)") from None
    for name, array in (("x_offset", x_out), ("y_offset", y_out)):
        if not isinstance(array, np.ndarray):
            raise ValueError(f"out {name} must be a numpy array, got {type(array).__name__}")
        if array.shape != tuple(shape) or array.dtype != np.float32:
            raise ValueError(
                f"out {name} must be float32 of shape {tuple(shape)}, "
                f"got {array.dtype} of shape {array.shape}"
            )
        if not (array.flags.c_contiguous and array.flags.writeable):
            raise ValueError(f"out {name} must be C-contiguous and writeable")
    if np.shares_memory(x_out, y_out):
        raise ValueError("out x_offset and y_offset must not share memory")
    return x_out, y_out


def _evaluate_tile(field, tile):
    y0, y1, x0, x1 = tile
    out_u = np.empty((y1 - y0, x1 - x0), dtype=np.float32)
    out_v = np.empty_like(out_u)
    field.fill(x0, y0, out_u, out_v)
    return tile, out_u, out_v


def evaluate_grid(field, shape, *, n_jobs=None, block_size="auto", out=None):
    """Evaluate a field at every pixel centre of ``shape``.

    Each tile is computed into arrays of its own, by any joblib backend
    (threads, processes, a dask cluster alike), and copied into the output
    as it arrives: no task needs to know where the output lives, and the
    copy costs a few per cent (a 12-Mpix quadrant map of 2000 stars on two
    cores: 0.199 s, against 0.196 s with the tiles written in place).

    Parameters
    ----------
    field : object
        Has ``fill(x0, y0, out_u, out_v)``, which writes the offsets of the
        tile whose first pixel is ``(x0, y0)`` into two float32 arrays, the
        same values for a pixel in any tile; picklable for process backends.
    shape : tuple of int
        Output shape ``(ny, nx)``.
    n_jobs : int or `None`, optional
        As in `joblib.Parallel`.
    block_size : ``"auto"`` or tuple of int, optional
        Tile shape; see `resolve_block_size`.
    out : tuple of `~numpy.ndarray` or `None`, optional
        Two float32 C-contiguous arrays of ``shape`` to write into (a memory
        map, say); new arrays when `None`.

    Returns
    -------
    x_map, y_map : `~numpy.ndarray`
        float32 arrays of ``shape`` (``out`` when given).
    """
    tile_shape = resolve_block_size(shape, block_size)
    x_map, y_map = output_maps(shape, out)
    # Threads by default: the kernels release the GIL, so threads share the
    # star arrays without copies. A backend set by the caller (loky, dask,
    # multiprocessing) takes precedence over this preference. Tiles are
    # copied in as they come, in order; a backend that cannot hand them over
    # one by one (multiprocessing) gives them all at the end.
    backend, _ = get_active_backend(prefer="threads")
    one_by_one = isinstance(backend, SequentialBackend) or getattr(
        backend, "supports_return_generator", False
    )
    parallel = Parallel(
        n_jobs=n_jobs, prefer="threads", return_as="generator" if one_by_one else "list"
    )
    tasks = (delayed(_evaluate_tile)(field, tile) for tile in iter_tiles(shape, tile_shape))
    for (y0, y1, x0, x1), out_u, out_v in parallel(tasks):
        x_map[y0:y1, x0:x1] = out_u
        y_map[y0:y1, x0:x1] = out_v
    return x_map, y_map
