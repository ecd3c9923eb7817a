"""The offset field of one frame, defined by its stars."""

import functools
import math
import numbers
import os
import warnings

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from .._utils.blas import one_blas_thread
from .._utils.provenance import text_of_card
from .._utils.validation import positive_pair, real
from ..maps import OffsetMap, StarOffsets
from ..stars import offset_errors, photometry, read_table, star_columns
from ._clipping import fit_field
from ._cross_validation import N_FOLDS, cross_validate, default_candidates, n_folds_for
from ._methods import METHODS, CoordinateScaling, Stars, evaluate
from ._tiling import evaluate_grid
from ._trend import DEFAULT_TREND, check_trend, fit_trend

__all__ = ["OffsetModel", "check_options"]

_ARGUMENT_NAMES = ("x", "y", "x_offset", "y_offset")
# The names of the uncertainty arrays, by their number.
_ERROR_NAMES = ((), ("uncertainty",), ("x_offset uncertainty", "y_offset uncertainty"))
_AUTO = "auto"
_DEFAULT_METHOD = "quadrant"


def check_options(method=_DEFAULT_METHOD, clip=3.0, trend=DEFAULT_TREND, **parameter):
    """Check the field options of `OffsetModel` before any star is read.

    Returns
    -------
    method : ``FieldMethod`` or `None`
        The method; `None` for ``"auto"``.
    value
        Its parameter, checked (the default when not given); `None` for auto.
    clip : float or `None`
        The sigma-clipping threshold.

    Raises
    ------
    ValueError
        If an option is unknown, out of range, or belongs to another method.
    """
    check_trend(trend)
    if method != _AUTO and method not in METHODS:
        choices = ", ".join(repr(name) for name in (*METHODS, _AUTO))
        raise ValueError(f"method must be one of {choices}, got {method!r}")
    chosen = METHODS.get(method)
    owners = {m.parameter: m for m in METHODS.values()}
    for name, value in parameter.items():
        if name not in owners:
            known = ", ".join(("method", "clip", "trend", *owners))
            raise ValueError(f"unknown field option {name!r} (the options are {known})")
        if value is not None and owners[name] is not chosen:
            if chosen is None:
                raise ValueError(
                    f"the method auto chooses the {name} itself: give the method "
                    f"{owners[name].name} to set it"
                )
            raise ValueError(
                f"the {name} applies to the method {owners[name].name}, not to {method}"
            )
    clip = None if clip is None else real(clip, "clip", low=0, low_open=True)
    if chosen is None:
        return None, None, clip
    value = parameter.get(chosen.parameter)
    return chosen, chosen.check(chosen.default if value is None else value), clip


def _star_column(index, doc):
    """Return a read-only property giving the model's star column ``index``."""
    return property(lambda self: self._stars[index], doc=doc)


def _uncertainty(uncertainty):
    """Return the arrays of ``uncertainty``: one for both axes, or a pair ``(x, y)``."""
    if uncertainty is None:
        return ()
    if isinstance(uncertainty, (tuple, list)) and len(uncertainty) == 2:
        return tuple(uncertainty)
    return (uncertainty,)


def _star_arrays(values, names, source):
    """Validate the star arrays; drop rows with non-finite values."""
    arrays = []
    for name, value in zip(names, values, strict=True):
        array = np.asanyarray(value)
        if np.ma.isMaskedArray(array):
            array = np.ma.filled(array.astype(np.float64), np.nan)
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{source}: {name} must be numeric, got dtype {array.dtype}")
        if array.ndim != 1:
            raise ValueError(f"{source}: {name} must be 1-D, got shape {array.shape}")
        arrays.append(np.asarray(array, dtype=np.float64))
    lengths = {name: len(array) for name, array in zip(names, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{source}: star arrays differ in length ({found})")
    for name, array in zip(names[4:], arrays[4:], strict=True):
        if np.any(array <= 0):
            raise ValueError(f"{source}: {name} must be positive, found {array[array <= 0][0]}")

    finite = np.logical_and.reduce([np.isfinite(array) for array in arrays])
    n_dropped = int(finite.size - np.count_nonzero(finite))
    if n_dropped == finite.size:
        raise ValueError(
            f"{source}: no usable star ({finite.size} rows, none with finite position and offset)"
        )
    if n_dropped:
        rows = np.flatnonzero(~finite)
        shown = ", ".join(map(str, rows[:10])) + (", ..." if n_dropped > 10 else "")
        what = "position, offset or uncertainty" if len(arrays) > 4 else "position or offset"
        warnings.warn(
            f"{source}: dropped {n_dropped} of {finite.size} stars with NaN or infinite "
            f"{what} (rows {shown})",
            AstropyUserWarning,
            stacklevel=4,
        )
        arrays = [array[finite] for array in arrays]
    columns = []
    for array in arrays[:4]:
        array = np.ascontiguousarray(array)
        array.flags.writeable = False
        columns.append(array)
    # One uncertainty per star for both axes: their quadratic mean.
    sigma = None
    if len(arrays) > 4:
        sigma = np.sqrt(np.mean([a * a for a in arrays[4:]], axis=0))
        sigma.flags.writeable = False
    return Stars(*columns, sigma), n_dropped


class OffsetModel:
    r"""The X/Y offset field of a frame, from its stars.

    Each star gives its centroid ``(x, y)`` in this frame and its offset
    ``(x_offset, y_offset)``: position in this frame minus position in the
    reference frame, in pixels. The model turns them into a field defined
    at every point: a global transform fitted to the stars (the ``trend``),
    plus what one of these methods makes of the offsets it leaves:

    ``"quadrant"`` (the default)
        The quadrant inverse-distance field of the stars (see Notes): it
        passes through every star's offset, so it follows their centroid
        noise and any mismatched star, and it steps where a quadrant's
        nearest star changes.
    ``"polynomial"``
        A 2-D polynomial of ``degree`` per axis, fitted by linear least
        squares (a QR decomposition, weighted by the offsets' uncertainties
        when the table has them) in coordinates scaled to the stars' extent.
        Smooth and noise-averaging; right for lens distortion, field rotation
        and refraction when the degree is high enough.
    ``"thin-plate"``
        A smoothing thin-plate spline (`scipy.interpolate.RBFInterpolator`,
        ``smoothing`` in normalised coordinates), evaluated on a lattice of
        16-px spacing and interpolated (Catmull-Rom) between its nodes:
        follows local distortions no low-order polynomial can.
    ``"auto"``
        The method and parameter with the lowest k-fold cross-validated
        residual at the stars; see `cross_validate`.

    The fitted methods reject mismatched stars by iterative sigma-clipping
    (``clip``): a star whose leave-one-out residual exceeds ``clip`` robust
    standard deviations in either axis is left out and the fit repeated,
    until no star changes side (`clipped` tells which). Clipping never
    leaves fewer than half of the stars (a round that would is not taken),
    and fits to fewer than 10 stars, or fewer than two per polynomial
    coefficient, are not clipped.

    Parameters
    ----------
    x, y : array-like
        1-D star centroids in this frame (0-based pixels, integer values are
        pixel centres).
    x_offset, y_offset : array-like
        1-D star offsets, same length as ``x``.
    method : {"quadrant", "polynomial", "thin-plate", "auto"}, optional
        How the field is made. The default is ``"quadrant"``.
    trend : {"affine", "similarity"} or `None`, optional
        The global transform under the field: the least-squares affine
        transform (six parameters: rotation, a meridian flip, scale, shear,
        shift) or similarity (four) from this frame to the reference,
        fitted to the stars in float64 and sigma-clipped (``clip``) so that
        mismatched stars do not tilt it. The method then interpolates or
        fits the offsets it leaves, so that a turned frame costs no accuracy
        between stars; the quadrant field still passes through every star.
        Stars that cannot determine it (fewer than three, or on one line,
        for ``"affine"``) get the most general such transform they can: a
        similarity, or one star's shift. `None` is the literal field of the
        raw offsets (see Notes). The default is ``"affine"``; ``meta``
        records it (``trend``), its RMS residual at the stars it kept
        (``trend_rms``, px) and the frame's rotation against the reference
        (``trend_rotation``, degrees).
    clip : float or `None`, optional
        Sigma-clipping threshold of the fitted methods and of the trend, in robust standard
        deviations; `None` keeps every star. The default is 3. The robust
        standard deviation is taken as at least 0.005 px, so that a fit exact
        to rounding clips nothing.
    uncertainty : array-like, pair of array-like or `None`, optional
        The offsets' standard uncertainties (px): one array for both axes,
        or ``(x_offset_err, y_offset_err)``. The fitted fields weigh each
        star by the inverse of its variance (their quadratic mean over the
        axes), in the fit, the sigma-clipping (a star's residual is judged
        against its uncertainty) and the cross-validation's scores; the
        quadrant field passes through every star whatever its uncertainty.
        The default `None` weighs all stars alike.
    source : str or `None`, optional
        Where the stars came from (a table file name), kept in ``meta`` and
        used in messages.
    **parameter
        The method's own parameter, by its name:

        ``power`` : float
            ``"quadrant"``: inverse-distance power, in (0, 10]. The default
            is 1.
        ``degree`` : int
            ``"polynomial"``: the degree, 0 to 10. The default is 3.
        ``smoothing`` : float
            ``"thin-plate"``: smoothing, >= 0 (0 interpolates). The default
            is 0.001.

    Raises
    ------
    ValueError
        If the arrays are not numeric, not 1-D, differ in length, or no star
        has a finite position and offset; if ``method`` is unknown, a
        parameter is out of range or belongs to another method; if the
        stars cannot determine the fitted field (fewer stars than the
        polynomial has coefficients, stars on one line).

    Warns
    -----
    `~astropy.utils.exceptions.AstropyUserWarning`
        If stars with a NaN or infinite value were dropped (says how many).

    See Also
    --------
    OffsetMap

    Notes
    -----
    The field is ``trend(x, y) + method(x, y)``, the method made from the
    stars' offsets minus the trend there; with ``trend=None``, the method's
    field of the offsets themselves. The quadrant field: for a point ``(px, py)`` and star ``k`` let
    ``dx = px - x_k``, ``dy = py - y_k`` and :math:`d = \sqrt{dx^2 + dy^2}`.

    1. If stars lie exactly on the point (``dx == dy == 0``), the field is the
       mean of their offsets.
    2. Otherwise each star falls in exactly one half-open quadrant:
       Q1 ``dx > 0, dy >= 0``; Q2 ``dx <= 0, dy > 0``;
       Q3 ``dx < 0, dy <= 0``; Q4 ``dx >= 0, dy < 0``.
    3. Each non-empty quadrant contributes its nearest star (smallest
       ``dx**2 + dy**2``; on equal distance the lowest table row).
    4. The field is :math:`\sum_q w_q o_q / \sum_q w_q` with
       :math:`w_q = d_q^{-p}`, summed in quadrant order Q1..Q4.

    Every field is computed in float64. Maps hold it rounded once to
    float32 and do not depend on ``n_jobs``, ``block_size`` or the joblib
    backend; for the quadrant and polynomial fields, calling the model at a
    pixel centre gives the map's value before rounding, bit for bit. A
    fitted field goes through LAPACK and BLAS, whose results can differ in
    the last bits with their number of threads (``OPENBLAS_NUM_THREADS``):
    maps are bit-identical between runs with the same number.

    A polynomial grows fast beyond its stars: `to_map` warns when the map
    reaches far beyond the stars' extent.

    Examples
    --------
    >>> from astro_offsets import OffsetModel
    >>> model = OffsetModel([10.0, 50.0, 30.0], [10.0, 20.0, 60.0],
    ...                     [1.0, 2.0, 3.0], [0.5, 0.5, -0.5])
    >>> model
    <OffsetModel: 3 stars, power=1>
    >>> dx, dy = model([10.0, 30.0], [10.0, 30.0])
    >>> print(dx.round(6), dy.round(6))
    [1. 2.] [0.5      0.166667]

    Three stars determine the affine trend: the field is that transform.
    The literal field of the raw offsets:

    >>> literal = OffsetModel([10.0, 50.0, 30.0], [10.0, 20.0, 60.0],
    ...                       [1.0, 2.0, 3.0], [0.5, 0.5, -0.5], trend=None)
    >>> literal
    <OffsetModel: 3 stars, power=1, no trend>
    >>> dx, dy = literal([10.0, 30.0], [10.0, 30.0])
    >>> print(dx, dy)
    [1.         1.98217084] [0.5        0.20608126]
    >>> omap = model.to_map((64, 80))
    >>> omap.shape
    (64, 80)

    A smooth field with one mismatched star, fitted by a polynomial:

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x, y = rng.uniform(0, 1000, (2, 200))
    >>> dx_true, dy_true = 2 + 1e-3 * x, -1 + 2e-6 * x * y
    >>> dx_star = dx_true + rng.normal(0, 0.05, 200)
    >>> dy_star = dy_true + rng.normal(0, 0.05, 200)
    >>> dx_star[7] += 5.0  # a bad match
    >>> fitted = OffsetModel(x, y, dx_star, dy_star, method="polynomial", degree=2)
    >>> fitted
    <OffsetModel: 200 stars, polynomial degree=2, 3 clipped>
    >>> bool(fitted.clipped[7])  # the bad match, and two stars beyond 3 sigma
    True
    """

    def __init__(
        self,
        x,
        y,
        x_offset,
        y_offset,
        *,
        method=_DEFAULT_METHOD,
        clip=3.0,
        trend=DEFAULT_TREND,
        uncertainty=None,
        source=None,
        **parameter,
    ):
        chosen, value, self._clip = check_options(method, clip, trend, **parameter)
        label = os.fspath(source) if source is not None else "stars"
        errors = _uncertainty(uncertainty)
        names = (*_ARGUMENT_NAMES, *_ERROR_NAMES[len(errors)])
        self._stars, n_dropped = _star_arrays((x, y, x_offset, y_offset, *errors), names, label)
        with one_blas_thread():
            self._fit_trend(trend)
            self._fit(chosen, value, n_dropped, label, source)

    def _fit_trend(self, kind):
        """Fit the trend; set the stars the method works on: what the trend leaves."""
        self._trend = None if kind is None else fit_trend(kind, self._stars, self._clip)
        if self._trend is None:
            self._residuals = self._stars
            return
        tu, tv = self._trend.offsets(self._stars.x, self._stars.y)
        self._residuals = self._stars._replace(
            x_offset=self._stars.x_offset - tu, y_offset=self._stars.y_offset - tv
        )

    def _fit(self, chosen, value, n_dropped, label, source):
        """Choose (auto) and fit the field; set the model's state and ``meta``."""
        self._norm = CoordinateScaling(self._stars.x, self._stars.y)
        # Fits to all stars by (method, value), for cross-validating them.
        self._fits = {}
        # The cross-validation table ``auto`` chose from.
        self._selection = None
        # The table this field's CV RMS is known from: auto's, or a re-check's
        # (see `_score`).
        self._scores = None
        n = len(self._stars.x)
        if chosen is None:
            chosen, value = self._choose()
        elif n < chosen.min_stars(value):
            raise ValueError(
                f"{label}: {chosen.field_name(value)} needs at least "
                f"{chosen.min_stars(value)} stars, got {n}"
            )
        self._method, self._value = chosen, value
        key = (chosen.name, value)
        fit = self._fits.get(key)
        if fit is None:
            try:
                fit = fit_field(chosen, value, self._norm, self._residuals, self._clip)
            except ValueError as error:
                raise ValueError(f"{label}: {error}") from None
        # The fit to all stars, kept for cross-validating this field; the
        # other candidates' fits (auto) are let go.
        self._fits = {key: fit._replace(state=None)}
        self._field = fit.field if self._trend is None else fit.field.with_trend(self._trend)
        self._clipped = fit.clipped
        self._clipped.flags.writeable = False
        self.meta = {
            "source": None if source is None else os.fspath(source),
            "n_stars": n,
            "n_dropped": n_dropped,
            "method": chosen.name,
            "parameter": chosen.parameter,
            "parameter_value": value,
        }
        if self._trend is not None:
            self.meta["trend"] = self._trend.kind
            self.meta["trend_rms"] = self._trend.rms
            self.meta["trend_rotation"] = self._trend.rotation_deg
        if chosen.clipped or self._trend is not None:
            self.meta["clip"] = self._clip
        if chosen.clipped:
            self.meta["weighted"] = self._stars.sigma is not None
            self.meta["n_clipped"] = int(np.count_nonzero(self._clipped))
        if self._selection is not None:
            self.meta["selection"] = _AUTO

    def _choose(self):
        """Cross-validate the default candidates; return the best ``(method, value)``."""
        n = len(self._stars.x)
        if n_folds_for(n) < 2:
            default = METHODS[_DEFAULT_METHOD]
            return default, default.default
        candidates = default_candidates(n)
        table = cross_validate(
            self._norm, self._residuals, candidates, clip=self._clip, fits=self._fits
        )
        if not table["selected"].any():
            raise ValueError("no field could be cross-validated on these stars")
        self._selection = self._scores = table
        name, value = candidates[int(np.flatnonzero(table["selected"])[0])]
        return METHODS[name], value

    def _score(self, candidates):
        """Cross-validate ``candidates``, this field among them; keep its CV RMS.

        Return whether this field scores best. Its CV RMS is then known, as
        auto's choice's is: `cv_rms` and `to_map` take it from this table.
        """
        table = self.cross_validate(candidates)
        self._scores = table
        row = self._row(table)
        return bool(table["selected"][row])

    def _row(self, table):
        """Return the row of this field in a cross-validation table."""
        ours = (self._method.name, self._method.describe(self._value))
        return next(i for i, row in enumerate(table) if (row["method"], row["parameters"]) == ours)

    @classmethod
    def from_table(
        cls,
        table,
        *,
        centroid_columns=None,
        offset_columns=None,
        uncertainty_columns=None,
        source=None,
        **options,
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
        uncertainty_columns : tuple of str or `None`, optional
            Explicit ``(x, y)`` names of the offsets' uncertainty columns;
            `None` takes ``xoffset_err/yoffset_err`` or
            ``x_offset_err/y_offset_err`` if present (the fitted fields then
            weigh each star by them), and none otherwise.
        source : str or `None`, optional
            Name of the table in messages and provenance.
        **options
            ``method``, ``clip`` and the method's parameter (``power``,
            ``degree``, ``smoothing``): as for `OffsetModel`.

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
        errors = offset_errors(table, columns=uncertainty_columns, source=source)
        model = cls(*columns, uncertainty=errors, source=source, **options)
        # The frame the offsets are against, as make_tables records it: the
        # map records it too, so that stacking can check it.
        if table.meta.get("REFFRAME"):
            model.meta["reference"] = str(text_of_card(table.meta["REFFRAME"]))
        if table.meta.get("REFPATH"):  # where it was: a map's SIP takes its WCS
            model.meta["reference_path"] = str(text_of_card(table.meta["REFPATH"]))
        if table.meta.get("REFROWS"):  # how its rows run: the map's plot shows them so
            model.meta["roworder"] = str(table.meta["REFROWS"])
        # Its sky levels and flux scale, which the stack normalises with.
        model.meta.update(photometry(table))
        return model

    @classmethod
    def read(cls, path, *, format=None, **options):
        """Read a star table file and build the model.

        Parameters
        ----------
        path : str or path-like
            Any table file astropy reads (FITS, ECSV, CSV, ...), such as
            ``DSC03770.offsets_table.fits``.
        format : str or `None`, optional
            Format name for `astropy.table.Table.read`; guessed when `None`.
        **options
            ``centroid_columns``, ``offset_columns``, ``uncertainty_columns``
            as for `from_table`; ``method``, ``clip`` and the method's
            parameter (``power``, ``degree``, ``smoothing``) as for
            `OffsetModel`.

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
        return cls.from_table(table, source=path, **options)

    x = _star_column(0, "Star x centroids in this frame (read-only float64).")
    y = _star_column(1, "Star y centroids in this frame (read-only float64).")
    x_offset = _star_column(2, "Star x offsets, this frame minus reference (read-only float64).")
    y_offset = _star_column(3, "Star y offsets, this frame minus reference (read-only float64).")

    @property
    def method(self):
        """The field's method: ``"quadrant"``, ``"polynomial"`` or ``"thin-plate"``.

        For a model made with ``method="auto"``, the method it chose.
        """
        return self._method.name

    @property
    def trend(self):
        """The global trend: ``"affine"``, ``"similarity"`` or `None` (the literal field)."""
        return None if self._trend is None else self._trend.kind

    @property
    def parameters(self):
        """The method's parameter and its value: ``{"degree": 4}``."""
        return {self._method.parameter: self._value}

    def __getattr__(self, name):
        # A method's parameter by its name (model.power, model.degree, ...):
        # its value for this model's method, None for another method's.
        methods = self.__dict__.get("_method")
        if methods is not None and name in {m.parameter for m in METHODS.values()}:
            return self._value if name == self._method.parameter else None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def clipped(self):
        """Read-only boolean mask of the stars sigma-clipping left out of the fit.

        One entry per star of the model, in the order given, after any rows
        with NaN or infinite values were dropped (see ``meta["n_dropped"]``):
        with such rows, it does not index the input table directly.
        """
        return self._clipped

    @functools.cached_property
    def cv_rms(self):
        """Cross-validated RMS residual at the stars, in pixels, or `None`.

        The RMS length of the residual vectors of each star against the field
        fitted without its fold (5-fold; mismatched stars left out, as in
        `cross_validate`, whose table gives this field the same value).
        `None` when it cannot be computed: fewer than 2 stars, or folds too
        small for the field (a polynomial needs as many training stars as
        coefficients). ``method="auto"`` knows it from its choice, and a
        `SequenceChoice`'s model from its re-check; otherwise it is computed
        on first use, never by `to_map`.
        """
        if self._scores is not None:
            value = float(self._scores["cv_rms"][self._row(self._scores)])
        elif n_folds_for(len(self)) >= 2:
            value = float(self.cross_validate([(self.method, self._value)])["cv_rms"][0])
        else:
            return None
        return value if math.isfinite(value) else None

    def __len__(self):
        return len(self._stars.x)

    def __repr__(self):
        field = self._method.describe(self._value)
        if self._method.name != _DEFAULT_METHOD:
            field = f"{self._method.name} {field}"
        if self.meta.get("selection"):
            field += f" ({self.meta['selection']})"
        n_clipped = int(np.count_nonzero(self._clipped))
        if n_clipped:
            field += f", {n_clipped} clipped"
        if self._trend is None:
            field += ", no trend"
        elif self._trend.kind != DEFAULT_TREND:
            field += f", {self._trend.kind} trend"
        return f"<{type(self).__name__}: {len(self)} stars, {field}>"

    def cross_validate(self, candidates=None, *, n_folds=N_FOLDS):
        """Compare fields on these stars by k-fold cross-validation.

        The fields are compared on the offsets the model's trend leaves (the
        trend, fitted to all stars, is common to every candidate). The stars
        are split into ``n_folds`` folds (the same folds every
        time for the same stars). Each candidate is fitted to all folds but
        one and evaluated at the stars of that fold, for every fold in turn;
        the stars sigma-clipping leaves out of the candidate's fit to all
        stars stay out of every fold's fit. (A thin-plate spline's held-out
        residuals are computed exactly from its fit to all stars, by Rippa's
        formula, rather than by refitting.)

        Every candidate is scored on the same stars, whatever the candidates
        compared: all but those whose held-out residual lies beyond ``clip``
        robust standard deviations both for the quadrant field (which follows
        every neighbour) and for every polynomial of degree 1 to 7 (which
        follow the smooth field): mismatched stars, which no field should
        follow. A star one of them follows (a local distortion, an edge of
        the frame) counts against the fields that miss it. A model's
        `cv_rms` is its row's ``cv_rms`` in any such table.

        Parameters
        ----------
        candidates : list of tuple or `None`, optional
            ``(method, value)`` pairs such as ``("polynomial", 4)``,
            ``("thin-plate", 1e-3)`` or ``("quadrant", 1.0)``. By default the
            candidates of ``method="auto"``: quadrant fields of power 1 and
            2; polynomials of degree 1 to 7 while each fold trains on two
            stars per coefficient; thin-plate splines of smoothing 1e-4 to
            0.1 while each fold trains on 10 to 1500 stars (their fits cost
            O(n**3)).
        n_folds : int, optional
            Number of folds, at least 2 (fewer with fewer stars). The default
            is 5.

        Returns
        -------
        `~astropy.table.Table`
            One row per candidate: ``method``, ``parameters`` (such as
            ``"degree=4"``), ``cv_rms`` (RMS length of the held-out residual
            vectors, px), ``cv_max`` (the largest, px), ``n_clipped`` (stars
            sigma-clipping leaves out of the fit to all stars), ``selected``
            (the lowest ``cv_rms``). A candidate that cannot be fitted (too
            few stars) has NaN scores. ``meta`` holds ``n_stars``,
            ``n_folds``, ``clip`` and ``n_scored``, the stars scored.

        Raises
        ------
        ValueError
            If there are fewer than 2 stars, or a candidate is invalid.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import OffsetModel
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.uniform(0, 2000, (2, 300))
        >>> r2 = ((x - 1000) ** 2 + (y - 1000) ** 2) / 1e6
        >>> dx = 1.5 + 0.5 * r2 * (x - 1000) / 1000 + rng.normal(0, 0.03, 300)
        >>> dy = -0.5 + 0.5 * r2 * (y - 1000) / 1000 + rng.normal(0, 0.03, 300)
        >>> table = OffsetModel(x, y, dx, dy).cross_validate(
        ...     [("quadrant", 1.0), ("polynomial", 1), ("polynomial", 3)])
        >>> [(str(row["parameters"]), bool(row["selected"])) for row in table]
        [('power=1', False), ('degree=1', False), ('degree=3', True)]
        """
        if isinstance(n_folds, bool) or not isinstance(n_folds, numbers.Integral) or n_folds < 2:
            raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
        if n_folds_for(len(self), n_folds) < 2:
            raise ValueError(f"cross-validation needs at least 2 stars, got {len(self)}")
        if candidates is None:
            if self._selection is not None and n_folds == N_FOLDS:
                return self._selection.copy()
            candidates = default_candidates(len(self), n_folds)
        else:
            candidates = [self._candidate(c) for c in candidates]
        with one_blas_thread():
            return cross_validate(
                self._norm,
                self._residuals,
                candidates,
                n_folds=n_folds,
                clip=self._clip,
                fits=dict(self._fits),
            )

    @staticmethod
    def _candidate(candidate):
        try:
            name, value = candidate
        except (TypeError, ValueError):
            raise ValueError(
                f"a candidate is a (method, value) pair such as ('polynomial', 4), "
                f"got {candidate!r}"
            ) from None
        if name not in METHODS:
            raise ValueError(
                f"candidate method must be one of {', '.join(map(repr, METHODS))}, got {name!r}"
            )
        return name, METHODS[name].check(value)

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
        dx[ok], dy[ok] = evaluate(self._field, px[ok], py[ok])
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
            twice. Tiles are copied in as they arrive. The default `None`
            allocates new arrays.

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

        No field is fitted or cross-validated here: a map costs the field's
        evaluation alone. Its ``meta`` records the model's provenance, with
        `cv_rms` when it is known (``method="auto"``, a `SequenceChoice`), and its `StarOffsets` the
        stars, for its diagnostics. A thin-plate map's lattice values are
        computed once, before the
        tiles: about 0.25 s for 12 Mpix and 500 stars, in proportion to
        both.

        Examples
        --------
        >>> from astro_offsets import OffsetModel
        >>> model = OffsetModel([3.0, 12.0], [4.0, 9.0], [0.5, 0.7], [0.1, -0.2])
        >>> omap = model.to_map((16, 20), n_jobs=2, block_size=(5, 7))
        >>> omap.x_offset.dtype, omap.shape
        (dtype('float32'), (16, 20))
        """
        omap, warning = self._map_and_warning(shape, n_jobs, block_size, out)
        if warning is not None:
            warnings.warn(warning, AstropyUserWarning, stacklevel=2)
        return omap

    def _map_and_warning(self, shape, n_jobs=None, block_size="auto", out=None):
        """Return `to_map`'s map and its warning's text (`None` if none), not warned.

        `~astro_offsets.write_maps` makes its maps beside other threads: it
        takes the text rather than catching the warning, which would need
        the process's warning filters.
        """
        shape = positive_pair(shape, "shape")
        warning = self._method.map_warning(self._norm, self._stars, shape)
        if warning is not None:
            warning = f"{self.meta['source'] or 'stars'}: {warning}"
        x_map, y_map = evaluate_grid(
            self._field.for_grid(shape), shape, n_jobs=n_jobs, block_size=block_size, out=out
        )
        meta = dict(self.meta)
        if self._scores is not None:
            meta["cv_rms"] = self.cv_rms
        stars = StarOffsets(*self._stars[:4], self._clipped)
        return OffsetMap(x_map, y_map, meta=meta, stars=stars), warning
