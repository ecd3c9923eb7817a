"""Star tables from synthetic sequences with known drift, rotation and distortion."""

import os
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from astro_offsets import MatchError, detect_stars, make_tables, match_stars
from astro_offsets._cli import main
from astro_offsets._utils.batch import FrameError
from astro_offsets.datasets import CameraMotion, observe, star_field, write_dng
from astro_offsets.stars._make_tables import _frame_table, _reference_stars
from astro_offsets.stars._match import MIN_STARS

SHAPE = (600, 800)
SIGMA = 1.6
FWHM = 2.3548 * SIGMA
SKY, READ = 200.0, 8.0
MOTIONS = {
    "drift": CameraMotion(SHAPE, drift=(37.3, -22.8), rotation_deg=0.0, barrel=0.0),
    "rotation": CameraMotion(
        SHAPE, drift=(-12.6, 41.2), rotation_deg=1.0, pole=(399.5, 299.5), barrel=0.0
    ),
    "lens": CameraMotion(
        SHAPE, drift=(28.4, 19.9), rotation_deg=-0.6, pole=(-2500.0, 900.0), barrel=3e-7
    ),
}


def snr(flux):
    area = np.pi * FWHM**2
    return flux / np.sqrt(flux + area * (SKY + READ**2))


@pytest.fixture(scope="module")
def sky():
    rng = np.random.default_rng(12)
    return star_field(rng, 420, SHAPE)


@pytest.fixture(scope="module")
def sequence(sky, tmp_path_factory):
    """Reference, three moved frames and a frame of pure noise, as FITS files."""
    folder = tmp_path_factory.mktemp("sequence")
    rng = np.random.default_rng(5)
    x, y, flux = sky
    paths = {}
    positions = {"reference": (x, y)}
    positions.update({name: motion.to_frame(x, y) for name, motion in MOTIONS.items()})
    for name, (fx, fy) in positions.items():
        paths[name] = str(folder / f"{name}.fits")
        image = observe(rng, SHAPE, fx, fy, flux, sigma=SIGMA, sky=SKY, read_noise=READ)
        fits.PrimaryHDU(image.astype(np.float32)).writeto(paths[name])
    paths["noise"] = str(folder / "noise.fits")
    noise = SKY + rng.normal(0, np.sqrt(SKY + READ**2), SHAPE)
    fits.PrimaryHDU(noise.astype(np.float32)).writeto(paths["noise"])
    return folder, paths, positions


def in_frame(px, py):
    return (px > -0.5) & (px < SHAPE[1] - 0.5) & (py > -0.5) & (py < SHAPE[0] - 0.5)


def identify(xd, yd, xt, yt):
    """Injected star of each detection, or -1 where unresolvable or missing.

    A detection is identified with an injected star within 1 px that has no
    other injected star within 1.5 FWHM (closer pairs blend into one source).
    """
    tree = cKDTree(np.column_stack([xt, yt]))
    distance, index = tree.query(np.column_stack([xd, yd]))
    second, _ = tree.query(np.column_stack([xt, yt])[index], k=2)
    return np.where((distance < 1.0) & (second[:, 1] > 1.5 * FWHM), index, -1)


@pytest.mark.slow
def test_tables_of_a_sequence(sequence, sky, tmp_path, capsys):
    _, paths, positions = sequence
    flux = sky[2]
    frames = [paths[name] for name in ("reference", *MOTIONS, "noise")]
    # Every matched star in the tables, to check the matching itself.
    every = ["--min-snr", "0", "--keep-flagged"]
    status = main(
        ["tables", *frames, "--reference", paths["reference"], "--outdir", str(tmp_path), *every]
    )
    out, err = capsys.readouterr()
    assert status == 1  # the frame of pure noise
    assert f"astro-offsets: error: {paths['noise']}: " in err
    assert out.strip().endswith(f"tables: 3 written, 0 skipped, 1 failed ({paths['noise']})")
    inside = lambda px, py: (px > 6) & (px < SHAPE[1] - 7) & (py > 6) & (py < SHAPE[0] - 7)  # noqa: E731
    line = next(line for line in out.splitlines() if line.startswith(paths["reference"]))
    assert re.fullmatch(r".*reference\.fits \(reference\): \d+ stars detected", line), line
    pattern = (
        r".*: (\d+) stars detected, (\d+) matched to the reference \((\d+) kept in the "
        r"table\), (\d+) outside the reference frame, (\d+) unmatched"
    )
    for name in MOTIONS:
        line = next(line for line in out.splitlines() if line.startswith(paths[name]))
        detected, matched, kept, outside, unmatched = map(int, re.fullmatch(pattern, line).groups())
        assert detected == matched + outside + unmatched
        assert kept == matched
        # Stars the motion took out of the reference frame are told apart from
        # stars inside it that found no partner: fewer, at the detection limit.
        fx, fy = positions[name]
        rx, ry = positions["reference"]
        gone = in_frame(fx, fy) & ~in_frame(rx, ry)
        bright_gone = np.count_nonzero(gone & inside(fx, fy) & (snr(flux) >= 20))
        assert bright_gone <= outside <= np.count_nonzero(gone), (name, outside)

    rx, ry = positions["reference"]
    for name in MOTIONS:
        table = Table.read(tmp_path / f"{name}.offsets_table.fits")
        assert {"xcentroid", "ycentroid", "xoffset", "yoffset", "ref_id", "flux"} <= set(
            table.colnames
        )
        assert table.meta["REFFRAME"] == "reference.fits"
        fx, fy = positions[name]
        id_ref = identify(table["x_ref"], table["y_ref"], rx, ry)
        id_frame = identify(table["xcentroid"], table["ycentroid"], fx, fy)
        both = (id_ref >= 0) & (id_frame >= 0)
        # No false matches among resolvable stars.
        assert np.array_equal(id_ref[both], id_frame[both]), name
        # At least 95 % of the stars with SNR >= 20 in both frames are matched.
        bright = np.flatnonzero((snr(flux) >= 20) & inside(rx, ry) & inside(fx, fy))
        matched = np.isin(bright, id_ref[both])
        assert matched.mean() >= 0.95, (name, matched.mean())
        # Offsets at SNR >= 50: median error of each component at most 0.05 px.
        k = id_ref[both]
        high = snr(flux[k]) >= 50
        error_x = table["xoffset"][both][high] - (fx - rx)[k][high]
        error_y = table["yoffset"][both][high] - (fy - ry)[k][high]
        assert high.sum() > 40
        assert np.median(np.abs(np.concatenate([error_x, error_y]))) <= 0.05, name


def test_complete_sequence_keeps_common_stars(sequence, tmp_path):
    _, paths, _ = sequence
    frames = [paths["drift"], paths["rotation"]]
    results = make_tables(frames, paths["reference"], outdir=tmp_path, complete=True)
    assert [r.status for r in results] == ["written", "written"]
    ids = [set(Table.read(r.output)["ref_id"]) for r in results]
    assert ids[0] == ids[1]
    assert all(r.kept == len(ids[0]) < r.matched for r in results)
    assert Table.read(results[0].output).meta["COMPLETE"]


def test_existing_tables_kept_and_reference_skipped(sequence, tmp_path):
    _, paths, _ = sequence
    existing = tmp_path / "drift.offsets_table.fits"
    existing.write_text("mine")
    results = make_tables([paths["reference"], paths["drift"]], paths["reference"], outdir=tmp_path)
    assert [r.status for r in results] == ["reference", "skipped"]
    assert existing.read_text() == "mine"
    assert os.listdir(tmp_path) == ["drift.offsets_table.fits"]


def test_relative_paths_in_any_working_directory(sequence, tmp_path, monkeypatch):
    # The worker processes outlive a call: started in one directory, they
    # must still find the frames a later call names relative to another.
    folder, paths, _ = sequence
    for name in ("elsewhere", "first", "again"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    frames = [paths["drift"], paths["rotation"]]
    first = make_tables(frames, paths["reference"], outdir=tmp_path / "first", n_jobs=2)
    monkeypatch.chdir(folder)
    names = [os.path.basename(frame) for frame in frames]
    again = make_tables(names, "reference.fits", outdir=tmp_path / "again", n_jobs=2)
    assert [r.status for r in first] == [r.status for r in again] == ["written", "written"]
    assert [r.path for r in again] == names
    # A frame that cannot be read is named as given, once.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.fits").write_text("hello")
    (failed,) = make_tables(["broken.fits"], paths["reference"], n_jobs=2)
    assert failed.status == "failed"
    assert failed.message.startswith("broken.fits: not a readable FITS file"), failed.message
    assert str(tmp_path) not in failed.message


def test_reference_of_pure_noise_is_an_error(sequence):
    _, paths, _ = sequence
    with pytest.raises(ValueError, match=r"noise.fits: only \d+ stars found in the reference"):
        make_tables([paths["drift"]], paths["noise"])


def test_a_frame_that_fails_raises(sequence, tmp_path):
    """A frame's task raises FrameError (its line, the stars detected), no result to tell apart."""
    _, paths, _ = sequence
    options = {"fwhm": FWHM, "threshold": 5.0, "min_snr": None, "flagged": False}
    ref_stars = _reference_stars(paths["reference"], FWHM, 5.0, None)
    with pytest.raises(FrameError) as failed:
        _frame_table("noise.fits", (ref_stars, None), options, paths["noise"])
    assert str(failed.value).startswith("noise.fits: ")
    assert failed.value.detected < MIN_STARS
    missing = str(tmp_path / "missing.fits")
    with pytest.raises(FrameError, match=r"^missing\.fits: ") as failed:
        _frame_table("missing.fits", (ref_stars, None), options, missing)
    assert failed.value.detected == 0
    assert "Traceback" in failed.value.message.traceback


def test_match_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(MatchError, match="too few stars in the reference"):
        match_stars(rng.uniform(0, 100, (20, 2)), rng.uniform(0, 100, (3, 2)))
    with pytest.raises(MatchError, match="no consistent match with the reference"):
        match_stars(rng.uniform(0, 500, (40, 2)), rng.uniform(0, 500, (40, 2)))


def test_fwhm_estimated(sky):
    x, y, flux = sky
    image = observe(np.random.default_rng(1), SHAPE, x, y, flux, sigma=SIGMA)
    stars = detect_stars(image)
    assert abs(stars.meta["fwhm"] - FWHM) < 0.1 * FWHM
    assert stars.meta["noise"] == pytest.approx(np.sqrt(SKY + READ**2), rel=0.05)
    assert np.all(np.diff(stars["flux"]) <= 0)  # brightest first


@pytest.mark.slow
def test_colour_raw_frames(sky, tmp_path):
    """Bayer frames: stars found on super-pixels, positions in raw pixels."""
    x, y, flux = sky
    rng = np.random.default_rng(9)
    motion = MOTIONS["rotation"]
    paths = []
    truth = [(x, y), motion.to_frame(x, y)]
    for k, (fx, fy) in enumerate(truth):
        # Stars of one colour on a grey sky; the colours' gains differ.
        image = observe(rng, SHAPE, fx, fy, 4 * flux, sigma=2.0, sky=SKY, read_noise=READ)
        gain = np.ones(SHAPE)
        gain[0::2, 0::2] = 0.5  # red
        gain[1::2, 1::2] = 0.7  # blue
        mosaic = np.clip(image * gain + 512, 0, 16383).astype(np.uint16)
        paths.append(tmp_path / f"IMG_{k}.dng")
        write_dng(paths[-1], mosaic)
    results = make_tables(paths, paths[0])
    assert [r.status for r in results] == ["reference", "written"]
    table = Table.read(results[1].output)
    fx, fy = truth[1]
    k = identify(table["x_ref"], table["y_ref"], x, y)
    same = (k >= 0) & (k == identify(table["xcentroid"], table["ycentroid"], fx, fy))
    assert same.sum() > 100
    error = np.hypot(
        table["xoffset"][same] - (fx - x)[k[same]], table["yoffset"][same] - (fy - y)[k[same]]
    )
    assert np.median(error) < 0.1


def test_default_tables_hold_measurable_point_sources(sequence, tmp_path):
    _, paths, _ = sequence
    frames = [paths["reference"], paths["lens"]]
    [_, every] = make_tables(
        frames, paths["reference"], outdir=tmp_path, min_snr=None, flagged=True
    )
    [_, default] = make_tables(frames, paths["reference"], outdir=tmp_path, overwrite=True)
    table = Table.read(default.output)
    assert default.matched == every.matched == every.kept
    assert len(table) == default.kept < default.matched
    assert table["snr"].min() >= 10
    assert not table["flags"].any()
    assert table.meta["MINSNR"] == 10
    # Each offset has its uncertainty, from both centroids: small for bright stars.
    assert np.all(table["xoffset_err"] > 0)
    bright = table["snr"] > 100
    assert np.all(table["xoffset_err"][bright] < 0.05)


def test_photometric_tie_to_the_reference(sky, tmp_path):
    """A hazier, blurrier, brighter-sky, longer frame: the table and its map say by how much.

    The seeing does not change the flux scale: it comes from the stars' Kron
    fluxes, not from discs of the reference's FWHM.
    """
    from astro_offsets import OffsetMap, write_maps
    from astro_offsets.stars import photometry

    rng = np.random.default_rng(8)
    x, y, flux = sky
    fx, fy = MOTIONS["drift"].to_frame(x, y)
    paths = []
    for name, (px, py), scale, level, exptime, seeing in (
        ("reference", (x, y), 1.0, SKY, 60.0, SIGMA),
        ("hazy", (fx, fy), 0.7, 1.6 * SKY, 120.0, 1.4 * SIGMA),
    ):
        image = observe(rng, SHAPE, px, py, scale * flux, sigma=seeing, sky=level, read_noise=READ)
        paths.append(str(tmp_path / f"{name}.fits"))
        header = fits.Header({"EXPTIME": exptime})
        fits.PrimaryHDU(image.astype(np.float32), header).writeto(paths[-1])
    make_tables(paths, reference=paths[0], outdir=tmp_path)
    table = Table.read(tmp_path / "hazy.offsets_table.fits")
    assert (table.meta["EXPTIME"], table.meta["REFEXPT"]) == (120.0, 60.0)
    tie = photometry(table)
    assert tie["flux_scale"] == pytest.approx(1 / 0.7, rel=0.01)
    assert tie["sky"] == pytest.approx(1.6 * SKY, rel=0.005)
    assert tie["ref_sky"] == pytest.approx(SKY, rel=0.005)
    write_maps([tmp_path / "hazy.offsets_table.fits"], SHAPE, outdir=tmp_path)
    meta = OffsetMap.read(tmp_path / "hazy.offsets.fits").meta
    assert {key: meta[key] for key in tie} == pytest.approx(tie)


def test_hot_pixels_are_no_stars(sky, tmp_path):
    """A sensor's hot pixels, fixed while the sky moves by less than a match radius."""
    rng = np.random.default_rng(4)
    x, y, flux = sky
    hot = (rng.integers(5, SHAPE[0] - 5, 40), rng.integers(5, SHAPE[1] - 5, 40))
    paths = []
    for k, (dx, dy) in enumerate(((0.0, 0.0), (0.6, -0.4))):
        image = observe(rng, SHAPE, x + dx, y + dy, flux, sigma=SIGMA, sky=SKY, read_noise=READ)
        image[hot] += 3000.0
        paths.append(str(tmp_path / f"f{k}.fits"))
        fits.PrimaryHDU(image.astype(np.float32)).writeto(paths[-1])
    make_tables(paths, reference=paths[0], outdir=tmp_path, min_snr=0, flagged=True)
    table = Table.read(tmp_path / "f1.offsets_table.fits")
    distance = np.hypot(
        np.asarray(table["xcentroid"])[:, None] - hot[1],
        np.asarray(table["ycentroid"])[:, None] - hot[0],
    )
    stars_near = np.hypot(x[:, None] - hot[1], y[:, None] - hot[0]).min(axis=0) < 3
    assert not (distance[:, ~stars_near] < 1.0).any()


def test_failed_frame_loses_its_table_against_another_reference(sequence, tmp_path):
    from astro_offsets._utils.provenance import provenance_header, write_product

    _, paths, _ = sequence
    stale = tmp_path / "noise.offsets_table.fits"
    header = provenance_header(
        "star table", [("REFFRAME", "old.fits", ""), ("REFPATH", "/gone/old.fits", "")]
    )
    write_product(stale, [fits.PrimaryHDU(), fits.BinTableHDU(Table({"x": [1.0]}), header)])
    (result,) = make_tables([paths["noise"]], paths["reference"], outdir=tmp_path)
    assert result.status == "failed"
    assert result.message.endswith(
        "; removed its table made against another reference (/gone/old.fits)"
    )
    assert not stale.exists()


def test_tables_name_empty_frames_and_patterns(sequence, tmp_path):
    # As stack and maps name them (one check, astro_offsets._utils.validation).
    _, paths, _ = sequence
    empty, pattern = tmp_path / "light_003.fits", tmp_path / "light_*.fits"
    empty.touch()
    results = make_tables([paths["reference"], empty, pattern], paths["reference"], outdir=tmp_path)
    assert [r.message for r in results[1:]] == [
        f"{empty}: empty file (0 bytes)",
        f"{pattern}: no file matches this pattern",
    ]


def test_tables_record_how_the_references_rows_run(sequence, tmp_path):
    # REFROWS: a FITS reference's rows run bottom-up, unless its ROWORDER
    # says otherwise (N.I.N.A. and others write TOP-DOWN); its maps carry it
    # to their plots, which show them as the stack is shown.
    from astro_offsets import OffsetModel
    from astro_offsets.maps import plot_map

    _, paths, _ = sequence
    top_down = str(tmp_path / "top_down.fits")
    with fits.open(paths["reference"]) as hdul:
        hdul[0].header["ROWORDER"] = "TOP-DOWN"
        hdul.writeto(top_down)
    for reference, rows in ((paths["reference"], "BOTTOM-UP"), (top_down, "TOP-DOWN")):
        outdir = tmp_path / rows
        outdir.mkdir()
        (result,) = make_tables([paths["drift"]], reference, outdir=outdir)
        assert fits.getheader(result.output, 1)["REFROWS"] == rows
        omap = OffsetModel.read(result.output).to_map((30, 40))
        assert omap.meta["roworder"] == rows
        assert omap.header()["REFROWS"] == rows
        bottom, top = plot_map(omap).axes[0].get_ylim()
        assert (top < bottom) == (rows == "TOP-DOWN")
