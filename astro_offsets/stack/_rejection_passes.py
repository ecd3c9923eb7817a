"""Rejection's passes in a run: frames stored, drizzled alone, the medians, each frame's outliers.

The scheme is `Rejection`'s; here, how a run goes through it: the room
checked, the frames stored (here, or by a cluster's tasks), some left out,
the medians taken, then each frame masked in turn for the stack, and its
mask written if asked for.
"""

import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from astropy.io import fits
from tqdm import tqdm

from .._utils.naming import mask_path
from .._utils.provenance import provenance_header, write_product
from .._utils.scratch import check_room, gigabytes
from .._utils.workers import workers_share
from ._bands import Scratch
from ._checkpoint import normalisation_of
from ._reading import _Prepared, record_of
from ._rejection import Rejection, frame_offsets, store_frame

__all__ = ["RejectionPasses", "store_prepared", "write_mask"]


_NOT_STORED = (
    "the interrupted run could not keep it, and a resumed stack keeps its medians: delete "
    "the checkpoint to stack it"
)


class RejectionPasses:
    """Rejection's passes in one run of `stack_frames`.

    Parameters
    ----------
    reader : `Reader`
        How the run reads its frames (and fails those it cannot).
    n_jobs : int or `None`
        Threads of the medians and the masks (joblib's meaning).
    scratch : str or `None`
        Where the frames are stored without a checkpoint (a scratch directory
        is made there; the system's temporary directory by default).
    progress : bool, optional
        Show the first pass's progress, and say how much room it takes.
    """

    def __init__(self, reader, n_jobs, scratch, progress=False):
        self.reader = reader
        self.frames = reader.frames
        self.batch = reader.batch
        self.checkpoint = reader.checkpoint
        self.n_jobs = n_jobs
        self.scratch = scratch
        self.progress = progress
        self.rejection = None
        self._scratch = None

    def start(self, n_frames, client=None):
        """Make the rejection, once: where it stores the frames, checked for room (and workers)."""
        if self.rejection is not None:
            return
        if self.checkpoint is not None:
            directory = self.checkpoint.path
        else:
            self._scratch = Scratch(self.scratch)
            directory = self._scratch.path
        if client is not None:
            where = self.checkpoint.name if self.checkpoint is not None else directory
            workers_share(client, directory, where)
        need = Rejection.disk_bytes(self.frames.shape, self.frames.layers, n_frames)
        if self.checkpoint is not None:
            need = max(0, need - self.checkpoint.size())  # what it holds already
        where = self.checkpoint.name if self.checkpoint is not None else os.path.dirname(directory)
        ways = (
            "give another directory (scratch=, --scratch)"
            if self.checkpoint is None
            else "put the checkpoint elsewhere (checkpoint=, --out elsewhere: it is beside "
            "the stack), or keep none and give another directory (checkpoint=None and scratch=, "
            "--checkpoint-every 0 and --scratch)"
        )
        ways += ", or stack without rejection (reject=False, --no-reject)"
        free = check_room(directory, need, "outlier rejection", where, ways)
        if self.progress:
            tqdm.write(
                f"outlier rejection: {gigabytes(need)} GB of scratch space in {where} "
                f"({gigabytes(free)} GB free), removed at the end",
                file=sys.stderr,
            )
        # A cluster's tasks may run again (a worker lost): frames stay until the end.
        keep_frames = self.checkpoint is not None or client is not None
        self.use(directory, keep_frames=keep_frames)

    def use(self, directory, keep_frames):
        """Reject outliers with the frames and single drizzles stored in ``directory``.

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

    def store(self, todo, storer):
        """Store the frames (the first pass) by ``storer(todo, stored)``; return the stored.

        ``storer`` stores those not stored yet. Returns ``{index: record}`` of
        every frame stored, in this run or (from
        the checkpoint) an earlier one. Once an earlier run made the medians,
        the frames stored are those it stored (those its selection then left
        out too: `reject` leaves them out again).
        """
        stored = {} if self.checkpoint is None else self.checkpoint.stored()
        frozen = None if self.checkpoint is None else self.checkpoint.medians()
        if frozen is not None:
            for item in todo:
                if item.index not in stored:
                    self.batch.fail(item.index, _NOT_STORED, map=item.omap_path)
            todo = [item for item in todo if item.index in stored]
        storer(todo, stored)
        for index, entry in stored.items():
            self.rejection.stored(index, entry["zeros"], entry.get("weight"))
        return stored

    def store_here(self, todo, stored, prepared):
        """Store the frames of ``todo`` not in ``stored`` here, as ``prepared`` yields them.

        ``prepared`` yields ``(item, prepared)`` (`Reader.ahead`), the
        frames in ``stored`` skipped.
        """
        bar = tqdm(
            total=len(todo), desc="outliers", unit="frame", disable=None if self.progress else True
        )
        with bar:
            bar.update(sum(item.index in stored for item in todo))
            for item, frame in prepared:
                bar.update()
                if frame is None:
                    continue
                self.start(len(todo))
                entry = record_of(frame, self.frames.zeros(frame.norm))
                then = None
                if self.checkpoint is not None:
                    then = functools.partial(self.checkpoint.mark_stored, item.index, entry)
                self.rejection.add(
                    item.index,
                    frame.data,
                    frame.offset_map,
                    entry["zeros"],
                    then,
                    weight=frame.weight,
                )
                stored[item.index] = entry
                del frame
        if self.frames.shape is not None:
            self.start(len(todo))
            self.rejection.wait()

    def mark_stored(self, stored, index, entry):
        """Add a frame to ``stored``, and to the checkpoint."""
        stored[index] = entry
        if self.checkpoint is not None:
            self.checkpoint.mark_stored(index, entry)

    def reject(self, todo, store, client=None, select=None):
        """Go through the passes up to the medians; return the frames to stack, numbered.

        See `Run.reject`. ``store(todo)`` is the first pass (`store`); ``select(stored)`` returns
        the indices of the frames stored to leave out of the medians and the
        stack.
        """
        frozen = None if self.checkpoint is None else self.checkpoint.medians()
        whole = frozen is not None
        stored = store(todo)
        # The selection also runs on a resumed run's medians, which left out
        # the same frames: they are reported so again.
        left_out = set() if select is None else set(select(stored))
        if whole:
            for index in set(stored) - set(frozen) - left_out:
                self.batch.fail(index, _NOT_STORED)
                left_out.add(index)
        for index in left_out:
            del stored[index]
            self.rejection.drop(index)
        if not stored:
            return []
        self.rejection.combine(client, reuse=whole)
        if self.checkpoint is not None and not whole:
            self.checkpoint.mark_medians(stored)
        self.rejection.drop_singles()
        stored_items = [item for item in todo if item.index in stored]
        return [(number, item, stored[item.index]) for number, item in enumerate(stored_items)]

    def masked(self, todo, masks):
        """Mask the frames (the second pass): yield ``(number, item, prepared, outliers, stats)``.

        ``todo`` is ``(number, item, record)`` of the frames stored. Each
        frame's map is read in a thread while the caller takes the frame
        before, into the arrays of the frame before that (memory held
        already): the caller is done with a frame when it asks for the next.
        A frame that cannot be masked is failed. ``masks``: write each
        frame's mask (`write_mask`), beside it (`True`) or in this directory.
        """
        pairs = [None, None]  # the arrays of every other frame's map

        def read_map(k):
            omap = self.frames.offset_map(todo[k][1], pairs[k % 2])
            if omap is not None:
                pairs[k % 2] = omap.x_offset, omap.y_offset
            return omap

        with ThreadPoolExecutor(1, thread_name_prefix="astro_offsets-maps") as reader:
            pending = reader.submit(read_map, 0) if todo else None
            for k, (number, item, entry) in enumerate(todo):
                try:
                    omap, failed = pending.result(), None
                except Exception as exc:  # raised again below, in the frame's own try
                    omap, failed = None, exc
                # The frame before this one is done with: its map's arrays are free.
                pending = reader.submit(read_map, k + 1) if k + 1 < len(todo) else None
                try:
                    if failed is not None:
                        raise failed
                    data, outliers, stats = self.rejection.mask(item.index, omap)
                except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
                    self.batch.fail(item.index, exc, map=item.omap_path)
                    continue
                if masks not in (None, False):
                    directory = None if masks is True else masks
                    write_mask(directory, item.frame_file, outliers, ~np.isfinite(data))
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

    def release(self, indices):
        """Let the frames of ``indices`` go: a partial stack saved holds them now."""
        if self.rejection is not None:
            self.rejection.release(indices)

    def close(self):
        """Close the rejection; remove its scratch directory, if it made one."""
        try:
            if self.rejection is not None:
                self.rejection.close()
        finally:
            if self._scratch is not None:
                self._scratch.remove()


def write_mask(directory, frame, outliers, unweighted):
    """Write a frame's mask: 1 at its outliers, 2 where it has no weight (hot pixels).

    Into ``directory``, or beside the frame if `None` (`mask_path`).
    """
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


def store_prepared(frames, directory, index, prepared):
    """Store a prepared frame (`Frames.read`) in rejection's ``directory``; return its record.

    The frame is written there and drizzled alone (`store_frame`): what the
    first pass does with each frame, here, in a worker or in a cluster's
    task.
    """
    offsets = frame_offsets(prepared.offset_map, frames.shape)
    store_frame(directory, frames.layers, index, prepared.data, offsets)
    return record_of(prepared, frames.zeros(prepared.norm))
