"""The quadrant inverse-distance field: the nearest star of each quadrant, weighted.

The field defined in docs/field.rst, "Definition" (:ref:`field-definition`),
exact at every point: the compiled kernel
(``field/_quadrant.pyx``) evaluates it at points and on map tiles alike.
"""

from ..._utils.validation import real
from .._quadrant import field_grid, field_points
from ._base import FieldMethod

__all__ = ["METHOD"]

_MAX_POWER = 10.0


class _QuadrantField:
    def __init__(self, stars, power, trend=None):
        # The kernel takes the positions and offsets; the field interpolates
        # every star, whatever its uncertainty.
        self.stars = tuple(stars[:4])
        self.power = power
        # The trend's coefficients, which the kernel adds pixel by pixel.
        self.trend = None if trend is None else tuple(map(float, trend.coefficients))

    def with_trend(self, trend):
        return _QuadrantField(self.stars, self.power, trend)

    def points(self, px, py, out_u, out_v):
        field_points(*self.stars, self.power, px, py, out_u, out_v, self.trend)

    def for_grid(self, shape):
        return self

    def fill(self, x0, y0, out_u, out_v):
        field_grid(*self.stars, self.power, x0, y0, out_u, out_v, self.trend)


class Quadrant(FieldMethod):
    """The quadrant field passes through every star: it is never clipped."""

    name = "quadrant"
    parameter = "power"
    default = 1.0
    summary = "quadrant: inverse-distance power (default: 1)"
    order = 0
    clipped = False

    def check(self, value):
        return real(value, "power", low=0, high=_MAX_POWER, low_open=True)

    def candidates(self, n_train):
        return (1.0, 2.0)

    def referees(self, n_train):
        # It follows every neighbour: a star it cannot predict from them is
        # a suspect.
        return (self.default,)

    def fit(self, norm, stars, value, loo):
        return _QuadrantField(stars, value), None, None


METHOD = Quadrant()
