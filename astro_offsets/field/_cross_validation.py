"""K-fold cross-validation of offset fields, and the choice of ``method="auto"``."""

import contextlib
import math

import numpy as np
from astropy.table import Table

from ._clipping import fit_field, robust_outliers
from ._methods import METHODS, residuals

__all__ = ["N_FOLDS", "cross_validate", "default_candidates", "n_folds_for"]

N_FOLDS = 5
# Folds are drawn from this seed, so that the same stars always give the
# same folds, the same table and the same choice.
_FOLD_SEED = 20260101


def n_folds_for(n_stars, n_folds=N_FOLDS):
    """Return the number of folds usable with ``n_stars`` stars (0: none)."""
    return min(n_folds, n_stars) if n_stars >= 2 else 0


def _training_size(n_stars, n_folds):
    return n_stars - math.ceil(n_stars / max(n_folds, 1))


def default_candidates(n_stars, n_folds=N_FOLDS):
    """Return the ``(method, value)`` pairs ``"auto"`` compares for ``n_stars`` stars.

    Each method offers its own for folds of that many training stars: the
    quadrant field powers 1 and 2; polynomials of degree 1 to 7 while every
    fold trains on two stars per coefficient; thin-plate splines of
    smoothing 1e-4 to 0.1 while folds train on 10 to 1500 stars.
    """
    train = _training_size(n_stars, n_folds_for(n_stars, n_folds))
    return [(name, value) for name, m in METHODS.items() for value in m.candidates(train)]


def _fold_labels(n, n_folds):
    labels = np.empty(n, dtype=np.int64)
    labels[np.random.default_rng(_FOLD_SEED).permutation(n)] = np.arange(n) % n_folds
    return labels


def _held_out_residuals(method, value, norm, stars, labels, n_folds, fit):
    """Residuals of each star against the field fitted to the other folds.

    ``fit`` is the candidate's fit to all stars: the folds' fits leave out
    the stars it clipped rather than clipping again.
    """
    found = method.held_out(fit, value, norm, stars, labels)
    if found is not None:
        return found
    du = np.empty(len(labels))
    dv = np.empty(len(labels))
    for fold in range(n_folds):
        test = labels == fold
        train = ~test & ~fit.clipped
        fold_fit = fit_field(method, value, norm, stars.subset(train), None)
        du[test], dv[test] = residuals(fold_fit.field, stars, test)
    return du, dv


def _outliers(du, dv, clip, sigma):
    """Held-out residuals beyond ``clip`` robust sigmas, clipped iteratively.

    Clipping stops before it would leave fewer than half of the finite
    residuals: a small ``clip`` must not leave a handful of stars to score.
    """
    outliers = ~(np.isfinite(du) & np.isfinite(dv))
    if clip is None:
        return outliers
    least = math.ceil(np.count_nonzero(~outliers) / 2)
    while not outliers.all():
        new = outliers | robust_outliers(du, dv, clip, reference=~outliers, sigma=sigma)
        if np.array_equal(new, outliers) or np.count_nonzero(~new) < least:
            break
        outliers = new
    return outliers


def _score(du, dv, scored, weights):
    """RMS and largest length of the held-out residual vectors of the scored stars.

    With ``weights``, the mean square is weighted by them: the well-measured
    stars tell the field's error, the others mostly their own noise.
    """
    r = np.hypot(du[scored], dv[scored])
    if not r.size or not np.isfinite(r).all():
        return math.nan, math.nan
    if weights is None:
        return float(np.sqrt(np.mean(r * r))), float(r.max())
    w = weights[scored]
    return float(np.sqrt(np.sum(w * r * r) / np.sum(w))), float(r.max())


def cross_validate(norm, stars, candidates, *, n_folds=N_FOLDS, clip=3.0, fits=None):
    """Cross-validate candidate fields on the stars.

    Parameters
    ----------
    norm : `~astro_offsets.field._methods.CoordinateScaling`
        Normalised coordinates of the fits.
    stars : `~astro_offsets.field._methods.Stars`
        The stars, with their uncertainties or not.
    candidates : list of tuple
        ``(method name, value)`` pairs.
    n_folds : int, optional
        Number of folds (fewer when there are fewer stars).
    clip : float or `None`, optional
        Sigma-clipping threshold, for the fits and for the held-out residuals
        that are scored.
    fits : dict or `None`, optional
        Fits to all stars by ``(method name, value)``, made with this
        ``clip``: those given are used rather than fitted again, and those
        made here are added (without their state, to spare memory).

    Returns
    -------
    `~astropy.table.Table`
        One row per candidate; see `OffsetModel.cross_validate`.
    """
    n = len(stars.x)
    folds = n_folds_for(n, n_folds)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 stars, got {n}")
    labels = _fold_labels(n, folds)
    train = _training_size(n, folds)
    results = {}
    fits = {} if fits is None else fits

    def held_out(candidate):
        if candidate not in results:
            name, value = candidate
            method = METHODS[name]
            found = (np.full(n, np.nan), np.full(n, np.nan)), 0
            if train >= method.min_stars(value):
                # A field the stars cannot determine is no candidate: NaN scores.
                with contextlib.suppress(ValueError):
                    fit = fits.get(candidate)
                    if fit is None:
                        fit = fit_field(method, value, norm, stars, clip)
                        fits[candidate] = fit._replace(state=None)
                    found = (
                        _held_out_residuals(method, value, norm, stars, labels, folds, fit),
                        int(np.count_nonzero(fit.clipped)),
                    )
            results[candidate] = found
        return results[candidate]

    # Every candidate is scored on the same stars, whatever is compared: all
    # but those whose held-out residual is an outlier for every referee (the
    # quadrant field, which follows every neighbour, and the polynomials,
    # which follow the smooth field): mismatched stars. A star that one of
    # them follows (a local distortion, a frame's edge) counts.
    referees = [(name, value) for name, m in METHODS.items() for value in m.referees(train)]
    excluded = np.logical_and.reduce(
        [_outliers(*held_out(referee)[0], clip, stars.sigma) for referee in referees]
    )
    scored = ~excluded
    rows = []
    for name, value in candidates:
        (du, dv), n_clipped = held_out((name, value))
        rms, largest = _score(du, dv, scored, stars.weights)
        rows.append((name, METHODS[name].describe(value), rms, largest, n_clipped))
    table = Table(
        rows=rows,
        names=("method", "parameters", "cv_rms", "cv_max", "n_clipped"),
        dtype=(str, str, float, float, int),
        meta={"n_stars": n, "n_folds": folds, "clip": clip, "n_scored": int(scored.sum())},
    )
    table["cv_rms"].unit = table["cv_max"].unit = "pix"
    finite = np.isfinite(table["cv_rms"])
    table["selected"] = False
    if finite.any():
        best = int(np.flatnonzero(finite)[np.argmin(np.asarray(table["cv_rms"])[finite])])
        table["selected"][best] = True
    table["cv_rms"].format = table["cv_max"].format = ".4f"
    return table
