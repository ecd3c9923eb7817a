"""Star tables of a night's bad frames: shaken, dewed, clouded, capped, turned and flipped."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from astro_offsets import OffsetMap, detect_stars, make_tables, match_stars, write_maps
from astro_offsets._cli import main
from astro_offsets.datasets import CameraMotion, observe, star_field
from astro_offsets.stars import FLAGS, photometry

SHAPE = (600, 800)
SIGMA = 1.6
SKY, READ = 200.0, 8.0
CENTRE = ((SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2)
# name: (rotation in degrees, options of observe, flux scale)
FRAMES = {
    "reference": (0.0, {}, 1.0),
    # Wind shake: stretched along y, where sep's float32 angle is just above
    # pi / 2 for some sources.
    "shaken": (0.0, {"elongation": 2.5, "angle": 90.0}, 1.0),
    "dewed": (0.0, {"sigma": 2.6 * SIGMA}, 1.0),
    "clouded": (0.0, {"sky": 1.4 * SKY}, 0.3),
    # A capped lens lets a few of the brightest stars through, or one.
    "capped": (0.0, {}, 0.01),
    "covered": (0.0, {}, 0.004),
    "turned": (3.0, {}, 1.0),
    "flipped": (180.0, {}, 1.0),
}


def motion(rotation):
    return CameraMotion(SHAPE, drift=(5.3, -3.1), rotation_deg=rotation, pole=CENTRE, barrel=0.0)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """The frames as FITS files, the true stars, and the tables made with default options."""
    folder = tmp_path_factory.mktemp("night")
    rng = np.random.default_rng(13)
    x, y, flux = star_field(rng, 420, SHAPE)
    paths, truth = {}, {}
    for name, (rotation, options, scale) in FRAMES.items():
        truth[name] = (x, y) if name == "reference" else motion(rotation).to_frame(x, y)
        options = {"sigma": SIGMA, "sky": SKY, **options}
        image = observe(rng, SHAPE, *truth[name], scale * flux, read_noise=READ, **options)
        paths[name] = str(folder / f"{name}.fits")
        fits.PrimaryHDU(image.astype(np.float32)).writeto(paths[name])
    results = make_tables(list(paths.values()), paths["reference"])
    return paths, truth, dict(zip(paths, results, strict=True))


def offset_errors(table, truth, name):
    """Each row's offset minus the true one, for the rows that are one true star."""
    x, y = truth["reference"]
    fx, fy = truth[name]
    distance, k = cKDTree(np.column_stack([x, y])).query(
        np.column_stack([table["x_ref"], table["y_ref"]])
    )
    one = distance < 1.0
    return np.hypot(
        table["xoffset"][one] - (fx - x)[k[one]], table["yoffset"][one] - (fy - y)[k[one]]
    )


def test_shaken_star_stretched_along_y_is_measured(night):
    # sep refused its Kron ellipse: "invalid aperture parameters".
    paths, _, _ = night
    stars = detect_stars(fits.getdata(paths["shaken"]))
    assert len(stars) > 100
    assert np.all(np.isfinite(stars["flux_auto"]))


@pytest.mark.parametrize("name", ["shaken", "dewed", "clouded", "turned", "flipped"])
def test_bad_seeing_and_turned_frames_keep_their_stars(night, name):
    _, truth, results = night
    result = results[name]
    assert result.status == "written", result.message
    # Most matched stars are kept: a blurred frame's stars are not "extended"
    # for being wider than the reference's.
    assert result.kept >= 0.6 * result.matched > 20, result
    table = Table.read(result.output)
    error = offset_errors(table, truth, name)
    assert len(error) >= 0.9 * len(table)
    # Stars down to SNR 10: a tenth of a pixel is their centroids' noise.
    assert np.median(error) < (0.2 if name in ("shaken", "dewed") else 0.12), name


@pytest.mark.parametrize(("name", "rotation"), [("turned", 3.0), ("flipped", 180.0)])
def test_turned_and_flipped_frames_match(night, name, rotation):
    *_, results = night
    meta = Table.read(results[name].output).meta
    # The similarity takes the frame to the reference: it turns back.
    assert (meta["ROTATION"] + rotation + 180) % 360 - 180 == pytest.approx(0, abs=0.01)
    assert results[name].matched >= 0.9 * results[name].detected


def test_capped_frame_measured_and_covered_frame_fails_with_its_count(night):
    paths, _, results = night
    capped, covered = results["capped"], results["covered"]
    # Its few stars match; how few, its table says.
    assert capped.status == "written"
    assert 5 <= capped.kept <= capped.detected < 10
    assert Table.read(capped.output).meta["NDETECT"] == capped.detected
    assert covered.status == "failed"
    assert covered.message == f"{paths['covered']}: 1 star detected, too few to match (at least 5)"
    assert [r.status for r in results.values()].count("written") == 6


def test_too_few_stars_counted_in_the_summary(night, tmp_path, capsys):
    paths, _, _ = night
    frames = [paths[name] for name in ("reference", "covered", "capped")]
    argv = ["--reference", paths["reference"], "--outdir", str(tmp_path), "--jobs", "1"]
    status = main(["tables", *frames, *argv])
    out, err = capsys.readouterr()
    assert status == 1
    assert f"error: {paths['covered']}: 1 star detected, too few to match (at least 5)" in err
    summary = f"tables: 1 written, 0 skipped, 1 failed ({paths['covered']})"
    assert out.strip().splitlines()[-1] == summary


def test_the_frame_and_the_reference_measured_in_the_table(night):
    *_, results = night
    sigma = {name: FRAMES[name][1].get("sigma", SIGMA) for name in FRAMES}
    for name in ("shaken", "dewed", "clouded"):
        meta = Table.read(results[name].output).meta
        assert meta["NDETECT"] == results[name].detected
        assert meta["REFNDET"] == results["reference"].detected
        assert meta["REFFWHM"] == pytest.approx(2.3548 * SIGMA, rel=0.1)
        assert meta["REFELONG"] == pytest.approx(1.0, abs=0.15)
        assert meta["REFNOISE"] == pytest.approx(np.sqrt(SKY + READ**2), rel=0.05)
        if name != "shaken":
            assert meta["FWHM"] == pytest.approx(2.3548 * sigma[name], rel=0.1), name
            assert meta["ELONG"] == pytest.approx(1.0, abs=0.15), name
    shaken = Table.read(results["shaken"].output).meta
    assert 2.0 < shaken["ELONG"] < 2.6
    clouded = Table.read(results["clouded"].output).meta
    assert clouded["NOISE"] == pytest.approx(np.sqrt(1.4 * SKY + READ**2), rel=0.05)


def test_measures_reach_the_map_header(night, tmp_path):
    *_, results = night
    table = Table.read(results["dewed"].output)
    measures = photometry(table)
    keys = {
        "fwhm": "FWHM",
        "elongation": "ELONG",
        "n_detected": "NDETECT",
        "noise": "NOISE",
        "ref_fwhm": "REFFWHM",
        "ref_elongation": "REFELONG",
        "ref_n_detected": "REFNDET",
        "ref_noise": "REFNOISE",
    }
    assert {key: measures[key] for key in keys} == {
        key: table.meta[keyword] for key, keyword in keys.items()
    }
    assert isinstance(measures["n_detected"], int)
    write_maps([results["dewed"].output], SHAPE, outdir=tmp_path)
    meta = OffsetMap.read(tmp_path / "dewed.offsets.fits").meta
    assert {key: meta[key] for key in keys} == {key: measures[key] for key in keys}


def test_match_a_flipped_and_a_turned_field():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 800, (150, 2))
    flux = rng.pareto(1.0, len(ref)) + 1
    for degrees in (180.0, 2.5, -7.0, 90.0):
        angle = np.deg2rad(degrees)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        frame = (ref - 400) @ rotation.T + 400 + [12.5, -3.25] + rng.normal(0, 0.05, ref.shape)
        order = rng.permutation(len(ref))
        pairs, _ = match_stars(frame[order], ref, frame_flux=flux[order], ref_flux=flux)
        assert len(pairs) == len(ref), degrees
        assert np.array_equal(order[pairs[:, 0]], pairs[:, 1]), degrees


def test_extended_against_the_frames_own_stars():
    """A blob three times as wide as the stars is extended; stars all wide are not."""
    rng = np.random.default_rng(4)
    x, y, flux = star_field(rng, 300, SHAPE)
    blobs = (rng.uniform(50, 750, 8), rng.uniform(50, 550, 8), np.full(8, 3e5))
    for seeing in (SIGMA, 2.6 * SIGMA):
        image = observe(rng, SHAPE, x, y, flux, sigma=seeing, sky=SKY, read_noise=READ)
        image += observe(rng, SHAPE, *blobs, sigma=3 * seeing, sky=0.0, read_noise=0.0)
        # Searched with the reference's FWHM, as make_tables may.
        stars = detect_stars(image, fwhm=2.3548 * SIGMA)
        extended = (stars["flags"] & FLAGS["extended"]) > 0
        near = (
            np.hypot(
                np.subtract.outer(stars["xcentroid"], blobs[0]),
                np.subtract.outer(stars["ycentroid"], blobs[1]),
            ).min(axis=1)
            < 3
        )
        assert extended[near].sum() >= 6, seeing
        assert extended[~near].mean() < 0.1, seeing
        assert stars.meta["star_fwhm"] == pytest.approx(2.3548 * seeing, rel=0.1)
