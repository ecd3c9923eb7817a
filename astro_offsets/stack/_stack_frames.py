"""Stacking a sequence of frame files with their map files."""

import collections
import functools
import hashlib
import os
import shutil
import sys
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from tqdm import tqdm

from .._utils.batch import Batch, Result, describe
from .._utils.naming import map_path, mask_path
from .._utils.provenance import provenance_header, write_product
from .._utils.workers import cluster_client, workers_can_read
from ..frames import hot_pixels, read_frame
from ..maps import OffsetMap
from ._bands import Scratch
from ._checkpoint import Checkpoint, normalisation_of, record
from ._normalisation import Normalisation, apply, normalisation
from ._rejection import Rejection, _offsets, keep_frame
from ._stacker import DrizzleError, Stacker, check_stack_options, frame_layers

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
    checkpoint=None,
    checkpoint_every=10,
    resume=False,
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
        the workers drizzle one. Inside ``joblib.parallel_config(backend="dask")``
        the frames go to the dask cluster instead: with rejection, a task
        per frame keeps it and drizzles it alone, tasks of row chunks take
        the medians; then each worker stacks a share of the frames into a
        partial stack, and the partial stacks are added up here (images
        and weights are weighted sums, contexts are ORed). The files move
        as paths: the workers must read the frames, the maps and the
        ``checkpoint`` (or ``scratch``) directory at the same paths.
    checkpoint : str, path-like or `None`, optional
        A directory where the stack keeps what it needs to resume: with
        rejection its frames kept and drizzled alone (instead of
        ``scratch``) and their medians; partial stacks every
        ``checkpoint_every`` frames. It is removed once the stack is
        complete, and kept if the run stops before. `None` (the default)
        keeps no checkpoint.
    checkpoint_every : int, optional
        Frames between two partial stacks. The default is 10.
    resume : bool, optional
        Continue from the checkpoint in ``checkpoint`` (the same frames,
        maps and options). The stack is the same as an uninterrupted run's,
        and no frame goes in twice. Without a checkpoint there, the run
        starts from the beginning. The default is `False`: a checkpoint
        there is an error.
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
        ``reference`` is not one of ``frames``, it is not given and
        several frames have no map, or the checkpoint is of another stack
        (or there without ``resume``).
    OSError
        On a dask cluster, if a worker cannot read a frame, a map or the
        directory of the shared files.

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
    if int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be 1 or more, got {checkpoint_every!r}")
    masks = os.path.abspath(masks) if masks not in (None, True, False) else masks
    batch = Batch(
        frames, StackResult, what="frame", name="stack", progress=progress, callback=callback
    )
    plan = _plan(batch.inputs, maps, reference)
    todo = []
    for index, frame in batch:
        omap_path, problem = plan[frame]
        if problem is None:
            map_file = None if omap_path is None else os.path.abspath(omap_path)
            todo.append(_Item(index, frame, omap_path, os.path.abspath(frame), map_file))
        else:
            batch.fail(index, problem, map=omap_path)
    # The reference first: every frame is normalised to it.
    todo.sort(key=lambda item: item.omap_path is not None)
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
    client = cluster_client()
    saved = None
    if checkpoint is not None:
        identity = {
            "frames": [item.frame_file for item in todo],
            "maps": [item.map_file for item in todo],
            "reject": bool(reject),
            "normalize": bool(normalize),
            "mask_hot_pixels": bool(mask_hot_pixels),
            "calibration": _digest(calibration),
            "options": check_stack_options(**options),
        }
        shares = 1 if client is None else len(client.scheduler_info()["workers"])
        saved = Checkpoint(
            checkpoint, identity, every=checkpoint_every, resume=resume, shares=shares
        )
        if client is None and saved.shares > 1:
            raise ValueError(
                f"{checkpoint}: the checkpoint of a stack on a dask cluster, in "
                f"{saved.shares} shares: resume it on a cluster (--scheduler)"
            )
        if saved.resumed and progress:
            tqdm.write(f"resuming from {saved.name}: {saved.summary()}", file=sys.stderr)
    frames_read = _Frames(calibration, mask_hot_pixels, normalize)
    run = _Run(batch, frames_read, n_jobs if client is None else 1, scratch, options, saved)
    try:
        if client is not None:
            _on_cluster(run, client, todo, reject, masks)
        elif reject and todo:
            run.reject(todo, masks)
        else:
            run.stack_share(0, [(None, item, None) for item in todo], False)
        stack = run.stack(reject)
    except BaseException:
        if saved is not None and progress:
            tqdm.write(
                f"the stack stopped; its checkpoint is kept in {saved.name}: continue it "
                "with --resume (resume=True)",
                file=sys.stderr,
            )
        run.close()
        raise
    run.close()
    if saved is not None:
        saved.remove()
    return stack, batch.results


class _Prepared(NamedTuple):
    data: np.ndarray
    """Calibrated and normalised; NaN at hot pixels and wherever else no weight."""
    offset_map: object
    colors: object
    exptime: float | None
    norm: Normalisation


class _Item(NamedTuple):
    """A frame to stack: its place in the inputs, its names and the files read."""

    index: int
    """Its place among the inputs (the batch's)."""
    frame: str
    """As the user gave it (messages, provenance)."""
    omap_path: str | None
    """Its map as found (messages, provenance); `None` for the reference."""
    frame_file: str
    """Absolute: a worker may run in another directory."""
    map_file: str | None


class _Frames:
    """How a stack reads its frames: calibrated, checked, hot pixels out, normalised.

    The first frame read (the reference) fixes the shape, the colours and
    the normalisation of all. Picklable: a cluster's workers read their
    frames through a copy made once the reference is read.
    """

    def __init__(self, calibration, mask_hot_pixels, normalize):
        self.calibration = calibration
        self.mask_hot_pixels = mask_hot_pixels
        self.normalize = normalize
        self.shape = None
        self.colors = None
        self.layers = None
        self.reference = None  # its normalisation and exposure time

    def read(self, item):
        raw = (
            read_frame(item.frame_file)
            if self.calibration is None
            else self.calibration.read(item.frame_file)
        )
        data = np.array(raw.data, dtype=np.float32)
        omap = OffsetMap.read(item.map_file) if item.map_file is not None else None
        if omap is not None and omap.shape != data.shape:
            raise ValueError(
                f"frame shape {data.shape} differs from its map's {omap.shape} ({item.omap_path})"
            )
        self._check(data, raw.colors)
        if self.mask_hot_pixels:
            data[hot_pixels(data, raw.colors)] = np.nan
        norm = normalisation(data, raw.colors, omap, raw.exptime, self.reference)
        if self.reference is None:
            self.reference = (norm, raw.exptime)
        if self.normalize:
            apply(data, self.layers, norm)
        return _Prepared(data, omap, raw.colors, raw.exptime, norm)

    def _check(self, data, colors):
        """Fix the shape and colours with the first frame; check the others fit them."""
        if self.shape is None:
            self.shape = data.shape
            self.colors = colors
            self.layers = frame_layers(data.shape, colors)
            return
        if (colors is not None) != (self.colors is not None):
            kind = "a colour raw frame" if colors is not None else "a mono frame"
            raise ValueError(
                f"{kind}, but the stack is {'colour' if self.colors is not None else 'mono'}"
            )
        if data.shape != self.shape:
            raise ValueError(f"frame shape {data.shape} differs from the stack's {self.shape}")
        if colors is not None and not np.array_equal(colors, self.colors):
            raise ValueError("its colour filter pattern differs from the first frame's")

    def zeros(self, norm):
        """Return the value of no light in a frame, per channel (rejection's noise model)."""
        return norm.offsets if self.normalize else None


class _Collected:
    """What a cluster's worker reports of its frames, for the caller's `Batch`."""

    def __init__(self, items):
        self.frames = {item.index: item.frame for item in items}
        self.calls = []

    def finish(self, index, status, message="", **fields):
        self.calls.append(("finish", index, (status, message), fields))

    def fail(self, index, problem, **fields):
        self.calls.append(("fail", index, (describe(self.frames[index], problem),), fields))

    def replay(self, batch):
        for method, index, arguments, fields in self.calls:
            getattr(batch, method)(index, *arguments, **fields)


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
    """One run of `stack_frames`: frames read, normalised, rejected and stacked.

    The frames go into the stack in shares (`stack_share`): one, here, or
    one per worker of a dask cluster, each into a partial stack of its own,
    added up at the end. With a checkpoint, each share saves its partial
    stack every few frames, and a resumed run takes up where it stopped.
    """

    def __init__(self, batch, frames, n_jobs, scratch, options, checkpoint=None):
        self.batch = batch
        self.progress = getattr(batch, "progress", False)
        self.frames = frames
        self.n_jobs = n_jobs
        self.scratch = scratch
        self.options = options
        self.checkpoint = checkpoint
        self.stacker = None
        self.rejection = None
        self.rejection_scratch = None
        self.notes = []  # per frame stacked: (normalisation, masked fraction)

    def prepare(self, item):
        """Read a frame (`Frames.read`); `None` (and the frame failed) if it cannot."""
        try:
            prepared = self.frames.read(item)
        except DrizzleError:
            raise  # an earlier frame's: the stack cannot be finished
        except Exception as exc:
            self.batch.fail(item.index, exc, map=item.omap_path)
            return None
        self._start()
        return prepared

    def _start(self):
        if self.stacker is None:
            self.stacker = Stacker(
                self.frames.shape,
                bayer=self.frames.colors is not None,
                n_jobs=self.n_jobs,
                scratch=self.scratch,
                **self.options,
            )

    def prepared(self, todo, skip=()):
        """Yield ``(item, prepared)`` in order; `None` for a frame that failed.

        The first frame that can be read (the reference, normally) is
        prepared alone, as the others are normalised to it; it is yielded
        unless in ``skip``, and so are the others, which are read two at a
        time, on two threads, while the caller takes them in order.
        """
        todo = iter(todo)
        for item in todo:
            prepared = self.prepare(item)
            if prepared is None or item.index not in skip:
                yield item, prepared
            if prepared is not None:
                break
        pending = collections.deque()
        with ThreadPoolExecutor(2, thread_name_prefix="astro_offsets-read") as pool:
            for item in todo:
                if item.index in skip:
                    continue
                pending.append((item, pool.submit(self.frames.read, item)))
                if len(pending) == 2:
                    yield self._collect(*pending.popleft())
            while pending:
                yield self._collect(*pending.popleft())

    def _collect(self, item, future):
        try:
            return item, future.result()
        except DrizzleError:
            raise
        except Exception as exc:
            self.batch.fail(item.index, exc, map=item.omap_path)
            return item, None

    def stack_share(self, share, items, reject, masks=None):
        """Stack a share of the frames, ``(number, item, record)`` each, numbered in the sequence.

        With rejection the frames are those rejection kept (``record`` their
        normalisation, from its first pass); without, they are read here. A
        share saved in the checkpoint resumes from its last partial stack.
        """
        saved = None if self.checkpoint is None else self.checkpoint.share(share)
        done = {} if saved is None else saved[1]
        stacked = []
        since = 0
        for number, item, prepared, outliers, stats in self._frames_of(items, done, reject, masks):
            if saved is not None and self.frames.shape is not None:
                stacked = self._restore(saved, items)
                saved = None
            if prepared is None:
                continue
            masked = None if stats is None else stats.fraction
            if self.add(item, prepared, outliers, masked, number):
                stacked.append((item.index, record(prepared.norm, prepared.exptime, masked=masked)))
                since += 1
            if self.checkpoint is not None and since >= self.checkpoint.every:
                self.checkpoint.save_share(share, self.stacker, stacked)
                if self.rejection is not None:
                    self.rejection.release(index for index, _ in stacked)
                since = 0
        if saved is not None and self.frames.shape is not None:
            self._restore(saved, items)

    def _restore(self, saved, items):
        """Take up a share's partial stack; report its frames; return their records."""
        self._start()
        self.stacker.load(saved[0])
        done = saved[1]
        for _, item, _ in items:
            if item.index in done:
                self._restored(item, done[item.index])
        return [(index, entry) for index, entry in done.items()]

    def _frames_of(self, items, done, reject, masks):
        """Yield ``(number, item, prepared, outliers, stats)`` of a share's frames not ``done``.

        Without rejection the first frame is read even if done: it is the
        reference, which every frame is normalised to.
        """
        numbers = {item.index: number for number, item, _ in items}
        if not reject:
            for item, prepared in self.prepared([item for _, item, _ in items], skip=done):
                yield numbers[item.index], item, prepared, None, None
            return
        for number, item, entry in items:
            if item.index in done:
                continue
            try:
                omap = OffsetMap.read(item.map_file) if item.map_file is not None else None
                data, outliers, stats = self.rejection.mask(item.index, omap)
            except Exception as exc:
                self.batch.fail(item.index, exc, map=item.omap_path)
                continue
            if masks not in (None, False):
                directory = None if masks is True else masks
                _write_mask(directory, item.frame_file, outliers, ~np.isfinite(data))
            self._start()
            prepared = _Prepared(
                data, omap, self.frames.colors, entry["exptime"], normalisation_of(entry)
            )
            yield number, item, prepared, outliers, stats

    def _restored(self, item, entry):
        """Report a frame that a resumed partial stack holds."""
        norm = normalisation_of(entry)
        self.notes.append((norm, entry["masked"]))
        self.batch.finish(
            item.index,
            "stacked",
            map=item.omap_path,
            scale=norm.scale if self.frames.normalize else None,
            masked=entry["masked"],
        )

    def add(self, item, prepared, outliers=None, masked=None, number=None):
        """Drizzle a prepared frame onto the stack; return whether it went in."""
        try:
            data, exptime = prepared.data, prepared.exptime
            # Normalised to the reference's counts: per second of the
            # reference's exposure, weighted by the frame's own.
            ref_exptime = self.frames.reference[1]
            if self.frames.normalize and exptime and ref_exptime:
                data *= np.float32(exptime / ref_exptime)
            self.stacker.add(
                data,
                prepared.offset_map,
                mask=outliers,
                colors=prepared.colors,
                exptime=exptime,
                name=item.frame,
                map_name=item.omap_path,
                number=number,
            )
        except DrizzleError:
            raise
        except Exception as exc:
            self.batch.fail(item.index, exc, map=item.omap_path)
            return False
        self.notes.append((prepared.norm, masked))
        self.batch.finish(
            item.index,
            "stacked",
            map=item.omap_path,
            scale=prepared.norm.scale if self.frames.normalize else None,
            masked=masked,
        )
        return True

    def keep(self, todo):
        """Rejection's first pass: keep each frame and drizzle it alone; return the kept.

        Returns ``{index: record}`` of every frame kept, in this run or (from
        the checkpoint) an earlier one.
        """
        kept = {} if self.checkpoint is None else self.checkpoint.kept()
        bar = tqdm(
            total=len(todo), desc="outliers", unit="frame", disable=None if self.progress else True
        )
        with bar:
            bar.update(sum(item.index in kept for item in todo))
            for item, prepared in self.prepared(todo, skip=kept):
                bar.update()
                if prepared is None:
                    continue
                self._start_rejection(len(todo))
                entry = record(prepared.norm, prepared.exptime, self.frames.zeros(prepared.norm))
                then = None
                if self.checkpoint is not None:
                    then = functools.partial(self.checkpoint.mark_kept, item.index, entry)
                self.rejection.add(
                    item.index, prepared.data, prepared.offset_map, entry["zeros"], then
                )
                kept[item.index] = entry
                del prepared
            if kept:
                self._start_rejection(len(todo))
            for index, entry in kept.items():
                self.rejection.kept(index, entry["zeros"])
        return kept

    def reject(self, todo, masks):
        """Stack with outlier rejection: two passes over the frames.

        The first keeps each frame (calibrated and normalised) in the scratch
        and drizzles it alone; the second finds its outliers against the
        median of all and drizzles it onto the stack without them. Only the
        frames' names are held in between: maps are read again.
        """
        kept = self.keep(todo)
        if not kept:
            return
        self.rejection.combine()
        self.stack_share(0, _numbered(todo, kept), True, masks)

    def _start_rejection(self, n_frames, client=None):
        if self.rejection is not None:
            return
        if self.checkpoint is not None:
            directory = self.checkpoint.path
        else:
            self.rejection_scratch = Scratch(self.scratch)
            directory = self.rejection_scratch.path
        need = Rejection.disk_bytes(self.frames.shape, self.frames.layers, n_frames)
        free = shutil.disk_usage(directory).free
        where = self.checkpoint.name if self.checkpoint is not None else os.path.dirname(directory)
        if need > free:
            ways = (
                "give another directory (scratch=, --scratch)"
                if self.checkpoint is None
                else "put the checkpoint elsewhere (checkpoint=; the command's is beside --out), "
                "keep none (--checkpoint-every 0) and give another directory (--scratch)"
            )
            raise ValueError(
                f"outlier rejection needs {_gigabytes(need)} GB of scratch space in "
                f"{where}, {_gigabytes(free)} GB are free: {ways}, or stack without rejection "
                "(reject=False, --no-reject)"
            )
        if self.progress:
            tqdm.write(
                f"outlier rejection: {_gigabytes(need)} GB of scratch space in {where} "
                f"({_gigabytes(free)} GB free), removed at the end",
                file=sys.stderr,
            )
        self.use_rejection(directory, keep_frames=self.checkpoint is not None)

    def use_rejection(self, directory, keep_frames):
        """Reject outliers with the frames and single drizzles kept in ``directory``.

        ``keep_frames``: a frame's file stays there once masked (to resume,
        or for a cluster's task that may run again), until released.
        """
        self.rejection = Rejection(
            self.frames.shape,
            self.frames.layers,
            directory,
            3 if self.frames.colors is not None else 1,
            n_jobs=self.n_jobs,
            keep_frames=keep_frames,
        )

    def stack(self, reject):
        if self.stacker is None or not self.notes:
            raise ValueError("no frame could be stacked")
        stack = self.stacker.stack()
        stack.meta["normalized"] = bool(self.frames.normalize)
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


def _on_cluster(run, client, todo, reject, masks):
    """Stack on a dask cluster: the frames kept by tasks, the medians by row chunks, shares.

    The reference frame is read here first: it fixes the shape, the colours
    and the normalisation, which every worker's copy of `_Frames` then has.
    Each share of the frames (one per worker, in order) is stacked by a task
    into a partial stack in the shared directory; they are added up here.
    """
    files = [item.frame_file for item in todo] + [item.map_file for item in todo if item.map_file]
    names = [item.frame for item in todo] + [item.omap_path for item in todo if item.map_file]
    workers_can_read(client, files, names)
    rest = list(todo)
    while rest:
        item = rest.pop(0)
        prepared = run.prepare(item)
        if prepared is not None:
            break
    else:
        return
    if reject:
        run._start_rejection(len(todo))
        directory = run.rejection._directory
    else:
        run.rejection_scratch = Scratch(
            run.scratch if run.checkpoint is None else run.checkpoint.path
        )
        directory = run.rejection_scratch.path
    # Sent to the workers once, not with every task (a raw frame's colours
    # and the calibration masters are tens of MB), as a task's result: not
    # scattered data, which a dead worker loses for good.
    shared = client.submit(_as_is, run.frames, pure=False)
    probe = os.path.join(directory, "readable")
    open(probe, "w").close()
    workers_can_read(client, [probe], [f"{directory} (the directory of the shared files)"])
    if reject:
        kept = {} if run.checkpoint is None else run.checkpoint.kept()
        frames = run.frames
        if item.index not in kept:
            entry = record(prepared.norm, prepared.exptime, frames.zeros(prepared.norm))
            offsets = _offsets(prepared.offset_map, frames.shape)
            keep_frame(directory, frames.layers, item.index, prepared.data, offsets)
            kept[item.index] = entry
            if run.checkpoint is not None:
                run.checkpoint.mark_kept(item.index, entry)
        del prepared
        others = [other for other in rest if other.index not in kept]
        futures = [
            client.submit(_keep_task, shared, directory, other, pure=False) for other in others
        ]
        for other, future in zip(others, futures, strict=True):
            entry = future.result()
            if isinstance(entry, str):
                run.batch.fail(other.index, entry, map=other.omap_path)
                continue
            kept[other.index] = entry
            if run.checkpoint is not None:
                run.checkpoint.mark_kept(other.index, entry)
        for index, entry in kept.items():
            run.rejection.kept(index, entry["zeros"])
        if not kept:
            return
        run.rejection.combine(client)
        numbered = _numbered(todo, kept)
    else:
        del prepared
        numbered = [(number, item, None) for number, item in enumerate(todo)]
    workers = len(client.scheduler_info()["workers"])
    # A resumed stack keeps its checkpoint's shares, whatever the workers now.
    n_shares = max(
        1, min(len(numbered), workers if run.checkpoint is None else run.checkpoint.shares)
    )
    bounds = [round(k * len(numbered) / n_shares) for k in range(n_shares + 1)]
    futures = [
        client.submit(
            _share_task,
            shared,
            run.options,
            share,
            numbered[bounds[share] : bounds[share + 1]],
            reject,
            masks,
            directory,
            run.checkpoint,
            pure=False,
        )
        for share in range(n_shares)
    ]
    for future in futures:
        calls, partial, notes = future.result()
        calls.replay(run.batch)
        if partial is not None:
            run.stacker.add_stack(partial)
            shutil.rmtree(partial, ignore_errors=True)
            run.notes += notes


def _digest(calibration):
    """Return a digest of the calibration's masters (`None` without): a checkpoint's identity."""
    if calibration is None:
        return None
    digest = hashlib.sha256()
    for kind in ("bias", "dark", "flat", "colors"):
        master = getattr(calibration, kind)
        digest.update(kind.encode())
        if master is not None:
            digest.update(np.ascontiguousarray(master).tobytes())
    digest.update(repr(calibration.dark_exptime).encode())
    return digest.hexdigest()


def _as_is(value):
    """Return ``value``: a task that puts it on the cluster."""
    return value


def _keep_task(frames, directory, item):
    """Read a frame, keep it and drizzle it alone (a cluster's task); return its record.

    A frame that cannot be read gives the one-line message instead.
    """
    try:
        prepared = frames.read(item)
        offsets = _offsets(prepared.offset_map, frames.shape)
        keep_frame(directory, frames.layers, item.index, prepared.data, offsets)
    except Exception as exc:
        return describe(item.frame, exc)
    return record(prepared.norm, prepared.exptime, frames.zeros(prepared.norm))


def _share_task(frames, options, share, items, reject, masks, directory, checkpoint):
    """Stack a share of the frames into a partial stack (a cluster's task).

    Returns what became of each frame (`_Collected`), the directory of the
    partial stack (`None` if no frame went in) and the frames' notes.
    """
    collected = _Collected([item for _, item, _ in items])
    run = _Run(collected, frames, 1, None, options, checkpoint)
    try:
        if reject:
            # Kept: this task runs again if its worker dies.
            run.use_rejection(directory, keep_frames=True)
            for _, item, entry in items:
                run.rejection.kept(item.index, entry["zeros"])
            run.rejection.combine()  # the medians are there: opened
        run.stack_share(share, items, reject, masks)
        if run.stacker is None or not run.notes:
            return collected, None, []
        partial = os.path.join(directory, f"share.{share}.{uuid.uuid4().hex[:12]}")
        run.stacker.save(partial)
        return collected, partial, run.notes
    finally:
        run.close()


def _numbered(todo, kept):
    """Return ``(number, item, record)`` of the kept frames, numbered in order."""
    kept_items = [item for item in todo if item.index in kept]
    return [(number, item, kept[item.index]) for number, item in enumerate(kept_items)]
