"""Stacking a sequence of frame files with their map files."""

import dataclasses
import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass

from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from tqdm import tqdm

from .._utils.batch import Batch, Result, describe
from .._utils.naming import map_path
from .._utils.provenance import text_of_card
from .._utils.unreadable import UNREADABLE_FITS
from .._utils.validation import input_file
from .._utils.workers import takes_client
from ..frames import frame_shape
from ._checkpoint import Checkpoint, digest
from ._cluster import on_cluster
from ._header import reference_meta
from ._quality import (
    FILTER_FWHM,
    FILTER_ROUND,
    FILTER_STARS,
    check_selection,
    map_measures,
    reference_measures,
    select_frames,
)
from ._report import frame_report, write_frame_report
from ._run import Frames, Item, Run
from ._stacker import check_stack_options

__all__ = [
    "StackResult",
    "check_frames",
    "check_settings",
    "leave_out",
    "stack_frames",
    "stack_items",
    "with_measures",
]


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
    weight: float | None = None
    """Its weight in the stack, the reference frame's being 1 (`None` if not stacked)."""
    measures: dict | None = None
    """Its quality: ``fwhm``, ``elongation``, ``n_stars``, ``sky``, ``noise``,
    ``flux_scale``, ``residual`` (NaN where unmeasured); see `stack_frames`."""


_MAKE_MAPS = (
    "make the maps first: astro-offsets tables FRAME... --reference FRAME, "
    "then astro-offsets maps TABLE... --image FRAME"
)


def _made_against(path):
    """Return the reference frame a map records (``REFFRAME``), or `None`."""
    try:
        return text_of_card(fits.getheader(path).get("REFFRAME")) or None
    except UNREADABLE_FITS:  # an unreadable map is reported when it is read
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
        n = len(frames)
        which = "the frame has no" if n == 1 else f"none of the {n} frames has a"
        raise ValueError(f"{which} map {where} (such as {expected[frames[0]]}): " + _MAKE_MAPS)
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


def _unreadable(frames, maps):
    """Return ``{frame: problem}`` of the frames that no plan can stack, before any is read.

    A file that is missing (or a shell pattern that matched nothing), empty
    or unreadable; and a file without a map (the reference, or a frame whose
    table or map failed) that is no frame file, which only its header tells.
    """
    problems = {}
    for frame in frames:
        try:
            input_file(frame, "frame file")
            if not os.path.exists(map_path(frame, maps)):
                frame_shape(frame)
        except (OSError, ValueError) as exc:
            problems[frame] = exc
    return problems


def _items(batch, maps, reference):
    """Return the frames of ``batch`` to stack, `Item` each; fail those that cannot be.

    Raises
    ------
    ValueError
        If no stack can be planned (see `_plan`), or the reference frame
        cannot be read.
    """
    problems = _unreadable(batch.inputs, maps)
    if reference is not None:
        for frame, problem in problems.items():
            if os.path.abspath(frame) == os.path.abspath(reference):
                raise ValueError(f"{describe(frame, problem)} (the reference frame)")
    plan = _plan([frame for frame in batch.inputs if frame not in problems], maps, reference)
    todo = []
    for index, frame in batch:
        omap_path, problem = plan.get(frame, (None, problems.get(frame)))
        if problem is None:
            map_file = None if omap_path is None else os.path.abspath(omap_path)
            todo.append(Item(index, frame, omap_path, os.path.abspath(frame), map_file))
        else:
            # A frame failed with its map still has the map's measures in the report.
            measures = map_measures(omap_path)[0] if omap_path else None
            batch.fail(index, problem, map=omap_path, measures=measures)
    return todo


def check_frames(frames, *, maps=None, reference=None):
    """Check the frames and maps of a stack as `stack_frames` does, without reading their pixels.

    Parameters
    ----------
    frames, maps, reference
        As for `stack_frames`.

    Returns
    -------
    list of `StackResult`
        The frames that could not be stacked (``"failed"``), each with its
        message: a file missing, empty, unreadable or of no frame format; a
        frame without a map that is not the reference; a map made against
        another reference.

    Raises
    ------
    ValueError
        If no stack can be planned (several frames without a map and no
        reference, a reference that is not among the frames or cannot be
        read, ...).

    Examples
    --------
    >>> from astro_offsets.stack import check_frames
    >>> [r.message for r in check_frames(["light_*.fits"])]
    ['light_*.fits: no file matches this pattern']
    """
    batch = Batch(frames, StackResult, what="frame", name="stack")
    _items(batch, maps, reference)
    return [r for r in batch.results if r is not None and r.status == "failed"]


@takes_client
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
    client=None,
    checkpoint=None,
    checkpoint_every=10,
    resume=False,
    keep_checkpoint=False,
    select=True,
    filter_fwhm=FILTER_FWHM,
    filter_round=FILTER_ROUND,
    filter_stars=FILTER_STARS,
    keep_best=None,
    weighting="noise",
    report=None,
    **options,
):
    """Drizzle frame files onto the reference frame's grid with their map files.

    Each frame ``<stem>.<ext>`` is moved by its map ``<stem>.offsets.fits``
    (beside it, or in ``maps``); the reference frame stacks unmoved. Raw
    files and FITS mosaics with a ``BAYERPAT`` card give a colour (Bayer
    drizzle) stack, and so do FITS cubes of red, green and blue planes
    (each plane drizzled with the frame's map); other FITS files a mono
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
    calibration : `~astro_offsets.Calibration` or `None`, optional
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
    client : `distributed.Client`, str or `None`, optional
        A dask cluster's client, or its scheduler's address (connected to
        for the call), to send the frames to instead: with rejection, a task
        per frame keeps it and drizzles it alone, tasks of row chunks take
        the medians; then each worker stacks a share of the frames into a
        partial stack, and the partial stacks are added up here (images
        and weights are weighted sums, contexts are ORed). The files move
        as paths: the workers must read the frames, the maps and the
        ``checkpoint`` (or ``scratch``) directory at the same paths. The
        default is `None`: the frames are stacked here, by ``n_jobs``
        workers.
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
    keep_checkpoint : bool, optional
        Keep the checkpoint once the stack is complete: the caller removes
        it (``shutil.rmtree``) once the stack is safely written, as the
        command does. The default is `False`.
    select : bool, optional
        Leave out the frames far outside the sequence's bulk (with 3 frames
        or more; never the reference): those whose stars' FWHM or
        elongation, as their maps record them, is beyond the median by
        more than ``filter_fwhm`` or ``filter_round`` robust sigmas (1.4826
        times the median absolute deviation) and by more than a quarter of
        the median; those that detected fewer stars than ``filter_stars``
        times the median; and, with ``keep_best``, all but that percentage
        of the frames, those of the least FWHM kept. A measure that a map
        does not record (a map of an earlier version) selects nothing. The
        default is `True`; `False` stacks every frame.
    filter_fwhm, filter_round : float or `None`, optional
        The FWHM's and the elongation's margins, in robust sigmas; `None`
        turns that test off. The defaults are 3.
    filter_stars : float or `None`, optional
        The least star count, as a fraction of the median, in (0, 1];
        `None` turns the test off. The default is 0.25.
    keep_best : float or `None`, optional
        Keep this percentage of the frames, in (0, 100] (DeepSkyStacker's
        "keep the best N %"), ranked by FWHM. The default is `None`: all
        that the other tests keep.
    weighting : {"noise", "none"}, optional
        ``"noise"`` (the default) weights each frame by the inverse variance
        of its noise after normalisation, ``(n_ref / (s * n))**2`` relative
        to the reference frame, where ``n`` is the frame's pixel noise (the
        differences of neighbouring pixels) and ``s`` the flux scale that
        normalises it (1 if not ``normalize``): a frame under thin cloud
        counts for what it is worth,
        and a capped one for almost nothing; the reference weighs its
        exposure time (1 without exposure weighting), as it would
        unweighted. Rejection's medians leave out the frames weighted below
        a tenth of the median weight. ``"none"`` weights every frame by its
        exposure time (``exposure_weighting``) alone.
    report : str, path-like or `None`, optional
        Write the report of the frames here (an ECSV table, one row per
        frame, replaced if it exists; its columns are on the stacking
        page), and its picture beside it (``.png``). The command writes
        ``<out stem>.frames.ecsv``. The default is `None`: no report (the
        results hold the same).
    **options
        The drizzle: ``kernel``, ``pixfrac``, ``scale``,
        ``exposure_weighting``, ``context``, as for `Stacker` (checked
        before any frame is read).

    Returns
    -------
    stack : `Stack`
        The stack of the frames that could be stacked, in units per second
        of the reference frame's exposure when normalised. Its ``meta``
        records each frame's normalisation and rejected fraction, and what
        the reference frame's file tells: ``wcs``, its celestial WCS
        carried onto the stack's grid (`None` if it has none),
        ``observation``, its cards that describe the observation
        (``OBJECT``, ``DATE-OBS``, ...: ``(keyword, value, comment)``), and
        ``roworder``, how its rows run (``"TOP-DOWN"`` for raw files,
        ``"BOTTOM-UP"`` for FITS unless their ``ROWORDER`` says otherwise).
    results : list of `StackResult`
        One per frame, in the order given. Files that astro_offsets wrote
        (maps, star tables, stacks, recognised by their header or name) are
        left out, as ``"ignored"``; frames the selection left out are
        ``"left out"``. Each has the frame's ``measures`` and, if stacked,
        its ``weight``.

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
    selection, masks = check_settings(
        masks,
        scratch,
        checkpoint_every,
        check_selection(select, filter_fwhm, filter_round, filter_stars, keep_best, weighting),
        options,
    )
    batch = Batch(
        frames, StackResult, what="frame", name="stack", progress=progress, callback=callback
    )
    todo = _items(batch, maps, reference)
    if not todo:
        raise ValueError("no frame could be stacked")  # before any checkpoint is made
    recorded = {item.index: map_measures(item.omap_path) for item in todo if item.omap_path}
    reference_recorded = reference_measures([ref for _, ref in recorded.values()])
    measured = {
        item.index: recorded[item.index][0] if item.omap_path else reference_recorded
        for item in todo
    }
    left_out = leave_out(batch, todo, measured, selection)
    todo = [item for item in todo if item.index not in left_out]
    # The reference first: every frame is normalised to it.
    todo.sort(key=lambda item: item.omap_path is not None)
    frames_read = Frames(calibration, mask_hot_pixels, normalize, selection["weighting"])
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
        identity={"calibration": digest(calibration)},
        options=options,
        client=client,
    )
    results = [with_measures(r, measured.get(index)) for index, r in enumerate(batch.results)]
    if report is not None:
        write_frame_report(frame_report(results), report, overwrite=True)
    return stack, results


def check_settings(masks, scratch, checkpoint_every, selection, options):
    """Check a stack's settings before any frame is read; return the selection and ``masks``.

    ``selection`` is `check_selection`'s, ``options`` the drizzle's; ``masks``
    comes back absolute if a directory.
    """
    check_stack_options(**options)
    if masks not in (None, True, False) and not os.path.isdir(masks):
        raise ValueError(f"{masks}: the directory for the masks does not exist")
    if scratch is not None and not os.path.isdir(scratch):
        raise ValueError(f"{scratch}: the scratch directory does not exist")
    if int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be 1 or more, got {checkpoint_every!r}")
    return selection, os.path.abspath(masks) if masks not in (None, True, False) else masks


def leave_out(batch, todo, measured, selection):
    """Leave out the frames of ``todo`` that the selection refuses, and report them.

    ``measured`` are the frames' measures by index (`map_measures`), the
    reference's too (the item without a map file), which is never left
    out. Returns ``{index: reason}`` of the frames left out.
    """
    reference = next((item.index for item in todo if item.map_file is None), None)
    left_out = select_frames(measured, reference, selection)
    for item in todo:
        if item.index in left_out:
            batch.finish(
                item.index,
                "left out",
                f"{item.frame}: {left_out[item.index]}",
                map=item.omap_path,
                measures=measured[item.index],
            )
    return left_out


def stack_items(
    batch,
    todo,
    frames_read,
    *,
    reject,
    masks,
    scratch,
    progress,
    n_jobs,
    checkpoint,
    checkpoint_every,
    resume,
    keep_checkpoint,
    identity,
    options,
    storer=None,
    select=None,
    client=None,
):
    """Stack the frames ``todo`` (`Item` each, the reference first) of ``batch``; return the stack.

    What `stack_frames` does once its frames and maps are found and
    selected, and a streaming run (`astro_offsets.pipeline`) once it has
    made its reference's stars: ``frames_read`` (`Frames`) reads the frames
    and has their maps (`Frames.offset_map`), and ``storer`` and ``select``
    are `Run.reject`'s (how rejection's first pass keeps the frames, and
    which frames it leaves out); ``storer(run, todo, stored)`` is called with
    the `Run`, and without rejection with ``stored=None``, before the frames
    are read for the stack. ``identity`` adds to the checkpoint's
    identity what tells the frames' reading apart (the calibration's
    digest, a run's options). ``client``: a dask cluster's, to stack on
    (`stack_frames`).
    """
    # The frame without a map: the grid's, whose file tells its WCS.
    grid = next((item.frame_file for item in todo if item.map_file is None), None)
    counted = reject is None
    if reject is None:
        reject = len(todo) >= 3
        if masks and not reject:
            _no_masks(len(todo))
    elif masks and not reject:
        raise ValueError(
            "outlier masks need rejection (masks= with reject=False, --write-masks with "
            "--no-reject)"
        )
    saved = None
    if checkpoint is not None:
        identity = {
            "frames": [item.frame_file for item in todo],
            "maps": [item.map_file for item in todo],
            "reject": bool(reject),
            "normalize": bool(frames_read.normalize),
            "mask_hot_pixels": bool(frames_read.mask_hot_pixels),
            **identity,
            "options": check_stack_options(**options),
            "weighting": frames_read.weighting,
        }
        shares = 1 if client is None else len(client.scheduler_info()["workers"])
        saved = Checkpoint(
            checkpoint, identity, every=checkpoint_every, resume=resume, shares=shares
        )
        if client is None and saved.shares > 1:
            raise ValueError(
                f"{checkpoint}: the checkpoint of a stack on a dask cluster, in "
                f"{saved.shares} shares: resume it on a cluster (client=, --scheduler)"
            )
        if saved.resumed and progress:
            tqdm.write(f"resuming from {saved.name}: {saved.summary()}", file=sys.stderr)
    run = Run(batch, frames_read, n_jobs if client is None else 1, scratch, options, saved)
    try:
        if not reject:
            if storer is not None:
                storer(run, todo, None)
            if select is not None:
                left_out = set(select({item.index: None for item in todo}))
                todo = [item for item in todo if item.index not in left_out]
        if client is not None:
            on_cluster(run, client, todo, reject, masks, storer, select)
        elif reject and todo:
            # Numbered as they go in (context bit k: the k-th frame stacked),
            # also when one fails in the second pass.
            store = None if storer is None else functools.partial(storer, run)
            stored = run.reject(todo, storer=store, select=select)
            if counted and len(stored) < 3:
                # Fewer than 3 frames left to stack (the others failed or were
                # left out): a median cannot tell an outlier, none is sought.
                reject = False
                if masks:
                    _no_masks(len(stored))
                run.stack_share(0, [(None, item, None) for _, item, _ in stored], False)
            else:
                run.stack_share(0, [(None, item, entry) for _, item, entry in stored], True, masks)
        else:
            run.stack_share(0, [(None, item, None) for item in todo], False)
        stack = run.stack(reject)
        shape = stack.images[stack.channels[0]].shape
        stack.meta.update(reference_meta(grid, stack.meta["scale"], shape))
    except BaseException as exc:
        run.close()
        if saved is not None and saved.empty():
            saved.remove()  # nothing in it to resume
        elif saved is not None:
            # Shown with the traceback; the command line says it its own way.
            exc.add_note(
                f"the stack stopped; its checkpoint is kept in {saved.name}: continue it "
                "(resume=True, --resume)"
            )
        raise
    run.close()
    if saved is not None and not keep_checkpoint:
        saved.remove()
    return stack


def _no_masks(n_frames):
    """Warn that no outlier mask is written: too few frames to reject outliers."""
    warnings.warn(
        f"no outlier masks: rejection needs 3 frames or more, not {n_frames}",
        AstropyUserWarning,
        stacklevel=4,
    )


def with_measures(result, recorded):
    """Return a result with the measures its map recorded, under those the stack made."""
    made = {key: value for key, value in (result.measures or {}).items() if not math.isnan(value)}
    if recorded is None and not made:
        return result
    return dataclasses.replace(result, measures={**(recorded or {}), **made})
