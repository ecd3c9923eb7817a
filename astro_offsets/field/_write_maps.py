"""Offset maps for a whole sequence of star tables."""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .._utils.batch import Batch, Result, describe
from .._utils.naming import map_path, png_path
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
    to disk by a separate thread: the cores stay busy, no more workers than
    ``n_jobs`` compute at once, and at most two frames' maps are in memory.
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
                model, notes = _read_model(table, options)
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
    return batch.results
