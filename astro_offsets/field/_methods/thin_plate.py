"""A smoothing thin-plate spline, read off a lattice of 16 px and interpolated.

The spline is scipy's `~scipy.interpolate.RBFInterpolator` (kernel
``thin_plate_spline``, degree 1) in normalised coordinates. Maps read it on
the lattice nodes covering the map and interpolate each pixel (Catmull-Rom)
between them; points are evaluated the same way, so points and maps agree
to about 1e-12 px. Held-out residuals come exactly from one inverse of the
spline's system (Rippa's formula), without refitting.
"""

import contextlib
import itertools

import numpy as np
from scipy.special import xlogy

from ..._utils.validation import real
from ._base import FieldMethod, residuals

__all__ = ["METHOD"]

# Spacing in pixels of the lattice on which the spline is evaluated and
# interpolated (a power of two, so that x / step is exact).
LATTICE_STEP = 16
_POINT_CHUNK = 65536
# Points farther than this (px) from the origin get NaN: their lattice cells
# would overflow int64 keys.
_FAR = 1e12
_CANDIDATES = (1e-4, 1e-3, 1e-2, 1e-1)
# Splines are offered to auto from this many training stars on.
_CANDIDATE_STARS = 10
# A spline goes through at most this many stars (knots), spread over the
# frame: its fit costs O(n**3), 0.02 s for 400 knots.
_KNOTS = 400


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

    def __init__(self, norm, spline, trend=None):
        self.norm = norm
        self.spline = spline
        # Added at the lattice nodes, which Catmull-Rom interpolation
        # reproduces exactly: linear functions are in its span.
        self.trend = trend

    def with_trend(self, trend):
        return _ThinPlateField(self.norm, self.spline, trend)

    def _plus_trend(self, values, x, y):
        """Add the trend at points ``(x, y)`` to spline values ``(2, n)``."""
        if self.trend is not None:
            tu, tv = self.trend.offsets(x, y)
            values[0] += tu
            values[1] += tv
        return values

    def _nodes(self, rows, columns):
        """Field values (2, n) at lattice nodes given by cell indices."""
        x, y = columns * float(LATTICE_STEP), rows * float(LATTICE_STEP)
        points = np.column_stack([self.norm.u(x), self.norm.v(y)])
        return self._plus_trend(self.spline(points).T, x, y)

    def at_stars(self, px, py, out_u, out_v):
        """Read the spline itself at points: for the residuals, clipping and scores of a fit.

        The lattice that maps and `points` read is 1e-4 px from the spline
        at most, but costs 16 nodes a point: for statistics over the stars
        the spline is read directly.
        """
        points = np.column_stack([self.norm.u(px), self.norm.v(py)])
        out_u[:], out_v[:] = self._plus_trend(self.spline(points).T, px, py)

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

    The system is ``[[K + S, P], [P^T, 0]]`` with ``K`` the thin-plate
    kernel ``r**2 log r`` between the stars, ``S`` the diagonal of each
    star's smoothing and ``P`` the linear polynomials: the system scipy's
    `~scipy.interpolate.RBFInterpolator` solves. The spline's coefficients
    are ``M d``.
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


def _knots(stars):
    """Return the stars the spline goes through: all, or a spread of at most `_KNOTS`.

    With more stars, the frame is cut into cells and each cell's best
    measured star (the first, if their uncertainties are not known) is taken:
    the spline's cost grows as the cube of its knots, and a few hundred
    spread over the frame follow any distortion a lens makes.
    """
    n = len(stars.x)
    if n <= _KNOTS:
        return np.arange(n)
    # Square cells over the stars' extent, as many as knots.
    width, height = np.ptp(stars.x) + 1.0, np.ptp(stars.y) + 1.0
    side = np.sqrt(width * height / _KNOTS)
    columns = max(1, int(width / side))
    rows = max(1, int(height / side))
    column = np.minimum(((stars.x - stars.x.min()) / width * columns).astype(int), columns - 1)
    row = np.minimum(((stars.y - stars.y.min()) / height * rows).astype(int), rows - 1)
    cells = columns
    rank = np.zeros(n) if stars.sigma is None else stars.sigma
    order = np.lexsort((np.arange(n), rank, row * cells + column))
    cell = (row * cells + column)[order]
    return np.sort(order[np.r_[True, cell[1:] != cell[:-1]]])


def _spline_points(norm, stars):
    points = np.column_stack([norm.u(stars.x), norm.v(stars.y)])
    return points, np.column_stack([stars.x_offset, stars.y_offset])


def _smoothing(stars, value):
    """Each knot's smoothing: ``value`` for a star of the median uncertainty."""
    if stars.sigma is None:
        return value
    return value * (stars.sigma / np.median(stars.sigma)) ** 2


def _fit_thin_plate(norm, stars, smoothing, loo):
    """Fit the spline to its knots; with ``loo``, every star's held-out residual.

    The knots' leave-one-out residuals come from the system's inverse; the
    other stars are not in the fit, and their residuals are against it.
    Returns the field, the residuals and the state ``(knots, star block)``.
    """
    # scipy.interpolate is imported when a spline is fitted: the command line
    # starts faster without it.
    from scipy.interpolate import RBFInterpolator

    knots = _knots(stars)
    fitted = stars.subset(knots)
    points, values = _spline_points(norm, fitted)
    each = _smoothing(fitted, smoothing)
    try:
        spline = RBFInterpolator(
            points, values, kernel="thin_plate_spline", smoothing=each, degree=1
        )
        star_block = _thin_plate_star_block(points, each) if loo else None
    except (ValueError, np.linalg.LinAlgError) as error:
        # Collinear stars leave the spline's linear part undetermined.
        raise ValueError(
            f"cannot fit a thin-plate spline to {len(points)} stars (are they on one line?): "
            f"{error}"
        ) from None
    field = _ThinPlateField(norm, spline)
    if star_block is None:
        return field, None, (knots, None)
    du, dv = residuals(field, stars, slice(None))
    du[knots], dv[knots] = _held_out(star_block, values).T
    return field, (du, dv), (knots, star_block)


def thin_plate_folds(fit, smoothing, norm, stars, labels):
    """Held-out residuals of a thin-plate spline over folds, without refitting.

    ``fit`` is the `Fit` of the spline to ``stars`` (its ``state``, the knots
    and, when kept, the star block). The residuals of the knots, against the
    spline fitted without their fold, are exact (see `_held_out`); the other
    stars, clipped or not knots, in no fit, are compared with the spline.
    """
    kept = np.flatnonzero(~fit.clipped)
    knots, star_block = fit.state if fit.state is not None else (None, None)
    fitted = stars.subset(kept)
    if knots is None:
        knots = _knots(fitted)
    points, values = _spline_points(norm, fitted.subset(knots))
    if star_block is None:
        star_block = _thin_plate_star_block(points, _smoothing(fitted.subset(knots), smoothing))
    du, dv = residuals(fit.field, stars, slice(None))
    index = kept[knots]
    du[index], dv[index] = _held_out(star_block, values, labels[index]).T
    return du, dv


class ThinPlate(FieldMethod):
    """Follows local distortions no low-order polynomial can."""

    name = "thin-plate"
    parameter = "smoothing"
    default = 1e-3
    summary = "thin-plate: smoothing (default: 0.001)"
    order = 2
    clip_rounds = 3

    def check(self, value):
        return real(value, "smoothing", low=0)

    def field_name(self, value):
        return "a thin-plate spline"

    def min_stars(self, value):
        return 3

    def candidates(self, n_train):
        return _CANDIDATES if n_train >= _CANDIDATE_STARS else ()

    def fit(self, norm, stars, value, loo):
        return _fit_thin_plate(norm, stars, value, loo)

    def held_out(self, fit, value, norm, stars, labels):
        return thin_plate_folds(fit, value, norm, stars, labels)


METHOD = ThinPlate()
