"""What a field method is: its parameter, its fit, the candidates it offers ``auto``.

A method fits a *field* to stars. A field evaluates offsets at points
(``points``) and fills the tiles of a map (``for_grid(shape).fill``); it
gives a pixel the same value in any tile, so maps do not depend on how they
are tiled. ``with_trend(trend)`` returns the field plus an affine trend
(`~astro_offsets.field._trend.Trend`), folded into the field's own
evaluation so that it costs next to nothing and points and maps still agree.
"""

from typing import NamedTuple

import numpy as np

from ..._utils.validation import real

__all__ = ["FieldMethod", "Fit", "CoordinateScaling", "Stars", "evaluate", "residuals"]


class CoordinateScaling:
    """The star positions scaled to [-1, 1]: centre and half-size of their bounding box.

    A change of coordinates only, unrelated to the normalisation of frames
    in a stack (`astro_offsets.stack.Normalisation`).

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
        """Return normalised x."""
        return (x - self.cx) / self.scale

    def v(self, y):
        """Return normalised y."""
        return (y - self.cy) / self.scale


class Stars(NamedTuple):
    """The stars of a fit: positions, offsets and the offsets' uncertainty."""

    x: np.ndarray
    y: np.ndarray
    x_offset: np.ndarray
    y_offset: np.ndarray
    sigma: np.ndarray | None = None
    """Each offset's standard uncertainty (px, either axis), or `None`: all alike."""

    def subset(self, mask):
        """Return the stars selected by ``mask`` (boolean or indices)."""
        sigma = None if self.sigma is None else self.sigma[mask]
        return Stars(self.x[mask], self.y[mask], self.x_offset[mask], self.y_offset[mask], sigma)

    @property
    def weights(self):
        """Each star's weight in a fit, the inverse of its variance, or `None`."""
        return None if self.sigma is None else 1.0 / self.sigma**2


class Fit(NamedTuple):
    """A field fitted to stars."""

    field: object
    """The field."""
    clipped: np.ndarray
    """Boolean mask of the stars sigma-clipping left out of the fit."""
    state: object = None
    """What the method keeps of the fit for its cross-validation, if anything."""


def evaluate(field, px, py):
    """Return the field at 1-D finite points, as two float64 arrays."""
    out_u = np.empty(px.shape)
    out_v = np.empty(px.shape)
    if px.size:
        field.points(np.ascontiguousarray(px), np.ascontiguousarray(py), out_u, out_v)
    return out_u, out_v


def residuals(field, stars, mask):
    """Return the offsets of the stars in ``mask`` minus the field there.

    A field may read itself at the stars otherwise than at other points
    (``at_stars``: a thin-plate spline skips its lattice there).
    """
    px, py = np.ascontiguousarray(stars.x[mask]), np.ascontiguousarray(stars.y[mask])
    fu, fv = np.empty(px.shape), np.empty(px.shape)
    if px.size:
        getattr(field, "at_stars", field.points)(px, py, fu, fv)
    return stars.x_offset[mask] - fu, stars.y_offset[mask] - fv


class FieldMethod:
    """One way of making an offset field from stars.

    A method is one module of ``astro_offsets.field._methods`` that defines
    ``METHOD``, an instance of a subclass: adding a module adds the method
    to `OffsetModel`, ``method="auto"``, the map headers and the command
    line. Subclasses set the class attributes and implement `fit`; the other
    methods have defaults.
    """

    name = ""
    """The method's name, as users give it: ``method="polynomial"``."""
    parameter = ""
    """The name of its one parameter, a keyword of `OffsetModel`."""
    default = None
    """The parameter's default."""
    convert = float
    """Turns the parameter's text (command line) into its value."""
    summary = ""
    """One line for the command line's help."""
    order = 0
    """Its place among the methods (choices, candidates, tables)."""
    clipped = True
    """Whether sigma-clipping applies: not to a field through every star."""
    clip_rounds = 10
    """The most rounds of sigma-clipping, each a fit."""

    def check(self, value):
        """Return the parameter as the method uses it; raise `ValueError` if it is out of range."""
        return real(value, self.parameter)

    def describe(self, value):
        """Return the parameter in words: ``"degree=4"``."""
        return f"{self.parameter}={value:g}"

    def field_name(self, value):
        """Return the field in words, for messages: ``"a polynomial of degree 4"``."""
        return f"a {self.name} field"

    def min_stars(self, value):
        """Return the fewest stars the method can fit with this parameter."""
        return 1

    def clip_stars(self, value):
        """Return the fewest stars a fit is sigma-clipped with.

        At least 10, and two per free coefficient: with fewer, every star
        pulls the fit so hard that good ones look like outliers.
        """
        return max(10, 2 * self.min_stars(value))

    def candidates(self, n_train):
        """Return the parameters ``auto`` compares, for folds of ``n_train`` stars."""
        return ()

    def referees(self, n_train):
        """Return the parameters whose held-out residuals tell mismatched stars.

        Cross-validation scores every candidate on the same stars: all but
        those that are outliers for every referee.
        """
        return ()

    def fit(self, norm, stars, value, loo):
        """Fit the field to stars.

        Parameters
        ----------
        norm : `CoordinateScaling`
            Normalised coordinates of the fit.
        stars : `Stars`
            Contiguous float64 positions and offsets, with their
            uncertainties (the fit weighs each star by the inverse of its
            variance) or not.
        value
            The parameter.
        loo : bool
            Also return each star's leave-one-out residuals.

        Returns
        -------
        field : object
            Has ``points`` and ``for_grid``.
        loo : tuple of `~numpy.ndarray` or `None`
            ``(du, dv)``, with ``loo``.
        state : object
            Kept in `Fit.state` for `held_out`.

        Raises
        ------
        ValueError
            If the stars cannot determine the field.
        """
        raise NotImplementedError

    def held_out(self, fit, value, norm, stars, labels):
        """Return each star's residual against the field fitted without its fold, or `None`.

        `None` (the default) lets cross-validation refit the field for each
        fold; a method that can do better (thin-plate splines: exactly, from
        one inverse) returns ``(du, dv)``.
        """
        return None

    def map_warning(self, norm, stars, shape):
        """Return a warning about a map of ``shape`` from this fit, or `None`."""
        return None
