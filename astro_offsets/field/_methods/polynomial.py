"""A 2-D polynomial per axis, least-squares fitted in normalised coordinates."""

import numpy as np

from ..._utils.polynomial import Polynomial, n_terms
from ..._utils.validation import integer
from ._base import FieldMethod, evaluate

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

    def points(self, px, py, out_u, out_v):
        out_u[:], out_v[:] = self.polynomial(self.norm.u(px), self.norm.v(py))

    def for_grid(self, shape):
        return self

    def fill(self, x0, y0, out_u, out_v):
        ny, nx = out_u.shape
        u = self.norm.u(x0 + np.arange(nx, dtype=np.float64))[None, :]
        v = self.norm.v(y0 + np.arange(ny, dtype=np.float64))[:, None]
        out_u[...], out_v[...] = self.polynomial(u, v)


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
        x, y, *values = stars
        try:
            polynomial, leverage = Polynomial.fit(
                norm.u(x), norm.v(y), np.column_stack(values), value, leverage=loo
            )
        except ValueError as error:
            raise ValueError(
                f"cannot fit a polynomial of degree {value} to {len(x)} stars: their positions "
                f"{error} (are they on one line, or on too few distinct points?)"
            ) from None
        field = _PolynomialField(norm, polynomial)
        if not loo:
            return field, None, None
        # Leave-one-out residuals of a least-squares fit: residual / (1 - leverage).
        free = 1.0 - leverage
        fu, fv = evaluate(field, x, y)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(free > 1e-9, 1.0 / free, np.nan)  # NaN: a star the fit must pass
        return field, ((values[0] - fu) * scale, (values[1] - fv) * scale), None

    def map_warning(self, norm, stars, shape):
        ny, nx = shape
        x, y = stars[0], stars[1]
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
