"""Fitted fields (polynomial, thin-plate), sigma-clipping and method="auto"."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from tiling import same_map_for_any_tiling

from astro_offsets import OffsetMap, OffsetModel, write_maps
from astro_offsets._cli import main
from astro_offsets.datasets import CameraMotion, LocalDistortion, PolynomialMotion, star_offsets

SHAPE = (1600, 2400)
N_STARS = 400
NOISE = 0.05  # px, per offset component
# A wide-field lens (barrel and mustache terms, 3 % and 1 % at the corners)
# with field rotation about a pole outside the frame, and drift.
LENS = CameraMotion(
    SHAPE,
    drift=(25.0, -14.0),
    rotation_deg=0.4,
    pole=(-1500.0, 6000.0),
    barrel=1.5e-8,
    mustache=5e-15,
)
FIELDS = {
    "lens": LENS,
    "polynomial": PolynomialMotion(SHAPE),
    # A 1.4-px bump 180 px wide on the lens field: no low-order model follows it.
    "bump": LocalDistortion(LENS, (1500.0, 600.0), 180.0, (1.2, -0.8)),
}
GRID_Y, GRID_X = np.mgrid[0 : SHAPE[0] : 16, 0 : SHAPE[1] : 16].astype(float)


def true_error(model, motion):
    """RMS length of the model's error vector over the frame, in pixels."""
    true_x, true_y = motion.offset(GRID_X, GRID_Y)
    dx, dy = model(GRID_X, GRID_Y)
    return float(np.sqrt(np.mean((dx - true_x) ** 2 + (dy - true_y) ** 2)))


def stars(name, seed=1, mismatched=0.0):
    rng = np.random.default_rng(seed)
    return star_offsets(rng, FIELDS[name], SHAPE, N_STARS, noise=NOISE, mismatched=mismatched)


def candidate_model(columns, row):
    name, value = row["parameters"].split("=")
    value = int(value) if name == "degree" else float(value)
    return OffsetModel(*columns, method=row["method"], **{name: value})


@pytest.mark.parametrize(
    ("field", "winner"),
    [("lens", "polynomial"), ("polynomial", "polynomial"), ("bump", "thin-plate")],
)
def test_auto_lands_within_a_quarter_of_the_best_method(field, winner):
    *columns, _ = stars(field)
    auto = OffsetModel(*columns, method="auto")
    errors = [
        true_error(candidate_model(columns, row), FIELDS[field]) for row in auto.cross_validate()
    ]
    assert auto.method == winner
    assert true_error(auto, FIELDS[field]) <= 1.25 * min(errors)
    # The literal quadrant field is far from the best on every one of these fields.
    assert true_error(OffsetModel(*columns, trend=None), FIELDS[field]) > 2 * min(errors)


def test_polynomial_recovers_a_polynomial_field_to_the_noise_level():
    *columns, _ = stars("polynomial")
    model = OffsetModel(*columns, method="polynomial", degree=3)
    # Least squares with p = 10 coefficients per axis on n stars: the fitted
    # field's error is about NOISE * sqrt(p / n) per axis.
    expected = NOISE * np.sqrt(2 * 10 / N_STARS)
    assert true_error(model, FIELDS["polynomial"]) < 1.5 * expected
    # A degree too low is worse than the quadrant field, as on real lenses.
    *columns, _ = stars("lens")
    quadrant = true_error(OffsetModel(*columns), LENS)
    assert true_error(OffsetModel(*columns, method="polynomial", degree=2), LENS) > quadrant


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_mismatched_stars_are_clipped_and_barely_matter(field):
    *clean, _ = stars(field)
    *columns, bad = stars(field, mismatched=0.03)  # same stars and noise, 12 off by 5 px
    assert bad.sum() == 12
    auto_clean = OffsetModel(*clean, method="auto")
    auto = OffsetModel(*columns, method="auto")
    assert auto.clipped[bad].all()
    assert auto.meta["n_clipped"] == np.count_nonzero(auto.clipped)
    assert true_error(auto, FIELDS[field]) <= 1.5 * true_error(auto_clean, FIELDS[field])
    # Without clipping the same fit follows the bad stars.
    unclipped = OffsetModel(*columns, method=auto.method, clip=None, **_parameter(auto))
    assert true_error(unclipped, FIELDS[field]) > 1.5 * true_error(auto, FIELDS[field])


def _parameter(model):
    return {name: getattr(model, name) for name in ("degree", "smoothing") if getattr(model, name)}


def test_cross_validate_table():
    *columns, _ = stars("lens")
    model = OffsetModel(*columns)
    table = model.cross_validate()
    assert table.colnames == ["method", "parameters", "cv_rms", "cv_max", "n_clipped", "selected"]
    assert list(table["method"][:3]) == ["quadrant", "quadrant", "polynomial"]
    assert list(table["parameters"][:3]) == ["power=1", "power=2", "degree=1"]
    assert table["cv_rms"].unit == "pix"
    assert table["selected"].sum() == 1
    best = table[table["selected"]][0]
    assert best["cv_rms"] == np.nanmin(table["cv_rms"])
    assert (table["cv_max"] >= table["cv_rms"]).all()
    assert (table["n_clipped"][table["method"] == "quadrant"] == 0).all()
    assert table.meta["n_folds"] == 5
    # The same stars give the same folds and the same table.
    again = model.cross_validate()
    assert np.array_equal(again["cv_rms"], table["cv_rms"])
    # The stars scored do not depend on the candidates compared: a model of
    # one fixed method has its row's CV RMS, mismatched stars or not.
    *with_bad, _ = stars("lens", mismatched=0.03)
    full = OffsetModel(*with_bad).cross_validate()
    for row in (0, 5, 11):
        alone = candidate_model(with_bad, full[row])
        assert alone.cv_rms == full["cv_rms"][row], full[row]
    # The model chosen by auto carries the winner's CV RMS.
    auto = OffsetModel(*columns, method="auto")
    assert auto.cv_rms == best["cv_rms"]
    assert f"{auto.method} {best['parameters']}" in repr(auto)


def test_cross_validate_candidates_and_errors():
    *columns, _ = stars("polynomial")
    model = OffsetModel(*columns[:2], columns[2], columns[3])
    table = model.cross_validate([("polynomial", 3), ("thin-plate", 0.01)], n_folds=4)
    assert list(table["parameters"]) == ["degree=3", "smoothing=0.01"]
    assert table.meta["n_folds"] == 4
    few = OffsetModel([1.0, 5.0, 9.0, 2.0], [1.0, 8.0, 2.0, 6.0], [0.0] * 4, [0.0] * 4)
    # Degree 3 has more coefficients than the training stars: not fitted.
    assert np.isnan(few.cross_validate([("polynomial", 3)])["cv_rms"][0])
    with pytest.raises(ValueError, match=r"a candidate is a \(method, value\) pair"):
        model.cross_validate(["polynomial"])
    with pytest.raises(ValueError, match="candidate method must be one of"):
        model.cross_validate([("spline", 3)])
    with pytest.raises(ValueError, match=r"degree must be an integer in \[0, 10\], got 2\.5"):
        model.cross_validate([("polynomial", 2.5)])
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2, got 1"):
        model.cross_validate(n_folds=1)
    one = OffsetModel([3.0], [4.0], [1.0], [2.0])
    with pytest.raises(ValueError, match="cross-validation needs at least 2 stars, got 1"):
        one.cross_validate()
    assert one.cv_rms is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "spline"}, "method must be one of 'quadrant', 'polynomial', 'thin-plate'"),
        ({"degree": 3}, "the degree applies to the method polynomial, not to quadrant"),
        ({"method": "polynomial", "power": 2}, "the power applies to the method quadrant"),
        ({"method": "auto", "smoothing": 0.1}, "the method auto chooses the smoothing itself"),
        ({"method": "polynomial", "degree": 11}, r"degree must be an integer in \[0, 10\], got 11"),
        ({"method": "polynomial", "degree": True}, "degree must be an integer"),
        ({"method": "thin-plate", "smoothing": -1.0}, "smoothing must be a number >= 0, got -1.0"),
        ({"method": "thin-plate", "smoothing": np.nan}, "smoothing must be a number >= 0, got nan"),
        ({"clip": 0.0}, "clip must be a number > 0, got 0.0"),
        ({"sigma": 2.0}, "unknown field option 'sigma'"),
        ({"power": 0.0}, r"power must be a number in \(0, 10\]"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        OffsetModel([1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [0.0] * 3, [0.0] * 3, **options)


def test_too_few_stars_for_the_fit():
    x, y = [1.0, 5.0, 9.0, 2.0, 7.0, 3.0], [1.0, 8.0, 2.0, 6.0, 4.0, 9.0]
    with pytest.raises(ValueError, match=r"t\.ecsv: a polynomial of degree 3 needs at least 10"):
        OffsetModel(x, y, [0.0] * 6, [0.0] * 6, method="polynomial", source="t.ecsv")
    with pytest.raises(ValueError, match=r"thin-plate spline to 3 stars \(are they on one line"):
        OffsetModel([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0] * 3, [0.0] * 3, method="thin-plate")
    # auto falls back to what the stars allow: one star, the quadrant field.
    assert OffsetModel([4.0], [5.0], [1.0], [0.0], method="auto").method == "quadrant"
    assert OffsetModel(x, y, [0.0] * 6, [0.0] * 6, method="auto").method in (
        "quadrant",
        "polynomial",
    )


def test_exact_fields_reject_nothing():
    # A linear field without noise: the fit is exact to rounding, and residuals
    # of 1e-13 px are not outliers however small their spread.
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1000, (2, 60))
    dx, dy = 1.5 + 2e-3 * x - 1e-3 * y, -0.5 + 1e-3 * x
    for method in ("polynomial", "thin-plate"):
        model = OffsetModel(
            x, y, dx, dy, method=method, **({"degree": 1} if method == "polynomial" else {})
        )
        assert not model.clipped.any(), method
        fx, fy = model([100.0, 900.0], [50.0, 700.0])
        np.testing.assert_allclose(fx, [1.65, 2.6], atol=1e-6)
        np.testing.assert_allclose(fy, [-0.4, 0.4], atol=1e-6)
    with pytest.raises(ValueError, match="read-only"):
        model.clipped[0] = True


@pytest.mark.parametrize(
    "options", [{"method": "polynomial", "degree": 5}, {"method": "thin-plate", "smoothing": 0.01}]
)
def test_maps_are_bit_identical_for_any_tiling(options):
    *columns, _ = stars("bump")
    model = OffsetModel(*columns, **options)
    shape = (300, 460)  # not a multiple of the lattice step
    reference = same_map_for_any_tiling(model, shape)
    # The model at pixel centres is the map, before rounding to float32.
    ys, xs = np.mgrid[0:300:7, 0:460:11]
    dx, dy = model(xs.astype(float), ys.astype(float))
    tolerance = 0 if options["method"] == "polynomial" else 1e-6
    np.testing.assert_allclose(reference.x_offset[ys, xs], dx.astype(np.float32), atol=tolerance)
    np.testing.assert_allclose(reference.y_offset[ys, xs], dy.astype(np.float32), atol=tolerance)


def test_thin_plate_lattice_follows_the_spline():
    # The 16-px lattice and its interpolation add far less than centroid noise.
    *columns, _ = stars("bump")
    model = OffsetModel(*columns, method="thin-plate", smoothing=0.01)
    field = model._field
    px, py = GRID_X.ravel() + 0.37, GRID_Y.ravel() + 0.81
    exact = field.spline(np.column_stack([field.norm.u(px), field.norm.v(py)])).T
    exact += model._trend.offsets(px, py)
    assert np.abs(np.array(model(px, py)) - exact).max() < 0.005


def test_header_records_the_field(tmp_path):
    *columns, _ = stars("bump", mismatched=0.03)
    model = OffsetModel(*columns, method="auto", source="bump.offsets_table.fits")
    omap = model.to_map((120, 160))
    path = tmp_path / "bump.offsets.fits"
    omap.write(path)
    header = fits.getheader(path)
    assert header["METHOD"] == "thin-plate"
    assert header["SELECTED"] == "auto"
    assert (header["PARNAME"], header["PARVALUE"]) == ("smoothing", model.smoothing)
    assert header["CLIPSIG"] == 3.0
    assert header["NCLIPPED"] == np.count_nonzero(model.clipped) >= 12
    assert header["CVRMS"] == pytest.approx(model.cv_rms, abs=1e-6)
    meta = OffsetMap.read(path).meta
    assert (meta["method"], meta["selection"], meta["cv_rms"]) == (
        "thin-plate",
        "auto",
        header["CVRMS"],
    )
    # The quadrant field records its power; no cross-validation unless asked.
    quadrant = OffsetModel(*columns).to_map((20, 30))
    quadrant.write(tmp_path / "q.offsets.fits")
    header = fits.getheader(tmp_path / "q.offsets.fits")
    assert (header["METHOD"], header["PARNAME"], header["PARVALUE"]) == ("quadrant", "power", 1.0)
    assert "CVRMS" not in header
    # Its trend, and the clipping that kept mismatched stars out of it.
    assert (header["TREND"], header["CLIPSIG"]) == ("affine", 3.0)
    assert header["TRENDRMS"] == pytest.approx(quadrant.meta["trend_rms"], abs=1e-6)
    assert header["TRENDROT"] == pytest.approx(quadrant.meta["trend_rotation"], abs=1e-6)
    # The literal field clips nothing and has no trend.
    OffsetModel(*columns, trend=None).to_map((20, 30)).write(tmp_path / "literal.offsets.fits")
    header = fits.getheader(tmp_path / "literal.offsets.fits")
    assert "CLIPSIG" not in header
    assert "TREND" not in header
    assert "TRENDRMS" not in header
    assert "SELECTED" not in header


def test_plot_shows_the_field_and_clipped_stars():
    pytest.importorskip("matplotlib")
    *columns, _ = stars("lens", mismatched=0.03)
    model = OffsetModel(*columns, method="polynomial", degree=4)
    figure = model.to_map((160, 240)).plot()
    assert (
        figure.get_suptitle()
        == f"polynomial degree=4, {np.count_nonzero(model.clipped)} stars clipped; affine trend: "
        f"rotation {model.meta['trend_rotation']:.3f} deg, RMS {model.meta['trend_rms']:.3f} px"
    )
    assert f"({np.count_nonzero(model.clipped)} clipped: red)" in figure.axes[3].get_title()


def _write_tables(folder, fields):
    tables = []
    for k, field in enumerate(fields):
        x, y, dx, dy, _ = stars(field, seed=k)
        path = folder / f"F{k}.offsets_table.ecsv"
        Table({"x": x, "y": y, "x_offset": dx, "y_offset": dy}).write(path)
        tables.append(path)
    return tables


def test_cli_method_auto_prints_the_choice_per_frame(tmp_path, capsys):
    tables = _write_tables(tmp_path, ["lens", "bump"])
    status = main(["maps", *map(str, tables), "--shape", "64", "96", "--method", "auto"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out[0].startswith(f"{tmp_path / 'F0.offsets.fits'}: polynomial degree=")
    assert out[1].startswith(f"{tmp_path / 'F1.offsets.fits'}: thin-plate smoothing=")
    assert all("(auto), CV RMS 0.0" in line for line in out[:2])
    assert fits.getheader(tmp_path / "F1.offsets.fits")["SELECTED"] == "auto"


def test_cli_field_options(tmp_path, capsys):
    tables = _write_tables(tmp_path, ["polynomial"])
    argv = ["maps", str(tables[0]), "--shape", "64", "96", "--overwrite"]
    assert main([*argv, "--method", "polynomial", "--degree", "2", "--no-clip"]) == 0
    header = fits.getheader(tmp_path / "F0.offsets.fits")
    assert (header["PARVALUE"], header["NCLIPPED"]) == (2, 0)
    assert "CLIPSIG" not in header
    capsys.readouterr()
    assert main([*argv, "--method", "quadrant", "--degree", "2"]) == 2
    err = capsys.readouterr().err
    # Neither Python's names nor the command line's: the field's.
    assert "error: the degree applies to the method polynomial, not to quadrant" in err
    with pytest.raises(SystemExit):
        main([*argv, "--method", "thin-plate", "--clip", "0"])
    assert "expected a positive number, got '0'" in capsys.readouterr().err
    # --cv records a fixed method's CV RMS, which is otherwise not computed.
    assert main([*argv, "--method", "polynomial", "--cv"]) == 0
    assert capsys.readouterr().out.startswith(
        f"{tmp_path / 'F0.offsets.fits'}: polynomial degree=3, CV RMS "
    )
    assert fits.getheader(tmp_path / "F0.offsets.fits")["CVRMS"] > 0


def test_write_maps_checks_options_before_reading(tmp_path):
    with pytest.raises(ValueError, match="unknown field option"):
        write_maps([tmp_path / "missing.ecsv"], (10, 10), methd="auto")
    with pytest.raises(ValueError, match="degree applies"):
        write_maps([tmp_path / "missing.ecsv"], (10, 10), method="quadrant", degree=2)
    tables = _write_tables(tmp_path, ["polynomial"])
    [result] = write_maps(tables, (32, 48), method="polynomial", degree=3)
    assert result.status == "written"
    assert result.field.startswith("polynomial degree=3, 3 stars clipped; affine trend: rotation ")
    [result] = write_maps(tables, (32, 48), method="polynomial", degree=3, cv=True, overwrite=True)
    assert result.field.startswith("polynomial degree=3, CV RMS ")


def test_small_clip_keeps_half_of_the_stars_scored():
    rng = np.random.default_rng(5)
    for n, clip in ((20, 0.5), (200, 0.01)):
        x, y = rng.uniform(0, 500, (2, n))
        dx = 1.0 + 1e-3 * x + rng.normal(0, 0.05, n)
        dy = -2.0 + rng.normal(0, 0.05, n)
        model = OffsetModel(x, y, dx, dy, method="auto", clip=clip)
        table = model.cross_validate()
        assert table.meta["n_scored"] >= n / 2
        assert model.cv_rms is not None


def test_stars_that_cannot_determine_the_fit():
    x = np.linspace(0, 100, 20)
    y = np.full(20, 7.0)  # one horizontal line
    with pytest.raises(ValueError, match=r"line\.ecsv: cannot fit a polynomial of degree 2"):
        OffsetModel(x, y, x * 0, x * 0, method="polynomial", degree=2, source="line.ecsv")
    # auto still works: the quadrant field needs no fit.
    assert OffsetModel(x, y, 1e-3 * x, x * 0, method="auto").method == "quadrant"
    with pytest.raises(ValueError, match="a thin-plate spline needs at least 3 stars, got 2"):
        OffsetModel([1.0, 2.0], [3.0, 1.0], [0.0] * 2, [0.0] * 2, method="thin-plate")


def test_few_stars_are_not_clipped():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 300, (2, 15))
    dx, dy = rng.normal(0, 0.05, (2, 15))
    assert not OffsetModel(x, y, dx, dy, method="polynomial", degree=3).clipped.any()


def test_polynomial_extrapolation_warns():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(100, 120, (2, 30))
    dx, dy = rng.normal(0, 0.05, (2, 30))
    model = OffsetModel(x, y, dx, dy, method="polynomial", degree=3)
    with pytest.warns(AstropyUserWarning, match="reaches .* px beyond the stars"):
        model.to_map((200, 300))
    # Stars spread over the frame, with the usual margins: no warning.
    x, y = rng.uniform(20, 280, (2, 30))
    OffsetModel(x, y, dx, dy, method="polynomial", degree=3).to_map((300, 300))


def test_thin_plate_far_points_are_nan():
    *columns, _ = stars("bump")
    model = OffsetModel(*columns, method="thin-plate")
    dx, dy = model([5.0, 1e20, 700.0], [5.0, 3.0, np.nan])
    assert np.isfinite(dx[0])
    assert np.isnan(dx[1:]).all()
    assert np.isnan(dy[1:]).all()
    np.testing.assert_allclose(dx[0], model(5.0, 5.0)[0], atol=1e-9)


def test_the_polynomial_is_fitted_as_documented():
    # A QR least-squares fit (_utils/polynomial.py), not astropy.modeling: the docs say so,
    # and the field is that of numpy's least squares in the stars' scaled coordinates.
    import pathlib

    docs = pathlib.Path(__file__).parents[2] / "docs" / "methods.rst"
    texts = [OffsetModel.__doc__] + ([docs.read_text()] if docs.is_file() else [])
    assert not any("astropy.modeling" in text for text in texts)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 400, 60), rng.uniform(0, 300, 60)
    u = 1.0 + 0.01 * x - 2e-5 * x * y + rng.normal(0, 0.05, 60)
    v = -2.0 + 0.02 * y + 1e-5 * x**2 + rng.normal(0, 0.05, 60)
    model = OffsetModel(x, y, u, v, method="polynomial", degree=2, trend=None, clip=None)
    cx, cy = 0.5 * (x.min() + x.max()), 0.5 * (y.min() + y.max())
    half = 0.5 * max(np.ptp(x), np.ptp(y))
    s, t = (x - cx) / half, (y - cy) / half
    design = np.column_stack([s**i * t**j for i in range(3) for j in range(3 - i)])
    coefficients = np.linalg.lstsq(design, np.column_stack([u, v]), rcond=None)[0]
    fu, fv = model(x, y)
    np.testing.assert_allclose(np.column_stack([fu, fv]), design @ coefficients, atol=1e-9)
