"""Offset maps for a whole sequence of star tables."""

import collections
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from joblib import Parallel, delayed, effective_n_jobs

from .._utils.batch import Batch, Result, describe
from .._utils.naming import map_path, png_path
from .._utils.workers import in_directory
from ..maps import OffsetMap, write_plot
from ._model import OffsetModel, check_options
from ._tiling import output_maps

__all__ = ["MapResult", "write_maps"]


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


def _read_model(table, options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = OffsetModel.read(table, **options)
    return model, tuple(describe(table, str(w.message)) for w in caught)


def _fit_ahead(table, options):
    """`_read_model` in a worker: what went wrong as a line, so that the others go on."""
    try:
        return _read_model(table, options)
    except Exception as exc:
        return describe(table, exc)


class _Models:
    """The fields of the tables to map, fitted ahead in worker processes.

    Fitting a table's field is serial work (``method="auto"`` cross-validates
    13 fields, 0.3 to 0.5 s for 2000 stars), while its map is computed on all
    cores and written in a thread. So the next tables' fields are fitted in
    ``workers`` processes (joblib's loky backend whatever the caller's: the
    fits hold the GIL, catch their warnings, and read their tables here) in
    windows of ``window`` tables, the next window started as the last of
    the previous one is taken: at most ``window`` fitted fields wait. The
    first table is fitted here, while the workers start. With one worker,
    everything is fitted here.

    Parameters
    ----------
    tables : list of tuple
        ``(index, path)`` of the tables the loop will map, in its order.
    options : dict
        The field's options.
    workers : int
        Processes.
    window : int, optional
        Tables fitted ahead at most.
    """

    def __init__(self, tables, options, workers, window=8):
        self._options = options
        self._workers = workers
        self._window = window
        self._todo = collections.deque(tables[1:] if workers > 1 else ())
        self._indices = collections.deque()
        self._results = None
        self._next_window()

    def _next_window(self):
        window = [self._todo.popleft() for _ in range(min(self._window, len(self._todo)))]
        if window:
            parallel = Parallel(n_jobs=self._workers, backend="loky", return_as="generator")
            self._indices.extend(index for index, _ in window)
            here = os.getcwd()
            self._results = parallel(
                delayed(in_directory)(here, _fit_ahead, t, self._options) for _, t in window
            )

    def get(self, index, table):
        """Return ``(model, warnings)`` of table ``index``; raise what its fit raised."""
        while self._indices and self._indices[0] < index:
            # A table the loop left out after all (its output claimed).
            self._indices.popleft()
            next(self._results)
            if not self._indices:
                self._next_window()
        if not self._indices or self._indices[0] != index:
            return _read_model(table, self._options)
        self._indices.popleft()
        found = next(self._results)
        if not self._indices:
            self._next_window()
        if isinstance(found, str):
            raise ValueError(found)
        return found

    def close(self):
        """Take the fits nobody asked for (the loop ended early)."""
        if self._indices:
            self._indices.clear()
            collections.deque(self._results, maxlen=0)


def _write_plot(omap, output, stars):
    """Write the plot of a map; return the warnings, one line each (a failed plot)."""
    try:
        write_plot(omap, png_path(output), stars)
    except Exception as exc:
        return (describe(png_path(output), exc),)
    return ()


def _write_map(omap, output, overwrite, plot):
    """Write a map, and its plot if asked; return the warnings, one line each.

    A plot that fails leaves the map written: a warning, not a failure.
    """
    omap.write(output, overwrite=overwrite)
    # The plot belongs to the map just written: a stale one is replaced.
    return _write_plot(omap, output, None) if plot else ()


def _plot_kept_map(output, table):
    """Plot a map kept from an earlier run, with the stars and field its header names."""
    omap = OffsetMap.read(output)
    options = {"method": omap.meta.get("method", "quadrant"), "clip": omap.meta.get("clip")}
    if omap.meta.get("parameter"):
        options[omap.meta["parameter"]] = omap.meta.get("parameter_value")
    try:
        model, _ = _read_model(table, options)
    except Exception:  # the table changed or is gone: the map alone
        model = None
    return _write_plot(omap, output, model)


def write_maps(
    tables,
    shape,
    *,
    outdir=None,
    n_jobs=None,
    block_size="auto",
    overwrite=False,
    plot=False,
    cv=False,
    progress=False,
    callback=None,
    **options,
):
    """Write the offset map ``<stem>.offsets.fits`` of every star table of a sequence.

    Each map is computed on all workers, while the previous one is written
    to disk by a separate thread and the next tables' fields are fitted in
    two worker processes (with ``n_jobs`` of 2 or more): the cores stay
    busy, and at most two frames' maps are in memory.
    A table that cannot be read or used is reported and the others are
    still processed; nothing partial is ever written.

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
        Workers per map, with `joblib.Parallel`'s meaning. Inside
        ``joblib.parallel_config(backend="dask")`` the tiles run on the dask
        cluster of the active ``distributed.Client``.
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
    **options
        The field: ``method``, ``clip`` and the method's parameter
        (``power``, ``degree``, ``smoothing``), as for `OffsetModel`
        (checked before any table is read).

    Returns
    -------
    list of `MapResult`
        One per table, in the order given.

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
    check_options(**options)
    batch = Batch(
        tables,
        MapResult,
        what="star table",
        name="maps",
        keep=("star table",),
        progress=progress,
        callback=callback,
    )
    claimed = {}
    pending = None
    # The tables the loop will fit: those whose map is to be made, the
    # first of each output (a later one fails as a duplicate).
    outputs = {}
    for index, table in batch.indexed_inputs:
        output = os.path.abspath(map_path(table, outdir))
        if output not in outputs and (overwrite or not os.path.lexists(output)):
            outputs[output] = (index, table)
    models = _Models(list(outputs.values()), options, min(2, effective_n_jobs(n_jobs)))

    def collect(pending):
        index, output, future, notes, field = pending
        try:
            plot_notes = future.result()
        except Exception as exc:
            batch.fail(index, exc, output=output, warnings=notes)
        else:
            batch.finish(index, "written", output=output, warnings=notes + plot_notes, field=field)

    # Two pairs of output maps, used in turn: the c-th map computed goes into
    # pair c % 2 while map c - 1 is written from the other pair (the write of
    # map c - 2 is collected before map c - 1 is queued). Reusing them spares
    # the operating system zeroing fresh pages for every frame.
    buffers = []
    computed = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="astro-offsets-writer") as writer:
        for index, table in batch:
            output = map_path(table, outdir)
            key = os.path.abspath(output)
            if key in claimed:
                batch.fail(index, f"same output {output} as {claimed[key]}", output=output)
                continue
            if os.path.lexists(output) and not overwrite:
                claimed[key] = table
                # A plot asked for now, of a map made without one, is made.
                missing = plot and not os.path.lexists(png_path(output))
                batch.kept(
                    index,
                    output,
                    overwrite,
                    warnings=_plot_kept_map(output, table) if missing else (),
                )
                continue
            notes = ()
            if len(buffers) == computed % 2:
                buffers.append(output_maps(shape))
            try:
                model, notes = models.get(index, table)
                # The output is this table's once it proved a star table.
                claimed[key] = table
                omap = model.to_map(
                    shape, n_jobs=n_jobs, block_size=block_size, out=buffers[computed % 2]
                )
                if cv:
                    omap.meta["cv_rms"] = model.cv_rms
            except Exception as exc:
                batch.fail(index, exc, output=output, warnings=notes)
                continue
            computed += 1
            if pending is not None:
                collect(pending)
            future = writer.submit(_write_map, omap, output, overwrite, plot)
            pending = (index, output, future, notes, omap.field_summary)
        if pending is not None:
            collect(pending)
    models.close()
    return batch.results
