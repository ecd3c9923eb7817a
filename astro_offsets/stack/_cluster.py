"""Stacking on a dask cluster: frames stored by tasks, the medians by row chunks, shares.

What `stack_frames` does with a ``client``. The reference frame is read by
the caller's process first: it fixes the shape, the colours and the
normalisation, which every worker's copy of the frames' reader then has.
With rejection, each other frame is a task that stores it and drizzles it
alone in the shared directory, and the medians are tasks of row chunks;
then each share of the frames (one per worker, in order) is a task that
stacks it into a partial stack in the shared directory, and the caller adds
the partial stacks up.
"""

import os
import threading
import uuid

from .._utils.batch import FrameError, describe
from .._utils.workers import Tasks, workers_can_read
from ._rejection_passes import store_prepared
from ._run import Run

__all__ = ["Collected", "store_on_cluster", "store_task", "on_cluster", "share_task"]


class Collected:
    """What a cluster's worker reports of its frames, for the caller's `Batch`.

    It takes a run's reports as a `Batch` does (`finish`, `fail`), and the
    caller replays them into its own (`replay`).
    """

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


def on_cluster(run, client, todo, reject, masks, storer=None, select=None):
    """Stack the frames of ``todo`` on the cluster of ``client``, into ``run``'s stacker.

    With rejection, ``storer`` and ``select`` are those of `stack_items`: by
    default the frames are stored by tasks of `store_task`.
    """
    files = [item.frame_file for item in todo] + [item.map_file for item in todo if item.map_file]
    names = [item.frame for item in todo] + [item.omap_path for item in todo if item.map_file]
    workers_can_read(client, files, names)
    # A frame that store_task cannot store comes back as its FrameError.
    tasks = Tasks(client, errors=FrameError)
    # The workers import what the tasks run while the reference is read here.
    threading.Thread(target=tasks.start, args=(__name__,), daemon=True).start()
    if reject:

        def store(todo, stored):
            if storer is None:
                store_on_cluster(run, tasks, todo, stored)
            else:
                storer(run, todo, stored)

        numbered = run.reject(todo, client, store, select)
    else:
        found, tried = run.reference(todo)
        if found is None:
            return
        reference = found[0].index
        del found
        # Numbered in the order given: a share reads its own frames.
        numbered = [
            (number, item, None)
            for number, item in enumerate(todo)
            if item.index not in tried or item.index == reference
        ]
    if not numbered:
        return
    directory = run.shared_directory(client)
    # A resumed stack keeps its checkpoint's shares, whatever the workers now.
    wanted = tasks.workers if run.checkpoint is None else run.checkpoint.shares
    n_shares = max(1, min(len(numbered), wanted))
    bounds = [round(k * len(numbered) / n_shares) for k in range(n_shares + 1)]
    with tasks:
        frames = tasks.share(run.frames)
        for share in range(n_shares):
            share_items = numbered[bounds[share] : bounds[share + 1]]
            tasks.submit(
                share_task,
                frames,
                run.options,
                share,
                share_items,
                reject,
                masks,
                directory,
                run.checkpoint,
            )
        for collected, partial, notes in tasks.results():
            collected.replay(run.batch)
            if partial is not None:
                run.add_share(partial, notes)


def store_on_cluster(run, tasks, todo, stored):
    """Store the frames of ``todo`` not in ``stored``: the reference here, the others as tasks."""
    found, tried = run.reference(todo)
    if found is None:
        return
    item, prepared = found
    del found
    run.start_rejection(len(todo), tasks.client)
    directory = run.rejection.directory
    if item.index not in stored:
        # The reference is stored here, while the workers start on the others.
        entry = store_prepared(run.frames, directory, item.index, prepared)
        run.mark_stored(stored, item.index, entry)
    del prepared
    others = [o for o in todo if o.index not in stored and o.index not in tried]
    with tasks:
        frames = tasks.share(run.frames)
        for other in others:
            tasks.submit(store_task, frames, directory, other)
        for other, entry in zip(others, tasks.results(), strict=True):
            if isinstance(entry, FrameError):
                run.batch.fail(other.index, entry.message, map=other.omap_path)
            else:
                run.mark_stored(stored, other.index, entry)


def store_task(frames, directory, item):
    """Read a frame, store it and drizzle it alone (a cluster's task); return its record.

    A frame that cannot be read raises `FrameError`, with its one-line message.
    """
    try:
        return store_prepared(frames, directory, item.index, frames.read(item))
    except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
        raise FrameError(describe(item.frame, exc)) from exc


def share_task(frames, options, share, items, reject, masks, directory, checkpoint):
    """Stack a share of the frames into a partial stack (a cluster's task).

    Returns what became of each frame (`Collected`), the directory of the
    partial stack (`None` if no frame went in) and the frames' notes.
    """
    collected = Collected([item for _, item, _ in items])
    run = Run(collected, frames, 1, None, options, checkpoint)
    try:
        if reject:
            # Kept: this task runs again if its worker dies.
            run.use_rejection(directory, keep_frames=True)
            for _, item, entry in items:
                run.rejection.stored(item.index, entry["zeros"], entry.get("weight"))
            run.rejection.open_medians()
        run.stack_share(share, items, reject, masks)
        partial = os.path.join(directory, f"share.{share}.{uuid.uuid4().hex[:12]}")
        notes = run.save_share(partial)
        return collected, None if notes is None else partial, notes or []
    finally:
        run.close()
