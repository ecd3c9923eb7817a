"""The offset field of one frame, defined by its stars."""

import math
import numbers
import os
import warnings

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from ._field import field_points
from ._offset_map import OffsetMap
from ._tables import read_table, star_columns
from ._tiling import evaluate_grid
from ._validate import positive_pair

__all__ = ["OffsetModel"]

_MAX_POWER = 10.0
_ARGUMENT_NAMES = ("x", "y", "x_offset", "y_offset")


def _validate_power(power):
    if (
        isinstance(power, bool)
        or not isinstance(power, numbers.Real)
        or not math.isfinite(power)
        or not 0 < power <= _MAX_POWER
    ):
        raise ValueError(f"power must be a number in (0, {_MAX_POWER:g}], got {power!r}")
    return float(power)


def _star_arrays(values, source):
    """Validate the four star arrays; drop rows with non-finite values."""
    arrays = []
    for name, value in zip(_ARGUMENT_NAMES, values, strict=True):
        array = np.asanyarray(value)
        if np.ma.isMaskedArray(array):
            array = np.ma.filled(array.astype(np.float64), np.nan)
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{source}: {name} must be numeric, got dtype {array.dtype}")
        if array.ndim != 1:
            raise ValueError(f"{source}: {name} must be 1-D, got shape {array.shape}")
        arrays.append(np.asarray(array, dtype=np.float64))
    lengths = {name: len(array) for name, array in zip(_ARGUMENT_NAMES, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{source}: star arrays differ in length ({found})")

    finite = np.logical_and.reduce([np.isfinite(array) for array in arrays])
    n_dropped = int(finite.size - np.count_nonzero(finite))
    if n_dropped == finite.size:
        raise ValueError(
            f"{source}: no usable star ({finite.size} rows, none with finite position and offset)"
        )
    if n_dropped:
        rows = np.flatnonzero(~finite)
        shown = ", ".join(map(str, rows[:10])) + (", ..." if n_dropped > 10 else "")
        warnings.warn(
            f"{source}: dropped {n_dropped} of {finite.size} stars with NaN or infinite "
            f"position or offset (rows {shown})",
            AstropyUserWarning,
            stacklevel=4,
        )
        arrays = [array[finite] for array in arrays]
    stars = []
    for array in arrays:
        array = np.ascontiguousarray(array)
        array.flags.writeable = False
        stars.append(array)
    return tuple(stars), n_dropped


class OffsetModel:
    r"""The X/Y offset field of a frame, interpolated between its stars.

    Each star gives its centroid ``(x, y)`` in this frame and its offset
    ``(x_offset, y_offset)``: position in this frame minus position in the
    reference frame, in pixels. The model evaluates the quadrant
    inverse-distance field of these offsets at any point.

    Parameters
    ----------
    x, y : array-like
        1-D star centroids in this frame (0-based pixels, integer values are
        pixel centres).
    x_offset, y_offset : array-like
        1-D star offsets, same length as ``x``.
    power : float, optional
        Inverse-distance power, in (0, 10]. The default is 1.
    source : str or `None`, optional
        Where the stars came from (a table file name), kept in ``meta`` and
        used in messages.

    Raises
    ------
    ValueError
        If the arrays are not numeric, not 1-D, differ in length, or no star
        has a finite position and offset; if ``power`` is out of range.

    Warns
    -----
    `~astropy.utils.exceptions.AstropyUserWarning`
        If stars with a NaN or infinite value were dropped (says how many).

    See Also
    --------
    OffsetMap

    Notes
    -----
    For a point ``(px, py)`` and star ``k`` let ``dx = px - x_k``,
    ``dy = py - y_k`` and :math:`d = \sqrt{dx^2 + dy^2}`.

    1. If stars lie exactly on the point (``dx == dy == 0``), the field is the
       mean of their offsets.
    2. Otherwise each star falls in exactly one half-open quadrant:
       Q1 ``dx > 0, dy >= 0``; Q2 ``dx <= 0, dy > 0``;
       Q3 ``dx < 0, dy <= 0``; Q4 ``dx >= 0, dy < 0``.
    3. Each non-empty quadrant contributes its nearest star (smallest
       ``dx**2 + dy**2``; on equal distance the lowest table row).
    4. The field is :math:`\sum_q w_q o_q / \sum_q w_q` with
       :math:`w_q = d_q^{-p}`, summed in quadrant order Q1..Q4.

    The field is computed in float64 and is exact at every point: maps hold
    it rounded once to float32 and do not depend on ``n_jobs`` or
    ``block_size``.

    Examples
    --------
    >>> from astro_offsets import OffsetModel
    >>> model = OffsetModel([10.0, 50.0, 30.0], [10.0, 20.0, 60.0],
    ...                     [1.0, 2.0, 3.0], [0.5, 0.5, -0.5])
    >>> model
    <OffsetModel: 3 stars, power=1>
    >>> dx, dy = model([10.0, 30.0], [10.0, 30.0])
    >>> print(dx, dy)
    [1.         1.98217084] [0.5        0.20608126]
    >>> omap = model.to_map((64, 80))
    >>> omap.shape
    (64, 80)
    """

    def __init__(self, x, y, x_offset, y_offset, *, power=1.0, source=None):
        self._power = _validate_power(power)
        label = os.fspath(source) if source is not None else "stars"
        self._stars, n_dropped = _star_arrays((x, y, x_offset, y_offset), label)
        self.meta = {
            "source": None if source is None else os.fspath(source),
            "n_stars": len(self._stars[0]),
            "n_rejected": n_dropped,
            "method": "quadrant",
            "power": self._power,
        }

    @classmethod
    def from_table(
        cls, table, *, centroid_columns=None, offset_columns=None, power=1.0, source=None
    ):
        """Build the model from a star table.

        Parameters
        ----------
        table : `~astropy.table.Table` or `~astropy.table.QTable`
            One row per star. Centroid columns are the first pair present of
            ``xcentroid/ycentroid``, ``x_centroid/y_centroid``,
            ``xcenter/ycenter``, ``x/y``; offset columns the first of
            ``xoffset/yoffset``, ``x_offset/y_offset``. Quantity columns must
            be in pixels.
        centroid_columns, offset_columns : tuple of str or `None`, optional
            Explicit ``(x, y)`` column names, overriding the aliases.
        power : float, optional
            Inverse-distance power. The default is 1.
        source : str or `None`, optional
            Name of the table in messages and provenance.

        Returns
        -------
        `OffsetModel`

        Raises
        ------
        ValueError
            If a column is missing (the message lists the columns found), not
            numeric, or not in pixels, or no row is usable.

        Examples
        --------
        >>> from astropy.table import Table
        >>> from astro_offsets import OffsetModel
        >>> table = Table({"xcentroid": [12.0, 40.5], "ycentroid": [8.0, 33.2],
        ...                "xoffset": [0.3, 0.4], "yoffset": [-1.2, -1.1]})
        >>> OffsetModel.from_table(table)
        <OffsetModel: 2 stars, power=1>
        """
        columns = star_columns(
            table, centroid_columns=centroid_columns, offset_columns=offset_columns, source=source
        )
        return cls(*columns, power=power, source=source)

    @classmethod
    def read(cls, path, *, format=None, centroid_columns=None, offset_columns=None, power=1.0):
        """Read a star table file and build the model.

        Parameters
        ----------
        path : str or path-like
            Any table file astropy reads (FITS, ECSV, CSV, ...), such as
            ``DSC03770.offsets_table.fits``.
        format : str or `None`, optional
            Format name for `astropy.table.Table.read`; guessed when `None`.
        centroid_columns, offset_columns : tuple of str or `None`, optional
            Explicit column names; see `from_table`.
        power : float, optional
            Inverse-distance power. The default is 1.

        Returns
        -------
        `OffsetModel`

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is not a readable table or lacks usable columns; the
            message names the file.

        Examples
        --------
        >>> import tempfile, os
        >>> from astropy.table import Table
        >>> from astro_offsets import OffsetModel
        >>> path = os.path.join(tempfile.mkdtemp(), "frame1.offsets_table.ecsv")
        >>> Table({"x": [5.0, 20.0], "y": [5.0, 9.0], "x_offset": [1.0, 1.0],
        ...        "y_offset": [0.0, 0.0]}).write(path)
        >>> OffsetModel.read(path).meta["n_stars"]
        2
        """
        path = os.fspath(path)
        table = read_table(path, format=format)
        return cls.from_table(
            table,
            centroid_columns=centroid_columns,
            offset_columns=offset_columns,
            power=power,
            source=path,
        )

    @property
    def x(self):
        """Star x centroids in this frame (read-only float64)."""
        return self._stars[0]

    @property
    def y(self):
        """Star y centroids in this frame (read-only float64)."""
        return self._stars[1]

    @property
    def x_offset(self):
        """Star x offsets, this frame minus reference (read-only float64)."""
        return self._stars[2]

    @property
    def y_offset(self):
        """Star y offsets, this frame minus reference (read-only float64)."""
        return self._stars[3]

    @property
    def power(self):
        """Inverse-distance power."""
        return self._power

    def __len__(self):
        return len(self._stars[0])

    def __repr__(self):
        return f"<{type(self).__name__}: {len(self)} stars, power={self._power:g}>"

    def __call__(self, px, py):
        """Evaluate the field at points.

        Parameters
        ----------
        px, py : float or array-like
            Point coordinates in this frame (0-based pixels); broadcast
            against each other.

        Returns
        -------
        dx, dy : `~numpy.ndarray`
            float64 offsets with the broadcast shape; NaN where a coordinate
            is not finite.

        Raises
        ------
        ValueError
            If the coordinates are not numeric or do not broadcast.
        """
        px = np.asarray(px)
        py = np.asarray(py)
        for name, array in (("px", px), ("py", py)):
            if array.dtype.kind not in "iuf":
                raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        try:
            px, py = np.broadcast_arrays(px.astype(np.float64), py.astype(np.float64))
        except ValueError:
            raise ValueError(
                f"px and py do not broadcast: shapes {px.shape} and {py.shape}"
            ) from None
        shape = px.shape
        px = px.ravel()
        py = py.ravel()
        dx = np.full(px.shape, np.nan)
        dy = np.full(px.shape, np.nan)
        ok = np.isfinite(px) & np.isfinite(py)
        if ok.all():
            field_points(
                *self._stars,
                self._power,
                np.ascontiguousarray(px),
                np.ascontiguousarray(py),
                dx,
                dy,
            )
        else:
            out_u = np.empty(np.count_nonzero(ok))
            out_v = np.empty_like(out_u)
            field_points(
                *self._stars,
                self._power,
                np.ascontiguousarray(px[ok]),
                np.ascontiguousarray(py[ok]),
                out_u,
                out_v,
            )
            dx[ok] = out_u
            dy[ok] = out_v
        return dx.reshape(shape), dy.reshape(shape)

    def to_map(self, shape, *, n_jobs=None, block_size="auto", out=None):
        """Evaluate the field at every pixel of a frame.

        Parameters
        ----------
        shape : tuple of int
            Frame shape ``(ny, nx)``; pixel ``[j, i]`` is evaluated at
            ``x = i, y = j``.
        n_jobs : int or `None`, optional
            Number of parallel workers, with `joblib.Parallel`'s meaning:
            `None` honours `joblib.parallel_config` (one worker by default),
            -1 uses all cores.
        block_size : ``"auto"`` or tuple of int, optional
            Tile shape ``(ny, nx)`` in output pixels; ``"auto"`` picks tiles
            of whole rows. The result does not depend on it.
        out : tuple of `~numpy.ndarray` or `None`, optional
            Two float32 C-contiguous arrays ``(x_offset, y_offset)`` of
            ``shape`` to write the maps into, such as memory maps
            (`numpy.lib.format.open_memmap`) for frames too large to hold
            twice. With threads (the default) tiles are written in place;
            tiles computed in other processes are copied in as they arrive.
            The default `None` allocates new arrays.

        Returns
        -------
        `OffsetMap`
            float32 maps (views of ``out`` when given) with the provenance
            of this model in its ``meta``.

        Raises
        ------
        ValueError
            If ``shape``, ``block_size`` or ``out`` is invalid.

        Notes
        -----
        Memory: the two float32 maps take 8 bytes per pixel (96 MB for a
        12-Mpix frame, 336 MB for 42 Mpix); evaluation adds at most a few
        megabytes per worker beyond them.

        Examples
        --------
        >>> from astro_offsets import OffsetModel
        >>> model = OffsetModel([3.0, 12.0], [4.0, 9.0], [0.5, 0.7], [0.1, -0.2])
        >>> omap = model.to_map((16, 20), n_jobs=2, block_size=(5, 7))
        >>> omap.x_offset.dtype, omap.shape
        (dtype('float32'), (16, 20))
        """
        shape = positive_pair(shape, "shape")
        x_map, y_map = evaluate_grid(
            self._stars, self._power, shape, n_jobs=n_jobs, block_size=block_size, out=out
        )

        omap = OffsetMap(x_map, y_map, meta=dict(self.meta))
        omap._model = self
        return omap
