"""Stars weighed by their uncertainties; exact held-out residuals; splines through knots."""

import numpy as np
import pytest
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from astro_offsets import OffsetModel
from astro_offsets.datasets import CameraMotion, LocalDistortion
from astro_offsets.field._clipping import fit_field
from astro_offsets.field._cross_validation import _fold_labels
from astro_offsets.field._methods import METHODS, CoordinateScaling, Stars, residuals

SHAPE = (1600, 2400)
LENS = CameraMotion(
    SHAPE, drift=(25.0, -14.0), rotation_deg=0.4, pole=(-1500.0, 6000.0), barrel=1.5e-8
)
BUMP = LocalDistortion(LENS, (1500.0, 600.0), 180.0, (1.2, -0.8))
GRID_Y, GRID_X = np.mgrid[0 : SHAPE[0] : 16, 0 : SHAPE[1] : 16].astype(float)


def heteroscedastic(motion, n=600, seed=3):
    """Stars whose centroid noise spans 0.01 to 0.3 px, as from SNR 300 down to 10."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, SHAPE[1] - 1, n)
    y = rng.uniform(0, SHAPE[0] - 1, n)
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(0.3), n))
    dx, dy = motion.offset(x, y)
    return x, y, dx + rng.normal(0, sigma), dy + rng.normal(0, sigma), sigma


def error(model, motion):
    true_x, true_y = motion.offset(GRID_X, GRID_Y)
    dx, dy = model(GRID_X, GRID_Y)
    return float(np.sqrt(np.mean((dx - true_x) ** 2 + (dy - true_y) ** 2)))


@pytest.mark.parametrize(
    ("options", "motion"),
    [({"method": "polynomial", "degree": 4}, LENS), ({"method": "thin-plate"}, BUMP)],
)
def test_weights_bring_the_fit_closer_to_the_truth(options, motion):
    x, y, dx, dy, sigma = heteroscedastic(motion)
    plain = OffsetModel(x, y, dx, dy, **options)
    weighted = OffsetModel(x, y, dx, dy, uncertainty=sigma, **options)
    assert weighted.meta["weighted"]
    assert not plain.meta["weighted"]
    assert error(weighted, motion) < 0.7 * error(plain, motion)
    # Unweighted, the noisy stars look like outliers and are clipped; judged
    # against their own uncertainties, hardly any is.
    noisy = sigma > 0.1
    assert plain.clipped[noisy].mean() > 0.1
    assert weighted.clipped[noisy].mean() < 0.05


def test_auto_with_weights_scores_on_the_well_measured_stars():
    x, y, dx, dy, sigma = heteroscedastic(LENS, n=500)
    auto = OffsetModel(x, y, dx, dy, method="auto", uncertainty=sigma)
    plain = OffsetModel(x, y, dx, dy, method="auto")
    assert error(auto, LENS) < error(plain, LENS)
    # The weighted CV RMS is near the good stars' noise, not the bad ones'.
    assert auto.cv_rms < 0.1 < plain.cv_rms


@pytest.mark.parametrize("weighted", [False, True])
def test_polynomial_folds_equal_refits(weighted):
    x, y, dx, dy, sigma = heteroscedastic(LENS, n=300, seed=5)
    stars = Stars(x, y, dx, dy, sigma if weighted else None)
    norm = CoordinateScaling(x, y)
    method = METHODS["polynomial"]
    fit = fit_field(method, 3, norm, stars, 3.0)
    labels = _fold_labels(len(x), 5)
    du, dv = method.held_out(fit, 3, norm, stars, labels)
    assert fit.clipped.any()
    for fold in range(5):
        # Each fold's stars in the fit: as if the fit were made without them.
        test = (labels == fold) & ~fit.clipped
        train = (labels != fold) & ~fit.clipped
        refit = fit_field(method, 3, norm, stars.subset(train), None)
        ru, rv = residuals(refit.field, stars, test)
        np.testing.assert_allclose(du[test], ru, atol=1e-10)
        np.testing.assert_allclose(dv[test], rv, atol=1e-10)
    # The clipped stars, in no fit: against the fit to all.
    cu, cv = residuals(fit.field, stars, fit.clipped)
    np.testing.assert_array_equal(du[fit.clipped], cu)
    np.testing.assert_array_equal(dv[fit.clipped], cv)


def test_thin_plate_goes_through_a_spread_of_knots():
    x, y, dx, dy, sigma = heteroscedastic(BUMP, n=1500, seed=7)
    model = OffsetModel(x, y, dx, dy, method="thin-plate", uncertainty=sigma)
    spline = model._field.spline
    assert len(spline.y) <= 400
    # Spread over the frame: every 400 x 400 px block of it holds knots.
    kx, ky = spline.y[:, 0], spline.y[:, 1]
    px = model._norm.cx + kx * model._norm.scale
    py = model._norm.cy + ky * model._norm.scale
    blocks = {(int(a // 400), int(b // 400)) for a, b in zip(px, py, strict=True)}
    assert len(blocks) == 24
    assert error(model, BUMP) < 0.05


def test_thin_plate_clipping_stops_after_three_rounds(monkeypatch):
    # Past three rounds, a spline through 400 of 1500 stars only swaps a
    # few stars near the threshold in and out, at a fit each (0.02 s).
    import astro_offsets.field._methods.thin_plate as thin_plate

    fits = []
    fit = thin_plate._fit_thin_plate
    monkeypatch.setattr(thin_plate, "_fit_thin_plate", lambda *a: fits.append(1) or fit(*a))
    x, y, dx, dy, sigma = heteroscedastic(BUMP, n=1500, seed=7)
    model = OffsetModel(x, y, dx, dy, method="thin-plate", uncertainty=sigma)
    assert len(fits) == 4  # the first fit and three rounds
    assert model.clipped.mean() < 0.03
    assert error(model, BUMP) < 0.05


def test_uncertainties_from_a_table_and_their_errors(tmp_path):
    x, y, dx, dy, sigma = heteroscedastic(LENS, n=50)
    table = Table({"x": x, "y": y, "x_offset": dx, "y_offset": dy})
    table["xoffset_err"] = sigma
    table["yoffset_err"] = 2 * sigma
    model = OffsetModel.from_table(table, method="polynomial", degree=2)
    np.testing.assert_allclose(model._stars.sigma, sigma * np.sqrt(2.5))
    # The literal quadrant field goes through every star whatever its uncertainty.
    assert OffsetModel.from_table(table[["x", "y", "x_offset", "y_offset"]], trend=None).meta == {
        **OffsetModel.from_table(table, trend=None).meta
    }
    bad = sigma.copy()
    bad[3] = 0.0
    with pytest.raises(ValueError, match=r"stars: uncertainty must be positive, found 0\.0"):
        OffsetModel(x, y, dx, dy, uncertainty=bad)
    bad[3] = np.nan
    with pytest.warns(
        AstropyUserWarning,
        match="dropped 1 of 50 stars with NaN or infinite position, offset or uncertainty",
    ):
        assert len(OffsetModel(x, y, dx, dy, uncertainty=bad)) == 49
    with pytest.raises(ValueError, match="star arrays differ in length"):
        OffsetModel(x, y, dx, dy, uncertainty=sigma[:10])
