"""Star tables from frames: detect, match to the reference, measure offsets."""

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from .._utils.batch import Batch, FrameError, Result, describe
from .._utils.naming import table_path
from .._utils.provenance import provenance_header, text_of_card, write_product
from .._utils.unreadable import UNREADABLE_FITS
from .._utils.workers import Tasks, takes_client
from ..frames import fill_hot_pixels, frame_header, frame_shape, hot_pixels, read_frame, row_order
from ._detect import detect_stars
from ._match import MIN_STARS, match_stars
from ._schema import CENTROID, offsets_table

__all__ = [
    "TableResult",
    "frame_table",
    "make_tables",
    "reference_stars",
    "stars_image",
    "table_header",
    "write_table",
]


@dataclass(frozen=True, kw_only=True)
class TableResult(Result):
    """What became of one frame in `make_tables`.

    A frame's detected stars are ``matched`` to the reference, ``outside``
    it (the frame's field reaches beyond the reference's), or `unmatched`;
    of the matched stars, ``kept`` go into the table (``min_snr`` and
    ``complete`` leave out the others).

    Examples
    --------
    >>> from astro_offsets import TableResult
    >>> result = TableResult(path="DSC0002.ARW", status="written",
    ...                      output="DSC0002.offsets_table.fits",
    ...                      detected=512, matched=470, outside=30, kept=455)
    >>> result.unmatched
    12
    """

    output: str | None = None
    """The star table written (or kept); `None` for the reference frame."""
    detected: int = 0
    """Stars detected in the frame."""
    matched: int = 0
    """Stars matched to a star of the reference."""
    outside: int = 0
    """Stars whose place on the reference lies outside the reference frame."""
    kept: int = 0
    """Matched stars written to the table."""
    replaced: str | None = None
    """The reference frame of the table this one replaced, made against
    another reference; `None` otherwise."""

    @property
    def unmatched(self):
        """Stars inside the reference frame that matched no star of it."""
        return self.detected - self.matched - self.outside


# The frame's measures in a table's header (and its reference's, with REF):
# the keywords, the key of `_quality`, the digits kept, the comment.
_QUALITY = (
    ("FWHM", "REFFWHM", "fwhm", 4, "median FWHM of the stars (px)"),
    ("ELONG", "REFELONG", "elongation", 4, "median elongation a/b of the stars"),
    ("NDETECT", "REFNDET", "n_detected", None, "stars detected"),
    ("NOISE", "REFNOISE", "noise", 4, "sky noise (RMS)"),
)


def _quality(stars):
    """Return a frame's measures from its stars of `detect_stars`: the keys of `_QUALITY`."""
    return {
        "fwhm": stars.meta["star_fwhm"],
        "elongation": stars.meta["elongation"],
        "n_detected": len(stars),
        "noise": stars.meta["noise"],
    }


def _card(value, digits):
    """Return a measure as a header card's value: rounded, `None` (no card) if not finite."""
    if digits is None:
        return int(value)
    return round(float(value), digits) if np.isfinite(value) else None


def _header(frame, reference, info, counts, kept, threshold, min_snr, complete):
    """Return the provenance of a star table: its frames, its stars, how they matched."""
    matrix, shift = info["transform"]
    measures = []
    for keyword, ref_keyword, key, digits, comment in _QUALITY:
        measures.append((keyword, _card(info["quality"][key], digits), f"frame: {comment}"))
        measures.append((ref_keyword, _card(info["ref_quality"][key], digits), f"ref.: {comment}"))
    cards = [
        ("FRAME", os.path.basename(frame), "frame of the stars"),
        ("REFFRAME", os.path.basename(reference), "reference frame"),
        ("REFPATH", os.path.realpath(reference), "reference frame, absolute path"),
        *measures,
        ("SKY", round(info["sky"], 4), "median sky level of the frame"),
        ("REFSKY", round(info["ref_sky"], 4), "median sky level of the reference"),
        ("EXPTIME", info["exptime"], "exposure time of the frame (s)"),
        ("REFEXPT", info["ref_exptime"], "exposure time of the reference (s)"),
        ("REFROWS", info["ref_roworder"], "rows of the reference: TOP-DOWN or BOTTOM-UP"),
        ("THRESH", float(threshold), "detection threshold (background sigma)"),
        ("NMATCH", counts["matched"], "stars matched to the reference"),
        ("MINSNR", None if min_snr is None else float(min_snr), "matched stars kept: SNR >= this"),
        ("NKEPT", int(kept), "stars in the table"),
        ("ROTATION", round(math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])), 6), "deg"),
        ("XSHIFT", round(float(shift[0]), 4), "px"),
        ("YSHIFT", round(float(shift[1]), 4), "px"),
        ("MATCHRAD", round(float(info["radius"]), 4), "final match radius (px)"),
        ("COMPLETE", True if complete else None, "only stars matched in every frame"),
    ]
    comments = (
        "xoffset, yoffset: position in this frame minus position in the reference",
        "ROTATION, XSHIFT, YSHIFT: similarity taking this frame to the reference",
    )
    return provenance_header("star table", cards, comments)


def _read(path, calibration):
    """Read a frame, calibrated if masters are given, its hot pixels filled (`stars_image`)."""
    return stars_image(read_frame(path) if calibration is None else calibration.read(path))[0]


def stars_image(frame, hot=None):
    """Return the image to find a frame's stars in, and its hot pixels.

    A colour cube's stars are found in the mean of its planes; the hot
    pixels (`hot_pixels`, unless given: those of ``frame.data`` when it is
    no cube) are filled. A hot pixel is a source to a star finder:
    undithered, it would match itself in every frame, at an offset of 0.

    Returns
    -------
    image : `Frame`
        ``frame`` with the image as its data (a new array).
    hot : `~numpy.ndarray`
        bool, the hot pixels of the image.
    """
    frame = frame._replace(data=frame.luminance)  # stars of a colour cube: in its mean
    if hot is None:
        hot = hot_pixels(frame.data, frame.colors)
    return frame._replace(data=fill_hot_pixels(frame.data, hot, frame.colors)), hot


def _reference_stars(reference, fwhm, threshold, calibration):
    """Find the reference frame's stars; raise `ValueError` if there are too few."""
    return reference_stars(reference, _read(reference, calibration), fwhm, threshold)


def reference_stars(reference, frame, fwhm, threshold):
    """Find the stars of the reference frame read (`stars_image`); see `_reference_stars`."""
    stars = detect_stars(frame.data, fwhm=fwhm, threshold=threshold, colors=frame.colors)
    stars.meta["exptime"] = frame.exptime
    # How its rows run, which the maps' plots show as the stack is shown.
    stars.meta["roworder"] = row_order(frame_header(reference))
    if len(stars) < 5:
        raise ValueError(
            f"{reference}: only {len(stars)} stars found in the reference "
            f"frame (threshold {threshold:g} sigma, FWHM {stars.meta['fwhm']:.2f} px)"
        )
    return stars


def _outside(mapped, pairs, shape):
    """Count the unmatched stars whose place on the reference is outside its frame."""
    ny, nx = shape
    unmatched = np.ones(len(mapped), bool)
    unmatched[pairs[:, 0]] = False
    x, y = mapped[unmatched].T
    return int(np.count_nonzero((x < -0.5) | (x > nx - 0.5) | (y < -0.5) | (y > ny - 0.5)))


@takes_client
def make_tables(
    frames,
    reference,
    *,
    outdir=None,
    fwhm=None,
    threshold=5.0,
    min_snr=10.0,
    flagged=False,
    complete=False,
    calibration=None,
    overwrite=False,
    n_jobs=None,
    client=None,
    progress=False,
    callback=None,
):
    """Find, match and measure stars: a star table ``<stem>.offsets_table.fits`` per frame.

    Stars are detected in the reference frame and in every frame (see
    `detect_stars`), each frame's stars matched directly to the reference's
    (see `match_stars`, which survives large drifts and field rotation), and
    the table of the matched stars written with their offsets (position in
    this frame minus position in the reference). A frame that cannot be
    read or matched is reported and the others are still processed.

    Parameters
    ----------
    frames : iterable of str or path-like
        Frame files (camera raw files or FITS images). The reference frame
        may be among them; it gets no table.
    reference : str or path-like
        The reference frame.
    outdir : str, path-like or `None`, optional
        Output directory (it must exist); `None` writes beside each frame.
    fwhm : float or `None`, optional
        Stars' FWHM in pixels, searched with in every frame; when `None`,
        each frame's is estimated on its own stars (a blurred frame's are
        wider than the reference's).
    threshold : float, optional
        Detection threshold in units of the background noise. The default
        is 5.
    min_snr : float or `None`, optional
        Keep in the tables only the matched stars with at least this
        signal-to-noise ratio in the frame. Every star detected still helps
        to match; but the faint ones measure their offsets badly (at SNR 10,
        a centroid is good to about a tenth of a pixel), and a map that
        interpolates every star carries their noise. The default is 10;
        `None` keeps all.
    flagged : bool, optional
        Keep the stars that `detect_stars` flags (blended with a neighbour,
        on the frame's edge, extended, or whose windowed centroid failed) in
        either frame. The default is `False`: the tables hold measurable point
        sources only.
    complete : bool, optional
        Keep only the stars matched in every frame that could be matched (the
        original notebooks' "complete sequence"). The default is `False`.
    calibration : `~astro_offsets.Calibration` or `None`, optional
        Master bias, dark and flat that correct every frame (the reference
        too) before its stars are found; see
        `~astro_offsets.Calibration.from_files`.
    overwrite : bool, optional
        Replace existing tables. The default is `False`: they are kept and
        the frame is reported as skipped; but a table made against another
        reference frame (its ``REFPATH``, or for older tables ``REFFRAME``)
        is remade, and its result says so (``replaced``), or removed if the
        frame now fails (its message says so).
    n_jobs : int or `None`, optional
        Frames searched at once, with `joblib.Parallel`'s meaning: `None`
        honours `joblib.parallel_config` (one by default), -1 uses all
        cores. The tables do not depend on it.
    client : `distributed.Client`, str or `None`, optional
        A dask cluster's client, or its scheduler's address (connected to
        for the call): each frame is then one task on the cluster, which
        uses all its workers whatever ``n_jobs``; the workers read the
        frames at the same paths as here (a shared filesystem). The default
        is `None`: the frames are searched here, by ``n_jobs`` processes.
    progress : bool, optional
        Show a progress bar on stderr (when it is a terminal).
    callback : callable or `None`, optional
        Called with each `TableResult` as soon as it is known (with
        ``complete``, once all frames are matched).

    Returns
    -------
    list of `TableResult`
        One per frame, in the order given.

    Raises
    ------
    FileNotFoundError
        If the reference frame does not exist (even when no table is to be
        made).
    ValueError
        If the reference frame cannot be read, or has too few stars.
    OSError
        On a dask cluster, if a worker cannot read a frame that this process
        can (checked before any work is sent).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_offsets import make_tables
    >>> from astro_offsets.datasets import render_stars
    >>> rng = np.random.default_rng(2)
    >>> x, y = rng.uniform(10, 190, 40), rng.uniform(10, 140, 40)
    >>> flux = rng.uniform(2e3, 2e4, 40)
    >>> folder = tempfile.mkdtemp()
    >>> frames = []
    >>> for k, (dx, dy) in enumerate([(0, 0), (6.3, -4.1)]):
    ...     image = 100 + render_stars((150, 200), x + dx, y + dy, flux)
    ...     frames.append(os.path.join(folder, f"light{k}.fits"))
    ...     fits.PrimaryHDU(image + rng.normal(0, 3, image.shape)).writeto(frames[-1])
    >>> results = make_tables(frames, reference=frames[0])
    >>> [(r.status, r.matched > 30) for r in results]
    [('reference', True), ('written', True)]
    """
    reference = os.fspath(reference)
    frame_shape(reference)  # a missing or unreadable reference is an error, whatever is kept
    batch = Batch(
        frames, TableResult, what="frame", name="tables", progress=progress, callback=callback
    )
    is_reference = {
        frame: os.path.abspath(frame) == os.path.abspath(reference) for frame in batch.paths
    }
    # The reference's stars are found only if a frame needs them: a rerun
    # that keeps every table does no work.
    inputs = set(batch.inputs)
    # Tables made against another reference are remade: theirs are offsets
    # to another frame, which no map of this sequence should take.
    replaced = {
        index: _made_against(table_path(frame, outdir), reference)
        for index, frame in enumerate(batch.paths)
        if frame in inputs and not is_reference[frame] and not overwrite
    }
    replaced = {index: other for index, other in replaced.items() if other is not None}
    todo = [
        index
        for index, frame in enumerate(batch.paths)
        if frame in inputs
        and not is_reference[frame]
        and (overwrite or index in replaced or not os.path.lexists(table_path(frame, outdir)))
    ]
    if client is not None:
        batch.check_workers(client, todo)
    tasks = Tasks(client, n_jobs, errors=FrameError)
    with ThreadPoolExecutor(1, thread_name_prefix="astro_offsets-start") as starter:
        # The workers start, or a cluster's import what a frame's task runs,
        # while the reference's stars are found.
        if todo:
            starter.submit(tasks.start, __name__)
        ref_stars = _reference_stars(reference, fwhm, threshold, calibration) if todo else None

    def write(index, output, table, info, counts):
        """Write a frame's star table and finish the frame."""
        remade = replaced.get(index)
        try:
            write_table(
                output,
                table,
                _header(
                    batch.paths[index],
                    reference,
                    info,
                    counts,
                    len(table),
                    threshold,
                    min_snr,
                    complete,
                ),
                overwrite=overwrite or remade is not None,
            )
        except OSError as exc:
            batch.finish(index, "failed", describe(output, exc), **counts)
        else:
            batch.finish(
                index, "written", output=output, kept=len(table), replaced=remade, **counts
            )

    def fail(index, problem, detected):
        """Finish a frame that failed; a table of it against another reference goes."""
        remade = replaced.get(index)
        if remade is not None:
            output = table_path(batch.paths[index], outdir)
            try:
                os.remove(output)
            except OSError as exc:
                problem += f"; its table made against {remade} is left: {exc}"
            else:
                problem += f"; removed its table made against another reference ({remade})"
        batch.fail(index, problem, detected=detected)

    work = []
    for index, frame in batch:
        if is_reference[frame]:
            n = 0 if ref_stars is None else len(ref_stars)
            batch.finish(index, "reference", detected=n, matched=n)
        elif index in replaced or not batch.skip_existing(
            index, table_path(frame, outdir), overwrite
        ):
            work.append(index)
    # Each frame is read, searched and matched by a worker (processes: sep and
    # the matching hold the GIL for much of their time); the tables come back
    # in order and are written here.
    options = {"fwhm": fwhm, "threshold": threshold, "min_snr": min_snr, "flagged": flagged}
    # Absolute paths: a worker process kept from an earlier call may have
    # started in another working directory.
    with tasks:
        shared = tasks.share((ref_stars, calibration))
        for i in work:
            tasks.submit(
                _frame_table, batch.paths[i], shared, options, os.path.abspath(batch.paths[i])
            )
        _collect_tables(work, tasks.results(), batch, complete, outdir, write, fail)
    return batch.results


def table_header(frame, reference, found, options):
    """Return the header of a frame's star table, ``found`` by `frame_table` with ``options``."""
    table, info, counts = found
    threshold, min_snr = options["threshold"], options["min_snr"]
    return _header(frame, reference, info, counts, len(table), threshold, min_snr, False)


def write_table(output, table, header, *, overwrite=False):
    """Write a star table with its ``header`` (`table_header`), atomically."""
    hdu = fits.table_to_hdu(table)
    hdu.header.extend(header)
    write_product(output, [fits.PrimaryHDU(), hdu], overwrite=overwrite)


def _made_against(path, reference):
    """Return the reference frame of the table ``path`` if it is not ``reference``, else `None`.

    The table records its reference's absolute path (``REFPATH``): another
    file than ``reference`` is another reference. A table of an earlier
    version, or whose reference has since moved, is compared by file name
    (``REFFRAME``). A file that is no table of ours is `None`: it is not
    ours to replace.
    """
    try:
        header = fits.getheader(path, 1)
    except UNREADABLE_FITS:  # missing, or no table of ours
        return None
    if header.get("PRODUCT", "star table") != "star table" or not header.get("REFFRAME"):
        return None
    recorded, name = text_of_card(header.get("REFPATH")), text_of_card(header["REFFRAME"])
    if recorded and os.path.exists(recorded):
        same = os.path.samefile(recorded, reference)
    else:
        same = os.path.basename(str(name)) == os.path.basename(reference)
    return None if same else str(recorded or name)


def _collect_tables(work, found_all, batch, complete, outdir, write, fail):
    """Write the tables as they come, in order (with ``complete``, once all are matched)."""
    pending = {}  # with complete: the tables of all frames, written once all are matched
    for index, found in zip(work, found_all, strict=True):
        if isinstance(found, FrameError):  # the task's, given in its place (Tasks' errors)
            fail(index, found.message, found.detected)
        elif complete:
            pending[index] = found
        else:
            write(index, table_path(batch.paths[index], outdir), *found)
    if pending:
        common = sorted(set.intersection(*(set(t["ref_id"]) for t, _, _ in pending.values())))
        for index, (table, info, counts) in pending.items():
            output = table_path(batch.paths[index], outdir)
            write(index, output, table[np.isin(table["ref_id"], common)], info, counts)


def _frame_table(frame, shared, options, path):
    """Find, match and measure the stars of one frame (in a worker).

    ``frame`` names it in messages; ``path`` is its file, absolute;
    ``shared`` is the reference's stars and the calibration.

    Returns
    -------
    found : tuple
        ``(table, info, counts)``.

    Raises
    ------
    FrameError
        The problem in one line naming the frame, with the stars detected
        (0 if the frame could not be read).
    """
    ref_stars, calibration = shared
    try:
        data = _read(path, calibration)
    except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
        # Named once, as the user named it (the message may name the path).
        raise FrameError(describe(path, exc, name=frame), 0) from exc
    return frame_table(frame, data, ref_stars, options, path)


def frame_table(frame, data, ref_stars, options, path):
    """Find, match and measure the stars of a frame read (`stars_image`); see `_frame_table`."""
    detected = 0
    try:
        stars = detect_stars(
            data.data, fwhm=options["fwhm"], threshold=options["threshold"], colors=data.colors
        )
        detected = len(stars)
        if detected < MIN_STARS:
            stars_detected = f"{detected} star{'' if detected == 1 else 's'} detected"
            raise FrameError(
                f"{frame}: {stars_detected}, too few to match (at least {MIN_STARS})", detected
            )
        pairs, info = match_stars(
            np.column_stack([stars[name] for name in CENTROID]),
            np.column_stack([ref_stars[name] for name in CENTROID]),
            frame_flux=stars["flux"],
            ref_flux=ref_stars["flux"],
        )
        counts = {
            "detected": detected,
            "matched": len(pairs),
            "outside": _outside(info.pop("mapped"), pairs, data.data.shape),
        }
        info.update(
            sky=stars.meta["sky"],
            ref_sky=ref_stars.meta["sky"],
            exptime=data.exptime,
            ref_exptime=ref_stars.meta["exptime"],
            ref_roworder=ref_stars.meta["roworder"],
            quality=_quality(stars),
            ref_quality=_quality(ref_stars),
        )
        table = _measurable(offsets_table(stars, ref_stars, pairs), options)
        if not len(table):
            matched = f"{len(pairs)} star{'' if len(pairs) == 1 else 's'} matched"
            raise FrameError(f"{frame}: {matched}, none {_measurable_words(options)}", detected)
    except FrameError:
        raise
    except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
        # Named once, as the user named it (the message may name the path).
        raise FrameError(describe(path, exc, name=frame), detected) from exc
    return table, info, counts


def _measurable_words(options):
    """Return what `_measurable` keeps, in words."""
    words = [] if options["min_snr"] is None else [f"with SNR >= {options['min_snr']:g}"]
    words += [] if options["flagged"] else ["without flags"]
    return " and ".join(words) or "measurable"


def _measurable(table, options):
    """Keep the matched stars measured well enough for a map: SNR, and no flag."""
    keep = np.ones(len(table), bool)
    if options["min_snr"] is not None:
        keep &= table["snr"] >= options["min_snr"]
    if not options["flagged"] and "flags" in table.colnames:
        keep &= table["flags"] == 0
    return table[keep]
