"""One run of `stack_frames`: its frames stacked in shares, resumed from a checkpoint.

How the frames are read is `_reading`'s (`Frames`, `Reader`); rejection's
passes are `_rejection_passes`'s; a cluster's tasks, `_cluster`'s.
"""

import shutil

import numpy as np

from .._utils.workers import workers_share
from ._bands import Scratch
from ._checkpoint import normalisation_of

# Where the frames are read (`Frames`, `Item`, `record_of`): also from here,
# for the callers of a run.
from ._reading import Frames, Item, Reader, record_of
from ._rejection_passes import RejectionPasses
from ._stacker import DrizzleError, Stacker

__all__ = ["Frames", "Item", "Run", "record_of"]


class Run:
    """One run of `stack_frames`: frames read, normalised, rejected and stacked.

    The frames go into the stack in shares (`stack_share`): one, here, or
    one per worker of a dask cluster, each into a partial stack of its own,
    added up at the end (`add_share`). With a checkpoint, each share saves
    its partial stack every few frames, and a resumed run takes up where it
    stopped.

    Parameters
    ----------
    batch : `Batch` or `Collected`
        Where each frame's fate is told.
    frames : `Frames`
        How the frames are read.
    n_jobs : int or `None`
        The drizzle's workers (joblib's meaning).
    scratch : str or `None`
        Where scratch directories are made.
    options : dict
        The drizzle's options (`Stacker`).
    checkpoint : `Checkpoint` or `None`, optional
        Where the run stores what it needs to resume.
    """

    def __init__(self, batch, frames, n_jobs, scratch, options, checkpoint=None):
        self.batch = batch
        self.progress = getattr(batch, "progress", False)
        self.frames = frames
        self.n_jobs = n_jobs
        self.scratch = scratch
        self.options = options
        self.checkpoint = checkpoint
        self.reader = Reader(frames, batch, checkpoint)
        self.passes = RejectionPasses(self.reader, n_jobs, scratch, self.progress)
        self.stacker = None
        self.notes = []  # per frame stacked: (normalisation, masked fraction, weight)
        self._shared = None  # the scratch directory shared with a cluster's workers

    @property
    def rejection(self):
        """The run's `Rejection`, once started (`start_rejection`); `None` before."""
        return self.passes.rejection

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

        See `Reader.reference`. The stacker starts once it is read (its
        shape known).
        """
        found, tried = self.reader.reference(todo)
        if found is not None:
            self._start()
        return found, tried

    def prepared(self, todo, skip=()):
        """Yield ``(item, prepared)`` in order, of the frames not in ``skip``; `None` if failed.

        The reference (`reference`) is read first and alone, as the others
        are normalised to it (`Reader.ahead`).
        """
        found, tried = self.reference(todo)
        if found is not None:
            yield from self.reader.ahead(todo, found, tried, skip)

    def shared_directory(self, client):
        """Return the directory where the run and a cluster's workers exchange files.

        Rejection's, once started; else a scratch directory made now (in
        the checkpoint, or in ``scratch``), removed at `close`. Checked for
        every worker of ``client`` to read (`workers_share`).
        """
        if self.rejection is not None:
            return self.rejection.directory
        if self._shared is None:
            base = self.scratch if self.checkpoint is None else self.checkpoint.path
            self._shared = Scratch(base)
            workers_share(client, self._shared.path, base)
        return self._shared.path

    def stack_share(self, share, items, reject, masks=None):
        """Stack a share of the frames, ``(number, item, record)`` each, numbered in the sequence.

        With rejection the frames are those rejection stored (``record`` their
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
                # Their files: the partial stack holds them now.
                self.passes.release(index for index, _ in stacked[released:])
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
        reference, which every frame is normalised to. With rejection, the
        frames come from its second pass (`RejectionPasses.masked`).
        """
        if not reject:
            numbers = {item.index: number for number, item, _ in items}
            for item, prepared in self.prepared([item for _, item, _ in items], skip=done):
                yield numbers[item.index], item, prepared, None, None
            return
        todo = [(number, item, entry) for number, item, entry in items if item.index not in done]
        for frame in self.passes.masked(todo, masks):
            self._start()
            yield frame

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
        except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
            self.batch.fail(item.index, exc, map=item.omap_path)
            return False
        self._finish(item, prepared.norm, exptime, prepared.noise, prepared.weight, masked)
        return True

    def save_share(self, path):
        """Save the run's stack as a partial stack in ``path``; return its notes, or `None`.

        `None` if no frame went in (nothing is saved). The partial stack
        goes into another run's stack by `add_share`.
        """
        if self.stacker is None or not self.notes:
            return None
        self.stacker.save(path)
        return list(self.notes)

    def add_share(self, path, notes):
        """Add a partial stack (`save_share`) of the frames of ``notes``; remove its files."""
        self.stacker.add_stack(path)
        shutil.rmtree(path, ignore_errors=True)
        self.notes += notes

    def store(self, todo, storer=None):
        """Rejection's first pass: store each frame and drizzle it alone; return the stored.

        Returns ``{index: record}`` of every frame stored, in this run or (from
        the checkpoint) an earlier one (`RejectionPasses.store`).
        ``storer(todo, stored)`` stores the frames not yet stored (a dask
        cluster's); by default, here.
        """
        return self.passes.store(todo, storer or self._store_here)

    def _store_here(self, todo, stored):
        self.passes.store_here(todo, stored, self.prepared(todo, skip=stored))

    def mark_stored(self, stored, index, entry):
        """Add a frame to ``stored``, and to the checkpoint."""
        self.passes.mark_stored(stored, index, entry)

    def reject(self, todo, client=None, storer=None, select=None):
        """Rejection's passes up to the medians; return the frames to stack, numbered.

        The first pass stores each frame (calibrated and normalised) in the
        scratch and drizzles it alone; then the medians. The frames come
        back as `stack_share` takes them (and with them, the second pass:
        each frame's outliers found against the medians, and the frame
        drizzled onto the stack without them). Only the frames' names are
        held in between: maps are read again.

        ``select(stored)``, called once the frames are stored and before the
        medians, returns the indices of the frames to leave out (and reports
        them): they make no part of the medians, and are not stacked.
        """
        return self.passes.reject(
            todo, lambda todo: self.store(todo, storer), client=client, select=select
        )

    def start_rejection(self, n_frames, client=None):
        """Make the rejection, once: where it stores the frames, checked for room (and workers)."""
        self.passes.start(n_frames, client)

    def use_rejection(self, directory, keep_frames):
        """Reject outliers with the frames and single drizzles stored in ``directory``.

        See `RejectionPasses.use`.
        """
        self.passes.use(directory, keep_frames)

    def stack(self, reject):
        """Return the stack, its ``meta`` recording each frame's normalisation and weight."""
        if self.stacker is None or not self.notes:
            raise ValueError("no frame could be stacked")
        stack = self.stacker.stack()
        stack.meta["normalised"] = bool(self.frames.normalize)
        stack.meta["rejected"] = bool(reject)
        stack.meta["normalisation"] = [norm for norm, _, _ in self.notes]
        stack.meta["masked"] = [masked for _, masked, _ in self.notes]
        stack.meta["weighting"] = self.frames.weighting
        stack.meta["weights"] = [weight for _, _, weight in self.notes]
        return stack

    def close(self):
        """Close the rejection and the stacker; remove the scratch directories."""
        try:
            self.passes.close()
            if self._shared is not None:
                self._shared.remove()
        finally:
            if self.stacker is not None:
                self.stacker.close()
