"""Offset maps for a whole sequence of star tables."""

import collections
import contextlib
import os
import threading
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from astropy.io import fits

from .._utils.atomic import atomic_path
from .._utils.batch import Batch, Result, describe
from .._utils.naming import map_path, png_path, sip_path
from .._utils.provenance import product_kind, provenance_cards
from .._utils.unreadable import UNREADABLE_FITS
from .._utils.workers import Tasks, takes_client
from ..maps import OffsetMap, offsets_to_sip, reference_wcs, sip_shortfall, write_plot, write_sip
from ..stars import read_table
from ._model import OffsetModel, check_options
from ._sequence import SEQUENCE_SELECTION, SequenceChoice
from ._tiling import output_maps

__all__ = [
    "CHOICES",
    "MAPS_METHOD",
    "MapResult",
    "choice_of",
    "make_map",
    "read_model",
    "write_map",
    "write_maps",
]

MAPS_METHOD = "auto"
"""The field method of `write_maps` and ``astro-offsets maps`` by default.

Measured on turned, flipped and distorted frames (see the methods page of
the documentation), the cross-validated choice on the affine trend errs
least between stars: by 0.004 to 0.04 px with 0.05 px of centroid noise,
where the quadrant field on the same trend, which passes through every
star's noise, errs by 0.04 to 0.07 px.
"""

CHOICES = ("sequence", "frame")
"""How `write_maps` chooses the field of ``method="auto"``: once for the
sequence, re-checked on each table (`SequenceChoice`, the default), or on
every table."""


@dataclass(frozen=True, kw_only=True)
class MapResult(Result):
    """What became of one star table in `write_maps`.

    Examples
    --------
    >>> from astro_offsets import MapResult
    >>> result = MapResult(path="a.offsets_table.fits", status="written",
    ...                    output="a.offsets.fits", field="quadrant power=1")
    >>> result.output
    'a.offsets.fits'
    """

    output: str | None = None
    """The map file, ``<stem>.offsets.fits``."""
    field: str = ""
    """The map's field in words (method, parameter, CV RMS, stars clipped)."""


# Why a lock: warnings.catch_warnings swaps the process's warning filters and
# showwarning (not thread-safe before Python 3.14's context-aware warnings),
# and a warning raised in one thread goes to whichever thread is catching.
# Tables read in a dask worker's threads at once, and the SIP fits (in
# write_maps' writer thread, beside the next map), take turns, or each would
# catch, or lose, the others' warnings; the SIP fit's turn also covers
# threadpoolctl's process-wide BLAS limit. Each turn is short (reading a
# table, fitting a SIP); the maps' evaluation returns its warning as text
# (_to_map) and takes no turn.
_CATCHING = threading.Lock()


def read_model(table, options, path=None, choice=None):
    """Read a star table's model; return it and its warnings, one line each.

    ``path`` is where to read the table, ``table`` by default; the model and
    the messages name it ``table``. With a `SequenceChoice`, the model is
    the choice's (re-checked on the table's stars) rather than ``options``'.
    """
    with _CATCHING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stars = read_table(path or table)
        if choice is None:
            model = OffsetModel.from_table(stars, source=table, **options)
        else:
            model = choice.model(stars, source=table)
    return model, tuple(describe(table, str(w.message)) for w in caught)


def choice_of(model):
    """Return the `SequenceChoice` of a model made with ``method="auto"``, or `None`.

    `None` when its field was not chosen by cross-validation (too few
    stars): the next table's auto makes the choice.
    """
    try:
        return SequenceChoice.from_model(model)
    except ValueError:
        return None


# Keys of a model's meta that belong to its method alone.
_METHOD_KEYS = ("method", "parameter", "parameter_value", "weighted", "n_clipped", "cv_rms")


def _quadrant_instead(model):
    """Return the quadrant field on the stars and trend of ``model``, with its provenance."""
    quadrant = OffsetModel(
        model.x,
        model.y,
        model.x_offset,
        model.y_offset,
        method="quadrant",
        clip=model.meta.get("clip"),
        trend=model.trend,
        uncertainty=model._stars.sigma,
        source=model.meta["source"],
    )
    kept = {k: v for k, v in model.meta.items() if k not in _METHOD_KEYS}
    quadrant.meta = {**kept, **quadrant.meta, "n_dropped": model.meta["n_dropped"]}
    quadrant.meta["selection"] = "auto, quadrant: fold"
    return quadrant


class _FoldError(ValueError):
    """A map refused (it folds), with the warnings of making it (``notes``)."""

    def __init__(self, message, notes):
        super().__init__(message)
        self.notes = notes


def _to_map(model, shape, n_jobs, settings, out):
    """Return the model's map and the warnings of making it, one line each.

    Its one warning (a polynomial extrapolated) comes as text: the map's
    evaluation, the long part, takes no turn at the warning filters.
    """
    omap, warning = model._map_and_warning(shape, n_jobs, settings["block_size"], out)
    return omap, () if warning is None else (describe(model.meta["source"], warning),)


def _make(model, shape, n_jobs, settings, out=None):
    """Make a table's map; return the map, its warnings (one line each) and its model.

    A map that folds is refused (a `ValueError` naming its table): drizzle
    cannot use it. The field ``method="auto"`` chose is fitted to the stars,
    not to the frame beyond them: where it folds (a polynomial extrapolated
    into an empty corner), the quadrant field on the same trend, which
    follows the stars and nothing else, takes its place, with a warning.
    """
    omap, notes = _to_map(model, shape, n_jobs, settings, out)
    folds = omap.folds()
    chosen = model.meta.get("selection") in ("auto", SEQUENCE_SELECTION)
    if folds is not None and chosen and model.method != "quadrant":
        # The warnings of the map not used give way to the one that says why.
        notes = (
            f"{model.meta['source']}: {omap.field_summary.split(',')[0]} folds at {folds}: "
            "the quadrant field on the trend is used instead",
        )
        model = _quadrant_instead(model)
        omap, more = _to_map(model, shape, n_jobs, settings, out)
        notes += more
        folds = omap.folds()
    if folds is not None:
        try:
            omap.check_folds()  # the error, naming the table
        except ValueError as exc:
            raise _FoldError(str(exc), notes) from None
    if settings["cv"]:
        omap.meta["cv_rms"] = model.cv_rms
    return omap, notes, model


def make_map(model, shape, *, n_jobs=None, block_size="auto", cv=False, out=None):
    """Return the map of a model as `write_maps` makes it, its warnings and its model.

    The map is refused if it folds (`ValueError`); ``method="auto"``'s
    choice that folds gives way to the quadrant field on its trend, whose
    model is returned then (the one to make the map again with).

    Parameters
    ----------
    model : `OffsetModel`
        The field of a star table (``source`` names it in messages).
    shape : tuple of int
        The frame's ``(ny, nx)``.
    n_jobs, block_size, out
        As for `OffsetModel.to_map`.
    cv : bool, optional
        Record the model's CV RMS in the map (as `write_maps`).

    Returns
    -------
    omap : `OffsetMap`
    notes : tuple of str
        The warnings of making it, one line each, naming the table.
    model : `OffsetModel`
        The model of the map.

    Examples
    --------
    >>> from astro_offsets import OffsetModel
    >>> from astro_offsets.field import make_map
    >>> model = OffsetModel([10.0, 30.0, 20.0], [5.0, 8.0, 25.0], [0.5, 0.6, 0.4],
    ...                     [0.1, 0.0, 0.2], method="quadrant", trend=None)
    >>> omap, notes, used = make_map(model, (30, 40))
    >>> omap.shape, notes, used is model
    ((30, 40), (), True)
    """
    settings = {"block_size": block_size, "cv": cv}
    return _make(model, shape, n_jobs, settings, out)


def _write_plot(omap, output, stars):
    """Write the plot of a map; return the warnings, one line each (a failed plot)."""
    try:
        write_plot(omap, png_path(output), stars)
    except Exception as exc:  # matplotlib's, of any kind: a warning (describe raises MemoryError)
        return (describe(png_path(output), exc),)
    return ()


def _write_sip(omap, output, overwrite):
    """Write a map's SIP polynomials, ``<stem>.sip.fits`` beside it; return the warnings.

    The polynomials are attached to the celestial WCS of the map's
    reference frame (``REFPATH``, or for older tables ``REFFRAME``) if it
    has one (`reference_wcs`), else to `default_wcs`, as the file's
    comments say. The file's header carries the map's provenance, and the
    error reached (``SIPERR``). A SIP that misses its ``max_error`` (a
    field SIP cannot follow), or that cannot be made, is a warning, one
    line naming the file, not a failure: the map is written all the same.
    """
    path = sip_path(output)
    foreign = None if overwrite else _foreign_sip(path)
    if foreign:
        return (foreign,)
    try:
        # The warnings' filters and BLAS's threads (one for the fit) are the
        # process's: taken in turn with the fits of the maps, in other threads.
        with _CATCHING:
            reference = omap.meta.get("reference_path") or omap.meta.get("reference")
            wcs, comments = reference_wcs(reference, omap.shape)
            w = offsets_to_sip(omap.x_offset, omap.y_offset, wcs=wcs, warn=False)
        first = {keyword for keyword, _, _ in provenance_cards("offset map")} | {"COMMENT"}
        cards = [card for card in omap.header().cards if card.keyword not in first]
        # The SIP belongs to the map just written: a stale one is replaced.
        write_sip(path, w, cards, comments, overwrite=True)
    except Exception as exc:  # wcslib's, the fit's, the write's: a warning (as a plot's)
        return (describe(path, exc),)
    shortfall = sip_shortfall(w)
    return () if shortfall is None else (describe(path, shortfall),)


def _foreign_sip(path):
    """Return the warning for a file at a SIP file's name that is none of ours, or None.

    Such a file is the user's: kept, unless they ask to overwrite.
    """
    if os.path.lexists(path) and product_kind(path) != "SIP distortion":
        return f"{path}: exists and is no SIP file of astro-offsets: kept, the SIP not written"
    return None


def write_map(omap, output, overwrite, plot, *, sip=False, compress=True):
    """Write a map (`_make` checked it does not fold), compressed or not; its plot and SIP if asked.

    Return the warnings, one line each: a plot or SIP that fails leaves the
    map written, a warning, not a failure.
    """
    omap.write(output, overwrite=overwrite, compress=compress)
    # The plot belongs to the map just written: a stale one is replaced.
    notes = _write_plot(omap, output, None) if plot else ()
    return notes + (_write_sip(omap, output, overwrite) if sip else ())


def _plot_existing_map(omap, output, table):
    """Plot a map kept from an earlier run, with the stars and field its header names."""
    options = {
        "method": omap.meta.get("method", "quadrant"),
        "clip": omap.meta.get("clip"),
        # Maps without a TREND card are of the literal field.
        "trend": omap.meta.get("trend"),
    }
    if omap.meta.get("parameter"):
        options[omap.meta["parameter"]] = omap.meta.get("parameter_value")
    try:
        model, _ = read_model(table, options)
    except (OSError, ValueError):  # the table changed or is gone: the map alone
        model = None
    return _write_plot(omap, output, model)


@takes_client
def write_maps(
    tables,
    shape,
    *,
    outdir=None,
    n_jobs=None,
    client=None,
    block_size="auto",
    overwrite=False,
    plot=False,
    sip=False,
    cv=False,
    choose="sequence",
    compress=True,
    progress=False,
    callback=None,
    **options,
):
    """Write the offset map ``<stem>.offsets.fits`` of every star table of a sequence.

    Each map is computed on all workers, while the previous one is written
    to disk by a separate thread: the cores stay busy, no more workers than
    ``n_jobs`` compute at once, and at most two frames' maps are in memory.
    On a dask cluster (``client``) each table is instead one task: a
    worker reads the table and writes the map, at the same paths as here
    (a shared filesystem, checked before any task is sent), and the maps are
    the same, bit for bit. A table that cannot be read or used is reported
    and the others are still processed; nothing partial is ever written.

    Parameters
    ----------
    tables : iterable of str or path-like
        Star tables, any format astropy reads; see `OffsetModel.read`.
    shape : tuple of int
        Frame shape ``(ny, nx)``, the same for every table.
    outdir : str, path-like or `None`, optional
        Output directory (it must exist); `None` writes each map beside its
        table.
    n_jobs : int or `None`, optional
        Workers per map, with `joblib.Parallel`'s meaning. A dask cluster
        uses all its workers, one map each, whatever ``n_jobs``.
    client : `distributed.Client`, str or `None`, optional
        A dask cluster's client, or its scheduler's address (connected to
        for the call), whose workers make the maps. The default is `None`:
        they are made here.
    block_size : ``"auto"`` or tuple of int, optional
        Tile shape; see `OffsetModel.to_map`.
    overwrite : bool, optional
        Replace existing maps. The default is `False`: they are kept, and the
        table is reported as skipped.
    plot : bool, optional
        Also write `OffsetMap.plot` as ``<stem>.offsets.png`` beside each map
        (see `OffsetMap.plot`); a plot that cannot be written is a warning,
        the map is written all the same. A map kept from an earlier run gets
        the plot it lacks. The default is `False`.
    sip : bool, optional
        Also write the map as SIP polynomials (`OffsetMap.to_sip`, default
        degree and ``max_error``), ``<stem>.sip.fits`` beside it: a
        header-only FITS file that DS9, Siril and ASTAP read, with the error
        reached (``SIPERR``, px) and the map's provenance. The WCS is that of
        the map's reference frame (``REFFRAME``) if it is a FITS file with a
        celestial WCS without distortion, else ``astro_offsets.maps.default_wcs``
        (a comment says which). A field SIP cannot follow to its
        ``max_error`` is a warning, as is a SIP that cannot be written; the
        map is written all the same. A map kept from an earlier run gets
        the SIP it lacks. The default is `False`.
    compress : bool, optional
        Write the maps tile-compressed, within 0.00098 px of the map at
        every pixel (see `OffsetMap.write`), or, if `False`, as plain float32
        images. The default is `True`.
    progress : bool, optional
        Show a progress bar on stderr (when it is a terminal).
    callback : callable or `None`, optional
        Called with each `MapResult` as soon as it is known.
    cv : bool, optional
        Cross-validate each map's field and record its CV RMS in the header
        (``CVRMS``) and the result; a fixed method's cross-validation costs
        fits (fractions of a second for the quadrant field or a polynomial of
        a few hundred stars, seconds for a thin-plate spline of a thousand).
        ``method="auto"`` records it anyway. The default is `False`.
    choose : {"sequence", "frame"}, optional
        How ``method="auto"`` chooses each map's field. ``"sequence"`` (the
        default): auto cross-validates every candidate on the first table
        (in the order given) and each later table fits that choice and
        re-checks it on its own stars, against the candidates that cost
        little, falling back to its own auto when they score better (see
        `SequenceChoice`); the map's ``SELECTED`` card says which
        (``auto, sequence`` or ``auto``). ``"frame"``: auto on every table.
        Other methods ignore it.
    **options
        The field: ``method`` (here ``"auto"`` by default), ``trend``,
        ``clip`` and the method's parameter (``power``, ``degree``,
        ``smoothing``), as for `OffsetModel`
        (checked before any table is read).

    Returns
    -------
    list of `MapResult`
        One per table, in the order given.

    Raises
    ------
    OSError
        On a dask cluster, if a worker cannot read a table that this process
        can.

    Examples
    --------
    >>> import os, tempfile
    >>> from astropy.table import Table
    >>> from astro_offsets import write_maps
    >>> folder = tempfile.mkdtemp()
    >>> tables = [os.path.join(folder, f"{name}.offsets_table.ecsv") for name in "abc"]
    >>> for table in tables[:2]:
    ...     Table({"x": [3.0, 9.0], "y": [2.0, 7.0], "x_offset": [0.5, 0.7],
    ...            "y_offset": [0.1, 0.2]}).write(table)
    >>> [(os.path.basename(r.output), r.status) for r in write_maps(tables, (10, 12))]
    [('a.offsets.fits', 'written'), ('b.offsets.fits', 'written'), ('c.offsets.fits', 'failed')]
    """
    options.setdefault("method", MAPS_METHOD)
    check_options(**options)
    if choose not in CHOICES:
        raise ValueError(f"choose must be one of {', '.join(map(repr, CHOICES))}, got {choose!r}")
    batch = Batch(
        tables,
        MapResult,
        what="star table",
        name="maps",
        keep=("star table",),
        progress=progress,
        callback=callback,
    )
    settings = {
        "block_size": block_size,
        "overwrite": overwrite,
        "plot": plot,
        "sip": sip,
        "cv": cv,
        "compress": compress,
    }
    # The sequence's choice is made in this process, on the first table to
    # make, before any later table is: each map then depends on its table
    # and the choice alone, whoever makes it and whenever.
    settings["choose"] = choose == "sequence" and options["method"] == "auto"
    if client is None:
        _maps_here(batch, shape, outdir, n_jobs, settings, options)
    else:
        _maps_on_cluster(client, batch, shape, outdir, settings, options)
    return batch.results


def _against_another_reference(table, output):
    """Return the reference the map ``output`` was made against if its table's is another.

    A table remade against a new reference (``tables --reference``) makes
    its map stale: the map is made again, not kept.
    """
    try:
        made_against = fits.getheader(output).get("REFFRAME")
        now_against = fits.getheader(table, 1).get("REFFRAME")
    except UNREADABLE_FITS:  # not FITS files of ours: the map is kept, the table read as usual
        return None
    if made_against and now_against and str(made_against) != str(now_against):
        return str(made_against)
    return None


def _existing_map(output, table, plot, sip):
    """Make the plot and SIP asked for now of a map kept from an earlier run, if it lacks them.

    Return the warnings, one line each.
    """
    plot = plot and not os.path.lexists(png_path(output))
    sip = sip and not os.path.lexists(sip_path(output))
    if not (plot or sip):
        return ()
    try:
        omap = OffsetMap.read(output)
    # A kept map that no longer reads: a warning. astropy's decompression of a
    # damaged file raises types of every kind (AttributeError, OverflowError,
    # RuntimeError...); describe() raises a MemoryError again.
    except Exception as exc:
        return (describe(output, exc),)
    notes = _plot_existing_map(omap, output, table) if plot else ()
    return notes + (_write_sip(omap, output, False) if sip else ())


def _to_make(batch, index, table, output, claimed, overwrite, settings):
    """Return whether a table's map is to be made, and replaced; finish the table if not.

    `None` if another table made it (``claimed``: the tables that proved
    star tables, by the absolute path of their map), or if the map exists
    and is kept; else whether the map is to replace an existing one
    (``overwrite``, or a map made against another reference than its
    table's now).
    """
    key = os.path.abspath(output)
    if key in claimed:
        batch.fail(index, f"same output {output} as {claimed[key]}", output=output)
        return None
    if os.path.lexists(output) and not overwrite:
        if _against_another_reference(table, output):
            return True
        claimed[key] = table
        # A plot or SIP asked for now, of a map made without one, is made.
        notes = _existing_map(output, table, settings["plot"], settings["sip"])
        batch.skip_existing(index, output, overwrite, warnings=notes)
        return None
    return overwrite


def _maps_here(batch, shape, outdir, n_jobs, settings, options):
    """Make the maps in this process: each on all workers while the previous one is written."""
    overwrite, plot = settings["overwrite"], settings["plot"]
    claimed = {}
    pending = None

    def collect(pending):
        index, output, future, notes, field = pending
        try:
            plot_notes = future.result()
        except Exception as exc:  # any, the table's own (describe raises MemoryError again)
            batch.fail(index, exc, output=output, warnings=notes)
        else:
            batch.finish(index, "written", output=output, warnings=notes + plot_notes, field=field)

    # Two pairs of output maps, used in turn: the c-th map computed goes into
    # pair c % 2 while map c - 1 is written from the other pair (the write of
    # map c - 2 is collected before map c - 1 is queued). Reusing them spares
    # the operating system zeroing fresh pages for every frame.
    buffers = []
    computed = 0
    choice = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="astro-offsets-writer") as writer:
        for index, table in batch:
            output = map_path(table, outdir)
            replace = _to_make(batch, index, table, output, claimed, overwrite, settings)
            if replace is None:
                continue
            notes = ()
            if len(buffers) == computed % 2:
                buffers.append(output_maps(shape))
            try:
                model, notes = read_model(table, options, choice=choice)
                # The output is this table's once it proved a star table.
                claimed[os.path.abspath(output)] = table
                if settings["choose"] and choice is None:
                    choice = choice_of(model)
                omap, fallback, _ = _make(model, shape, n_jobs, settings, buffers[computed % 2])
                notes += fallback
            except Exception as exc:  # any, the table's own (describe raises MemoryError again)
                batch.fail(index, exc, output=output, warnings=notes + getattr(exc, "notes", ()))
                continue
            computed += 1
            if pending is not None:
                collect(pending)
            future = writer.submit(
                write_map,
                omap,
                output,
                replace,
                plot,
                sip=settings["sip"],
                compress=settings["compress"],
            )
            pending = (index, output, future, notes, omap.field_summary)
        if pending is not None:
            collect(pending)


@dataclass(frozen=True)
class _Made:
    """What a worker of a cluster made of a star table (see `_make_map`)."""

    proved: bool  # the table read as a star table: the output is its own
    problem: str = ""  # why no map was made, in one line naming the table
    warnings: tuple = ()  # the table's
    plot_warnings: tuple = ()
    field: str = ""


def _make_map(table, output, files, shape, settings, options, choice):
    """Read a star table, make its map and write it: the task of a cluster's worker.

    ``table`` and ``output`` name the files as the user did; ``files`` maps
    them to where this worker reads and writes them: absolute paths, the
    map staged beside its final place (see `_maps_on_cluster`); ``choice``
    the sequence's `SequenceChoice`, or `None`.

    Returns
    -------
    `_Made`
    """
    path, staged = files[table], files[output]

    def named(text):
        """Return the message with the files named as the user did."""
        for name, place in files.items():
            text = text.replace(place, name)
        return text

    try:
        model, notes = read_model(table, options, path, choice)
    except Exception as exc:  # any, the table's own (describe raises MemoryError again)
        return _Made(False, named(describe(path, exc)))
    try:
        omap, fallback, _ = _make(model, shape, 1, settings)
        notes += fallback
        plot_notes = write_map(
            omap, staged, True, settings["plot"], sip=settings["sip"], compress=settings["compress"]
        )
    except Exception as exc:  # as above
        return _Made(True, named(describe(table, exc)), notes + getattr(exc, "notes", ()))
    return _Made(True, "", notes, tuple(map(named, plot_notes)), omap.field_summary)


def _choose_here(table, options):
    """Return the `SequenceChoice` of a table, made in this process, or `None`.

    As `_maps_here` makes it of the same table: `None` if the table cannot
    be read or its auto cannot cross-validate (its worker reports why).
    """
    try:
        model, _ = read_model(table, options)
    except (OSError, ValueError):  # no star table, or too few stars: its worker says why
        return None
    return choice_of(model)


def _discard(staged):
    """Remove a staged map, its plot and its SIP, if they are there."""
    for path in (staged, png_path(staged), sip_path(staged)):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _place(staged, output, overwrite):
    """Move a map that a worker staged, and its plot and SIP if any, to their places.

    The move is atomic and replaces an existing map only if ``overwrite``,
    as `write_map` would, and a SIP file not ours only if ``overwrite``; the staged
    files are gone afterwards. Return the warnings: a SIP file kept.
    """
    notes = ()
    try:
        with atomic_path(output, overwrite=overwrite) as tmp:
            os.replace(staged, tmp)
        for beside in (png_path, sip_path):
            if not os.path.lexists(beside(staged)):
                continue
            foreign = None if overwrite or beside is png_path else _foreign_sip(beside(output))
            if foreign:
                notes += (foreign,)
            else:
                os.replace(beside(staged), beside(output))
    finally:
        _discard(staged)
    return notes


def _maps_on_cluster(client, batch, shape, outdir, settings, options):
    """Make the maps on a dask cluster: one task per table, each read and written by a worker.

    A worker writes its map beside the final one, under a name of its own,
    and this process moves it into place once the task's result is here. A
    worker that dies has its tasks run again elsewhere, also those it had
    finished whose results had not come here yet: written in place, such a
    map would find itself there the second time, and fail as an existing
    file.
    """
    overwrite, plot = settings["overwrite"], settings["plot"]
    batch.check_workers(client)
    claimed = {}
    sent = collections.deque()  # (index, output, staged map, replace) of each task, in order
    later = []  # tables whose output an earlier table of the batch may make

    def submit(index, table, output, replace, choice):
        staged = os.path.join(
            os.path.dirname(os.path.abspath(output)),
            f".{uuid.uuid4().hex}.{os.path.basename(output)}",
        )
        files = {table: os.path.abspath(table), output: staged}
        if plot:
            files[png_path(output)] = png_path(staged)
        if settings["sip"]:
            files[sip_path(output)] = sip_path(staged)
        tasks.submit(_make_map, table, output, files, shape, settings, options, choice)
        sent.append((index, output, staged, replace))

    def finish(made):
        index, output, staged, replace = sent.popleft()
        if isinstance(made, Exception):  # the task itself failed: workers died too often
            _discard(staged)
            batch.fail(index, made, output=output)
            return
        if made.proved:
            # The output is this table's once it proved a star table.
            claimed[os.path.abspath(output)] = batch.paths[index]
        if made.problem:
            _discard(staged)
            batch.fail(index, made.problem, output=output, warnings=made.warnings)
            return
        try:
            placed = _place(staged, output, replace)
        except OSError as exc:
            batch.fail(index, exc, output=output, warnings=made.warnings)
        else:
            notes = made.warnings + made.plot_warnings + placed
            batch.finish(index, "written", output=output, warnings=notes, field=made.field)

    # Interrupted, the work left is not wanted: cancelled.
    with Tasks(client, errors="return") as tasks:
        submitted = set()
        choice = None
        for index, table in batch:
            output = map_path(table, outdir)
            if os.path.abspath(output) in submitted:
                later.append((index, table, output, choice))
            else:
                replace = _to_make(batch, index, table, output, claimed, overwrite, settings)
                if replace is not None:
                    submit(index, table, output, replace, choice)
                    submitted.add(os.path.abspath(output))
                    if settings["choose"] and choice is None:
                        choice = _choose_here(table, options)
        for made in tasks.results():
            finish(made)
        # As the tables would have been in turn: each made only if no table
        # before it proved a star table of the same output.
        for index, table, output, choice in later:
            replace = _to_make(batch, index, table, output, claimed, overwrite, settings)
            if replace is not None:
                submit(index, table, output, replace, choice)
                for made in tasks.results():
                    finish(made)
