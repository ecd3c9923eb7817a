"""The star-table schema: the column names we write, the aliases we read, reading tables.

Star tables keep the names of the original notebooks, which the tables of a
sequence have always had: ``xcentroid``, ``ycentroid``, ``xoffset``,
``yoffset``. Reading, the first pair present of each alias tuple wins, so
that tables of photutils 3 (``x_centroid``), of aperture photometry
(``xcenter``) and plain ones (``x``, ``x_offset``) read as well. The
schema is documented in docs/tables.rst, "The columns of a star table"
(:ref:`table-columns`).
"""

import numbers

import numpy as np
from astropy import units as u
from astropy.table import QTable, Table

from .._utils.validation import input_file

__all__ = [
    "CENTROID",
    "CENTROID_COLUMNS",
    "CENTROID_ERR",
    "OFFSET",
    "OFFSET_COLUMNS",
    "OFFSET_ERR",
    "OFFSET_ERR_COLUMNS",
    "offset_errors",
    "offsets_table",
    "photometry",
    "read_table",
    "star_columns",
]

# The columns we write: positions, offsets, and their standard uncertainties.
#: The columns of the stars' centroids that the star tables are written with.
CENTROID = ("xcentroid", "ycentroid")
#: The columns of the stars' offsets that the star tables are written with.
OFFSET = ("xoffset", "yoffset")
#: The columns of the centroids' standard uncertainties.
CENTROID_ERR = ("xcentroid_err", "ycentroid_err")
#: The columns of the offsets' standard uncertainties.
OFFSET_ERR = ("xoffset_err", "yoffset_err")
# Ordered aliases, first match wins: ours (photutils < 3, the original
# notebooks), photutils >= 3, aperture-photometry tables, plain names.
#: The centroid columns read, in order: the first pair present wins.
CENTROID_COLUMNS = (CENTROID, ("x_centroid", "y_centroid"), ("xcenter", "ycenter"), ("x", "y"))
#: The offset columns read, in order: the first pair present wins.
OFFSET_COLUMNS = (OFFSET, ("x_offset", "y_offset"))
#: The offset uncertainty columns read, in order: the first pair present wins.
OFFSET_ERR_COLUMNS = (OFFSET_ERR, ("x_offset_err", "y_offset_err"))


def read_table(path, *, format=None):
    """Read a star table from any file astropy's unified I/O reads.

    Parameters
    ----------
    path : str or path-like
        Table file (FITS, ECSV, CSV, ...).
    format : str or `None`, optional
        Format name passed to `astropy.table.Table.read`; `None` guesses it
        from the file.

    Returns
    -------
    `~astropy.table.Table`

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be read as a table.
    """
    path = input_file(path, "table file")
    try:
        return Table.read(path, format=format)
    except MemoryError:
        raise  # the run's problem, not the file's
    # Any: each format's reader (any registered, astropy's or another package's)
    # raises its own types, IORegistryError for none.
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: cannot read as a table ({reason})") from exc


def _pick_pair(colnames, explicit, aliases, what, source):
    if explicit is not None:
        pair = tuple(explicit)
        if len(pair) != 2 or not all(isinstance(name, str) for name in pair):
            raise ValueError(f"{what} columns must be two column names, got {explicit!r}")
        missing = [name for name in pair if name not in colnames]
        if missing:
            raise ValueError(
                f"{source}: no {what} column {', '.join(map(repr, missing))}; "
                f"found columns: {', '.join(colnames) or 'none'}"
            )
        return pair
    for pair in aliases:
        if pair[0] in colnames and pair[1] in colnames:
            return pair
    expected = ", ".join("/".join(pair) for pair in aliases)
    raise ValueError(
        f"{source}: no {what} columns (expected one of {expected}); "
        f"found columns: {', '.join(colnames) or 'none'}"
    )


def _as_float(column, name, source):
    """Column values as float64 pixels; masked entries become NaN."""
    unit = getattr(column, "unit", None)
    if unit is not None and unit not in (u.pix, u.dimensionless_unscaled):
        raise ValueError(f"{source}: column {name!r} has unit {unit}, expected pixels")
    values = column.value if isinstance(column, u.Quantity) else column
    dtype = np.asarray(values).dtype
    if dtype.kind not in "iuf":
        raise ValueError(
            f"{source}: column {name!r} is not numeric (dtype {dtype}); "
            "expected pixel coordinates or offsets"
        )
    if np.asarray(values).ndim != 1:
        raise ValueError(
            f"{source}: column {name!r} has shape {np.shape(values)}, expected one value per row"
        )
    if np.ma.isMaskedArray(values):
        return np.ma.filled(values.astype(np.float64), np.nan)
    return np.array(values, dtype=np.float64)


def star_columns(table, *, centroid_columns=None, offset_columns=None, source=None):
    """Return ``x, y, x_offset, y_offset`` of a star table as float64 arrays.

    Parameters
    ----------
    table : `~astropy.table.Table` or `~astropy.table.QTable`
        The star table.
    centroid_columns, offset_columns : tuple of str or `None`, optional
        Explicit ``(x, y)`` column names; `None` takes the first alias pair of
        `CENTROID_COLUMNS` / `OFFSET_COLUMNS` present in the table.
    source : str or `None`, optional
        Name of the table in error messages (a file name).

    Returns
    -------
    x, y, x_offset, y_offset : `~numpy.ndarray`
        float64 arrays; masked entries are NaN.

    Raises
    ------
    ValueError
        If columns are missing (the message lists the columns found), not
        numeric, or not in pixels.
    """
    source = source or "table"
    colnames = list(table.colnames)
    xc, yc = _pick_pair(colnames, centroid_columns, CENTROID_COLUMNS, "centroid", source)
    xo, yo = _pick_pair(colnames, offset_columns, OFFSET_COLUMNS, "offset", source)
    return tuple(_as_float(table[name], name, source) for name in (xc, yc, xo, yo))


def offset_errors(table, *, columns=None, source=None):
    """Return the offsets' standard uncertainties ``(x, y)`` of a star table, or `None`.

    Parameters
    ----------
    table : `~astropy.table.Table` or `~astropy.table.QTable`
        The star table.
    columns : tuple of str or `None`, optional
        Explicit ``(x, y)`` column names; `None` takes the first pair of
        `OFFSET_ERR_COLUMNS` present, and a table with none has no
        uncertainties (`None`).
    source : str or `None`, optional
        Name of the table in error messages.

    Raises
    ------
    ValueError
        If the columns are not numeric pixels, or not positive where finite.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astro_offsets.stars import offset_errors
    >>> offset_errors(Table({"xoffset_err": [0.05], "yoffset_err": [0.07]}))
    (array([0.05]), array([0.07]))
    """
    source = source or "table"
    colnames = list(table.colnames)
    if columns is None and not any(set(pair) <= set(colnames) for pair in OFFSET_ERR_COLUMNS):
        return None
    pair = _pick_pair(colnames, columns, OFFSET_ERR_COLUMNS, "offset uncertainty", source)
    errors = tuple(_as_float(table[name], name, source) for name in pair)
    for name, values in zip(pair, errors, strict=True):
        if np.any(values[np.isfinite(values)] <= 0):
            raise ValueError(f"{source}: column {name!r} has uncertainties <= 0")
    return errors


# A table's measures of its frame and its reference: the key, the keyword.
_MEASURES = (
    ("sky", "SKY"),
    ("ref_sky", "REFSKY"),
    ("fwhm", "FWHM"),
    ("elongation", "ELONG"),
    ("n_detected", "NDETECT"),
    ("noise", "NOISE"),
    ("ref_fwhm", "REFFWHM"),
    ("ref_elongation", "REFELONG"),
    ("ref_n_detected", "REFNDET"),
    ("ref_noise", "REFNOISE"),
)


def photometry(table):
    """Return a star table's photometric tie to its reference and both frames' measures.

    The stack normalises each frame with it (see `astro_offsets.stack`):
    the frame's data times ``flux_scale``, plus ``ref_sky - flux_scale *
    sky``, match the reference in transparency, exposure and sky level.
    The frames' measures (FWHM, elongation, stars, noise) tell how good the
    frame is, and go with the tie into its map's header.

    Parameters
    ----------
    table : `~astropy.table.Table` or `~astropy.table.QTable`
        A star table of `make_tables`: ``flux_auto`` and ``flux_auto_ref``
        columns (the stars' Kron fluxes here and in the reference; else
        ``flux`` and ``flux_ref``), and in its ``meta`` the measures below.

    Returns
    -------
    dict
        Those of these the table has (empty for a table of positions
        alone): ``sky``, ``ref_sky`` (median sky levels of the frame and
        the reference: ``SKY``, ``REFSKY`` in the table's ``meta``);
        ``fwhm``, ``elongation`` (medians of the frame's stars' FWHM in
        pixels and major over minor axis: ``FWHM``, ``ELONG``),
        ``n_detected`` (stars detected, ``NDETECT``), ``noise`` (the sky's
        RMS per pixel, ``NOISE``), and the same of the reference,
        ``ref_fwhm``, ``ref_elongation``, ``ref_n_detected``, ``ref_noise``
        (``REFFWHM``, ``REFELONG``, ``REFNDET``, ``REFNOISE``); and
        ``flux_scale``, the median over the stars of ``flux_auto_ref /
        flux_auto``, from 3 stars or more with both positive.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from astro_offsets.stars import photometry
    >>> table = Table({"flux": [100.0, 210.0, 50.0], "flux_ref": [80.0, 160.0, 41.0]},
    ...               meta={"SKY": 12.5, "REFSKY": 10.0, "FWHM": 3.9, "NDETECT": 412})
    >>> photometry(table)
    {'sky': 12.5, 'ref_sky': 10.0, 'fwhm': 3.9, 'n_detected': 412, 'flux_scale': 0.8}
    """
    found = {}
    for key, keyword in _MEASURES:
        value = table.meta.get(keyword)
        if isinstance(value, numbers.Real) and np.isfinite(value):
            found[key] = int(value) if key.endswith("n_detected") else float(value)
    # Kron fluxes when the table has them: a disc of fixed radius takes less
    # of a blurred frame's stars, and its ratio would follow the seeing.
    for pair in (("flux_auto", "flux_auto_ref"), ("flux", "flux_ref")):
        if set(pair) <= set(table.colnames):
            flux, ref = (_as_float(table[name], name, "table") for name in pair)
            good = (flux > 0) & (ref > 0) & np.isfinite(flux) & np.isfinite(ref)
            if np.count_nonzero(good) >= 3:
                found["flux_scale"] = round(float(np.median(ref[good] / flux[good])), 6)
            break
    return found


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
        ``x_ref``, ``y_ref``, ``flux`` and ``flux_ref`` (in this frame and in
        the reference), ``snr``; sorted by ``ref_id``. When
        both star tables have them, ``xoffset_err``, ``yoffset_err`` (the
        uncertainties of the two centroids combined), ``flags`` (those of
        the star in either frame, ORed) and ``flux_auto``, ``flux_auto_ref``
        (the Kron fluxes).

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
    references = ("x_ref", "y_ref")
    for name in CENTROID:
        table[name] = np.asarray(frame_stars[name], float)[f]
    for name, reference in zip(CENTROID, references, strict=True):
        table[reference] = np.asarray(ref_stars[name], float)[r]
    for name, centroid, reference in zip(OFFSET, CENTROID, references, strict=True):
        table[name] = table[centroid] - table[reference]
    names = set(frame_stars.colnames) & set(ref_stars.colnames)
    if set(CENTROID_ERR) <= names:
        for name, error in zip(OFFSET_ERR, CENTROID_ERR, strict=True):
            here = np.asarray(frame_stars[error], float)[f]
            table[name] = np.hypot(here, np.asarray(ref_stars[error], float)[r])
    table["ref_id"] = r
    table["flux"] = np.asarray(frame_stars["flux"], float)[f]
    table["flux_ref"] = np.asarray(ref_stars["flux"], float)[r]
    if "flux_auto" in names:
        table["flux_auto"] = np.asarray(frame_stars["flux_auto"], float)[f]
        table["flux_auto_ref"] = np.asarray(ref_stars["flux_auto"], float)[r]
    table["snr"] = np.asarray(frame_stars["snr"], float)[f]
    if "flags" in names:
        table["flags"] = np.asarray(frame_stars["flags"])[f] | np.asarray(ref_stars["flags"])[r]
    return table
