"""The global trend: turned and flipped frames are right between stars, by default."""

import numpy as np
import pytest
from astropy.io import fits
from tiling import same_map_for_any_tiling

from astro_offsets import OffsetMap, OffsetModel, write_maps
from astro_offsets.datasets import CameraMotion, star_offsets
from astro_offsets.field._trend import fit_trend

SHAPE = (2700, 4000)
CENTRE = ((SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2)


def turned(rotation, n=300, noise=0.0, seed=0, **motion):
    """Stars of a frame turned about its centre (180 degrees: a meridian flip)."""
    motion = CameraMotion(SHAPE, rotation_deg=rotation, pole=CENTRE, **motion)
    x, y, dx, dy, bad = star_offsets(np.random.default_rng(seed), motion, SHAPE, n, noise=noise)
    return motion, (x, y, dx, dy), bad


def error_between_stars(model, motion, n=20000):
    rng = np.random.default_rng(99)
    px, py = rng.uniform(0, SHAPE[1] - 1, n), rng.uniform(0, SHAPE[0] - 1, n)
    dx, dy = model(px, py)
    tx, ty = motion.offset(px, py)
    return float(np.sqrt(np.mean((dx - tx) ** 2 + (dy - ty) ** 2)))


@pytest.mark.parametrize("rotation", [0.05, 0.5, 2.0, 180.0])
def test_turned_frames_are_exact_between_stars(rotation):
    motion, columns, _ = turned(rotation, barrel=0.0)
    # The literal field is off between stars by the rotation times their spacing.
    literal = error_between_stars(OffsetModel(*columns, trend=None), motion)
    assert literal > 0.03
    model = OffsetModel(*columns)
    assert model.trend == "affine"
    assert error_between_stars(model, motion) < 1e-9
    assert model.meta["trend_rms"] < 1e-9
    assert model.meta["trend_rotation"] == pytest.approx(rotation, abs=1e-9)
    similarity = OffsetModel(*columns, trend="similarity")
    assert error_between_stars(similarity, motion) < 1e-9


@pytest.mark.parametrize("rotation", [0.5, 180.0])
def test_noisy_distorted_turned_frames_are_right_to_the_noise(rotation):
    # 0.05 px centroid noise and a barrel lens: between stars, the field errs
    # by about the noise, where the literal field errs by pixels.
    motion, columns, _ = turned(rotation, n=1500, noise=0.05, barrel=4e-9)
    assert error_between_stars(OffsetModel(*columns), motion) < 0.1
    assert error_between_stars(OffsetModel(*columns, trend=None), motion) > 0.15
    fitted = OffsetModel(*columns, method="polynomial", degree=3)
    assert error_between_stars(fitted, motion) < 0.03


def test_the_field_is_exact_at_the_stars():
    _, columns, _ = turned(180.0, noise=0.05, barrel=4e-9)
    model = OffsetModel(*columns)
    x, y, dx, dy = columns
    fx, fy = model(x, y)
    # The trend plus the residual the quadrant field passes through: the
    # offset, to the rounding of the sum.
    np.testing.assert_allclose(fx, dx, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fy, dy, rtol=0, atol=1e-9)


def test_mismatched_stars_do_not_tilt_the_trend():
    motion = CameraMotion(SHAPE, rotation_deg=1.0, pole=CENTRE, barrel=0.0)
    rng = np.random.default_rng(4)
    x, y, dx, dy, bad = star_offsets(rng, motion, SHAPE, 400, noise=0.03, mismatched=0.05)
    dx[bad] += 40.0  # far off, and all one way
    model = OffsetModel(x, y, dx, dy)
    trend = fit_trend("affine", model._stars, 3.0)
    assert not trend.kept[bad].any()
    assert trend.rms < 0.06
    assert model.meta["trend_rotation"] == pytest.approx(1.0, abs=1e-3)
    plain = fit_trend("affine", model._stars, None)
    assert plain.rms > 5


@pytest.mark.parametrize(
    ("n", "rank"), [(1, "shift"), (2, "similarity"), (3, "affine"), (12, "affine")]
)
def test_few_stars_get_the_transform_they_determine(n, rank):
    motion, (x, y, dx, dy), _ = turned(3.0, n=n, barrel=0.0)
    model = OffsetModel(x, y, dx, dy)
    assert model.trend == "affine"
    # A similarity or a rotation is determined by two stars; one star gives a shift.
    if rank == "shift":
        assert model.meta["trend_rotation"] == 0.0
        np.testing.assert_allclose(model(100.0, 200.0), (dx[0], dy[0]), atol=1e-12)
    else:
        assert error_between_stars(model, motion) < 1e-8
    collinear = OffsetModel([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert np.all(np.isfinite(collinear(10.0, 0.0)))


def test_literal_field_is_untouched():
    _, columns, _ = turned(2.0, noise=0.05)
    literal = OffsetModel(*columns, trend=None)
    assert literal.trend is None
    assert repr(literal) == "<OffsetModel: 300 stars, power=1, no trend>"
    assert not {"trend", "trend_rms", "trend_rotation", "clip"} & set(literal.meta)
    assert literal._field.trend is None


@pytest.mark.parametrize(
    "options",
    [{}, {"method": "polynomial", "degree": 3}, {"method": "thin-plate"}, {"method": "auto"}],
)
def test_maps_with_a_trend_are_bit_identical_for_any_tiling(options):
    _, columns, _ = turned(180.0, n=120, noise=0.05, barrel=4e-9)
    shape = (270, 400)
    scaled = [c / 10 for c in columns]  # the same flip on a smaller frame
    model = OffsetModel(*scaled, **options)
    reference = same_map_for_any_tiling(model, shape)
    assert reference.folds() is None
    if model.method != "thin-plate":
        # The model at pixel centres is the map before its rounding, bit for bit.
        ys, xs = np.mgrid[0:270:7, 0:400:11]
        dx, dy = model(xs.astype(float), ys.astype(float))
        np.testing.assert_array_equal(reference.x_offset[ys, xs], dx.astype(np.float32))
        np.testing.assert_array_equal(reference.y_offset[ys, xs], dy.astype(np.float32))


def test_the_trend_in_the_header_round_trip(tmp_path):
    _, columns, _ = turned(180.0, noise=0.05)
    model = OffsetModel(*columns, trend="similarity")
    model.to_map((64, 80)).write(tmp_path / "f.offsets.fits")
    header = fits.getheader(tmp_path / "f.offsets.fits")
    assert header["TREND"] == "similarity"
    assert header["TRENDRMS"] == pytest.approx(model.meta["trend_rms"], abs=1e-6)
    assert abs(header["TRENDROT"]) == pytest.approx(180.0, abs=1e-3)
    meta = OffsetMap.read(tmp_path / "f.offsets.fits").meta
    assert (meta["trend"], meta["trend_rms"]) == (header["TREND"], header["TRENDRMS"])
    # A map of an earlier version, without the cards, reads as one of no trend.
    with fits.open(tmp_path / "f.offsets.fits") as hdul:
        for keyword in ("TREND", "TRENDRMS", "TRENDROT"):
            del hdul[0].header[keyword]
        hdul.writeto(tmp_path / "old.offsets.fits")
    assert "trend" not in OffsetMap.read(tmp_path / "old.offsets.fits").meta


def test_trend_option_errors_and_the_command_line(tmp_path, capsys):
    from astropy.table import Table

    from astro_offsets._cli import main

    with pytest.raises(ValueError, match=r"trend must be one of 'affine', 'similarity', None"):
        OffsetModel([1.0], [2.0], [0.0], [0.0], trend="rigid")
    with pytest.raises(ValueError, match="trend must be one of"):
        write_maps([tmp_path / "missing.ecsv"], (10, 10), trend="none")
    _, (x, y, dx, dy), _ = turned(180.0, n=50)
    table = tmp_path / "F0.offsets_table.ecsv"
    Table({"x": x / 10, "y": y / 10, "x_offset": dx / 10, "y_offset": dy / 10}).write(table)
    argv = ["maps", str(table), "--shape", "270", "400", "--overwrite"]
    # The literal field of a flipped frame folds: refused, in one line.
    assert main([*argv, "--method", "quadrant", "--trend", "none"]) == 1
    assert f"{table}: the map folds at " in capsys.readouterr().err
    assert not (tmp_path / "F0.offsets.fits").exists()
    assert main(argv) == 0
    assert fits.getheader(tmp_path / "F0.offsets.fits")["TREND"] == "affine"
    assert main([*argv, "--trend", "similarity"]) == 0
    assert fits.getheader(tmp_path / "F0.offsets.fits")["TREND"] == "similarity"
    assert "; similarity trend: rotation " in capsys.readouterr().out
