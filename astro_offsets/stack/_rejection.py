"""Outlier rejection the drizzle way: frames drizzled alone, their median, blotted back.

The scheme of drizzlepac's AstroDrizzle. Each frame, calibrated and
normalised, is drizzled alone onto the reference grid; the median of those
single drizzles, pixel by pixel, is an image of the sky without the
outliers of any one frame (trails, cosmic rays, aircraft). Blotted back to
each frame (resampled through the frame's own map), it predicts every
pixel; pixels that deviate from the prediction beyond their noise are
outliers, and the final drizzle gives them no weight.
"""

import contextlib
import functools
import mmap
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from joblib import effective_n_jobs
from numpy.lib.format import open_memmap

from .._utils.workers import Tasks
from ._bands import load_npy
from ._outliers import blot, grow, nanmedian, outliers, scatter
from ._quality import median_frames

__all__ = ["Rejection", "RejectionStats", "frame_offsets", "store_frame", "median_rows"]

# drizzlepac's two tests (driz_cr_snr, driz_cr_scale): a pixel deviates by
# more than snr noise sigmas plus scale times the blot's local step; the
# second, looser test applies to the neighbours of pixels that failed the
# first. Our thresholds are higher than drizzlepac's 3.5 and 1.2. The noise
# is measured, not known from the detector, and a frame of 10 Mpix has 5000
# pixels beyond 3.5 sigma of pure noise, 6 beyond 5. And the seeing changes
# from frame to frame, as it does not for HST: with FWHMs of 3.4 to 4.5 px,
# 1.2 steps masked the cores of bright stars in the sharpest and the
# softest frames of tests/stack/test_rejection.py; 1.6 steps (and 0.9 for
# the neighbours) masked the sharpest frame's cores in 10 % of the bright
# stars of benchmarks/bench_rejection.py's ten frames, 2.5 (and 1.2) none,
# with trails and cosmic rays rejected as well (tests/test_bench_rejection.py).
SNR = (5.0, 3.0)
SCALE = (2.5, 1.2)
# Block of the smooth residual (a sky gradient of this frame's that the
# median has not), and the stride of the pixels sampled in it.
_BLOCK, _STRIDE = 64, 8
# The fewest frames that a median tells an outlier by (a Bayer frame's
# two greens count as two): where fewer cover a pixel, nothing is rejected.
_LEAST = 3
# Bytes of single-drizzle rows per median task.
_MEDIAN_BYTES = 48 * 2**20


class RejectionStats(NamedTuple):
    """What rejection found in one frame."""

    masked: int
    """Pixels masked as outliers (grown by one pixel)."""
    fraction: float
    """Their fraction of the frame's pixels."""
    noise: float
    """The noise of the frame's residual from the blot, on the sky."""


class Rejection:
    """Outlier masks of a sequence of frames, from the median of their single drizzles.

    Frames are added one by one (`add`): each is kept in the directory and
    drizzled alone onto the reference grid at its own resolution (a colour
    plane of a Bayer frame at half the frame's, where its pixels are one
    pixel apart) by the point kernel, in a thread while the next frame is
    read. `combine` takes the median of the single drizzles of each channel,
    in row chunks on all threads (or as tasks of a dask cluster); then
    `mask` gives each frame's outliers, and the frame back.

    Frames are numbered by the caller. A frame kept earlier, by another
    process (a cluster's worker, `store_frame`) or an interrupted run, is
    declared with `stored`; medians already in the directory are used as
    they are.

    Parameters
    ----------
    shape : tuple of int
        The frames' shape.
    layers : list of `~astro_offsets.frames._cfa.ColourPlane`
        The colour planes of the frames (`~astro_offsets.frames._cfa.colour_planes`).
    directory : str
        Where the frames, their single drizzles and the medians are kept.
    n_channels : int
        Channels of the stack.
    n_jobs : int or `None`
        Threads (joblib's meaning).
    keep_frames : bool, optional
        Keep each frame's file after `mask` (to resume from a checkpoint),
        until `release`; by default it is removed once read.
    """

    def __init__(self, shape, layers, directory, n_channels, n_jobs=None, keep_frames=False):
        self.shape = tuple(shape)
        self._layers = list(layers)
        # A colour cube's frames are its planes: (3, ny, nx).
        planes = {layer.plane for layer in self._layers} - {None}
        self._frame_shape = (len(planes), *self.shape) if planes else self.shape
        self.directory = directory
        self._n_channels = n_channels
        self._threads = effective_n_jobs(n_jobs)
        self._keep_frames = keep_frames
        self._zeros = {}
        self._weights = {}
        self._executor = None
        self._pending = None
        self._medians = None
        self._sums = {}
        self._buffers = {}

    @staticmethod
    def disk_bytes(shape, layers, n_frames):
        """Return the scratch bytes that ``n_frames`` frames of ``shape`` take at most.

        Each frame is kept (4 bytes a pixel, of each plane of a colour cube),
        and so are its single drizzles (4 bytes a pixel of each layer's grid:
        a Bayer mosaic's four colour planes hold as many pixels as the frame,
        another mosaic's channels and a cube's planes three times as many);
        then the medians, one image per channel.
        """
        planes = {layer.plane for layer in layers} - {None}
        frame = int(np.prod(shape)) * max(len(planes), 1)
        grid = [int(np.prod(_grid(shape, layer))) for layer in layers]
        medians = dict(zip((layer.channel for layer in layers), grid, strict=True))
        return 4 * (frame + sum(grid)) * n_frames + 4 * sum(medians.values())

    def add(self, index, data, offset_map, zeros=None, then=None, *, weight=None):
        """Keep frame ``index`` and drizzle it alone (in a thread).

        Parameters
        ----------
        index : int
            The frame's number, which `mask` takes.
        data : `~numpy.ndarray`
            The frame as it will be stacked (calibrated, normalised; NaN
            where it has no weight), float32. The thread reads it until the
            next `add` or `combine`: it must not change until then.
        offset_map : `OffsetMap` or `None`
            Its map; `None` for the reference frame.
        zeros : tuple of float or `None`, optional
            The value of no light in ``data``, per channel (0 when `None`):
            the noise model scales the sky's noise with the light above it.
        then : callable or `None`, optional
            Called (in the thread, without arguments) once the frame's files
            are complete.
        weight : float or `None`, optional
            Its weight in the stack (`None`: unweighted); see `stored`.
        """
        self.wait()
        data = np.ascontiguousarray(data, dtype=np.float32)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="astro_offsets-reject")
        offsets = frame_offsets(offset_map, self.shape)

        def keep():
            store_frame(self.directory, self._layers, index, data, offsets, self._sums)
            if then is not None:
                then()

        self._pending = self._executor.submit(keep)
        self.stored(index, zeros, weight)

    def stored(self, index, zeros=None, weight=None):
        """Declare frame ``index`` kept (its files in the directory), with its ``zeros``.

        A frame whose ``weight`` is below a tenth of the median weight
        makes no part of the medians (`median_frames`): its outliers are
        found against the others'.
        """
        self._zeros[index] = None if zeros is None else tuple(zeros)
        self._weights[index] = weight

    def drop(self, index):
        """Forget frame ``index``, stored (`add`, `stored`): its files go, it makes no median."""
        self.wait()
        self._zeros.pop(index, None)
        self._weights.pop(index, None)
        singles = [f"single.{index}.{k}" for k in range(len(self._layers))]
        for name in [f"frame.{index}", *singles]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(_path(self.directory, name))

    def wait(self):
        """Wait until the frames added so far are drizzled alone."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def open_medians(self):
        """Open the medians that `combine` made (a cluster's task, which stacks a share)."""
        self._medians = {
            channel: load_npy(_median_path(self.directory, channel), "r")
            for channel in range(self._n_channels)
        }

    def combine(self, client=None, reuse=False):
        """Take the median of the single drizzles, channel by channel.

        ``client``, a dask client, takes the medians as tasks of row chunks
        on its workers (which share the directory). With ``reuse``, medians
        already in the directory (an earlier run's, which said they were
        all whole) are used as they are. The single drizzles stay until
        `drop_singles`.
        """
        self.wait()
        self.close()
        self._sums = {}
        if reuse:
            self.open_medians()
            return
        frames = median_frames(self._weights)
        for channel in range(self._n_channels):
            names = [
                f"single.{frame}.{k}"
                for frame in frames
                for k, layer in enumerate(self._layers)
                if layer.channel == channel
            ]
            grid = next(_grid(self.shape, a) for a in self._layers if a.channel == channel)
            path = _median_path(self.directory, channel)
            partial = f"{path}.part.npy"
            median = open_memmap(partial, mode="w+", dtype=np.float32, shape=grid)
            median.flush()
            del median
            rows = max(2, _MEDIAN_BYTES // (4 * len(names) * grid[1]))
            starts = list(range(0, grid[0], rows))
            if client is None:
                files = {name: os.open(_path(self.directory, name), os.O_RDONLY) for name in names}
                try:
                    task = functools.partial(
                        median_rows, self.directory, names, partial, rows, files=files
                    )
                    self._map(task, starts)
                finally:
                    for fd in files.values():
                        os.close(fd)
            else:
                with Tasks(client) as tasks:
                    for start in starts:
                        tasks.submit(
                            median_rows, self.directory, names, partial, rows, start, None, True
                        )
                    list(tasks.results())
            # Whole: a run interrupted before this point takes the median again.
            os.replace(partial, path)
        self.open_medians()

    def drop_singles(self):
        """Remove the single drizzles, once the medians are made (and recorded as whole)."""
        for frame in self._zeros:
            for k in range(len(self._layers)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(_path(self.directory, f"single.{frame}.{k}"))

    def _map(self, function, items):
        with ThreadPoolExecutor(self._threads) as pool:
            list(pool.map(function, items))

    def mask(self, index, offset_map):
        """Return frame ``index``, its outliers and what they are.

        Parameters
        ----------
        index : int
            The frame, as `add` numbered it.
        offset_map : `OffsetMap` or `None`
            Its map, as added.

        Returns
        -------
        data : `~numpy.ndarray`
            The frame as it was added.
        outliers : `~numpy.ndarray`
            Bool, `True` at the outliers, grown by one pixel.
        stats : `RejectionStats`

        Notes
        -----
        ``data`` and ``outliers`` are arrays of this object's, which the
        next call overwrites: memory the process holds already (see
        `_buffer`), as the frames of the second pass are taken one by one.
        """
        if offset_map is not None and offset_map.shape != self.shape:
            raise ValueError(f"frame shape {self.shape} differs from its map's {offset_map.shape}")
        path = _path(self.directory, f"frame.{index}")
        data = self._buffer("frame", self._frame_shape, np.float32)
        fd = os.open(path, os.O_RDONLY)
        try:
            _read_into(fd, data, 0)
        except OSError as exc:
            raise OSError(f"{path}: {exc}") from None
        finally:
            os.close(fd)
        if not self._keep_frames:
            os.remove(path)
        offsets = frame_offsets(offset_map, self.shape)
        outliers = self._buffer("outliers", self._frame_shape, bool)
        outliers.fill(False)
        masked = 0
        noises = []
        for layer in self._layers:
            part = layer.part
            pixels = self._buffer("pixels", data[part].shape, np.float32)
            np.copyto(pixels, data[part])
            predicted = self._buffer("predicted", pixels.shape, np.float32)
            median = self._medians[layer.channel]
            spans = self._spans(pixels.shape[0])
            self._map(
                lambda span, median=median, layer=layer, predicted=predicted: blot(
                    median, *offsets, *layer.origin, layer.step, *span, predicted
                ),
                spans,
            )
            zeros = self._zeros[index]
            zero = 0.0 if zeros is None else zeros[layer.channel]
            found, noise = self._compare(pixels, predicted, zero, spans)
            if layer.select is not None:
                found &= layer.select[part]
            outliers[part] |= found
            masked += int(np.count_nonzero(found))
            noises.append(noise)
        stats = RejectionStats(masked, masked / data.size, float(np.mean(noises)))
        return data, outliers, stats

    def release(self, indices):
        """Remove the files of frames ``indices``, kept after `mask` (``keep_frames``)."""
        for index in indices:
            with contextlib.suppress(FileNotFoundError):
                os.remove(_path(self.directory, f"frame.{index}"))

    def _spans(self, rows):
        """Row spans of a layer for the threads: four a thread, 16 rows at least."""
        size = max(16, -(-rows // (4 * self._threads)))
        return [(r, min(r + size, rows)) for r in range(0, rows, size)]

    def _compare(self, pixels, predicted, zero, spans):
        """Return the outliers of a layer's pixels against their blot, and the sky's noise."""
        residual = pixels[::_STRIDE, ::_STRIDE] - predicted[::_STRIDE, ::_STRIDE]
        coarse = _smooth(residual)
        sample = predicted[::_STRIDE, ::_STRIDE]
        finite = np.isfinite(sample) & np.isfinite(residual)
        if np.count_nonzero(finite) < 100:
            return np.zeros(pixels.shape, bool), float("nan")
        sky = float(np.median(sample[finite]))
        # The frame's own noise, from the differences of neighbouring pixels
        # (independent, unlike the blot's): the residual's own spread is less,
        # as the median holds a part of this frame.
        pairs = pixels[::_STRIDE, : pixels.shape[1] // 2 * 2].reshape(-1, 2)[::_STRIDE]
        differences = pairs[:, 1] - pairs[:, 0]
        differences = differences[np.isfinite(differences)]
        variance = float(_mad_std(differences) ** 2 / 2)
        if not variance > 0:
            return np.zeros(pixels.shape, bool), 0.0
        # Photon noise grows with the light: sky - zero of it gives the sky's
        # variance (read noise counts as photons, which keeps cores safe).
        gain = (sky - zero) / variance if sky > zero else np.inf
        found = self._buffer("found", pixels.shape, np.uint8)
        arguments = (pixels, predicted, coarse, _BLOCK, sky, variance, gain, *SNR[:1], *SCALE[:1])
        arguments = (*arguments, SNR[1], SCALE[1])
        for near in (False, True):
            self._map(lambda span, near=near: outliers(*arguments, *span, found, near), spans)
        grown = self._buffer("grown", pixels.shape, np.uint8)
        grown.fill(0)
        self._map(lambda span: grow(found, *span, grown), spans)
        return grown.view(bool), float(np.sqrt(variance))

    def _buffer(self, name, shape, dtype):
        """Return the array ``name`` of `mask`, made once and used for every frame.

        Memory the process holds already: fresh memory for each frame's
        arrays is memory the kernel must clear first (for a 42-Mpix frame,
        a tenth of a second of system time per 200 MB on a virtual machine).
        """
        # By shape too: the colour planes of a frame of odd size differ.
        key = (name, tuple(shape), np.dtype(dtype).str)
        array = self._buffers.get(key)
        if array is None:
            array = self._buffers[key] = np.empty(shape, dtype)
        return array

    def close(self):
        """Stop the thread that drizzles frames alone (the scratch is the caller's)."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None


def _grid(shape, layer):
    """Return the shape of a layer's single drizzle: the reference grid at the layer's spacing."""
    return tuple(-(-n // layer.step) for n in shape)


def _path(directory, name):
    """Return the file of a frame or a single drizzle: its pixels alone, float32, row by row."""
    return os.path.join(directory, f"{name}.f32")


def _median_path(directory, channel):
    return os.path.join(directory, f"median.{channel}.npy")


def store_frame(directory, layers, index, data, offsets, sums=None):
    """Keep frame ``index`` in ``directory`` and drizzle it alone, layer by layer.

    What `Rejection.add` does in its thread, and a cluster's worker does
    for its frames. ``offsets`` are the frame's ``(x, y)`` offsets (float32,
    C-ordered); ``sums``, a dict, keeps the sums' and the single drizzle's
    arrays from one call to the next (their pages mapped once).
    """
    sums = {} if sums is None else sums
    # Written, not mapped: a fresh mapped file takes a page fault every
    # 4 kB (0.06 to 0.25 s for 10.8 Mpix, against 0.01 to 0.04).
    data.tofile(_path(directory, f"frame.{index}"))
    for k, layer in enumerate(layers):
        grid = _grid(data.shape[-2:], layer)
        if grid not in sums:
            sums.clear()
            sums[grid] = tuple(
                np.zeros(grid, dtype) for dtype in (np.float64, np.float32, np.float32)
            )
        total, count, single = sums[grid]
        total.fill(0.0)
        count.fill(0.0)
        pixels = data if layer.plane is None else data[layer.plane]
        if layer.select is not None:
            pixels = np.where(layer.select, pixels, np.nan)
        scatter(pixels, *offsets, *layer.origin, layer.step, total, count)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(total, count, out=single, casting="unsafe")
        single.tofile(_path(directory, f"single.{index}.{k}"))


def median_rows(directory, names, median_path, rows, start, files=None, flush=False):
    """Write the median of single drizzles ``names`` over rows ``start:start + rows``.

    Parameters
    ----------
    directory : str
        Where the single drizzles are (``single.N.K.f32``).
    names : list of str
        The single drizzles of one channel.
    median_path : str
        The median, a ``.npy`` file that the caller made, opened here as a
        memory map; one such task per chunk of rows, on threads or a
        cluster's workers.
    rows, start : int
        The chunk of rows.
    files : dict or `None`, optional
        Open file descriptors of ``names`` (on threads: opened once for all
        chunks); by default each is opened here.
    flush : bool, optional
        Write the rows through to the file (a cluster's worker, which may
        be on another machine).
    """
    median = load_npy(median_path, "r+")
    grid = median.shape
    stop = min(start + rows, grid[0])
    cube = np.empty((len(names), stop - start, grid[1]), np.float32)
    # Read, not mapped: the singles' pages stay the system's cache, not this
    # process's memory, however many frames.
    for name, plane in zip(names, cube, strict=True):
        if files is not None:
            _read_into(files[name], plane, start * grid[1] * 4)
            continue
        fd = os.open(_path(directory, name), os.O_RDONLY)
        try:
            _read_into(fd, plane, start * grid[1] * 4)
        finally:
            os.close(fd)
    # Two values cannot tell which one is the outlier.
    nanmedian(cube, median[start:stop], _LEAST)
    if flush:
        median.flush()


# Reads at an offset leave the descriptor's own offset alone, so that threads
# read one file at once (median_rows' shared descriptors). Windows has neither
# os.preadv nor os.pread: there the bytes are copied from a read-only mapping
# of just the rows read, unmapped at once.
_PREADV = getattr(os, "preadv", None)


def _read_into(fd, array, offset):
    """Fill C-contiguous ``array`` with the bytes of file ``fd`` from ``offset``."""
    view = memoryview(array).cast("B")
    if _PREADV is None:
        _read_mapped(fd, view, offset)
        return
    while view:
        done = _PREADV(fd, [view], offset)
        if done <= 0:
            raise OSError(f"a scratch file ended early ({offset} bytes in)")
        view, offset = view[done:], offset + done


def _read_mapped(fd, view, offset):
    """Fill ``view`` with the bytes of file ``fd`` from ``offset``, through a mapping."""
    size = os.fstat(fd).st_size
    if offset + len(view) > size:
        raise OSError(f"a scratch file ended early ({size} bytes in)")
    if not view:
        return
    # A mapping starts at a multiple of the allocation granularity.
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    length = offset + len(view) - start
    with (
        mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=start) as mapped,
        memoryview(mapped) as whole,
        whole[offset - start :] as part,
    ):
        view[:] = part


def frame_offsets(offset_map, shape):
    """Return the map's offsets as C-ordered float32 arrays; zeros for the reference frame."""
    if offset_map is None:
        zeros = np.zeros(shape, np.float32)
        return zeros, zeros
    offsets = (offset_map.x_offset, offset_map.y_offset)
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in offsets)


def _mad_std(values):
    return 1.4826 * np.median(np.abs(values - np.median(values)))


def _smooth(residual):
    """Return the medians of blocks of a sampled residual: its smooth part.

    Blocks of ``_BLOCK`` pixels (``_BLOCK / _STRIDE`` samples); a block
    without any finite value is 0. A sky gradient that this frame has and
    the median has not is no outlier.
    """
    per_block = _BLOCK // _STRIDE
    ny, nx = residual.shape
    by, bx = -(-ny // per_block), -(-nx // per_block)
    padded = np.full((by * per_block, bx * per_block), np.nan, np.float32)
    padded[:ny, :nx] = residual
    blocks = padded.reshape(by, per_block, bx, per_block).transpose(0, 2, 1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # blocks without a value
        medians = np.nanmedian(blocks.reshape(by, bx, -1), axis=2)
    return np.ascontiguousarray(np.where(np.isfinite(medians), medians, 0.0), dtype=np.float32)
