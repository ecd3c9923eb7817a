"""One run of `stack_frames`: how its frames are read, kept for rejection and stacked."""

import collections
import functools
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from tqdm import tqdm

from .._utils.batch import describe
from .._utils.naming import mask_path
from .._utils.provenance import provenance_header, write_product
from .._utils.workers import workers_share
from ..frames import hot_pixels, read_frame
from ..maps import OffsetMap
from ._bands import Scratch
from ._checkpoint import normalisation_of, record
from ._normalisation import Normalisation, apply, normalisation
from ._quality import frame_noise, frame_weight
from ._rejection import Rejection
from ._stacker import DrizzleError, Stacker, frame_layers

__all__ = ["Collected", "Frames", "Item", "Run", "record_of"]


class _Prepared(NamedTuple):
    data: np.ndarray
    """Calibrated and normalised; NaN at hot pixels and wherever else no weight."""
    offset_map: object
    colors: object
    exptime: float | None
    norm: Normalisation
    noise: float
    """Its pixel noise before normalisation (`frame_noise`)."""
    weight: float | None
    """Its weight relative to the reference's (`frame_weight`); `None` unweighted."""


class Item(NamedTuple):
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


class Frames:
    """How a stack reads its frames: calibrated, checked, hot pixels out, normalised.

    The first frame read (the reference) fixes the shape, the colours and
    the normalisation of all. Picklable: a cluster's workers read their
    frames through a copy made once the reference is read.
    """

    def __init__(self, calibration, mask_hot_pixels, normalize, weighting="none"):
        self.calibration = calibration
        self.mask_hot_pixels = mask_hot_pixels
        self.normalize = normalize
        self.weighting = weighting
        self.shape = None
        self.colors = None
        self.kind = None  # a mono frame, a colour mosaic or a colour cube
        self.layers = None
        self.reference = None  # its normalisation and exposure time
        self.reference_noise = None

    def read(self, item):
        """Read a frame and its map from their files; prepare the frame (`prepare`)."""
        raw = self.read_raw(item.frame_file)
        omap = OffsetMap.read(item.map_file) if item.map_file is not None else None
        return self.prepare(raw, omap, item.omap_path)

    def read_raw(self, path):
        """Read a frame file, calibrated (`read_frame`, `Calibration.read`)."""
        return read_frame(path) if self.calibration is None else self.calibration.read(path)

    def prepare(self, raw, omap, omap_path=None, hot=None):
        """Prepare a frame read (`read_raw`) and its map: checked, hot pixels out, normalised.

        ``raw.data`` is changed in place when it is float32 already.
        ``omap_path`` names the map in messages. ``hot``: the frame's hot
        pixels (`hot_pixels`), if found already.
        """
        # The frame's own array, fresh from the file (changed in place below).
        data = np.asarray(raw.data, dtype=np.float32)
        if omap is not None and omap.shape != data.shape[-2:]:
            raise ValueError(
                f"frame shape {data.shape} differs from its map's {omap.shape} ({omap_path})"
            )
        self._check(data, raw.colors)
        if self.mask_hot_pixels:
            data[hot_pixels(data, raw.colors) if hot is None else hot] = np.nan
        norm = normalisation(data, raw.colors, omap, raw.exptime, self.reference)
        noise = frame_noise(data, raw.colors)
        if self.reference is None:
            self.reference = (norm, raw.exptime)
            self.reference_noise = noise
        weight = None
        if self.weighting == "noise":
            # The noise of the frame as it is stacked: normalised, or per second
            # of its exposure as the stacker takes it (against the reference's).
            if self.normalize:
                scale = norm.scale
            else:
                reference_exptime = self.reference[1]
                scale = reference_exptime / raw.exptime if reference_exptime else 1.0
            weight = frame_weight(noise, scale, self.reference_noise)
        if self.normalize:
            apply(data, self.layers, norm)
        return _Prepared(data, omap, raw.colors, raw.exptime, norm, noise, weight)

    def _check(self, data, colors):
        """Fix the shape and colours with the first frame; check the others fit them."""
        kind = (
            "a colour mosaic"
            if colors is not None
            else ("a colour cube", "a mono frame")[data.ndim == 2]
        )
        if self.shape is None:
            self.shape = data.shape[-2:]
            self.colors = colors
            self.kind = kind
            self.layers = frame_layers(data.shape, colors)
            return
        if kind != self.kind:
            stack = "mono" if self.kind == "a mono frame" else "colour"
            raise ValueError(f"{kind}, but the stack is {stack} ({self.kind[2:]}s)")
        if data.shape[-2:] != self.shape:
            raise ValueError(f"frame shape {data.shape} differs from the stack's {self.shape}")
        if colors is not None and not np.array_equal(colors, self.colors):
            raise ValueError("its colour filter pattern differs from the first frame's")

    @property
    def n_channels(self):
        """The stack's channels: 1 (mono) or 3 (red, green, blue)."""
        return 1 + max(layer.channel for layer in self.layers)

    def zeros(self, norm):
        """Return the value of no light in a frame, per channel (rejection's noise model)."""
        return norm.offsets if self.normalize else None


class Collected:
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


def record_of(prepared, zeros=None, masked=None):
    """Return the checkpoint's record of a prepared frame (`record`)."""
    return record(prepared.norm, prepared.exptime, zeros, masked, prepared.noise, prepared.weight)


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


class Run:
    """One run of `stack_frames`: frames read, normalised, rejected and stacked.

    The frames go into the stack in shares (`stack_share`): one, here, or
    one per worker of a dask cluster, each into a partial stack of its own,
    added up at the end. With a checkpoint, each share saves its partial
    stack every few frames, and a resumed run takes up where it stopped.
    """

    def __init__(self, batch, frames, n_jobs, scratch, options, checkpoint=None, maps=None):
        self.batch = batch
        # How the second pass has a frame's map: ``maps(item, out)`` (the
        # arrays of ``out`` may take it), or by default from its file.
        self.maps = maps
        self.progress = getattr(batch, "progress", False)
        self.frames = frames
        self.n_jobs = n_jobs
        self.scratch = scratch
        self.options = options
        self.checkpoint = checkpoint
        self.stacker = None
        self.rejection = None
        self.rejection_scratch = None
        self.notes = []  # per frame stacked: (normalisation, masked fraction, weight)

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
                bayer=self.frames.n_channels > 1,
                n_jobs=self.n_jobs,
                scratch=self.scratch,
                **self.options,
            )

    def reference(self, todo):
        """Read the reference frame; return it, ``(item, prepared)``, and the indices tried.

        It is the first frame of ``todo`` that can be read (the frames that
        cannot are failed), and every other frame is normalised to it. A
        resumed stack reads the one its checkpoint recorded, or stops: the
        frames stacked before were normalised to that one. `None` if no
        frame can be read.
        """
        recorded = None if self.checkpoint is None else self.checkpoint.reference()
        tried = set()
        for item in todo:
            if recorded is not None and item.index != recorded:
                continue
            tried.add(item.index)
            prepared = self.prepare(item)
            if prepared is not None:
                if self.checkpoint is not None and recorded is None:
                    self.checkpoint.mark_reference(item.index)
                return (item, prepared), tried
            if recorded is not None:
                raise ValueError(
                    f"{item.frame}: the reference frame of the interrupted stack cannot be "
                    "read now, and the frames in its checkpoint were normalised to it"
                )
        return None, tried

    def prepared(self, todo, skip=()):
        """Yield ``(item, prepared)`` in order, of the frames not in ``skip``; `None` if failed.

        The reference (`reference`) is read first and alone, as the others
        are normalised to it; it is yielded unless in ``skip``. The others
        are read two at a time, on two threads, while the caller takes them
        in order.
        """
        found, tried = self.reference(todo)
        if found is None:
            return
        if found[0].index not in skip:
            yield found
        del found
        pending = collections.deque()
        with ThreadPoolExecutor(2, thread_name_prefix="astro_offsets-read") as pool:
            for item in todo:
                if item.index in skip or item.index in tried:
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
        since = released = 0
        for number, item, prepared, outliers, stats in self._frames_of(items, done, reject, masks):
            if saved is not None and self.frames.shape is not None:
                stacked = self._restore(saved, items)
                saved = None
            if prepared is None:
                continue
            masked = None if stats is None else stats.fraction
            if self.add(item, prepared, outliers, masked, number):
                stacked.append((item.index, record_of(prepared, masked=masked)))
                since += 1
            if self.checkpoint is not None and since >= self.checkpoint.every:
                self.checkpoint.save_share(share, self.stacker, stacked)
                if self.rejection is not None:
                    # Their files: the partial stack holds them now.
                    self.rejection.release(index for index, _ in stacked[released:])
                since, released = 0, len(stacked)
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
        reference, which every frame is normalised to. With rejection, each
        frame's map is read in a thread while the caller takes the frame
        before, into the arrays of the frame before that (memory held
        already): the caller is done with a frame when it asks for the next.
        """
        numbers = {item.index: number for number, item, _ in items}
        if not reject:
            for item, prepared in self.prepared([item for _, item, _ in items], skip=done):
                yield numbers[item.index], item, prepared, None, None
            return
        todo = [(number, item, entry) for number, item, entry in items if item.index not in done]
        pairs = [None, None]  # the arrays of every other frame's map

        def read_map(k):
            omap = self._map_of(todo[k][1], pairs[k % 2])
            if omap is not None:
                pairs[k % 2] = omap.x_offset, omap.y_offset
            return omap

        with ThreadPoolExecutor(1, thread_name_prefix="astro_offsets-maps") as reader:
            pending = reader.submit(read_map, 0) if todo else None
            for k, (number, item, entry) in enumerate(todo):
                try:
                    omap, failed = pending.result(), None
                except Exception as exc:
                    omap, failed = None, exc
                # The frame before this one is done with: its map's arrays are free.
                pending = reader.submit(read_map, k + 1) if k + 1 < len(todo) else None
                try:
                    if failed is not None:
                        raise failed
                    data, outliers, stats = self.rejection.mask(item.index, omap)
                except Exception as exc:
                    self.batch.fail(item.index, exc, map=item.omap_path)
                    continue
                if masks not in (None, False):
                    directory = None if masks is True else masks
                    _write_mask(directory, item.frame_file, outliers, ~np.isfinite(data))
                self._start()
                prepared = _Prepared(
                    data,
                    omap,
                    self.frames.colors,
                    entry["exptime"],
                    normalisation_of(entry),
                    entry.get("noise", float("nan")),
                    entry.get("weight"),
                )
                yield number, item, prepared, outliers, stats

    def _map_of(self, item, out):
        """Return a frame's map for the second pass, into the arrays of ``out`` if they fit."""
        if self.maps is not None:
            return self.maps(item, out)
        if item.map_file is None:
            return None
        try:
            return OffsetMap.read(item.map_file, out=out)
        except ValueError:
            if out is None:
                raise
            # Not into the frame's arrays (a map changed since the first
            # pass, say): what is wrong with the file itself, or its
            # shape, which `Rejection.mask` refuses.
            return OffsetMap.read(item.map_file)

    def _restored(self, item, entry):
        """Report a frame that a resumed partial stack holds."""
        norm = normalisation_of(entry)
        noise, weight = entry.get("noise", float("nan")), entry.get("weight")
        self._finish(item, norm, entry["exptime"], noise, weight, entry["masked"])

    def _weights(self, exptime, weight):
        """Return a frame's drizzle weight (``wtscale``) and that relative to the reference's.

        A weighted frame weighs ``weight`` times the reference frame, which
        weighs its exposure time (1 without exposure weighting); an
        unweighted one, its exposure time (or 1).
        """
        exposures = self.stacker.exposure_weighting
        unit = (self.frames.reference[1] or 1.0) if exposures else 1.0
        if weight is None:
            wtscale = (exptime or 1.0) if exposures else 1.0
            return wtscale, wtscale / unit
        return weight * unit, weight

    def _finish(self, item, norm, exptime, noise, weight, masked):
        relative = self._weights(exptime, weight)[1]
        self.notes.append((norm, masked, relative))
        self.batch.finish(
            item.index,
            "stacked",
            map=item.omap_path,
            scale=norm.scale if self.frames.normalize else None,
            masked=masked,
            weight=relative,
            measures={
                "sky": float(np.mean(norm.sky)),
                "noise": float(noise),
                "flux_scale": norm.scale,
            },
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
                frame_weight=None
                if prepared.weight is None
                else self._weights(exptime, prepared.weight)[0],
                name=item.frame,
                map_name=item.omap_path,
                number=number,
            )
        except DrizzleError:
            raise
        except Exception as exc:
            self.batch.fail(item.index, exc, map=item.omap_path)
            return False
        self._finish(item, prepared.norm, exptime, prepared.noise, prepared.weight, masked)
        return True

    def keep(self, todo, keeper=None):
        """Rejection's first pass: keep each frame and drizzle it alone; return the kept.

        Returns ``{index: record}`` of every frame kept, in this run or (from
        the checkpoint) an earlier one. Once an earlier run made the medians,
        the frames kept are those it kept. ``keeper(todo, kept)`` keeps the
        frames not yet kept (a dask cluster's); by default, here.
        """
        kept = {} if self.checkpoint is None else self.checkpoint.kept()
        frozen = None if self.checkpoint is None else self.checkpoint.medians()
        if frozen is not None:
            kept = {index: kept[index] for index in frozen}
            for item in todo:
                if item.index not in kept:
                    self.batch.fail(
                        item.index,
                        "the interrupted run could not keep it, and a resumed stack keeps its "
                        "medians: delete the checkpoint to stack it",
                        map=item.omap_path,
                    )
            todo = [item for item in todo if item.index in kept]
        (keeper or self._keep_here)(todo, kept)
        for index, entry in kept.items():
            self.rejection.kept(index, entry["zeros"], entry.get("weight"))
        return kept

    def _keep_here(self, todo, kept):
        bar = tqdm(
            total=len(todo), desc="outliers", unit="frame", disable=None if self.progress else True
        )
        with bar:
            bar.update(sum(item.index in kept for item in todo))
            for item, prepared in self.prepared(todo, skip=kept):
                bar.update()
                if prepared is None:
                    continue
                self.start_rejection(len(todo))
                entry = record_of(prepared, self.frames.zeros(prepared.norm))
                then = None
                if self.checkpoint is not None:
                    then = functools.partial(self.checkpoint.mark_kept, item.index, entry)
                self.rejection.add(
                    item.index,
                    prepared.data,
                    prepared.offset_map,
                    entry["zeros"],
                    then,
                    weight=prepared.weight,
                )
                kept[item.index] = entry
                del prepared
        if self.frames.shape is not None:
            self.start_rejection(len(todo))
            self.rejection.wait()

    def mark_kept(self, kept, index, entry):
        """Add a frame to ``kept``, and to the checkpoint."""
        kept[index] = entry
        if self.checkpoint is not None:
            self.checkpoint.mark_kept(index, entry)

    def reject(self, todo, client=None, keeper=None, select=None):
        """Rejection's passes up to the medians; return the frames to stack, numbered.

        The first pass keeps each frame (calibrated and normalised) in the
        scratch and drizzles it alone; then the medians. The frames come
        back as `stack_share` takes them (and with them, the second pass:
        each frame's outliers found against the medians, and the frame
        drizzled onto the stack without them). Only the frames' names are
        held in between: maps are read again.

        ``select(kept)``, called once the frames are kept and before the
        medians, returns the indices of the frames to leave out (and reports
        them): they make no part of the medians, and are not stacked.
        """
        whole = self.checkpoint is not None and self.checkpoint.medians() is not None
        kept = self.keep(todo, keeper)
        if select is not None and not whole:
            for index in select(kept):
                del kept[index]
                self.rejection.drop(index)
        if not kept:
            return []
        self.rejection.combine(client, reuse=whole)
        if self.checkpoint is not None and not whole:
            self.checkpoint.mark_medians(kept)
        self.rejection.drop_singles()
        kept_items = [item for item in todo if item.index in kept]
        return [(number, item, kept[item.index]) for number, item in enumerate(kept_items)]

    def start_rejection(self, n_frames, client=None):
        """Make the rejection, once: where it keeps the frames, checked for room (and workers)."""
        if self.rejection is not None:
            return
        if self.checkpoint is not None:
            directory = self.checkpoint.path
        else:
            self.rejection_scratch = Scratch(self.scratch)
            directory = self.rejection_scratch.path
        if client is not None:
            where = self.checkpoint.name if self.checkpoint is not None else directory
            workers_share(client, directory, where)
        need = Rejection.disk_bytes(self.frames.shape, self.frames.layers, n_frames)
        if self.checkpoint is not None:
            need = max(0, need - self.checkpoint.size())  # what it holds already
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
        # A cluster's tasks may run again (a worker lost): frames stay until the end.
        keep_frames = self.checkpoint is not None or client is not None
        self.use_rejection(directory, keep_frames=keep_frames)

    def use_rejection(self, directory, keep_frames):
        """Reject outliers with the frames and single drizzles kept in ``directory``.

        ``keep_frames``: a frame's file stays there once masked (to resume,
        or for a cluster's task that may run again), until released.
        """
        self.rejection = Rejection(
            self.frames.shape,
            self.frames.layers,
            directory,
            self.frames.n_channels,
            n_jobs=self.n_jobs,
            keep_frames=keep_frames,
        )

    def stack(self, reject):
        if self.stacker is None or not self.notes:
            raise ValueError("no frame could be stacked")
        stack = self.stacker.stack()
        stack.meta["normalized"] = bool(self.frames.normalize)
        stack.meta["rejected"] = bool(reject)
        stack.meta["normalisation"] = [norm for norm, _, _ in self.notes]
        stack.meta["masked"] = [masked for _, masked, _ in self.notes]
        stack.meta["weighting"] = self.frames.weighting
        stack.meta["weights"] = [weight for _, _, weight in self.notes]
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
