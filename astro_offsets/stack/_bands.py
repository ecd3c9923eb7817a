"""Drizzle on all cores, exactly: the output grid in horizontal bands, one worker per band.

drizzle's C code holds the GIL, so the work goes to processes. Every frame is
drizzled band by band: a worker adds to the output rows of its band every
input row whose drops can reach them. A drop that straddles two bands is added
by both workers, each keeping only the part on its own rows (drizzle computes
each output pixel's overlap on its own), and each band sees its input pixels
in the order one serial drizzle would: the result does not depend on the
number of workers or on the bands.

Exactness needs three things of drizzle's C code (drizzle 3):

* Coordinates are absolute. The arrays handed to drizzle are the whole frame
  and the whole output (memory maps, of which a worker touches only the rows
  it needs), never a band's slice with its coordinates shifted: a shift would
  round the corners of the square kernel's drops differently.
* The input rows go in fixed chunks (``CHUNK_ROWS``, whatever the bands), one
  ``tdriz`` call each with its ``ymin``/``ymax``. drizzle clips the outline of
  the input rows it is given to the output and drops input pixels that
  straddle the output's edges by that outline, which it approximates; fixed
  chunks make that approximation the same for any bands.
* A worker's drops also land outside its band (on its *halo* rows). The bands
  are drizzled in two phases, even bands then odd bands, so that no two
  workers touch the same rows at once, and each worker puts its halo rows back
  as it found them.
"""

import itertools
import os
import re
import threading
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from drizzle import cdrizzle
from numpy.lib.format import open_memmap

from .._utils.scratch import ScratchDirectory

__all__ = [
    "CHUNK_ROWS",
    "BandJob",
    "LayerJob",
    "Scratch",
    "band_layout",
    "drizzle_band",
    "load_npy",
]

# Input rows per drizzle call. The result depends on it only at the output's
# edges, where a frame overhangs them (see the module's docstring).
CHUNK_ROWS = 32

# How far a kernel's drop reaches beyond the mapped centres of its input
# pixel and its neighbours, in output pixels per unit of scale (drizzle's
# extents): the square kernel's corners are interpolated between the centres
# of neighbouring pixels, the others' drops have sizes of their own (turbo
# half a pixfrac, gaussian at most 1.2, lanczos its order and one pixel).
_REACH = MappingProxyType(
    {"square": 0.0, "point": 0.0, "turbo": 0.5, "gaussian": 1.2, "lanczos2": 3.0, "lanczos3": 4.0}
)


# numpy parses a .npy header with ast.literal_eval, and CPython before 3.12
# corrupts the AST constructor's recursion count when two threads build an
# AST at once, whoever they are (SystemError "AST constructor recursion depth
# mismatch", CPython issue gh-106905). The headers of the stacker's own maps
# (written by numpy, a plain dtype, C order) are read here without an AST;
# any other header goes to numpy, one thread at a time.
_NPY_HEADERS = threading.Lock()
_NPY_HEADER = re.compile(
    r"\{'descr': '(?P<descr>[<>|=][a-zA-Z][0-9]+)', 'fortran_order': False, "
    r"'shape': \((?P<shape>(?:[0-9]+, ?)*(?:[0-9]+)?)\), \}\s*$"
)


def _npy_layout(path):
    """``(dtype, shape, offset)`` of a plain C-order ``.npy`` file, or `None`."""
    with open(path, "rb") as stream:
        start = stream.read(12)
        if start[:6] != b"\x93NUMPY" or len(start) < 10:
            return None
        if start[6] == 1:
            length, offset = int.from_bytes(start[8:10], "little"), 10
        else:
            length, offset = int.from_bytes(start[8:12], "little"), 12
        stream.seek(offset)
        match = _NPY_HEADER.match(stream.read(length).decode("latin1"))
    if match is None:
        return None
    shape = tuple(int(n) for n in match["shape"].replace(" ", "").split(",") if n)
    return np.dtype(match["descr"]), shape, offset + length


def load_npy(path, mmap_mode):
    """Return the ``.npy`` file ``path`` memory-mapped (`numpy.load`), safe from any thread."""
    layout = _npy_layout(path)
    if layout is None:
        with _NPY_HEADERS:
            return np.load(path, mmap_mode=mmap_mode)
    dtype, shape, offset = layout
    return np.memmap(path, dtype=dtype, mode=mmap_mode, offset=offset, shape=shape, order="C")


class Scratch(ScratchDirectory):
    """A temporary directory of ``.npy`` memory maps, removed by `remove` or at exit.

    Or, if its process is killed, by the next one made beside it
    (`ScratchDirectory`). Its path is absolute: the workers may run in
    another working directory. Files mapped when the directory is removed
    stay readable through their maps (POSIX); their disk space is freed
    when the last map is closed.
    """

    def __init__(self, directory=None):
        super().__init__("astro_offsets-stack-", directory)

    def file(self, name):
        return os.path.join(self.path, f"{name}.npy")

    def create(self, name, shape, dtype, fill=None):
        """Create (or replace) the memory map ``name``; zeros unless ``fill``."""
        array = open_memmap(self.file(name), mode="w+", dtype=dtype, shape=tuple(shape))
        if fill is not None:
            array[...] = fill
        return array

    def open(self, name, mode="r+"):
        return load_npy(self.file(name), mode)


class LayerJob(NamedTuple):
    """One colour plane of a frame (``frames._cfa.ColourPlane``), as a worker drizzles it."""

    name: str
    """Its files in the frame's slot: ``<name>.data``, ``.weight``, ``.xoff``, ``.yoff``."""
    origin: tuple
    """``(y, x)`` of its first pixel in the frame."""
    step: int
    """Its pixels' spacing in the frame (2 for a Bayer colour plane)."""
    chunks: tuple
    """``(first row, end row)`` of the chunks to drizzle, in order."""
    pixfrac: float
    pscale_ratio: float


class BandJob(NamedTuple):
    """A worker's task: the layers of one frame that reach one band of one channel."""

    directory: str
    channel: str
    band: tuple
    """``(first row, end row)`` of the output that the task owns."""
    touched: tuple
    """``(first row, end row)`` of the output its drops may reach (band and halo)."""
    layers: tuple
    kernel: str
    scale: float
    iscale: float
    wtscale: float
    uniqid: int
    """drizzle's context bit, 1 to 32; 0 without contexts."""
    ctx_plane: int


def chunk_reach(y_rows_min, y_rows_max, kernel, scale):
    """Return the output rows ``(low, high)`` that each chunk of input rows may reach.

    ``y_rows_min`` and ``y_rows_max`` are the least and greatest output y of
    each input row's pixel centres (NaN for a row without any). A chunk's
    drops lie within its rows' and their neighbours' extremes, widened by
    the kernel's reach and a pixel for the corners extrapolated at the
    frame's edges. Chunks of rows without any centre give NaN, and are
    never drizzled.
    """
    starts = chunk_starts(len(y_rows_min))
    # Each row's extremes with its neighbours'.
    low = np.pad(y_rows_min, 1, mode="edge")
    high = np.pad(y_rows_max, 1, mode="edge")
    with np.errstate(invalid="ignore"):
        low = np.fmin(np.fmin(low[:-2], low[1:-1]), low[2:])
        high = np.fmax(np.fmax(high[:-2], high[1:-1]), high[2:])
        low = np.fmin.reduceat(low, starts)
        high = np.fmax.reduceat(high, starts)
    reach = _REACH[kernel] * max(scale, 1.0) + 1.0
    return np.floor(low - reach), np.ceil(high + reach)


def chunk_starts(n_rows):
    """Return the first rows of the fixed chunks of ``n_rows`` rows (two rows at least each)."""
    starts = np.arange(0, n_rows, CHUNK_ROWS)
    if len(starts) > 1 and n_rows - starts[-1] < 2:
        starts = starts[:-1]  # drizzle needs two rows: the last chunk takes the odd row
    return starts


def chunk_rows(starts, index, n_rows):
    end = starts[index + 1] if index + 1 < len(starts) else n_rows
    return int(starts[index]), int(end)


def band_layout(n_rows, n_bands, reaches):
    """Split ``n_rows`` output rows into bands whose halos stay within their neighbours.

    Parameters
    ----------
    n_rows : int
        Output rows.
    n_bands : int
        The bands wanted; fewer are made when the rows that two bands of one
        phase (every other band) touch would overlap.
    reaches : list of tuple
        Per layer, ``(low, high, starts, n_input_rows)``: the output rows
        each chunk may reach (`chunk_reach`) and the chunks' first rows.

    Returns
    -------
    list of tuple
        Per band: ``(band, touched, chunks)``, with ``chunks`` one tuple of
        ``(first row, end row)`` per layer.
    """
    n_bands = max(1, min(n_bands, n_rows // 2))
    while True:
        edges = np.linspace(0, n_rows, n_bands + 1).round().astype(int)
        bands = []
        for b0, b1 in itertools.pairwise(edges):
            chunks, low, high = [], b0, b1
            for c_low, c_high, starts, rows in reaches:
                with np.errstate(invalid="ignore"):
                    hit = np.flatnonzero((c_high >= b0) & (c_low < b1))
                chunks.append(tuple(chunk_rows(starts, c, rows) for c in hit))
                if hit.size:
                    low = min(low, int(max(c_low[hit].min(), 0)))
                    high = max(high, int(min(c_high[hit].max() + 1, n_rows)))
            bands.append(((int(b0), int(b1)), (low, high), tuple(chunks)))
        # Bands of one phase run at once: what they touch must not overlap.
        touched = [t for _, t, _ in bands]
        if all(touched[k][1] <= touched[k + 2][0] for k in range(n_bands - 2)):
            return bands
        n_bands = max(1, n_bands // 2)


def layer_pixmap(shape, origin, step, x_offset, y_offset, rows, scale):
    """Return a pixmap of the whole layer, filled (bit for bit as a serial one) on ``rows`` only.

    The pixels outside ``rows`` are never read by drizzle; ``np.zeros`` does
    not touch their memory.
    """
    ny, nx = shape
    pixmap = np.zeros((ny, nx, 2), dtype=np.float64)
    lo, hi = rows
    part = pixmap[lo:hi]
    x = (origin[1] + step * np.arange(nx)).astype(np.float64)
    y = (origin[0] + step * np.arange(lo, hi)).astype(np.float64)
    np.subtract(x[np.newaxis, :], x_offset[lo:hi], out=part[..., 0])
    np.subtract(y[:, np.newaxis], y_offset[lo:hi], out=part[..., 1])
    if scale != 1.0:
        # Pixel centres of the finer grid: reference x maps to
        # scale * (x + 0.5) - 0.5, so the grids share their outer edges.
        part += 0.5
        part *= scale
        part -= 0.5
    return pixmap


def chunk_columns(pixmap, out_shape, kernel, scale):
    """Return the first and last columns of a chunk whose drops can land on the output.

    ``pixmap`` is the chunk's rows of the layer's pixmap. A column is kept
    if any of its pixels maps within the output, widened by the drop's
    reach; `None` if no column is. The columns outside, which drizzle would
    give nothing, are left out of its call: drizzle 3.0 clips the outline
    of the input it is given to the output, and with the outline of a chunk
    that overhangs the output far on one side and crosses its edge on
    another, a fitted map made it crash (a segmentation fault) where the
    trimmed outline does not. The columns depend on the chunk alone: the
    stack is still the same for any bands.
    """
    margin = _REACH[kernel] * max(scale, 1.0) + 2.0 * max(scale, 1.0) + 1.0
    ny, nx = out_shape
    x, y = pixmap[..., 0], pixmap[..., 1]
    with np.errstate(invalid="ignore"):
        inside = (x > -margin) & (x < nx - 1 + margin) & (y > -margin) & (y < ny - 1 + margin)
    columns = np.flatnonzero(inside.any(axis=0))
    if columns.size == 0:
        return None
    return int(columns[0]), int(columns[-1])


def drizzle_band(job):
    """Drizzle a frame's layers onto one band of one channel's accumulators (a worker's task)."""
    scratch = job.directory
    img = load_npy(os.path.join(scratch, f"{job.channel}.img.npy"), "r+")
    wht = load_npy(os.path.join(scratch, f"{job.channel}.wht.npy"), "r+")
    ctx = None
    if job.uniqid:
        ctx = load_npy(os.path.join(scratch, f"{job.channel}.ctx.npy"), "r+")
        ctx = ctx[job.ctx_plane]
    outputs = [a for a in (img, wht, ctx) if a is not None]
    (b0, b1), (t0, t1) = job.band, job.touched
    halo = [(a[t0:b0].copy(), a[b1:t1].copy()) for a in outputs]
    for layer in job.layers:
        if not layer.chunks:
            continue
        # Copy-on-write maps: drizzle copies an input that is not writeable
        # (on every call), and never writes to its inputs.
        files = {
            part: load_npy(os.path.join(scratch, f"{layer.name}.{part}.npy"), "c")
            for part in ("data", "weight", "xoff", "yoff")
        }
        shape = files["data"].shape
        # The chunks' rows and one more on each side: drizzle interpolates
        # the corners of the square kernel's drops between rows.
        rows = (max(layer.chunks[0][0] - 1, 0), min(layer.chunks[-1][1] + 1, shape[0]))
        pixmap = layer_pixmap(
            shape, layer.origin, layer.step, files["xoff"], files["yoff"], rows, job.scale
        )
        for r0, r1 in layer.chunks:
            columns = chunk_columns(pixmap[r0:r1], img.shape, job.kernel, job.scale)
            if columns is None:
                continue  # no drop of these rows lands on the output
            cdrizzle.tdriz(
                input=files["data"],
                weights=files["weight"],
                pixmap=pixmap,
                output=img,
                counts=wht,
                context=ctx,
                input2=None,
                output2=None,
                dq=None,
                outdq=None,
                uniqid=job.uniqid or 1,
                xmin=columns[0],
                xmax=columns[1],
                ymin=r0,
                ymax=r1 - 1,
                iscale=job.iscale,
                pscale_ratio=layer.pscale_ratio,
                pixfrac=layer.pixfrac,
                kernel=job.kernel,
                in_units="cps",
                expscale=1.0,
                wtscale=job.wtscale,
                fillstr="INDEF",
                fillstr2="INDEF",
            )
        del files, pixmap
    for array, (above, below) in zip(outputs, halo, strict=True):
        array[t0:b0] = above
        array[b1:t1] = below
    del img, wht, ctx, outputs


def phases(bands):
    """Return the band indices of the two phases: even bands, then odd bands."""
    return list(range(0, len(bands), 2)), list(range(1, len(bands), 2))
