"""A 2-D polynomial per axis, least-squares fitted in normalised coordinates."""

import contextlib

import numpy as np

from ..._utils.polynomial import Polynomial, n_terms
from ..._utils.validation import integer
from ._base import FieldMethod, residuals

__all__ = ["METHOD"]

_MAX_DEGREE = 10
_CANDIDATES = range(1, 8)


class _PolynomialField:
    """``sum c[i, j] u**i v**j`` over ``i + j <= degree``, for each axis.

    Maps and points take the same steps (`Polynomial`), so they agree bit
    for bit.
    """

    def __init__(self, norm, polynomial):
        self.norm = norm
        self.polynomial = polynomial

    def with_trend(self, trend):
        """Return the field plus the trend, folded into the polynomial's coefficients."""
        a0, a1, a2, b0, b1, b2 = trend.coefficients
        norm, scale = self.norm, self.norm.scale
        c = self.polynomial.coefficients
        degree = max(1, c.shape[1] - 1)
        coefficients = np.zeros((c.shape[0], degree + 1, degree + 1))
        coefficients[:, : c.shape[1], : c.shape[2]] = c
        # c0 + c1 x + c2 y in u = (x - cx) / scale, v = (y - cy) / scale.
        for k, (c0, c1, c2) in enumerate(((a0, a1, a2), (b0, b1, b2))):
            coefficients[k, 0, 0] += c0 + c1 * norm.cx + c2 * norm.cy
            coefficients[k, 1, 0] += c1 * scale
            coefficients[k, 0, 1] += c2 * scale
        return _PolynomialField(norm, Polynomial(coefficients))

    def points(self, px, py, out_u, out_v):
        out_u[:], out_v[:] = self.polynomial(self.norm.u(px), self.norm.v(py))

    def for_grid(self, shape):
        return self

    def fill(self, x0, y0, out_u, out_v):
        ny, nx = out_u.shape
        u = self.norm.u(x0 + np.arange(nx, dtype=np.float64))[None, :]
        v = self.norm.v(y0 + np.arange(ny, dtype=np.float64))[:, None]
        self.polynomial.grid(u, v, (out_u, out_v))


class PolynomialMethod(FieldMethod):
    """Smooth and noise-averaging: lens distortion, field rotation, refraction."""

    name = "polynomial"
    parameter = "degree"
    default = 3
    convert = int
    summary = "polynomial: degree (default: 3)"
    order = 1

    def check(self, value):
        return integer(value, "degree", low=0, high=_MAX_DEGREE)

    def field_name(self, value):
        return f"a polynomial of degree {value}"

    def min_stars(self, value):
        return n_terms(value)

    def candidates(self, n_train):
        # Every fold trains on two stars per coefficient at least.
        return tuple(d for d in _CANDIDATES if n_train >= 2 * self.min_stars(d))

    def referees(self, n_train):
        # They follow the smooth field: a star none of them predicts is a
        # suspect.
        return self.candidates(n_train)

    def fit(self, norm, stars, value, loo):
        values = np.column_stack([stars.x_offset, stars.y_offset])
        try:
            polynomial, basis = Polynomial.fit(
                norm.u(stars.x), norm.v(stars.y), values, value, weights=stars.weights
            )
        except ValueError as error:
            raise ValueError(
                f"cannot fit a polynomial of degree {value} to {len(stars.x)} stars: their "
                f"positions {error} (are they on one line, or on too few distinct points?)"
            ) from None
        field = _PolynomialField(norm, polynomial)
        if not loo:
            return field, None, basis
        # Leave-one-out residuals of a least-squares fit: residual / (1 - leverage).
        free = 1.0 - np.einsum("ij,ij->i", basis, basis)
        du, dv = residuals(field, stars, slice(None))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(free > 1e-9, 1.0 / free, np.nan)  # NaN: a star the fit must pass
        return field, (du * scale, dv * scale), basis

    def held_out(self, fit, value, norm, stars, labels):
        """Residuals against the polynomial fitted without each fold, from the fit's basis.

        For a group ``T`` of stars in a least-squares fit, with ``Q`` the
        orthonormal basis of the (weighted) design matrix, the residuals of
        the fit without ``T`` are ``(I - Q_T Q_T^T)^-1 e_T``: by Woodbury's
        identity, ``e_T + Q_T (I - Q_T^T Q_T)^-1 Q_T^T e_T``, one small solve
        per fold rather than a refit. A clipped star, in no fit, is compared
        with the polynomial.
        """
        kept = ~fit.clipped
        fitted = stars.subset(kept)
        basis = fit.state
        if basis is None:
            _, _, basis = self.fit(norm, fitted, value, False)
        root = 1.0 if fitted.sigma is None else 1.0 / fitted.sigma[:, None]
        errors = np.column_stack(residuals(fit.field, fitted, slice(None))) * root
        held = np.full(errors.shape, np.nan)
        folds = labels[kept]
        for fold in np.unique(folds):
            group = folds == fold
            q = basis[group]
            # The fit without the fold is not determined: not scored.
            with contextlib.suppress(np.linalg.LinAlgError):
                inner = np.linalg.solve(np.eye(q.shape[1]) - q.T @ q, q.T @ errors[group])
                held[group] = errors[group] + q @ inner
        du = np.empty(len(labels))
        dv = np.empty(len(labels))
        du[kept], dv[kept] = (held / root).T
        du[fit.clipped], dv[fit.clipped] = residuals(fit.field, stars, fit.clipped)
        return du, dv

    def map_warning(self, norm, stars, shape):
        ny, nx = shape
        x, y = stars.x, stars.y
        reach = max(
            float(x.min()), nx - 1 - float(x.max()), float(y.min()), ny - 1 - float(y.max())
        )
        if reach > norm.scale:
            return (
                f"the polynomial map of shape {shape} reaches {reach:.0f} px beyond the stars, "
                f"which span {2 * norm.scale:.0f} px: a polynomial extrapolated that far is "
                "unreliable"
            )
        return None


METHOD = PolynomialMethod()
