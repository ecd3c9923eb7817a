"""K-fold cross-validation of offset fields, and the choice of ``method="auto"``."""

import contextlib
import math

import numpy as np
from astropy.table import Table

from ._fields import (
    DEFAULTS,
    fit_field,
    min_stars,
    residuals,
    robust_outliers,
    thin_plate_folds,
)

__all__ = ["N_FOLDS", "default_candidates", "describe", "summary", "cross_validate"]

N_FOLDS = 5
# Folds are drawn from this seed, so that the same stars always give the
# same folds, the same table and the same choice.
_FOLD_SEED = 20260101
_POWERS = (1.0, 2.0)
_DEGREES = range(1, 8)
_SMOOTHINGS = (1e-4, 1e-3, 1e-2, 1e-1)
# Thin-plate splines are offered from this many training stars on, and up to
# this many: their fits cost O(n**3) (about 3 s for 1500 stars on 2 cores).
_THIN_PLATE_STARS = (10, 1500)


def describe(method, value):
    """Return ``"degree=4"`` and the like: a method's parameter in words."""
    name = DEFAULTS[method][0]
    return f"{name}={value:g}"


def summary(meta):
    """Return the field of a map or model's ``meta`` in words.

    Such as ``"polynomial degree=4 (auto), CV RMS 0.073 px, 3 stars clipped"``;
    `None` when ``meta`` names no method (a map the original notebook wrote).
    """
    method = meta.get("method")
    if method not in DEFAULTS:
        return None
    name = DEFAULTS[method][0]
    words = method if meta.get(name) is None else f"{method} {describe(method, meta[name])}"
    if meta.get("selection"):
        words += f" ({meta['selection']})"
    if meta.get("cv_rms") is not None:
        words += f", CV RMS {meta['cv_rms']:.3f} px"
    if meta.get("n_clipped"):
        words += f", {meta['n_clipped']} star{'s' if meta['n_clipped'] > 1 else ''} clipped"
    return words


def n_folds_for(n_stars, n_folds=N_FOLDS):
    """Return the number of folds usable with ``n_stars`` stars (0: none)."""
    return min(n_folds, n_stars) if n_stars >= 2 else 0


def _training_size(n_stars, n_folds):
    return n_stars - math.ceil(n_stars / n_folds)


def default_candidates(n_stars, n_folds=N_FOLDS):
    """Return the ``(method, value)`` pairs ``"auto"`` compares for ``n_stars`` stars.

    Quadrant fields (power 1 and 2) always; polynomials of degree 1 to 7 while
    every fold trains on at least two stars per coefficient; thin-plate
    splines of smoothing 1e-4 to 0.1 while folds train on 10 to 1500 stars.
    """
    train = _training_size(n_stars, max(n_folds_for(n_stars, n_folds), 1))
    found = [("quadrant", p) for p in _POWERS]
    found += [("polynomial", d) for d in _DEGREES if train >= 2 * min_stars("polynomial", d)]
    if _THIN_PLATE_STARS[0] <= train <= _THIN_PLATE_STARS[1]:
        found += [("thin-plate", s) for s in _SMOOTHINGS]
    return found


def _fold_labels(n, n_folds):
    labels = np.empty(n, dtype=np.int64)
    labels[np.random.default_rng(_FOLD_SEED).permutation(n)] = np.arange(n) % n_folds
    return labels


def _held_out_residuals(method, value, norm, stars, labels, n_folds, fit):
    """Residuals of each star against the field fitted to the other folds.

    ``fit`` is the candidate's `~astro_offsets._fields.Fit` to all stars: the
    folds' fits leave out the stars it clipped rather than clipping again.
    """
    if method == "thin-plate":
        return thin_plate_folds(fit, value, norm, stars, labels)
    du = np.empty(len(labels))
    dv = np.empty(len(labels))
    for fold in range(n_folds):
        test = labels == fold
        train = ~test & ~fit.clipped
        fold_fit = fit_field(method, value, norm, tuple(s[train] for s in stars), None)
        du[test], dv[test] = residuals(fold_fit.field, stars, test)
    return du, dv


def _outliers(du, dv, clip):
    """Held-out residuals beyond ``clip`` robust sigmas, clipped iteratively.

    Clipping stops before it would leave fewer than half of the finite
    residuals: a small ``clip`` must not leave a handful of stars to score.
    """
    outliers = ~(np.isfinite(du) & np.isfinite(dv))
    if clip is None:
        return outliers
    least = math.ceil(np.count_nonzero(~outliers) / 2)
    while not outliers.all():
        new = outliers | robust_outliers(du, dv, clip, reference=~outliers)
        if np.array_equal(new, outliers) or np.count_nonzero(~new) < least:
            break
        outliers = new
    return outliers


def _score(du, dv, scored):
    """RMS and largest length of the held-out residual vectors of the scored stars."""
    r = np.hypot(du[scored], dv[scored])
    if not r.size or not np.isfinite(r).all():
        return math.nan, math.nan
    return float(np.sqrt(np.mean(r * r))), float(r.max())


def cross_validate(norm, stars, candidates, *, n_folds=N_FOLDS, clip=3.0, fits=None):
    """Cross-validate candidate fields on the stars.

    Parameters
    ----------
    norm : `~astro_offsets._fields.Normalisation`
        Normalised coordinates of the fits.
    stars : tuple of `~numpy.ndarray`
        ``(x, y, x_offset, y_offset)``.
    candidates : list of tuple
        ``(method, value)`` pairs.
    n_folds : int, optional
        Number of folds (fewer when there are fewer stars).
    clip : float or `None`, optional
        Sigma-clipping threshold, for the fits and for the held-out residuals
        that are scored.
    fits : dict or `None`, optional
        Fits to all stars by ``(method, value)``, made with this ``clip``:
        those given are used rather than fitted again, and those made here
        are added (without their thin-plate star block, to spare memory).

    Returns
    -------
    `~astropy.table.Table`
        One row per candidate; see `OffsetModel.cross_validate`.
    """
    n = len(stars[0])
    folds = n_folds_for(n, n_folds)
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 stars, got {n}")
    labels = _fold_labels(n, folds)
    train = _training_size(n, folds)
    results = {}

    fits = {} if fits is None else fits

    def held_out(candidate):
        if candidate not in results:
            method, value = candidate
            found = (np.full(n, np.nan), np.full(n, np.nan)), 0
            if train >= min_stars(method, value):
                # A spline through collinear stars is no candidate: NaN scores.
                with contextlib.suppress(ValueError):
                    fit = fits.get(candidate)
                    if fit is None:
                        fit = fit_field(method, value, norm, stars, clip)
                        fits[candidate] = fit._replace(star_block=None)
                    found = (
                        _held_out_residuals(method, value, norm, stars, labels, folds, fit),
                        int(np.count_nonzero(fit.clipped)),
                    )
            results[candidate] = found
        return results[candidate]

    # Every candidate is scored on the same stars, whatever is compared: all
    # but those whose held-out residual is an outlier for the quadrant field
    # (which follows every neighbour) and for every polynomial (which follow
    # the smooth field) alike: mismatched stars. A star that one of them
    # follows (a local distortion, a frame's edge) counts.
    referees = [("quadrant", 1.0)] + [
        candidate for candidate in default_candidates(n, n_folds) if candidate[0] == "polynomial"
    ]
    excluded = np.logical_and.reduce(
        [_outliers(*held_out(referee)[0], clip) for referee in referees]
    )
    scored = ~excluded
    rows = []
    for method, value in candidates:
        (du, dv), n_clipped = held_out((method, value))
        rms, largest = _score(du, dv, scored)
        rows.append((method, describe(method, value), rms, largest, n_clipped))
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
