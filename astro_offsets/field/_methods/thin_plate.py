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
from scipy.interpolate import RBFInterpolator
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
# Splines are offered to auto from this many training stars on, and up to
# this many: their fits cost O(n**3) (about 3 s for 1500 stars on 2 cores).
_CANDIDATE_STARS = (10, 1500)


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
    loo_residuals = None if star_block is None else _held_out(star_block, values).T
    return _ThinPlateField(norm, spline), loo_residuals, star_block


def thin_plate_folds(fit, smoothing, norm, stars, labels):
    """Held-out residuals of a thin-plate spline over folds, without refitting.

    ``fit`` is the `Fit` of the spline to ``stars`` (its ``state``, the star
    block, when kept). The residuals of the
    stars in the fit, against the spline fitted without their fold, are exact
    (see `_held_out`); a clipped star, in no fit, is compared with the spline.
    """
    kept = ~fit.clipped
    points, values = _spline_points(norm, tuple(s[kept] for s in stars))
    star_block = fit.state
    if star_block is None:
        star_block = _thin_plate_star_block(points, smoothing)
    du = np.empty(len(labels))
    dv = np.empty(len(labels))
    du[kept], dv[kept] = _held_out(star_block, values, labels[kept]).T
    du[fit.clipped], dv[fit.clipped] = residuals(fit.field, stars, fit.clipped)
    return du, dv


class ThinPlate(FieldMethod):
    """Follows local distortions no low-order polynomial can."""

    name = "thin-plate"
    parameter = "smoothing"
    default = 1e-3
    summary = "thin-plate: smoothing (default: 0.001)"
    order = 2

    def check(self, value):
        return real(value, "smoothing", low=0)

    def field_name(self, value):
        return "a thin-plate spline"

    def min_stars(self, value):
        return 3

    def candidates(self, n_train):
        low, high = _CANDIDATE_STARS
        return _CANDIDATES if low <= n_train <= high else ()

    def fit(self, norm, stars, value, loo):
        return _fit_thin_plate(norm, stars, value, loo)

    def held_out(self, fit, value, norm, stars, labels):
        return thin_plate_folds(fit, value, norm, stars, labels)


METHOD = ThinPlate()
