"""Stacking a sequence of frame files with their map files."""

import collections
import os
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from tqdm import tqdm

from .._utils.batch import Batch, Result
from .._utils.naming import map_path, mask_path
from .._utils.provenance import provenance_header, write_product
from ..frames import hot_pixels, read_frame
from ..maps import OffsetMap
from ._bands import Scratch
from ._normalisation import Normalisation, apply, normalisation
from ._rejection import Rejection
from ._stacker import DrizzleError, Stacker, check_stack_options

__all__ = ["StackResult", "stack_frames"]


@dataclass(frozen=True, kw_only=True)
class StackResult(Result):
    """What became of one frame in `stack_frames`.

    Examples
    --------
    >>> from astro_offsets import StackResult
    >>> StackResult(path="DSC0001.ARW", status="stacked", map="DSC0001.offsets.fits").status
    'stacked'
    """

    map: str | None = None
    """Its map file, or `None` for the reference frame."""
    scale: float | None = None
    """The scale that normalised it (`None` when not normalised)."""
    masked: float | None = None
    """The fraction of its pixels masked as outliers (`None` without rejection)."""


_MAKE_MAPS = (
    "make the maps first: astro-offsets tables FRAME... --reference FRAME, "
    "then astro-offsets maps TABLE... --image FRAME"
)


def _made_against(path):
    """Return the reference frame a map records (``REFFRAME``), or `None`."""
    try:
        return fits.getheader(path).get("REFFRAME") or None
    except Exception:  # an unreadable map is reported when it is read
        return None


def _plan(frames, maps, reference):
    """Return ``{frame: (map path or None, problem or None)}``.

    The reference frame is ``reference``; or else the frame the maps were
    made against (their ``REFFRAME``); or else the one frame without a map.
    It stacks unmoved, whatever map lies beside it. Several frames without a
    map and no reference is an error, as stacking a frame unmoved that is
    not the reference doubles every star; so is a plan in which no frame has
    a map (it would stack the reference alone), and maps made against
    different references. A map made against another frame than the
    reference fails its frame.
    """
    expected = {frame: map_path(frame, maps) for frame in frames}
    found = {frame: path for frame, path in expected.items() if os.path.exists(path)}
    if frames and not found:
        where = "beside the frames" if maps is None else f"in {maps}"
        which = "the frame has" if len(frames) == 1 else f"none of the {len(frames)} frames has"
        raise ValueError(f"{which} a map {where} (such as {expected[frames[0]]}): " + _MAKE_MAPS)
    against = {frame: _made_against(path) for frame, path in found.items()}
    by_name = {os.path.basename(frame): frame for frame in frames}
    # A frame that every other map was made against is the reference; its own
    # map, if any, is left from an earlier reference.
    agreed = [
        name
        for name in sorted({name for name in against.values() if name} & set(by_name))
        if all(not a or a == name for f, a in against.items() if f != by_name[name])
    ]
    if reference is not None:
        if os.path.abspath(reference) not in {os.path.abspath(f) for f in frames}:
            raise ValueError(f"{reference}: the reference frame is not among the frames")
    elif len(agreed) == 1:
        reference = by_name[agreed[0]]
    elif len({name for name in against.values() if name}) > 1:
        names = ", ".join(sorted({name for name in against.values() if name}))
        raise ValueError(
            f"the maps were made against different reference frames ({names}): remake the "
            "tables and maps against one (--overwrite), or name the reference (--reference) "
            "to stack the frames whose maps were made against it"
        )
    else:
        missing = [frame for frame in frames if frame not in found]
        if len(missing) > 1:
            shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
            raise ValueError(
                f"{len(missing)} frames have no map ({shown}), and only the reference frame "
                f"may have none: {_MAKE_MAPS}; or, if the others' tables or maps failed, "
                "name the reference (--reference) to stack the frames that have maps"
            )
        reference = missing[0] if missing else None
    reference = None if reference is None else os.path.abspath(reference)
    plan = {}
    for frame in frames:
        path, problem = found.get(frame), None
        if os.path.abspath(frame) == reference:
            path = None
        elif path is None:
            problem = f"no map {expected[frame]}, and it is not the reference frame"
            if os.path.basename(frame) in set(against.values()):
                problem += " (the maps were made against it: is it the reference?)"
        elif reference and against[frame] and against[frame] != os.path.basename(reference):
            problem = (
                f"its map {path} was made against {against[frame]}, not against the reference "
                f"{os.path.basename(reference)}: remake its table and map (--overwrite)"
            )
        plan[frame] = (path, problem)
    return plan


def stack_frames(
    frames,
    *,
    maps=None,
    reference=None,
    calibration=None,
    mask_hot_pixels=True,
    normalize=True,
    reject=None,
    masks=None,
    scratch=None,
    progress=False,
    callback=None,
    n_jobs=None,
    **options,
):
    """Drizzle frame files onto the reference frame's grid with their map files.

    Each frame ``<stem>.<ext>`` is moved by its map ``<stem>.offsets.fits``
    (beside it, or in ``maps``); the reference frame stacks unmoved. Raw
    files give a colour (Bayer drizzle) stack, FITS files a mono
    one. Frames are read one at a time. A frame that cannot be stacked is
    reported and the others are still stacked.

    Parameters
    ----------
    frames : iterable of str or path-like
        Frame files: camera raw files (rawpy) or FITS images, all of one size.
    maps : str, path-like or `None`, optional
        Directory of the maps; `None` looks beside each frame.
    reference : str, path-like or `None`, optional
        The reference frame, which may have no map; by default the frame the
        maps were made against (their ``REFFRAME``), or else the one frame
        without a map. A frame whose map was made against another frame
        fails.
    calibration : `~astro_offsets.frames.Calibration` or `None`, optional
        Master bias, dark and flat frames, applied to every frame before
        anything else (as `make_tables` applies them).
    mask_hot_pixels : bool, optional
        Give no weight to each frame's hot pixels (isolated spikes far above
        their neighbours): fixed to the sensor, they would otherwise draw
        trails of dots across the stack as the frames move. The default is
        `True`.
    normalize : bool, optional
        Bring each frame to the reference's transparency, exposure and sky
        before combining: multiply it by its map's flux scale (the median
        ratio of the stars' fluxes in the reference and in the frame, which
        its star table measured) and add the offset that brings its sky
        level to the reference's, per colour channel. The default is
        `True`. See `Normalisation`.
    reject : bool or `None`, optional
        Reject outliers (satellite and aircraft trails, cosmic rays) the
        drizzle way: every frame drizzled alone onto the reference grid, the
        median of those, blotted back to each frame, and the pixels that
        deviate from it beyond their noise left out of the stack. `None`
        (the default) rejects with 3 frames or more; with fewer, a median
        cannot tell the outlier. See `astro_offsets.stack` for the scheme.
    masks : bool, str, path-like or `None`, optional
        Write each frame's outlier mask, ``<stem>.outliers.fits`` (1 for an
        outlier, 2 for a pixel without weight: a hot pixel), beside the
        frame (`True`) or into this directory (which must exist). Only with
        rejection.
    scratch : str, path-like or `None`, optional
        Directory of the scratch files; `None` is the system's temporary
        directory. Rejection keeps every frame there until the end, with its
        single drizzles: about 8 bytes per pixel and frame. The room is
        checked once the first frame is read, before anything is kept.
    progress : bool, optional
        Show a progress bar on stderr (when it is a terminal), and say on
        stderr, at that check, how much scratch space rejection
        takes and where.
    callback : callable or `None`, optional
        Called with each `StackResult` as soon as it is known.
    n_jobs : int or `None`, optional
        Worker processes that drizzle, with joblib's meaning: `None` honours
        `joblib.parallel_config` (one worker outside it), -1 is all cores.
        The stack is the same for any number. The next frame is read while
        the workers drizzle one.
    **options
        The drizzle: ``kernel``, ``pixfrac``, ``scale``,
        ``exposure_weighting``, ``context``, as for `Stacker` (checked
        before any frame is read).

    Returns
    -------
    stack : `Stack`
        The stack of the frames that could be stacked, in units per second
        of the reference frame's exposure when normalised. Its ``meta``
        records each frame's normalisation and rejected fraction.
    results : list of `StackResult`
        One per frame, in the order given. Files that astro_offsets wrote
        (maps, star tables, stacks, recognised by their header or name) are
        left out, as ``"ignored"``.

    Raises
    ------
    ValueError
        If no frame could be stacked, an option is out of range, the
        scratch directory has not the room rejection needs,
        ``reference`` is not one of ``frames``, or it is not given and
        several frames have no map.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_offsets import OffsetMap, stack_frames
    >>> folder = tempfile.mkdtemp()
    >>> frames = [os.path.join(folder, f"light{k}.fits") for k in range(2)]
    >>> for frame in frames:
    ...     fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(frame)
    >>> OffsetMap(np.full((20, 30), 0.5), np.zeros((20, 30))).write(
    ...     os.path.join(folder, "light1.offsets.fits"))
    >>> stack, results = stack_frames(frames)
    >>> [(os.path.basename(r.path), r.status) for r in results]
    [('light0.fits', 'stacked'), ('light1.fits', 'stacked')]
    >>> stack.channels
    ('SCI',)
    """
    check_stack_options(**options)
    if masks not in (None, True, False) and not os.path.isdir(masks):
        raise ValueError(f"{masks}: the directory for the masks does not exist")
    if scratch is not None and not os.path.isdir(scratch):
        raise ValueError(f"{scratch}: the scratch directory does not exist")
    batch = Batch(
        frames, StackResult, what="frame", name="stack", progress=progress, callback=callback
    )
    plan = _plan(batch.inputs, maps, reference)
    todo = []
    for index, frame in batch:
        omap_path, problem = plan[frame]
        if problem is None:
            todo.append((index, frame, omap_path))
        else:
            batch.fail(index, problem, map=omap_path)
    # The reference first: every frame is normalised to it.
    todo.sort(key=lambda item: item[2] is not None)
    if reject is None:
        reject = len(todo) >= 3
        if masks and not reject:
            warnings.warn(
                f"no outlier masks: rejection needs 3 frames or more, not {len(todo)}",
                AstropyUserWarning,
                stacklevel=2,
            )
    elif masks and not reject:
        raise ValueError("outlier masks need rejection: masks= with reject=False")
    run = _Run(batch, calibration, mask_hot_pixels, normalize, n_jobs, scratch, options)
    try:
        if reject and todo:
            run.reject(todo, masks)
        else:
            for index, frame, omap_path in todo:
                prepared = run.prepare(index, frame, omap_path)
                if prepared is not None:
                    run.add(index, frame, omap_path, prepared)
        return run.stack(reject), batch.results
    finally:
        run.close()


class _Prepared(NamedTuple):
    data: np.ndarray
    """Calibrated and normalised; NaN at hot pixels and wherever else no weight."""
    offset_map: object
    colors: object
    exptime: float | None
    norm: Normalisation
    hot: object


def _write_mask(directory, frame, outliers, unweighted):
    """Write a frame's mask: 1 at its outliers, 2 where it has no weight (hot pixels)."""
    mask = np.where(unweighted, np.uint8(2), outliers.astype(np.uint8))
    cards = [
        ("FRAME", os.path.basename(frame), "the frame masked"),
        ("NOUTLIER", int(np.count_nonzero(mask == 1)), "outliers (grown by one pixel)"),
        ("NUNWGHT", int(np.count_nonzero(mask == 2)), "pixels without weight (hot, NaN)"),
    ]
    header = provenance_header("outlier mask", cards, _MASK_CONVENTION)
    write_product(mask_path(frame, directory), [fits.PrimaryHDU(mask, header)], overwrite=True)


_MASK_CONVENTION = (
    "1: an outlier (a trail, a cosmic ray), left out of the stack;",
    "2: no weight in the frame (a hot pixel, or NaN after calibration);",
    "0: stacked. Pixel [j, i] is the frame's pixel x=i, y=j.",
)


def _gigabytes(size):
    """Return bytes as gigabytes in words: two figures, whole ones from 10 GB.

    >>> [_gigabytes(n) for n in (8.6e6, 2.4e8, 33.6e9, 150e9, 65.4e9, 1000)]
    ['0.0086', '0.24', '34', '150', '65', 'less than 0.001']
    """
    if size < 1e6:
        return "less than 0.001"
    return f"{size / 1e9:.2g}" if size < 10e9 else f"{size / 1e9:.0f}"


class _Run:
    """One run of `stack_frames`: frames read, normalised, rejected and stacked."""

    def __init__(self, batch, calibration, mask_hot_pixels, normalize, n_jobs, scratch, options):
        self.batch = batch
        self.progress = batch.progress
        self.calibration = calibration
        self.mask_hot_pixels = mask_hot_pixels
        self.normalize = normalize
        self.n_jobs = n_jobs
        self.scratch = scratch
        self.options = options
        self.stacker = None
        self.rejection = None
        self.rejection_scratch = None
        self.colors = None
        self.layers = None
        self.reference = None  # its normalisation and exposure time
        self.notes = []  # per frame stacked: (normalisation, masked fraction)

    def prepare(self, index, frame, omap_path):
        """Read, calibrate and normalise a frame; `None` (and the frame failed) if it cannot."""
        try:
            return self._prepare(frame, omap_path)
        except DrizzleError:
            raise  # an earlier frame's: the stack cannot be finished
        except Exception as exc:
            self.batch.fail(index, exc, map=omap_path)
            return None

    def _prepare(self, frame, omap_path):
        raw = read_frame(frame) if self.calibration is None else self.calibration.read(frame)
        data = np.array(raw.data, dtype=np.float32)
        omap = OffsetMap.read(omap_path) if omap_path is not None else None
        if omap is not None and omap.shape != data.shape:
            raise ValueError(
                f"frame shape {data.shape} differs from its map's {omap.shape} ({omap_path})"
            )
        self._check(data, raw.colors)
        hot = hot_pixels(data, raw.colors) if self.mask_hot_pixels else None
        if hot is not None:
            data[hot] = np.nan
        norm = normalisation(data, raw.colors, omap, raw.exptime, self.reference)
        if self.reference is None:
            self.reference = (norm, raw.exptime)
        if self.normalize:
            apply(data, self.layers, norm)
        return _Prepared(data, omap, raw.colors, raw.exptime, norm, hot)

    def prepared(self, todo):
        """Yield ``(index, frame, map path, prepared)`` in order; `None` for a frame that failed.

        The first frame that can be read (the reference, normally) is
        prepared alone, as the others are normalised to it; then two at a
        time, on two threads, while the caller takes them in order.
        """
        todo = iter(todo)
        for index, frame, omap_path in todo:
            prepared = self.prepare(index, frame, omap_path)
            yield index, frame, omap_path, prepared
            if prepared is not None:
                break
        pending = collections.deque()
        with ThreadPoolExecutor(2, thread_name_prefix="astro_offsets-read") as pool:
            for item in todo:
                pending.append((item, pool.submit(self._prepare, *item[1:])))
                if len(pending) == 2:
                    yield self._collect(*pending.popleft())
            while pending:
                yield self._collect(*pending.popleft())

    def _collect(self, item, future):
        index, frame, omap_path = item
        try:
            return index, frame, omap_path, future.result()
        except DrizzleError:
            raise
        except Exception as exc:
            self.batch.fail(index, exc, map=omap_path)
            return index, frame, omap_path, None

    def _check(self, data, colors):
        """Make the stacker for the first frame; check the others fit it."""
        if self.stacker is None:
            self.stacker = Stacker(
                data.shape,
                bayer=colors is not None,
                n_jobs=self.n_jobs,
                scratch=self.scratch,
                **self.options,
            )
            self.colors = colors
            self.layers = self.stacker.layers(colors)
            return
        if (colors is not None) != self.stacker.bayer:
            kind = "a colour raw frame" if colors is not None else "a mono frame"
            raise ValueError(
                f"{kind}, but the stack is {'colour' if self.stacker.bayer else 'mono'}"
            )
        if data.shape != self.stacker.shape:
            raise ValueError(
                f"frame shape {data.shape} differs from the stack's {self.stacker.shape}"
            )
        if colors is not None and not np.array_equal(colors, self.colors):
            raise ValueError("its colour filter pattern differs from the first frame's")

    def add(self, index, frame, omap_path, prepared, outliers=None, masked=None):
        """Drizzle a prepared frame onto the stack."""
        try:
            data, exptime = prepared.data, prepared.exptime
            # Normalised to the reference's counts: per second of the
            # reference's exposure, weighted by the frame's own.
            ref_exptime = self.reference[1]
            if self.normalize and exptime and ref_exptime:
                data *= np.float32(exptime / ref_exptime)
            self.stacker.add(
                data,
                prepared.offset_map,
                mask=outliers,
                colors=prepared.colors,
                exptime=exptime,
                name=frame,
                map_name=omap_path,
            )
        except DrizzleError:
            raise
        except Exception as exc:
            self.batch.fail(index, exc, map=omap_path)
            return
        self.notes.append((prepared.norm, masked))
        self.batch.finish(
            index,
            "stacked",
            map=omap_path,
            scale=prepared.norm.scale if self.normalize else None,
            masked=masked,
        )

    def reject(self, todo, masks):
        """Stack with outlier rejection: two passes over the frames.

        The first keeps each frame (calibrated and normalised) in the scratch
        and drizzles it alone; the second finds its outliers against the
        median of all and drizzles it onto the stack without them. Only the
        frames' names are held in between: maps are read again.
        """
        kept = []
        bar = tqdm(
            total=len(todo), desc="outliers", unit="frame", disable=None if self.progress else True
        )
        with bar:
            for index, frame, omap_path, prepared in self.prepared(todo):
                bar.update()
                if prepared is None:
                    continue
                if self.rejection is None:
                    self._start_rejection(len(todo))
                zeros = prepared.norm.offsets if self.normalize else None
                number = self.rejection.add(prepared.data, prepared.offset_map, zeros)
                kept.append(
                    (
                        index,
                        frame,
                        omap_path,
                        number,
                        prepared._replace(data=None, offset_map=None, colors=None, hot=None),
                    )
                )
                del prepared
        if not kept:
            return
        self.rejection.combine()
        for index, frame, omap_path, number, prepared in kept:
            try:
                omap = OffsetMap.read(omap_path) if omap_path is not None else None
                data, outliers, stats = self.rejection.mask(number, omap)
            except Exception as exc:
                self.batch.fail(index, exc, map=omap_path)
                continue
            if masks not in (None, False):
                directory = None if masks is True else masks
                _write_mask(directory, frame, outliers, ~np.isfinite(data))
            prepared = prepared._replace(data=data, offset_map=omap, colors=self.colors)
            self.add(index, frame, omap_path, prepared, outliers, stats.fraction)

    def _start_rejection(self, n_frames):
        self.rejection_scratch = Scratch(self.scratch)
        need = Rejection.disk_bytes(self.stacker.shape, self.layers, n_frames)
        free = shutil.disk_usage(self.rejection_scratch.path).free
        where = os.path.dirname(self.rejection_scratch.path)
        if need > free:
            raise ValueError(
                f"outlier rejection needs {_gigabytes(need)} GB of scratch space in "
                f"{where}, {_gigabytes(free)} GB are free: "
                "give another directory (scratch=, --scratch) or stack without rejection "
                "(reject=False, --no-reject)"
            )
        if self.progress:
            tqdm.write(
                f"outlier rejection: {_gigabytes(need)} GB of scratch space in {where} "
                f"({_gigabytes(free)} GB free), removed at the end",
                file=sys.stderr,
            )
        self.rejection = Rejection(
            self.stacker.shape,
            self.layers,
            self.rejection_scratch,
            len(self.stacker.channels),
            n_jobs=self.n_jobs,
        )

    def stack(self, reject):
        if self.stacker is None or not self.notes:
            raise ValueError("no frame could be stacked")
        stack = self.stacker.stack()
        stack.meta["normalized"] = bool(self.normalize)
        stack.meta["rejected"] = bool(reject)
        stack.meta["normalisation"] = [norm for norm, _ in self.notes]
        stack.meta["masked"] = [masked for _, masked in self.notes]
        return stack

    def close(self):
        try:
            if self.rejection is not None:
                self.rejection.close()
            if self.rejection_scratch is not None:
                self.rejection_scratch.remove()
        finally:
            if self.stacker is not None:
                self.stacker.close()
