"""Drizzle frames onto the reference grid with their offset maps: mono and Bayer."""

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType

import numpy as np
from drizzle import resample

from .._utils.validation import positive_pair, real
from .._utils.workers import Tasks
from ..frames._cfa import colour_planes
from ._bands import (
    BandJob,
    LayerJob,
    Scratch,
    band_layout,
    chunk_reach,
    chunk_starts,
    drizzle_band,
    load_npy,
    phases,
)
from ._product import MONO, RGB, Stack

__all__ = ["KERNELS", "TURBO_TURN", "Stacker", "check_stack_options", "frame_kernel", "map_turn"]

#: "auto": turbo or square, per frame (`frame_kernel`); then drizzle's own.
KERNELS = ("auto", *resample.SUPPORTED_DRIZZLE_KERNELS)

#: The most a map may turn (the sine of half a degree), beyond a multiple of
#: 90 degrees, for "auto" to take turbo: turbo's drops stay upright and of one
#: size, square's follow the map. Up to this, on sharp stars (a FWHM of 2
#: pixels), they differ by 0.3 % at most at the 99th percentile of the stars'
#: pixels; at 1 degree by 0.5 %,
#: at 10 degrees by 6 % (see the stacking page of the documentation).
TURBO_TURN = 0.0087
# Pixels over which map_turn measures a map's turn.
_TURN_SPAN = 16
# Turns by a multiple of 90 degrees, each as the pixmap's steps along x and
# along y: turbo's upright drops are the pixels' own under them.
_QUARTER_TURNS = (
    ((1, 0), (0, 1)),
    ((0, 1), (-1, 0)),
    ((-1, 0), (0, -1)),
    ((0, -1), (1, 0)),
)

_DEFAULTS = MappingProxyType(
    {"kernel": "auto", "pixfrac": 1.0, "scale": 1.0, "exposure_weighting": True, "context": True}
)


def map_turn(offset_map):
    """Return how far a map turns or resizes the pixels, from the nearest quarter turn.

    The largest difference between the pixmap's Jacobian and a turn by a
    multiple of 90 degrees (the one nearest the frame's), under which
    turbo's upright drops are the pixels' own: a rotation by a small angle
    gives its sine; a meridian flip (half a turn) and the small angle beyond
    it, that angle's sine; a change of scale by a fraction (a lens's
    distortion) that fraction; a shift 0. `None` is the reference frame: 0.
    The Jacobian is measured over 16 pixels: the frame's turn, not the small
    steps of a quadrant field between its stars.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import OffsetMap
    >>> from astro_offsets.stack import map_turn
    >>> y, x = np.mgrid[:20, :30]
    >>> def turned(degrees):
    ...     turn = np.deg2rad(degrees)
    ...     return OffsetMap(x - (np.cos(turn) * x + np.sin(turn) * y),
    ...                      y - (-np.sin(turn) * x + np.cos(turn) * y))
    >>> round(map_turn(turned(2.0)), 4), round(float(np.sin(np.deg2rad(2.0))), 4)
    (0.0349, 0.0349)
    >>> round(map_turn(turned(182.0)), 4)  # a meridian flip, and 2 degrees
    0.0349
    """
    if offset_map is None:
        return 0.0
    span = max(min(_TURN_SPAN, *(n - 1 for n in offset_map.shape)), 1)
    every = (slice(None, None, span), slice(None, None, span))
    x_offset = offset_map.x_offset[every].astype(np.float64)
    y_offset = offset_map.y_offset[every].astype(np.float64)
    # The pixmap (x - x_offset, y - y_offset): its columns' steps along x, then y.
    columns = []
    if x_offset.shape[1] > 1:
        columns.append((1 - np.diff(x_offset, axis=1) / span, -np.diff(y_offset, axis=1) / span, 0))
    if x_offset.shape[0] > 1:
        columns.append((-np.diff(x_offset, axis=0) / span, 1 - np.diff(y_offset, axis=0) / span, 1))
    if not columns:
        return 0.0

    def deviation(turn, reduce):
        return max(
            max(reduce(np.abs(px - turn[axis][0])), reduce(np.abs(py - turn[axis][1])))
            for px, py, axis in columns
        )

    nearest = min(_QUARTER_TURNS, key=lambda turn: deviation(turn, np.nanmedian))
    return float(deviation(nearest, lambda a: np.fmax.reduce(a, axis=None)))


def frame_kernel(kernel, offset_map):
    """Return the drizzle kernel of a frame with this map: ``kernel``, or the one ``"auto"`` takes.

    ``"auto"`` takes ``"turbo"`` if the map turns the pixels by
    ``TURBO_TURN`` at most (``map_turn``), where turbo gives square's stars
    at half the cost, and ``"square"`` otherwise.
    """
    if kernel != "auto":
        return kernel
    return "turbo" if map_turn(offset_map) <= TURBO_TURN else "square"


def check_stack_options(**options):
    """Check the drizzle options of `Stacker` before any frame is read.

    Parameters
    ----------
    **options
        ``kernel``, ``pixfrac``, ``scale``, ``exposure_weighting``,
        ``context``; those not given take `Stacker`'s defaults.

    Returns
    -------
    dict
        Every option, as the stacker uses it.

    Raises
    ------
    ValueError
        If an option is unknown or out of range.
    """
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        known = ", ".join(_DEFAULTS)
        raise ValueError(
            f"unknown drizzle option(s) {', '.join(unknown)} (the options are {known})"
        )
    options = {**_DEFAULTS, **options}
    kernel = options["kernel"]
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    pixfrac = real(options["pixfrac"], "pixfrac", low=0, high=1, low_open=True)
    if kernel.startswith("lanczos") and pixfrac != 1.0:
        raise ValueError(f"the {kernel} kernel takes no pixfrac (drizzle uses 1); got {pixfrac!r}")
    return {
        "kernel": kernel,
        "pixfrac": pixfrac,
        "scale": real(options["scale"], "scale", low=0, high=8, low_open=True),
        "exposure_weighting": bool(options["exposure_weighting"]),
        "context": bool(options["context"]),
    }


class Stacker:
    """Drizzle frames one at a time onto the reference frame's grid, on all cores.

    Each frame is mapped onto the reference grid by its `OffsetMap` (the
    reference frame itself has none) and added with drizzle's C code (that of
    `drizzle.resample.Drizzle`). Colour raw frames are stacked by Bayer
    drizzle, so that colours are never interpolated: each colour filter's
    pixels (red, each green, blue: every other pixel of every other row) are
    drizzled as an image of their own, half the frame's size, whose drops
    are as large as the raw pixels' (for the ``square`` kernel, half the
    ``pixfrac``), red into ``RED``, both greens into ``GREEN``, blue into
    ``BLUE``. FITS mosaics with a ``BAYERPAT`` card are stacked the same way;
    the planes of a colour cube, ``(3, ny, nx)``, go whole into ``RED``,
    ``GREEN`` and ``BLUE``, each with the frame's map.

    The output grid is drizzled in horizontal bands by ``n_jobs`` worker
    processes (drizzle holds the GIL), into accumulators in memory-mapped
    scratch files; the result is bit for bit the same for any ``n_jobs``.
    `add` returns once the frame is handed to the workers, so that the next
    frame can be read meanwhile; `stack` waits for them.

    Parameters
    ----------
    shape : tuple of int
        The frames' (and reference frame's) shape ``(ny, nx)``.
    bayer : bool, optional
        Stack colour frames into ``RED``, ``GREEN`` and ``BLUE``; each frame
        is then a mosaic with its ``colors`` (rawpy's ``raw_colors_visible``)
        or a cube of red, green and blue planes ``(3, ny, nx)``. The default
        is `False`: mono frames into ``SCI``.
    kernel : str, optional
        Drizzle kernel: ``"auto"``, ``"square"``, ``"point"``, ``"turbo"``,
        ``"gaussian"``, ``"lanczos2"`` or ``"lanczos3"`` (``KERNELS``). The
        lanczos kernels take no ``pixfrac`` and do not conserve flux. The
        default, ``"auto"``, takes per frame ``"turbo"`` where its map turns
        the pixels by less than half a degree beyond a quarter turn (or
        resizes them by less than 0.9 %), which gives ``"square"``'s stars at half the cost, and
        ``"square"`` where it turns them more
        (``astro_offsets.stack.frame_kernel``; see the stacking page of the
        documentation).
    pixfrac : float, optional
        Size of the drop, as a fraction of an input pixel's side, in (0, 1].
        Smaller drops sharpen but need more, well-dithered frames to fill
        every output pixel. The default is 1.
    scale : float, optional
        Output pixels per input pixel along each axis, in (0, 8]: 2 gives a
        grid twice as fine (super-resolution), with the pixmap scaled to
        match. The default is 1.
    exposure_weighting : bool, optional
        Weight each frame by its exposure time. The default is `True`.
    context : bool, optional
        Keep context arrays (which frames reached each output pixel; 4 bytes
        per output pixel per 32 frames and channel). The default is `True`.
    n_jobs : int or `None`, optional
        Worker processes, with joblib's meaning: `None` honours
        `joblib.parallel_config` (one worker outside it), -1 is all cores.
    scratch : str, path-like or `None`, optional
        Directory for the scratch files; `None` is the system's temporary
        directory (``TMPDIR``).

    Raises
    ------
    ValueError
        If an option is out of range.

    See Also
    --------
    stack_frames : stack frame files with their map files.

    Notes
    -----
    Images are in input units per second: each frame is divided by its
    exposure time (1 when unknown). With ``scale`` s, each input pixel's
    counts are spread over s**2 smaller output pixels (drizzle's ``iscale =
    1 / s**2``), so the total flux is conserved (except with the lanczos
    kernels).

    Scratch files (removed by `close`, at the end of a ``with`` block, or
    when the stacker is garbage collected or Python exits): per channel, the
    image and the weight, 8 bytes per output pixel, and the contexts, 4 bytes
    per output pixel per 32 frames; and two frames (the one being drizzled
    and the next), 16 bytes per input pixel each. The arrays of `stack` map
    these files, and stay readable after `close`; their disk space is freed
    when they are no longer used.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import OffsetMap, Stacker
    >>> frame = np.zeros((40, 50), dtype=np.float32)
    >>> frame[20, 31] = 100.0
    >>> shifted = OffsetMap(np.full((40, 50), 1.0), np.zeros((40, 50)))  # 1 px to the right
    >>> with Stacker((40, 50), kernel="point") as stacker:
    ...     stacker.add(frame, shifted)
    ...     stack = stacker.stack()
    >>> float(np.nansum(stack.images["SCI"])), np.unravel_index(
    ...     np.nanargmax(stack.images["SCI"]), (40, 50))
    (100.0, (np.int64(20), np.int64(30)))
    """

    def __init__(
        self,
        shape,
        *,
        bayer=False,
        kernel="auto",
        pixfrac=1.0,
        scale=1.0,
        exposure_weighting=True,
        context=True,
        n_jobs=None,
        scratch=None,
    ):
        self.shape = positive_pair(shape, "shape")
        options = check_stack_options(
            kernel=kernel,
            pixfrac=pixfrac,
            scale=scale,
            exposure_weighting=exposure_weighting,
            context=context,
        )
        self.kernel = options["kernel"]
        self.pixfrac = options["pixfrac"]
        self.scale = options["scale"]
        self.bayer = bool(bayer)
        self.exposure_weighting = options["exposure_weighting"]
        self.channels = RGB if self.bayer else MONO
        ny, nx = self.shape
        self.out_shape = (max(1, round(ny * self.scale)), max(1, round(nx * self.scale)))
        self._context = options["context"]
        # The caller's joblib configuration is read here, in the caller's
        # thread; the frames are drizzled from a thread of the stacker's.
        self._tasks = Tasks(n_jobs=n_jobs)
        workers = self._tasks.workers
        # Two phases of bands: four bands a worker keep every worker busy.
        self._bands = 1 if workers == 1 else 4 * workers
        self._scratch = Scratch(scratch)
        for name in self.channels:
            self._scratch.create(f"{name}.img", self.out_shape, np.float32, fill=np.nan)
            self._scratch.create(f"{name}.wht", self.out_shape, np.float32)
            if self._context:
                self._scratch.create(f"{name}.ctx", (1, *self.out_shape), np.int32)
        self._ctx_planes = 1
        self._closed = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="astro_offsets-stack")
        self._pending = None
        if workers > 1:
            # The workers start (and import the package, about a second)
            # while the caller reads its first frames; the drizzles queue
            # behind this in the stacker's thread.
            self._executor.submit(self._tasks.start)
        self._frames = []
        self._maps = []
        self._kernels = []  # each frame's, as drizzled
        self._total_exptime = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def add(
        self,
        data,
        offset_map=None,
        *,
        colors=None,
        exptime=None,
        weight=None,
        frame_weight=None,
        mask=None,
        name=None,
        map_name=None,
        number=None,
    ):
        """Drizzle one frame onto the stack.

        The frame is checked and handed to the workers; `add` returns once
        the previous frame is drizzled, while this one is.

        Parameters
        ----------
        data : array-like
            The frame, ``(ny, nx)``; for Bayer stacks the raw mosaic (black
            level subtracted), or a colour cube ``(3, ny, nx)``.
        offset_map : `OffsetMap` or `None`, optional
            The frame's map onto the reference grid; `None` for the reference
            frame itself.
        colors : array-like or `None`, optional
            For Bayer stacks, rawpy's ``raw_colors_visible`` (0 R, 1 and 3 G,
            2 B); required then for a mosaic, refused for a cube and for mono
            stacks.
        exptime : float or `None`, optional
            Exposure time in seconds; `None` counts as 1.
        weight : array-like or `None`, optional
            Per-pixel weight of this frame, ``(ny, nx)``, non-negative.
        frame_weight : float or `None`, optional
            The weight of the whole frame, positive, instead of its exposure
            time's (``exposure_weighting``): the stack is the mean of the
            frames weighted by it (times ``weight``). `None` (the default)
            weighs the frame by its exposure time, or 1 without exposure
            weighting.
        mask : array-like or `None`, optional
            Bad pixels (`True` = bad), ``(ny, nx)`` (or a cube's shape, per
            plane); they get no weight.
            Non-finite pixels of ``data`` are masked too.
        name, map_name : str or `None`, optional
            The frame's and map's names for the provenance.
        number : int or `None`, optional
            The frame's number in the sequence, 0 for the first: its context
            bit. By default, the number of frames added so far. Partial
            stacks of one sequence (`add_stack`) number their frames apart.

        Raises
        ------
        ValueError
            If shapes differ from the stack's, ``colors`` does not fit the
            stack, ``exptime`` or ``frame_weight`` is not positive,
            ``weight`` is negative, the map folds (see `OffsetMap.folds`),
            or the stacker is closed.
        RuntimeError
            If drizzling the previous frame failed (the stack is then
            incomplete).
        """
        if self._closed:
            raise ValueError("the stacker is closed: it takes no more frames")
        data = np.asarray(data, dtype=np.float32)
        cube = data.ndim == 3 and self.bayer
        if data.shape[cube:] != self.shape:
            raise ValueError(f"frame shape {data.shape} differs from the stack's {self.shape}")
        if exptime is None:
            exptime = 1.0
        exptime = real(exptime, "exptime", low=0, low_open=True)
        if frame_weight is None:
            wtscale = exptime if self.exposure_weighting else 1.0
        else:
            wtscale = real(frame_weight, "frame_weight", low=0, low_open=True)
        if self.bayer and colors is None and not cube:
            raise ValueError(
                "a Bayer stack needs each frame's colors (raw_colors_visible), "
                "or a (3, ny, nx) colour cube"
            )
        if not self.bayer and colors is not None:
            raise ValueError("colors given for a mono stack: make it with bayer=True")
        if offset_map is not None and offset_map.shape != self.shape:
            raise ValueError(
                f"map shape {offset_map.shape} differs from the frame shape {self.shape}"
            )
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float32)
            if weight.shape != self.shape:
                raise ValueError(f"weight shape {weight.shape} differs from {self.shape}")
            if not np.all(np.isfinite(weight) & (weight >= 0)):
                raise ValueError("weight must be non-negative and finite everywhere")
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape not in (self.shape, data.shape):
                raise ValueError(f"mask shape {mask.shape} differs from {self.shape}")
        layers = colour_planes(data.shape, colors if self.bayer else None)
        if offset_map is not None:
            # Drizzle's C code crashes on a folded pixmap: refused here, before it.
            for origin, step in dict.fromkeys((layer.origin, layer.step) for layer in layers):
                offset_map.check_folds(map_name, origin=origin, step=step)
        kernel = frame_kernel(self.kernel, offset_map)
        slot = f"s{len(self._frames) % 2}"
        reaches = {}
        for index, layer in enumerate(layers):
            reaches[index] = self._write_layer(
                f"{slot}.{index}", (data, weight, mask), offset_map, layer, kernel, exptime
            )
        # The workers still drizzle the previous frame from the other slot.
        self.wait()
        frame = len(self._frames) if number is None else int(number)
        if self._context and frame // 32 >= self._ctx_planes:
            self._grow_contexts(frame // 32 + 1)
        jobs = self._jobs(slot, layers, reaches, frame, wtscale, kernel)
        self._pending = self._executor.submit(self._drizzle, jobs)
        self._frames.append(name or f"frame {frame + 1}")
        if offset_map is not None and map_name is None:
            map_name = "(an OffsetMap in memory)"
        self._maps.append(map_name)
        self._kernels.append(kernel)
        self._total_exptime += exptime

    def _write_layer(self, name, frame, offset_map, layer, kernel, exptime):
        """Write a layer's pixels, weights and offsets to the scratch; return its chunks' reach.

        The pixels are per second, as drizzle's ``in_units="counts"`` makes
        them, and 0 where they have no weight.
        """
        data, weight, mask = frame
        origin, step, part = layer.origin, layer.step, layer.sites
        pixels = data[layer.part]
        arrays = self._slot_arrays(name, pixels.shape)
        out = arrays["weight"]
        out[...] = np.isfinite(pixels)
        if weight is not None:
            out *= weight[part]
        for bad in (mask, None if layer.select is None else ~layer.select):
            if bad is not None:
                out[bad[layer.part if bad.ndim == 3 else part]] = 0.0
        np.multiply(pixels, np.float32(1.0 / exptime), out=arrays["data"])
        np.copyto(arrays["data"], np.float32(0.0), where=out == 0)
        if offset_map is None:
            arrays["xoff"][...] = 0.0
            arrays["yoff"][...] = 0.0
            low = high = np.zeros(pixels.shape[0], np.float32)
        else:
            arrays["xoff"][...] = offset_map.x_offset[part]
            arrays["yoff"][...] = offset_map.y_offset[part]
            with np.errstate(invalid="ignore"):
                low = np.fmin.reduce(arrays["yoff"], axis=1)
                high = np.fmax.reduce(arrays["yoff"], axis=1)
        del arrays, out
        y = origin[0] + step * np.arange(pixels.shape[0], dtype=np.float64)
        # Each row's least and greatest output y: the centres minus the offsets.
        y_min = (y - high + 0.5) * self.scale - 0.5
        y_max = (y - low + 0.5) * self.scale - 0.5
        c_low, c_high = chunk_reach(y_min, y_max, kernel, self.scale)
        return c_low, c_high, chunk_starts(pixels.shape[0]), pixels.shape[0]

    def _slot_arrays(self, name, shape):
        """Return the memory maps of a layer in a slot, made once and reused for every frame."""
        arrays = {}
        for part in ("data", "weight", "xoff", "yoff"):
            key = f"{name}.{part}"
            if os.path.exists(self._scratch.file(key)):
                arrays[part] = self._scratch.open(key)
                if arrays[part].shape == shape:
                    continue
            arrays[part] = self._scratch.create(key, shape, np.float32)
        return arrays

    def _jobs(self, slot, layers, reaches, frame, wtscale, kernel):
        """Return the workers' tasks of a frame: one list per phase."""
        # A drop's footprint is the raw pixel's: the square kernel's drop
        # follows the pixmap, so a layer of every other pixel takes half
        # the pixfrac; the other kernels' drops do not follow the pixmap,
        # and take the raw pixel's pixfrac and pixel scale as they are.
        tasks = ([], [])
        for index, name in enumerate(self.channels):
            mine = [k for k, layer in enumerate(layers) if layer.channel == index]
            bands = band_layout(self.out_shape[0], self._bands, [reaches[k] for k in mine])
            for phase, members in zip(tasks, phases(bands), strict=True):
                for b in members:
                    band, touched, chunks = bands[b]
                    if not any(chunks):
                        continue
                    layer_jobs = tuple(
                        LayerJob(
                            name=f"{slot}.{k}",
                            origin=layers[k].origin,
                            step=layers[k].step,
                            chunks=rows,
                            pixfrac=self.pixfrac / layers[k].step
                            if kernel == "square"
                            else self.pixfrac,
                            pscale_ratio=1.0 / self.scale,
                        )
                        for k, rows in zip(mine, chunks, strict=True)
                    )
                    phase.append(
                        BandJob(
                            directory=self._scratch.path,
                            channel=name,
                            band=band,
                            touched=touched,
                            layers=layer_jobs,
                            kernel=kernel,
                            scale=self.scale,
                            iscale=1.0 / self.scale**2,
                            wtscale=wtscale,
                            uniqid=frame % 32 + 1 if self._context else 0,
                            ctx_plane=frame // 32,
                        )
                    )
        return tasks

    def _drizzle(self, tasks):
        for jobs in tasks:
            if jobs:
                with self._tasks:
                    for job in jobs:
                        self._tasks.submit(drizzle_band, job)
                    list(self._tasks.results())

    def _grow_contexts(self, planes):
        for name in self.channels:
            old = self._scratch.open(f"{name}.ctx")
            new = self._scratch.create(f"{name}.ctx.new", (planes, *self.out_shape), np.int32)
            new[: old.shape[0]] = old
            del old, new
            os.replace(self._scratch.file(f"{name}.ctx.new"), self._scratch.file(f"{name}.ctx"))
        self._ctx_planes = planes

    @property
    def _kinds(self):
        """The arrays of each channel: image, weight and (if kept) context."""
        return ("img", "wht", "ctx") if self._context else ("img", "wht")

    def save(self, directory):
        """Write the stack so far to a new directory, exactly, to resume it with `load`.

        Its images, weights and contexts (``.npy`` files), and the frames
        they hold (``stacker.json``). The directory must not exist: it is
        written under another name and renamed when complete.
        """
        self.wait()
        partial = f"{directory}.part"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        for kind in self._kinds:
            for name in self.channels:
                np.save(
                    os.path.join(partial, f"{name}.{kind}.npy"),
                    self._scratch.open(f"{name}.{kind}", mode="r"),
                )
        state = {
            "frames": self._frames,
            "maps": self._maps,
            "kernels": self._kernels,
            "total_exptime": self._total_exptime,
            "ctx_planes": self._ctx_planes,
        }
        with open(os.path.join(partial, "stacker.json"), "w", encoding="utf-8") as file:
            json.dump(state, file)
        os.replace(partial, directory)

    def load(self, directory):
        """Take the stack that `save` wrote as this stacker's (which must have no frame yet)."""
        self.wait()
        if self._frames:
            raise ValueError("a stacker that has frames cannot load a saved stack")
        with open(os.path.join(directory, "stacker.json"), encoding="utf-8") as file:
            state = json.load(file)
        if self._context:
            self._grow_contexts(state["ctx_planes"])
        for name in self.channels:
            for kind in self._kinds:
                saved = load_npy(os.path.join(directory, f"{name}.{kind}.npy"), "r")
                target = self._scratch.open(f"{name}.{kind}")
                if saved.shape != target.shape:
                    raise ValueError(
                        f"{directory}: a saved stack of shape {saved.shape[-2:]}, "
                        f"not {target.shape[-2:]}"
                    )
                target[...] = saved
                target.flush()
        self._frames = list(state["frames"])
        self._maps = list(state["maps"])
        self._kernels = list(state["kernels"])
        self._total_exptime = float(state["total_exptime"])

    def add_stack(self, directory):
        """Add a stack that `save` wrote, of other frames of the same sequence.

        Images are weighted means (summed with their weights, in double
        precision), weights add up, contexts are ORed: the result is the
        stack of all the frames, within float32 rounding of drizzling them
        all into one stacker. Frames are listed in the order added.
        """
        self.wait()
        with open(os.path.join(directory, "stacker.json"), encoding="utf-8") as file:
            state = json.load(file)
        if self._context and state["ctx_planes"] > self._ctx_planes:
            self._grow_contexts(state["ctx_planes"])
        for name in self.channels:
            image = self._scratch.open(f"{name}.img")
            weight = self._scratch.open(f"{name}.wht")
            their_image = load_npy(os.path.join(directory, f"{name}.img.npy"), "r")
            their_weight = load_npy(os.path.join(directory, f"{name}.wht.npy"), "r")
            for start in range(0, image.shape[0], 256):
                rows = slice(start, start + 256)
                w1, w2 = weight[rows].astype(np.float64), their_weight[rows].astype(np.float64)
                total = w1 + w2
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = (
                        np.where(w1 > 0, image[rows] * w1, 0.0)
                        + np.where(w2 > 0, their_image[rows] * w2, 0.0)
                    ) / total
                image[rows] = np.where(total > 0, mean, np.nan)
                weight[rows] = total
            if self._context:
                context = self._scratch.open(f"{name}.ctx")
                theirs = load_npy(os.path.join(directory, f"{name}.ctx.npy"), "r")
                context[: theirs.shape[0]] |= theirs
                context.flush()
            image.flush()
            weight.flush()
        self._frames += state["frames"]
        self._maps += state["maps"]
        self._kernels += state["kernels"]
        self._total_exptime += float(state["total_exptime"])

    def wait(self):
        """Wait until the frames added so far are drizzled.

        Raises
        ------
        RuntimeError
            If drizzling a frame failed; the stack is then incomplete.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except MemoryError:
                raise  # the run's problem, said as such
            except Exception as exc:  # drizzle's, or its workers': any stops the stack
                raise DrizzleError(
                    f"drizzling {self._frames[-1]} failed, the stack is incomplete: {exc}"
                ) from exc

    def stack(self):
        """Return the stack so far (arrays shared with the stacker, not copied).

        Waits until the frames added are drizzled. The arrays map the
        stacker's scratch files, and stay readable after `close`.

        Returns
        -------
        `Stack`
        """
        self.wait()
        meta = {
            "kernel": self.kernel,
            "kernels": list(self._kernels),
            "pixfrac": self.pixfrac,
            "scale": self.scale,
            "exposure_weighting": self.exposure_weighting,
            "total_exptime": self._total_exptime,
            "frames": list(self._frames),
            "maps": list(self._maps),
            # Raw frames are in sensor units (ADU); FITS frames in whatever
            # their own units are, per second.
            "unit": "adu / s" if self.bayer else None,
            # What the reference frame's file tells (`stack_frames`): the
            # grid's WCS, the observation's cards, the rows' order.
            "wcs": None,
            "observation": [],
            "roworder": None,
        }

        def arrays(kind):
            return {
                name: self._scratch.open(f"{name}.{kind}").view(np.ndarray)
                for name in self.channels
            }

        return Stack(
            self.channels,
            arrays("img"),
            arrays("wht"),
            arrays("ctx") if self._context else None,
            meta,
        )

    def close(self):
        """Wait for the workers and remove the scratch files.

        The arrays of a `Stack` taken before stay readable. Called at the
        end of a ``with`` block; a closed stacker takes no more frames.
        """
        self._closed = True
        try:
            self.wait()
        finally:
            self._executor.shutdown()
            self._scratch.remove()


class DrizzleError(RuntimeError):
    """Drizzling a frame failed in a worker: the stack is incomplete."""
