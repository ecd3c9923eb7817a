"""The offset fields an `OffsetModel` can use, fitted with sigma-clipping.

A field evaluates offsets at points (``points``) and fills tiles of a map
(``for_grid(shape).fill``). Every field gives a pixel the same value in any
tile, so maps do not depend on how they are tiled. The quadrant and
polynomial fields give ``points`` and maps the same arithmetic, pixel for
pixel; a thin-plate spline's lattice values come from scipy in batches, so
its points and maps agree to about 1e-12 px, not bit for bit.
"""

import contextlib
import itertools
import math
import warnings
from typing import NamedTuple

import numpy as np
from astropy.modeling import fitting, models
from scipy.interpolate import RBFInterpolator
from scipy.special import xlogy

from ._field import field_grid, field_points

__all__ = [
    "METHODS",
    "DEFAULTS",
    "LATTICE_STEP",
    "Normalisation",
    "Fit",
    "fit_field",
    "clip_stars",
    "min_stars",
    "residuals",
    "robust_outliers",
    "thin_plate_folds",
]

METHODS = ("quadrant", "polynomial", "thin-plate")
# The parameter of each method and its default.
DEFAULTS = {
    "quadrant": ("power", 1.0),
    "polynomial": ("degree", 3),
    "thin-plate": ("smoothing", 1e-3),
}

# Spacing in pixels of the lattice on which thin-plate splines are evaluated
# and interpolated (a power of two, so that x / step is exact).
LATTICE_STEP = 16
# Residuals below this (px, per axis) are never called outliers: a fit that
# is exact to rounding must not reject stars over differences of 1e-12 px.
_SIGMA_FLOOR = 0.005
_MAX_CLIP_ITERATIONS = 10
_POINT_CHUNK = 65536
# Points farther than this (px) from the origin get NaN from a thin-plate
# field: their lattice cells would overflow int64 keys.
_FAR = 1e12


class Normalisation:
    """The normalised coordinates of a star set: centre and scale of its bounding box.

    Fits work in ``u = (x - cx) / scale``, ``v = (y - cy) / scale``, which lie
    in [-1, 1] over the stars, so that polynomial fits are well conditioned
    and a thin-plate smoothing means the same on any image size.
    """

    def __init__(self, x, y):
        self.cx = 0.5 * (float(x.min()) + float(x.max()))
        self.cy = 0.5 * (float(y.min()) + float(y.max()))
        half = 0.5 * max(float(x.max() - x.min()), float(y.max() - y.min()))
        self.scale = half if half > 0 else 1.0

    def u(self, x):
        return (x - self.cx) / self.scale

    def v(self, y):
        return (y - self.cy) / self.scale


def clip_stars(method, value):
    """Return the fewest stars a fit of the method is sigma-clipped with.

    At least 10, and two per polynomial coefficient: with fewer, every star
    pulls the fit so hard that good ones look like outliers.
    """
    return max(10, 2 * min_stars(method, value))


def min_stars(method, value):
    """Return the fewest stars the method can fit with this parameter."""
    if method == "polynomial":
        return (value + 1) * (value + 2) // 2
    if method == "thin-plate":
        return 3
    return 1


class _QuadrantField:
    def __init__(self, stars, power):
        self.stars = stars
        self.power = power

    def points(self, px, py, out_u, out_v):
        field_points(*self.stars, self.power, px, py, out_u, out_v)

    def for_grid(self, shape):
        return self

    def fill(self, x0, y0, out_u, out_v):
        field_grid(*self.stars, self.power, x0, y0, out_u, out_v)


def _horner(coefficients, t):
    """Evaluate ``sum_k coefficients[k] * t**k`` (coefficients along axis 0)."""
    result = np.zeros(np.broadcast_shapes(coefficients[0].shape, np.shape(t)))
    for c in coefficients[::-1]:
        result = result * t + c
    return result


class _PolynomialField:
    """A 2-D polynomial per axis: ``sum c[i, j] u**i v**j`` over ``i + j <= degree``."""

    def __init__(self, norm, coefficients):
        self.norm = norm
        self.coefficients = coefficients  # (2, degree + 1, degree + 1): axis, i, j

    def _evaluate(self, u, v, axis):
        # Horner in v gives each power of u its coefficient, then Horner in u.
        # Maps and points take the same steps, so they agree bit for bit.
        c = self.coefficients[axis]
        return _horner([_horner(c[i], v) for i in range(c.shape[0])], u)

    def points(self, px, py, out_u, out_v):
        u, v = self.norm.u(px), self.norm.v(py)
        out_u[:] = self._evaluate(u, v, 0)
        out_v[:] = self._evaluate(u, v, 1)

    def for_grid(self, shape):
        return self

    def fill(self, x0, y0, out_u, out_v):
        ny, nx = out_u.shape
        u = self.norm.u(x0 + np.arange(nx, dtype=np.float64))[None, :]
        v = self.norm.v(y0 + np.arange(ny, dtype=np.float64))[:, None]
        out_u[...] = self._evaluate(u, v, 0)
        out_v[...] = self._evaluate(u, v, 1)


def _design(norm, x, y, degree):
    """Return the design matrix of a polynomial fit: columns ``u**i v**j``."""
    u, v = norm.u(x), norm.v(y)
    return np.column_stack([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)])


def _fit_polynomial(norm, stars, degree, loo):
    x, y, *values = stars
    design = _design(norm, x, y, degree)
    rank = np.linalg.matrix_rank(design)
    if rank < design.shape[1]:
        raise ValueError(
            f"cannot fit a polynomial of degree {degree} to {len(x)} stars: their positions "
            f"determine only {rank} of its {design.shape[1]} coefficients (are they on one "
            "line, or on too few distinct points?)"
        )
    # Both axes in one fit: a set of two models sharing the design matrix.
    model = models.Polynomial2D(degree, n_models=2)
    with warnings.catch_warnings():
        # Badly placed stars show in the residuals and the cross-validation;
        # astropy's rank warning would add nothing to them.
        warnings.simplefilter("ignore")
        fitted = fitting.LinearLSQFitter()(model, norm.u(x), norm.v(y), np.stack(values))
    coefficients = np.zeros((2, degree + 1, degree + 1))
    for name, parameter in zip(fitted.param_names, fitted.parameters.reshape(-1, 2), strict=True):
        i, j = map(int, name[1:].split("_"))
        coefficients[:, i, j] = parameter
    field = _PolynomialField(norm, coefficients)
    if not loo:
        return field, None, None
    # Leave-one-out residuals of a least-squares fit: residual / (1 - leverage).
    q, _ = np.linalg.qr(design)
    free = 1.0 - np.einsum("ij,ij->i", q, q)
    fu, fv = evaluate(field, x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(free > 1e-9, 1.0 / free, np.nan)  # NaN: a star the fit must pass
    return field, ((values[0] - fu) * scale, (values[1] - fv) * scale), None


def _catmull_rom(t):
    """Return the four Catmull-Rom weights for fractional positions ``t``."""
    t2 = t * t
    t3 = t2 * t
    return (
        0.5 * (2.0 * t2 - t3 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (4.0 * t2 - 3.0 * t3 + t),
        0.5 * (t3 - t2),
    )


def _lattice_position(coordinate):
    """Return the lattice cell (int64) and the Catmull-Rom weights of coordinates."""
    scaled = coordinate / LATTICE_STEP
    cell = np.floor(scaled)
    return cell.astype(np.int64), _catmull_rom(scaled - cell)


def _weighted4(weights, a, b, c, d):
    """``w0 a + w1 b + w2 c + w3 d``: one interpolation step, in one fixed order."""
    w0, w1, w2, w3 = weights
    return w0 * a + w1 * b + w2 * c + w3 * d


class _LatticeField:
    """Thin-plate values on the lattice nodes covering a map, interpolated per tile.

    Each pixel is interpolated along x between four nodes of each of four
    lattice rows, then along y: the same steps as `_ThinPlateField.points`.
    """

    def __init__(self, nodes, first):
        self.nodes = nodes  # (2, rows, columns) float64
        self.first = first  # lattice cell (row, column) of nodes[:, 0, 0]

    def fill(self, x0, y0, out_u, out_v):
        ny, nx = out_u.shape
        row_cells, row_weights = _lattice_position(y0 + np.arange(ny, dtype=np.float64))
        column_cells, column_weights = _lattice_position(x0 + np.arange(nx, dtype=np.float64))
        c = column_cells - self.first[1]
        top = row_cells.min() - 1
        lattice_rows = np.arange(top, row_cells.max() + 3) - self.first[0]
        r = row_cells - top
        # Pixel rows in the same lattice cell share their four lattice rows:
        # interpolate such a band at once, by broadcasting, without gathers.
        bands = np.flatnonzero(np.diff(r, prepend=-1, append=-1))
        for out, nodes in zip((out_u, out_v), self.nodes, strict=True):
            rows = nodes[lattice_rows]
            along_x = _weighted4(
                column_weights, rows[:, c - 1], rows[:, c], rows[:, c + 1], rows[:, c + 2]
            )
            for start, stop in itertools.pairwise(bands):
                k = r[start]
                out[start:stop] = _weighted4(
                    tuple(w[start:stop, None] for w in row_weights),
                    along_x[k - 1],
                    along_x[k],
                    along_x[k + 1],
                    along_x[k + 2],
                )


class _ThinPlateField:
    """A smoothing thin-plate spline, read off a lattice of ``LATTICE_STEP`` px."""

    def __init__(self, norm, spline):
        self.norm = norm
        self.spline = spline

    def _nodes(self, rows, columns):
        """Spline values (2, n) at lattice nodes given by cell indices."""
        points = np.column_stack(
            [
                self.norm.u(columns * float(LATTICE_STEP)),
                self.norm.v(rows * float(LATTICE_STEP)),
            ]
        )
        return self.spline(points).T

    def for_grid(self, shape):
        ny, nx = shape
        rows = np.arange(-1, (ny - 1) // LATTICE_STEP + 3)
        columns = np.arange(-1, (nx - 1) // LATTICE_STEP + 3)
        grid_rows, grid_columns = np.meshgrid(rows, columns, indexing="ij")
        values = self._nodes(grid_rows.ravel(), grid_columns.ravel())
        return _LatticeField(values.reshape(2, len(rows), len(columns)), (-1, -1))

    def points(self, px, py, out_u, out_v):
        far = (np.abs(px) > _FAR) | (np.abs(py) > _FAR)
        if far.any():  # lattice cells beyond int64: NaN, as for NaN points
            out_u[far] = out_v[far] = np.nan
            near = ~far
            u, v = np.empty(np.count_nonzero(near)), np.empty(np.count_nonzero(near))
            self.points(px[near], py[near], u, v)
            out_u[near], out_v[near] = u, v
            return
        # In chunks: each point takes 16 nodes of work space.
        for start in range(0, px.size, _POINT_CHUNK):
            chunk = slice(start, start + _POINT_CHUNK)
            self._chunk(px[chunk], py[chunk], out_u[chunk], out_v[chunk])

    def _chunk(self, px, py, out_u, out_v):
        row_cells, row_weights = _lattice_position(py)
        column_cells, column_weights = _lattice_position(px)
        # The 4 x 4 lattice nodes around each point, each distinct node
        # evaluated once.
        offsets = np.arange(-1, 3)
        rows = np.broadcast_to(row_cells[:, None, None] + offsets[None, :, None], (px.size, 4, 4))
        columns = np.broadcast_to(
            column_cells[:, None, None] + offsets[None, None, :], (px.size, 4, 4)
        )
        # One int64 key per node, within the points' bounding box of cells.
        top, left = rows.min(), columns.min()
        width = columns.max() - left + 1
        keys, inverse = np.unique(
            (rows - top).ravel() * width + (columns - left).ravel(), return_inverse=True
        )
        values = self._nodes(keys // width + top, keys % width + left)[:, inverse.ravel()]
        for out, nodes in zip((out_u, out_v), values.reshape(2, px.size, 4, 4), strict=True):
            along_x = [
                _weighted4(column_weights, *(nodes[:, k, m] for m in range(4))) for k in range(4)
            ]
            out[:] = _weighted4(row_weights, *along_x)


def _thin_plate_star_block(points, smoothing):
    """Return ``M``, the star block of the inverse of the spline's system.

    The system is ``[[K + s I, P], [P^T, 0]]`` with ``K`` the thin-plate
    kernel ``r**2 log r`` between the stars and ``P`` the linear polynomials:
    the system scipy's `~scipy.interpolate.RBFInterpolator` solves. The
    spline's coefficients are ``M d``.
    """
    n = len(points)
    r2 = (points[:, None, 0] - points[None, :, 0]) ** 2
    r2 += (points[:, None, 1] - points[None, :, 1]) ** 2
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = 0.5 * xlogy(r2, r2)  # r**2 log r
    system[np.arange(n), np.arange(n)] += smoothing
    system[:n, n] = system[n, :n] = 1.0
    system[:n, n + 1 :] = points
    system[n + 1 :, :n] = points.T
    return np.linalg.inv(system)[:n, :n]


def _held_out(star_block, values, labels=None):
    """Residuals of the stars against the spline fitted without them, exactly.

    The residuals of a group ``T`` of stars left out together are
    ``M_TT^-1 (M d)_T`` (Rippa's formula, for groups): each star alone
    (``labels`` `None`, leave-one-out: ``c_i / M_ii``), or each fold of
    ``labels`` in turn. No spline is refitted.
    """
    coefficients = star_block @ values
    if labels is None:
        diagonal = np.diagonal(star_block)
        with np.errstate(divide="ignore", invalid="ignore"):
            return coefficients / np.where(diagonal > 0, diagonal, np.nan)[:, None]
    residuals = np.full(values.shape, np.nan)
    for fold in np.unique(labels):
        group = np.flatnonzero(labels == fold)
        # Too few stars left to fit without the fold: not scored.
        with contextlib.suppress(np.linalg.LinAlgError):
            residuals[group] = np.linalg.solve(
                star_block[np.ix_(group, group)], coefficients[group]
            )
    return residuals


def _spline_points(norm, stars):
    x, y, u, v = stars
    return np.column_stack([norm.u(x), norm.v(y)]), np.column_stack([u, v])


def _fit_thin_plate(norm, stars, smoothing, loo):
    points, values = _spline_points(norm, stars)
    try:
        spline = RBFInterpolator(
            points, values, kernel="thin_plate_spline", smoothing=smoothing, degree=1
        )
        star_block = _thin_plate_star_block(points, smoothing) if loo else None
    except (ValueError, np.linalg.LinAlgError) as error:
        # Collinear stars leave the spline's linear part undetermined.
        raise ValueError(
            f"cannot fit a thin-plate spline to {len(points)} stars (are they on one line?): "
            f"{error}"
        ) from None
    residuals = None if star_block is None else _held_out(star_block, values).T
    return _ThinPlateField(norm, spline), residuals, star_block


def thin_plate_folds(fit, smoothing, norm, stars, labels):
    """Held-out residuals of a thin-plate spline over folds, without refitting.

    ``fit`` is the `Fit` of the spline to ``stars``. The residuals of the
    stars in the fit, against the spline fitted without their fold, are exact
    (see `_held_out`); a clipped star, in no fit, is compared with the spline.
    """
    kept = ~fit.clipped
    points, values = _spline_points(norm, tuple(s[kept] for s in stars))
    star_block = fit.star_block
    if star_block is None:
        star_block = _thin_plate_star_block(points, smoothing)
    du = np.empty(len(labels))
    dv = np.empty(len(labels))
    du[kept], dv[kept] = _held_out(star_block, values, labels[kept]).T
    du[fit.clipped], dv[fit.clipped] = residuals(fit.field, stars, fit.clipped)
    return du, dv


def residuals(field, stars, mask):
    """Return the offsets of the stars in ``mask`` minus the field there."""
    fu, fv = evaluate(field, stars[0][mask], stars[1][mask])
    return stars[2][mask] - fu, stars[3][mask] - fv


def robust_outliers(du, dv, clip, reference=None):
    """Return which residuals lie beyond ``clip`` robust sigmas in either axis.

    The sigma of each axis is the MAD-based standard deviation of the finite
    residuals in ``reference`` (a boolean mask; all when `None`), at least
    ``_SIGMA_FLOOR`` px; the centre is their median. NaN residuals are not
    outliers.
    """
    outliers = np.zeros(du.shape, bool)
    for d in (du, dv):
        sample = d if reference is None else d[reference]
        sample = sample[np.isfinite(sample)]
        if not sample.size:
            continue
        centre = np.median(sample)
        sigma = max(1.482602218505602 * float(np.median(np.abs(sample - centre))), _SIGMA_FLOOR)
        with np.errstate(invalid="ignore"):
            outliers |= np.abs(d - centre) > clip * sigma
    return outliers


def _fit_once(method, value, norm, stars, loo=False):
    """Fit a field to stars.

    Returns the field, with ``loo`` each star's leave-one-out residuals, and
    for a thin-plate spline the star block of its system's inverse.
    """
    if method == "quadrant":
        return _QuadrantField(stars, value), None, None
    if method == "polynomial":
        return _fit_polynomial(norm, stars, value, loo)
    return _fit_thin_plate(norm, stars, value, loo)


def evaluate(field, px, py):
    """Return the field at 1-D finite points, as two float64 arrays."""
    out_u = np.empty(px.shape)
    out_v = np.empty(px.shape)
    if px.size:
        field.points(np.ascontiguousarray(px), np.ascontiguousarray(py), out_u, out_v)
    return out_u, out_v


class Fit(NamedTuple):
    """A field fitted to stars."""

    field: object
    """The field."""
    clipped: np.ndarray
    """Boolean mask of the stars sigma-clipping left out of the fit."""
    star_block: object = None
    """A thin-plate spline's star block of its system's inverse, if computed."""


def fit_field(method, value, norm, stars, clip):
    """Fit a field to stars, rejecting outliers by iterative sigma-clipping.

    A star in the fit is judged by its leave-one-out residual (its offset
    minus the field fitted without it), a star left out by its residual
    against the field; the fit is repeated until no star changes side, or the
    same stars come back, or 10 times.

    Parameters
    ----------
    method : str
        One of `METHODS`.
    value : float or int
        The method's parameter (power, degree or smoothing).
    norm : `Normalisation`
        Normalised coordinates of the fit.
    stars : tuple of `~numpy.ndarray`
        ``(x, y, x_offset, y_offset)``, contiguous float64.
    clip : float or `None`
        Sigma-clipping threshold for the fitted methods; `None` keeps all
        stars. The quadrant field interpolates and is never clipped.

    Returns
    -------
    `Fit`
    """
    n = len(stars[0])
    clipped = np.zeros(n, bool)
    clipping = method != "quadrant" and clip is not None
    field, loo, star_block = _fit_once(method, value, norm, stars, loo=clipping)
    if not clipping:
        return Fit(field, clipped, star_block)
    if n < clip_stars(method, value):
        return Fit(field, clipped, star_block)
    # Never clip below what the fit needs, nor below half of the stars.
    least = max(min_stars(method, value) + 1, math.ceil(n / 2))
    seen = {clipped.tobytes()}
    du, dv = np.empty(n), np.empty(n)
    for _ in range(_MAX_CLIP_ITERATIONS):
        du[~clipped], dv[~clipped] = loo
        du[clipped], dv[clipped] = residuals(field, stars, clipped)
        new = robust_outliers(du, dv, clip, reference=~clipped)
        if new.tobytes() in seen or n - np.count_nonzero(new) < least:
            break
        seen.add(new.tobytes())
        clipped = new
        field, loo, star_block = _fit_once(
            method, value, norm, tuple(s[~clipped] for s in stars), loo=True
        )
    return Fit(field, clipped, star_block)
