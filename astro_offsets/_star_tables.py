"""Star tables from frames: detect, match to the reference, measure offsets."""

import math
import os
from typing import NamedTuple

import numpy as np
from astropy.table import QTable
from tqdm import tqdm

from ._atomic import atomic_path
from ._detect import detect_stars
from ._frames import read_frame
from ._match import match_stars
from ._naming import table_path
from ._provenance import not_an_input, provenance_cards
from ._sequence import describe

__all__ = ["TableResult", "make_tables", "offsets_table"]


class TableResult(NamedTuple):
    """What became of one frame in `make_tables`.

    A frame's detected stars are ``matched`` to the reference, ``outside``
    it (the frame's field reaches beyond the reference's), or `unmatched`;
    of the matched stars, ``kept`` go into the table (``min_snr`` and
    ``complete`` leave out the others).

    Examples
    --------
    >>> from astro_offsets import TableResult
    >>> result = TableResult("DSC0002.ARW", "DSC0002.offsets_table.fits", "written", "",
    ...                      detected=512, matched=470, outside=30, kept=455)
    >>> result.unmatched
    12
    """

    frame: str
    """The frame file."""
    table: str | None
    """The star table written (or kept); `None` for the reference frame."""
    status: str
    """``"written"``, ``"skipped"`` (the table existed), ``"failed"``,
    ``"reference"``, or ``"ignored"`` (a file astro_offsets wrote, not a frame)."""
    message: str
    """One line naming the file and the problem; empty otherwise."""
    detected: int = 0
    """Stars detected in the frame."""
    matched: int = 0
    """Stars matched to a star of the reference."""
    outside: int = 0
    """Stars whose place on the reference lies outside the reference frame."""
    kept: int = 0
    """Matched stars written to the table."""

    @property
    def unmatched(self):
        """Stars inside the reference frame that matched no star of it."""
        return self.detected - self.matched - self.outside


def offsets_table(frame_stars, ref_stars, pairs):
    """Return the star table of a frame: positions here, offsets against the reference.

    Parameters
    ----------
    frame_stars, ref_stars : `~astropy.table.QTable`
        Stars of the frame and of the reference, from `detect_stars`.
    pairs : array-like
        ``(m, 2)`` (frame row, reference row), from `match_stars`.

    Returns
    -------
    `~astropy.table.QTable`
        ``xcentroid``, ``ycentroid`` (this frame), ``xoffset``, ``yoffset``
        (this frame minus the reference), ``ref_id`` (reference star row),
        ``x_ref``, ``y_ref``, ``flux``, ``snr``; sorted by ``ref_id``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import QTable
    >>> from astro_offsets import offsets_table
    >>> ref = QTable({"xcentroid": [10.0, 50.0], "ycentroid": [20.0, 30.0],
    ...               "flux": [1e4, 2e4], "snr": [80.0, 120.0]})
    >>> frame = QTable({"xcentroid": [52.5, 12.5], "ycentroid": [29.0, 19.0],
    ...                 "flux": [2e4, 1e4], "snr": [118.0, 79.0]})
    >>> table = offsets_table(frame, ref, [[1, 0], [0, 1]])
    >>> list(table["xoffset"]), list(table["yoffset"])
    ([np.float64(2.5), np.float64(2.5)], [np.float64(-1.0), np.float64(-1.0)])
    """
    pairs = np.asarray(pairs, int).reshape(-1, 2)
    pairs = pairs[np.argsort(pairs[:, 1], kind="stable")]
    f, r = pairs[:, 0], pairs[:, 1]
    table = QTable()
    table["xcentroid"] = np.asarray(frame_stars["xcentroid"], float)[f]
    table["ycentroid"] = np.asarray(frame_stars["ycentroid"], float)[f]
    table["x_ref"] = np.asarray(ref_stars["xcentroid"], float)[r]
    table["y_ref"] = np.asarray(ref_stars["ycentroid"], float)[r]
    table["xoffset"] = table["xcentroid"] - table["x_ref"]
    table["yoffset"] = table["ycentroid"] - table["y_ref"]
    table["ref_id"] = r
    table["flux"] = np.asarray(frame_stars["flux"], float)[f]
    table["snr"] = np.asarray(frame_stars["snr"], float)[f]
    return table


def _stamp(table, frame, reference, info, detected, fwhm, threshold):
    matrix, shift = info["transform"]
    table.meta.update((keyword, value) for keyword, value, _ in provenance_cards("star table"))
    table.meta.update(
        {
            "FRAME": os.path.basename(frame),
            "REFFRAME": os.path.basename(reference),
            "FWHM": round(float(fwhm), 4),
            "THRESH": float(threshold),
            "NDETECT": int(detected),
            "NMATCH": len(table),
            "ROTATION": round(math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])), 6),
            "XSHIFT": round(float(shift[0]), 4),
            "YSHIFT": round(float(shift[1]), 4),
            "MATCHRAD": round(float(info["radius"]), 4),
            "COMMENT": [
                "xoffset, yoffset: position in this frame minus position in the reference",
                "ROTATION, XSHIFT, YSHIFT: similarity taking this frame to the reference",
            ],
        }
    )


def _outside(mapped, pairs, shape):
    """Count the unmatched stars whose place on the reference is outside its frame."""
    ny, nx = shape
    unmatched = np.ones(len(mapped), bool)
    unmatched[pairs[:, 0]] = False
    x, y = mapped[unmatched].T
    return int(np.count_nonzero((x < -0.5) | (x > nx - 0.5) | (y < -0.5) | (y > ny - 0.5)))


def make_tables(
    frames,
    reference,
    *,
    outdir=None,
    fwhm=None,
    threshold=5.0,
    min_snr=None,
    complete=False,
    overwrite=False,
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
        Stars' FWHM in pixels; estimated on the reference frame when `None`
        and used for every frame.
    threshold : float, optional
        Detection threshold in units of the background noise. The default
        is 5.
    min_snr : float or `None`, optional
        Keep in the tables only the matched stars with at least this
        signal-to-noise ratio in the frame. Every star detected still helps
        to match; but the offset maps interpolate the offsets exactly, so a
        faint star's centroid noise goes straight into the map, and fewer,
        better stars can give a better map (the demo uses 30). The default
        `None` keeps all.
    complete : bool, optional
        Keep only the stars matched in every frame that could be matched (the
        original notebooks' "complete sequence"). The default is `False`.
    overwrite : bool, optional
        Replace existing tables. The default is `False`: they are kept and
        the frame is reported as skipped.
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
    ValueError
        If the reference frame cannot be read, or has too few stars.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_offsets import make_tables
    >>> from astro_offsets._synthetic import render_stars
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
    frames = [os.fspath(frame) for frame in frames]
    reference = os.fspath(reference)
    ref_frame = read_frame(reference)
    ref_stars = detect_stars(
        ref_frame.data, fwhm=fwhm, threshold=threshold, colors=ref_frame.colors
    )
    del ref_frame
    fwhm = ref_stars.meta["fwhm"]
    if len(ref_stars) < 5:
        raise ValueError(
            f"{reference}: only {len(ref_stars)} stars found in the reference "
            f"frame (threshold {threshold:g} sigma, FWHM {fwhm:.2f} px)"
        )
    results = [None] * len(frames)
    tables = {}

    def finish(index, table, status, message, detected=0, matched=0, outside=0, kept=0):
        results[index] = TableResult(
            frames[index], table, status, message, detected, matched, outside, kept
        )
        if callback is not None:
            callback(results[index])

    bar = tqdm(frames, desc="tables", unit="frame", disable=None if progress else True)
    for index, frame in enumerate(bar):
        ignored = not_an_input(frame, "frame")
        if ignored is not None:
            finish(index, None, "ignored", ignored)
            continue
        if os.path.abspath(frame) == os.path.abspath(reference):
            n = len(ref_stars)
            finish(index, None, "reference", "", n, n, 0, n)
            continue
        output = table_path(frame, outdir)
        if os.path.lexists(output) and not overwrite:
            finish(index, output, "skipped", f"{output} exists (use overwrite to replace it)")
            continue
        detected = 0
        try:
            data = read_frame(frame)
            stars = detect_stars(data.data, fwhm=fwhm, threshold=threshold, colors=data.colors)
            detected = len(stars)
            pairs, info = match_stars(
                np.column_stack([stars["xcentroid"], stars["ycentroid"]]),
                np.column_stack([ref_stars["xcentroid"], ref_stars["ycentroid"]]),
                frame_flux=stars["flux"],
                ref_flux=ref_stars["flux"],
            )
            counts = (detected, len(pairs), _outside(info["mapped"], pairs, data.data.shape))
            del data
            table = offsets_table(stars, ref_stars, pairs)
            if min_snr is not None:
                table = table[table["snr"] >= min_snr]
            _stamp(table, frame, reference, info, detected, fwhm, threshold)
        except Exception as exc:
            finish(index, None, "failed", describe(frame, exc), detected)
            continue
        if complete:
            tables[index] = (output, table, counts)
        else:
            written, status, message, kept = _write(output, table, overwrite)
            finish(index, written, status, message, *counts, kept)

    if complete and tables:
        common = set.intersection(*(set(t["ref_id"]) for _, t, _ in tables.values()))
        for index, (output, table, counts) in tables.items():
            table = table[np.isin(table["ref_id"], sorted(common))]
            table.meta["NMATCH"] = len(table)
            table.meta["COMPLETE"] = True
            written, status, message, kept = _write(output, table, overwrite)
            finish(index, written, status, message, *counts, kept)
    return results


def _write(output, table, overwrite):
    """Write a star table; return the file, the status, the message and the rows kept."""
    try:
        with atomic_path(output, overwrite=overwrite) as tmp:
            table.write(tmp, format="fits")
    except OSError as exc:
        return None, "failed", describe(output, exc), 0
    return output, "written", "", len(table)
