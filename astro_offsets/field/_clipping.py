"""Fitting a field with iterative sigma-clipping of the stars it cannot follow."""

import math

import numpy as np
from astropy.stats import mad_std

from ._methods import Fit, residuals

__all__ = ["fit_field", "robust_outliers"]

# Residuals below this (px, per axis) are never called outliers: a fit that
# is exact to rounding must not reject stars over differences of 1e-12 px.
_SIGMA_FLOOR = 0.005
_MAX_CLIP_ITERATIONS = 10


def robust_outliers(du, dv, clip, reference=None, sigma=None):
    """Return which residuals lie beyond ``clip`` robust sigmas in either axis.

    The sigma of each axis is the MAD-based standard deviation
    (`~astropy.stats.mad_std`) of the finite residuals in ``reference`` (a
    boolean mask; all when `None`), at least 0.005 px; the centre is their
    median. With ``sigma``, each star's uncertainty, the residuals are
    divided by it first: a star measured worse may stray further. NaN
    residuals are not outliers.
    """
    floor = _SIGMA_FLOOR
    if sigma is not None:
        du, dv = du / sigma, dv / sigma
        floor = _SIGMA_FLOOR / float(np.median(sigma))
    outliers = np.zeros(du.shape, bool)
    for d in (du, dv):
        sample = d if reference is None else d[reference]
        sample = sample[np.isfinite(sample)]
        if not sample.size:
            continue
        centre = np.median(sample)
        spread = max(float(mad_std(sample)), floor)
        with np.errstate(invalid="ignore"):
            outliers |= np.abs(d - centre) > clip * spread
    return outliers


def fit_field(method, value, norm, stars, clip):
    """Fit a field to stars, rejecting outliers by iterative sigma-clipping.

    A star in the fit is judged by its leave-one-out residual (its offset
    minus the field fitted without it), a star left out by its residual
    against the field; the fit is repeated until no star changes side, or the
    same stars come back, or ``method.clip_rounds`` times (10 at most).
    Clipping never leaves fewer stars than
    half, or than the fit needs, and a fit to fewer than
    ``method.clip_stars(value)`` stars is not clipped.

    Parameters
    ----------
    method : `~astro_offsets.field._methods.FieldMethod`
        The method.
    value : float or int
        Its parameter.
    norm : `~astro_offsets.field._methods.CoordinateScaling`
        Normalised coordinates of the fit.
    stars : `~astro_offsets.field._methods.Stars`
        The stars, with their uncertainties or not.
    clip : float or `None`
        Sigma-clipping threshold; `None` keeps all stars, as does a method
        that interpolates every star (``method.clipped`` false).

    Returns
    -------
    `~astro_offsets.field._methods.Fit`
    """
    n = len(stars.x)
    clipped = np.zeros(n, bool)
    clipping = method.clipped and clip is not None
    field, loo, state = method.fit(norm, stars, value, clipping)
    if not clipping or n < method.clip_stars(value):
        return Fit(field, clipped, state)
    least = max(method.min_stars(value) + 1, math.ceil(n / 2))
    seen = {clipped.tobytes()}
    du, dv = np.empty(n), np.empty(n)
    for _ in range(min(_MAX_CLIP_ITERATIONS, method.clip_rounds)):
        du[~clipped], dv[~clipped] = loo
        du[clipped], dv[clipped] = residuals(field, stars, clipped)
        new = robust_outliers(du, dv, clip, reference=~clipped, sigma=stars.sigma)
        if new.tobytes() in seen or n - np.count_nonzero(new) < least:
            break
        seen.add(new.tobytes())
        clipped = new
        field, loo, state = method.fit(norm, stars.subset(~clipped), value, True)
    return Fit(field, clipped, state)
