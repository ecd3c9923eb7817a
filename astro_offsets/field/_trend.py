"""The global trend of a field: an affine or similarity transform fitted to the stars.

A frame turned against the reference (field rotation, a meridian flip) has
offsets that change linearly across it. The trend takes that part out: the
field methods then interpolate or fit what it leaves, which is small and
smooth, so that an interpolation between stars costs no accuracy however far
the frame turned. With ``T`` the transform from this frame to the reference,
the offset is ``(x, y) - T(x, y)``, an affine function of ``(x, y)``: the trend
is kept as its six coefficients, ``a0 + a1 x + a2 y`` in x and
``b0 + b1 x + b2 y`` in y.
"""

import math
from typing import NamedTuple

import numpy as np

from ._clipping import robust_outliers

__all__ = ["DEFAULT_TREND", "TRENDS", "Trend", "check_trend", "fit_trend"]

TRENDS = ("affine", "similarity")
"""The kinds of trend, by name (`None`: no trend, the literal field)."""
DEFAULT_TREND = "affine"
"""The trend of a field unless one is given."""
# Trends are sigma-clipped from this many stars on, as the fitted fields are.
_CLIP_STARS = 10
_MAX_ROUNDS = 10


def check_trend(trend):
    """Return ``trend`` checked: one of `TRENDS` or `None`.

    Raises
    ------
    ValueError
        If it is neither.
    """
    if trend is None or (isinstance(trend, str) and trend in TRENDS):
        return trend
    choices = ", ".join([*map(repr, TRENDS), "None"])
    raise ValueError(f"trend must be one of {choices}, got {trend!r}")


class Trend(NamedTuple):
    """An affine offset field fitted to stars."""

    kind: str
    """``"affine"`` or ``"similarity"``."""
    coefficients: np.ndarray
    """``(a0, a1, a2, b0, b1, b2)``, float64, read-only."""
    kept: np.ndarray
    """Which stars the fit kept (the others were sigma-clipped)."""
    rms: float
    """RMS length of the residual vectors at the kept stars (px)."""

    def offsets(self, x, y):
        """Return the trend's offsets at points, in the kernel's order of operations."""
        a0, a1, a2, b0, b1, b2 = self.coefficients
        return (a0 + a1 * x + a2 * y), (b0 + b1 * x + b2 * y)

    @property
    def rotation_deg(self):
        """Rotation of this frame against the reference (degrees, counter-clockwise in x, y).

        The angle of the transform's rotation part, frame onto reference,
        with its sign reversed: a frame turned by ``r`` gives ``r``.
        """
        _, a1, a2, _, b1, b2 = self.coefficients
        # T = identity - offsets: its linear part is [[1 - a1, -a2], [-b1, 1 - b2]].
        angle = -math.degrees(math.atan2(-b1 + a2, (1 - a1) + (1 - b2)))
        return angle + 360.0 if angle <= -180.0 else angle


def _solve(design, values, weights):
    """Least-squares solution and rank; rows weighted by the square root of ``weights``."""
    if weights is not None:
        root = np.sqrt(weights)
        design, values = design * root[:, None], values * root
    solution, _, rank, _ = np.linalg.lstsq(design, values, rcond=None)
    return solution, rank


def _fit_once(kind, x, y, u, v, weights):
    """Fit one trend of ``kind`` (or a simpler one the stars allow); return its coefficients.

    Fits in coordinates centred on the stars and scaled to about 1, for a
    well-conditioned fit; returns pixel coefficients ``(a0, a1, a2, b0, b1, b2)``.
    """
    cx, cy = float(np.mean(x)), float(np.mean(y))
    scale = max(float(np.ptp(x)), float(np.ptp(y)), 1.0)
    s, t = (x - cx) / scale, (y - cy) / scale
    n = len(x)
    ones, zeros = np.ones(n), np.zeros(n)
    c = None
    if kind == "affine" and n >= 3:
        design = np.column_stack([ones, s, t])
        both = [_solve(design, values, weights) for values in (u, v)]
        if all(rank == 3 for _, rank in both):
            c = np.concatenate([solution for solution, _ in both])
    if c is None and n >= 2:
        # x: p0 + p1 s + p2 t; y: q0 - p2 s + p1 t (a rotation and a scale).
        design = np.vstack(
            [np.column_stack([ones, zeros, s, t]), np.column_stack([zeros, ones, t, -s])]
        )
        twice = None if weights is None else np.concatenate([weights, weights])
        (p0, q0, p1, p2), rank = _solve(design, np.concatenate([u, v]), twice)
        if rank == 4:
            c = np.array([p0, p1, p2, q0, -p2, p1])
    if c is None:
        w = np.ones(n) if weights is None else weights
        c = np.array([np.sum(w * u) / np.sum(w), 0.0, 0.0, np.sum(w * v) / np.sum(w), 0.0, 0.0])
    # From centred, scaled coordinates to pixels.
    out = []
    for c0, c1, c2 in (c[:3], c[3:]):
        k1, k2 = c1 / scale, c2 / scale
        out += [c0 - k1 * cx - k2 * cy, k1, k2]
    return np.array(out, dtype=np.float64)


def fit_trend(kind, stars, clip):
    """Fit a trend to stars, robustly.

    Parameters
    ----------
    kind : {"affine", "similarity"}
        The transform: six parameters (rotation, flip, scale, shear,
        shift) or four (rotation, scale, shift). Stars that cannot determine
        it (fewer than three, or all on one line, for an affine trend) get the
        most general one of that kind they can: a similarity, or the mean
        shift of one star.
    stars : `~astro_offsets.field._methods.Stars`
        The stars; with uncertainties, each weighs by its inverse variance.
    clip : float or `None`
        Sigma-clipping threshold: stars whose residual lies beyond ``clip``
        robust standard deviations (see `robust_outliers`) are left out and
        the trend refitted, until no star changes side (10 rounds at most),
        so that mismatched stars do not tilt it. Never fewer than half of the
        stars are kept, nor fewer than 10 clipped. `None` keeps every star.

    Returns
    -------
    `Trend`
    """
    x, y, u, v = stars.x, stars.y, stars.x_offset, stars.y_offset
    weights = stars.weights
    n = len(x)
    kept = np.ones(n, bool)
    seen = {kept.tobytes()}
    for rounds in range(_MAX_ROUNDS + 1):
        select = None if weights is None else weights[kept]
        coefficients = _fit_once(kind, x[kept], y[kept], u[kept], v[kept], select)
        tu, tv = Trend(kind, coefficients, kept, 0.0).offsets(x, y)
        du, dv = u - tu, v - tv
        if clip is None or n < _CLIP_STARS or rounds == _MAX_ROUNDS:
            break
        new = ~robust_outliers(du, dv, clip, reference=kept, sigma=stars.sigma)
        if new.tobytes() in seen or np.count_nonzero(new) < math.ceil(n / 2):
            break
        seen.add(new.tobytes())
        kept = new
    coefficients.flags.writeable = False
    kept = kept.copy()
    kept.flags.writeable = False
    rms = float(np.sqrt(np.mean(du[kept] ** 2 + dv[kept] ** 2)))
    return Trend(kind, coefficients, kept, rms)
