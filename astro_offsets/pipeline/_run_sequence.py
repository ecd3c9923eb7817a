"""A whole sequence in one run: stars, fields and stack, each frame read once."""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType

from tqdm import tqdm

from .._utils.batch import Batch, FrameError, describe
from .._utils.naming import map_path, table_path
from .._utils.validation import input_file
from .._utils.workers import Tasks, takes_client
from ..field import CHOICES, MAPS_METHOD, check_options
from ..stack._checkpoint import digest
from ..stack._quality import (
    FILTER_FWHM,
    FILTER_ROUND,
    FILTER_STARS,
    check_selection,
    reference_measures,
)
from ..stack._rejection_passes import store_prepared
from ..stack._report import frame_report, write_frame_report
from ..stack._run import Item
from ..stack._stack_frames import (
    StackResult,
    check_settings,
    leave_out,
    stack_items,
    with_measures,
)
from ._stream import StreamFrames

__all__ = ["RunResult", "run_sequence"]

# The star options and their defaults, as `make_tables` has them.
_STARS = MappingProxyType({"fwhm": None, "threshold": 5.0, "min_snr": 10.0, "flagged": False})


@dataclass(frozen=True, kw_only=True)
class RunResult(StackResult):
    """What became of one frame in `run_sequence`: a `StackResult`, with its table and field.

    Examples
    --------
    >>> from astro_offsets.pipeline import RunResult
    >>> RunResult(path="a.fits", status="stacked", table="a.offsets_table.fits").table
    'a.offsets_table.fits'
    """

    table: str | None = None
    """Its star table, written (`None` for the reference, or if its stars failed)."""
    field: str = ""
    """Its map's field in words (method, parameter, CV RMS, stars clipped, trend)."""
    detected: int | None = None
    """Stars detected in it."""
    matched: int | None = None
    """Of those, matched to the reference's."""


@takes_client
def run_sequence(
    frames,
    reference=None,
    *,
    tables=None,
    write_maps=None,
    sip=False,
    compress_maps=True,
    stars=None,
    field=None,
    choose="sequence",
    calibration=None,
    mask_hot_pixels=True,
    normalize=True,
    reject=None,
    masks=None,
    scratch=None,
    select=True,
    filter_fwhm=FILTER_FWHM,
    filter_round=FILTER_ROUND,
    filter_stars=FILTER_STARS,
    keep_best=None,
    weighting="noise",
    report=None,
    checkpoint=None,
    checkpoint_every=10,
    resume=False,
    keep_checkpoint=False,
    n_jobs=None,
    client=None,
    progress=False,
    callback=None,
    **options,
):
    """Take a sequence of frame files from stars to stack in one run.

    What `make_tables`, `write_maps` and `stack_frames` do one after the
    other, as a stream: with rejection, each frame is read (and calibrated)
    once, its stars found and matched to the reference's, its star table
    written, its field fitted and its map made in memory, and the frame,
    its hot pixels out (found once for the stars and the stack, but in a
    colour cube, whose stars are found in the mean of its planes), kept for
    the stack. The stack is the one the three functions give with the same
    options, bit for bit.

    The reference frame is read first, here, while worker processes start;
    then the workers take the other frames, ``n_jobs`` at a time. With
    rejection (three frames or more, by default) each worker also keeps its
    frame in the scratch directory and drizzles it alone; once all are
    kept, the selection leaves out the frames far from the sequence's
    bulk, the medians are taken, and each frame is drizzled onto the stack
    without its outliers, its map made again from its field (a map is
    4 bytes a pixel and axis: a night's maps are not kept). Without
    rejection, the frames are read again for the stack.

    Parameters
    ----------
    frames : iterable of str or path-like
        Frame files: camera raw files or FITS images, all of one size.
        Files that astro_offsets wrote (star tables, maps, stacks) are
        ignored, so that a shell pattern may match them.
    reference : str, path-like or `None`, optional
        The reference frame, one of ``frames``; by default the first.
    tables : str, path-like or `None`, optional
        Directory of the star tables (``<stem>.offsets_table.fits``, as
        `make_tables` writes them; a star table of ours there is replaced,
        any other file fails its frame); `None` writes each beside its
        frame. Frames of one name in different folders need their own.
    write_maps : bool, str, path-like or `None`, optional
        Also write each frame's map (``<stem>.offsets.fits``; a map of ours
        there is replaced, any other file fails its frame), beside the frame
        (`True`) or into this directory. The default is `None`: the maps stay
        in memory.
    sip : bool, optional
        With ``write_maps``, also write each map's SIP polynomials,
        ``<stem>.sip.fits`` beside it, as `write_maps` does. The default is
        `False`.
    compress_maps : bool, optional
        The maps as `write_maps` writes them by default, tile-compressed:
        rounded to 2**-9 px (`OffsetMap.quantised`), for the stack too,
        written or not, so that the stack is the three commands' bit for
        bit; or, if `False`, as made (``maps --no-compress``), written as
        plain float32 images. The default is `True`.
    stars : dict or `None`, optional
        Options of the stars, as for `make_tables`: ``fwhm``, ``threshold``,
        ``min_snr``, ``flagged``.
    field : dict or `None`, optional
        The field, as for `write_maps`: ``method`` (``"auto"`` by default),
        ``trend``, ``clip`` and the method's parameter.
    choose : {"sequence", "frame"}, optional
        As for `write_maps`: ``auto``'s field chosen on the first frame (whose
        stars can cross-validate it, in the order given), and re-checked on
        each other frame, or chosen on every frame.
    calibration, mask_hot_pixels, normalize, reject, masks, scratch
        As for `stack_frames`.
    select, filter_fwhm, filter_round, filter_stars, keep_best, weighting
        The selection and weighting of the frames, as for `stack_frames`;
        the measures are those of the tables made here.
    report, checkpoint, checkpoint_every, resume, keep_checkpoint
        As for `stack_frames`. A resumed run makes the fields of the frames
        its checkpoint holds again from their star tables.
    n_jobs : int or `None`, optional
        Worker processes, with joblib's meaning (`None`: one, -1: all
        cores): frames read at once, then drizzles at once.
    client : `distributed.Client`, str or `None`, optional
        A dask cluster's client, or its scheduler's address: each frame is
        read through by a task on its workers, which then stack shares of
        the frames, as `stack_frames` does on a cluster (the workers read
        the frames, write the tables and share the scratch or checkpoint
        directory at the same paths as here).
    progress : bool, optional
        Show progress bars on stderr (when it is a terminal).
    callback : callable or `None`, optional
        Called with each `RunResult` as soon as it is known.
    **options
        The drizzle: ``kernel``, ``pixfrac``, ``scale``,
        ``exposure_weighting``, ``context``, as for `Stacker`.

    Returns
    -------
    stack : `Stack`
        The stack, as `stack_frames` returns it.
    results : list of `RunResult`
        One per frame, in the order given.

    Raises
    ------
    ValueError
        If an option is out of range, the reference frame cannot be read
        or has too few stars, or no frame could be stacked.
    FileNotFoundError
        If the reference frame does not exist.

    Examples
    --------
    >>> import os, tempfile
    >>> from astro_offsets.datasets import night_sequence
    >>> from astro_offsets.pipeline import run_sequence
    >>> folder = tempfile.mkdtemp()
    >>> night = night_sequence(folder, shape=(240, 320), n_frames=4, n_stars=150,
    ...                        flip_after=None, bad={}, trail_frame=None)
    >>> stack, results = run_sequence(night.frames, reject=False)
    >>> [r.status for r in results]
    ['stacked', 'stacked', 'stacked', 'stacked']
    >>> os.path.exists(results[1].table)
    True
    """
    stars = {**_STARS, **(stars or {})}
    unknown = set(stars) - set(_STARS)
    if unknown:
        raise ValueError(f"unknown star options {sorted(unknown)}; expected {sorted(_STARS)}")
    field = {"method": MAPS_METHOD, **(field or {})}
    check_options(**field)
    if choose not in CHOICES:
        raise ValueError(f"choose must be one of {', '.join(map(repr, CHOICES))}, got {choose!r}")
    selection, masks = check_settings(
        masks,
        scratch,
        checkpoint_every,
        check_selection(select, filter_fwhm, filter_round, filter_stars, keep_best, weighting),
        options,
    )
    if tables is not None and (isinstance(tables, bool) or not os.path.isdir(tables)):
        raise ValueError(f"{tables}: the directory for the tables does not exist")
    if write_maps not in (None, True, False) and not os.path.isdir(write_maps):
        raise ValueError(f"{write_maps}: the directory for the maps does not exist")
    write_maps = write_maps or None
    if sip and write_maps is None:
        raise ValueError("sip: the SIP files go beside the maps; ask for write_maps too")
    made = {}  # what each frame made: its table, field and map's record
    batch = _Batch(
        frames,
        RunResult,
        what="frame",
        name="run",
        progress=progress,
        callback=callback,
        made=made,
    )
    inputs = batch.inputs
    if not inputs:
        raise ValueError("no frame to stack")
    reference = inputs[0] if reference is None else os.fspath(reference)
    input_file(reference, "reference frame")
    if os.path.abspath(reference) not in {os.path.abspath(frame) for frame in inputs}:
        raise ValueError(f"{reference}: the reference frame is not among the frames")
    todo = []
    claimed = {}  # the frame whose table (and map) each name is
    for index, frame in batch:
        is_reference = os.path.abspath(frame) == os.path.abspath(reference)
        written = None if write_maps is None or is_reference else map_path(frame, _dir(write_maps))
        map_file = None if is_reference else os.path.abspath(map_path(frame, _dir(write_maps)))
        table = os.path.abspath(table_path(frame, tables))
        other = frame if is_reference else claimed.setdefault(table, frame)
        if os.path.abspath(other) != os.path.abspath(frame):
            batch.fail(
                index,
                f"its star table would be {table_path(frame, tables)}, {other}'s: frames of "
                "one name in different folders need their own --tables",
            )
            continue
        todo.append(Item(index, frame, written, os.path.abspath(frame), map_file))
    # The reference first: every frame is normalised to it.
    todo.sort(key=lambda item: item.map_file is not None)
    frames_read = StreamFrames(
        calibration,
        mask_hot_pixels,
        normalize,
        selection["weighting"],
        # Absolute: the workers may have started in another directory.
        reference=os.path.abspath(reference),
        stars=stars,
        field=field,
        choose=choose,
        tables=None if tables is None else os.path.abspath(tables),
        maps=write_maps if write_maps in (None, True, False) else os.path.abspath(write_maps),
        sip=sip,
        compress_maps=compress_maps,
        made=made,
    )
    measured = {}

    def select_stored(stored):
        measured.update(_measured(frames_read, todo, stored))
        return leave_out(
            batch, [item for item in todo if item.index in stored], measured, selection
        )

    stack = stack_items(
        batch,
        todo,
        frames_read,
        reject=reject,
        masks=masks,
        scratch=scratch,
        progress=progress,
        n_jobs=n_jobs,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
        keep_checkpoint=keep_checkpoint,
        identity={
            "run": {
                "stars": stars,
                "field": field,
                "choose": choose,
                # A resumed run makes the fields of the frames stored again from these.
                "tables": None if tables is None else os.path.abspath(tables),
            },
            "calibration": digest(calibration),
        },
        options=options,
        storer=lambda run, items, stored: _stream(
            run, frames_read, items, stored, Tasks(client, n_jobs, errors=FrameError), progress
        ),
        select=select_stored,
        client=client,
    )
    results = [with_measures(r, measured.get(index)) for index, r in enumerate(batch.results)]
    if report is not None:
        write_frame_report(frame_report(results), report, overwrite=True)
    return stack, results


class _Batch(Batch):
    """The `Batch` of a run: each frame's result has what the frame made (``made``)."""

    def __init__(self, *args, made, **kwargs):
        super().__init__(*args, **kwargs)
        self.made = made

    def finish(self, index, status, message="", **fields):
        made = self.made.get(index)
        if made is not None:
            fields.update(
                table=made.table,
                field=made.field,
                detected=made.counts["detected"],
                matched=made.counts["matched"],
                warnings=made.notes + tuple(fields.get("warnings", ())),
            )
        super().finish(index, status, message, **fields)


def _dir(write_maps):
    """Return the directory of the maps (`None`: beside the frames)."""
    return None if write_maps in (None, True) else write_maps


def _measured(frames_read, todo, stored):
    """Return the measures of the frames ``stored`` (`map_measures`) by index, the reference's."""
    made = frames_read.made
    measured = {index: made[index].measures[0] for index in stored if index in made}
    reference = reference_measures([m.measures[1] for m in made.values()])
    for item in todo:
        if item.map_file is None:
            measured[item.index] = reference
    return measured


def _stream(run, frames_read, todo, stored, tasks, progress):
    """Read every frame of ``todo`` once: its stars, table and map; stored, with rejection.

    The reference is read here (its stars are every frame's reference) while
    the workers (``tasks``, `Tasks`) start; then the workers read the other
    frames, each stored (``stored``, a dict, with rejection; `None` without) in
    rejection's directory. A frame that an interrupted run stored has its
    field made again from its table.
    """
    reference = next(item for item in todo if item.map_file is None)
    with ThreadPoolExecutor(1, thread_name_prefix="astro_offsets-start") as starter:
        starter.submit(tasks.start, __name__)
        found, _ = run.reference([reference])
    if found is None:
        # Failed and said so (the batch's result): no frame without it.
        raise ValueError(f"no frame could be stacked without the reference frame {reference.frame}")
    prepared = found[1]
    del found
    directory = None
    if stored is not None:
        run.start_rejection(len(todo), tasks.client)
        directory = run.rejection.directory
        if reference.index not in stored:
            entry = store_prepared(frames_read, directory, reference.index, prepared)
            run.mark_stored(stored, reference.index, entry)
    del prepared

    def took(item, result):
        bar.update()
        if isinstance(result, FrameError):  # a worker's, given in its place (Tasks' errors)
            run.batch.fail(item.index, result.message)
            return
        entry, made = result
        frames_read.made_by(item.index, made)
        if stored is not None:
            run.mark_stored(stored, item.index, entry)

    bar = tqdm(total=len(todo), desc="frames", unit="frame", disable=None if progress else True)
    with bar, tasks:
        bar.update()  # the reference
        rest = []
        # In order: the frames that an interrupted run stored, their fields made
        # again from their tables; here, the first frames until the sequence's
        # field is chosen (`StreamFrames.choose`), as `write_maps` chooses it.
        for item in (item for item in todo if item.map_file is not None):
            if stored is not None and item.index in stored:
                bar.update()
                try:
                    frames_read.made_by(item.index, frames_read.field_from_table(item))
                except ValueError as exc:
                    run.batch.fail(item.index, exc)
                    del stored[item.index]
            elif frames_read.choosing:
                try:
                    result = _through(frames_read, directory, item)
                except FrameError as exc:
                    result = exc
                took(item, result)
            else:
                rest.append(item)
        # The workers' copy: with the choice, without what the frames made here.
        shared = tasks.share(frames_read.for_workers())
        for item in rest:
            tasks.submit(_through, shared, directory, item)
        for item, result in zip(rest, tasks.results(), strict=True):
            took(item, result)


def _through(frames_read, directory, item):
    """Read a frame through (`StreamFrames.read`), and store it (a worker's task).

    Returns its record (`None` without rejection) and what it made; a frame
    that fails raises `FrameError`, with its one-line message.
    """
    try:
        prepared = frames_read.read(item)
        entry = None
        if directory is not None:
            entry = store_prepared(frames_read, directory, item.index, prepared)
    except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
        raise FrameError(describe(item.frame, exc)) from exc
    return entry, frames_read.made.pop(item.index)
