"""Stacking a sequence of frame files with their map files."""

import os
from dataclasses import dataclass

from astropy.io import fits

from .._utils.batch import Batch, Result
from .._utils.naming import map_path
from ..frames import hot_pixels, read_frame
from ..maps import OffsetMap
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
    mask_hot_pixels=True,
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
    mask_hot_pixels : bool, optional
        Give no weight to each frame's hot pixels (isolated spikes far above
        their neighbours): fixed to the sensor, they would otherwise draw
        trails of dots across the stack as the frames move. The default is
        `True`.
    progress : bool, optional
        Show a progress bar on stderr (when it is a terminal).
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
        The stack of the frames that could be stacked.
    results : list of `StackResult`
        One per frame, in the order given. Files that astro_offsets wrote
        (maps, star tables, stacks, recognised by their header or name) are
        left out, as ``"ignored"``.

    Raises
    ------
    ValueError
        If no frame could be stacked, an option is out of range,
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
    batch = Batch(
        frames, StackResult, what="frame", name="stack", progress=progress, callback=callback
    )
    plan = _plan(batch.inputs, maps, reference)
    stacker = None
    try:
        for index, frame in batch:
            omap_path, problem = plan[frame]
            if problem is not None:
                batch.fail(index, problem, map=omap_path)
                continue
            try:
                data = read_frame(frame)
                omap = OffsetMap.read(omap_path) if omap_path is not None else None
                if omap is not None and omap.shape != data.data.shape:
                    raise ValueError(
                        f"frame shape {data.data.shape} differs from its map's "
                        f"{omap.shape} ({omap_path})"
                    )
                if stacker is None:
                    stacker = Stacker(
                        data.data.shape, bayer=data.colors is not None, n_jobs=n_jobs, **options
                    )
                elif (data.colors is not None) != stacker.bayer:
                    kind = "a colour raw frame" if data.colors is not None else "a mono frame"
                    raise ValueError(
                        f"{kind}, but the stack is {'colour' if stacker.bayer else 'mono'}"
                    )
                stacker.add(
                    data.data,
                    omap,
                    mask=hot_pixels(data.data, data.colors) if mask_hot_pixels else None,
                    colors=data.colors,
                    exptime=data.exptime,
                    name=frame,
                    map_name=omap_path,
                )
            except DrizzleError:
                raise  # an earlier frame's: the stack cannot be finished
            except Exception as exc:
                batch.fail(index, exc, map=omap_path)
                continue
            batch.finish(index, "stacked", map=omap_path)
        if stacker is None:
            raise ValueError("no frame could be stacked")
        return stacker.stack(), batch.results
    finally:
        if stacker is not None:
            stacker.close()
