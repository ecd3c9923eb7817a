"""Frame quality in the stack: the report, the frames left out, the weights, the options."""

import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_offsets import OffsetMap, Stacker, stack_frames
from astro_offsets._cli import main
from astro_offsets._utils.provenance import product_kind

SHAPE = (96, 128)  # rejection needs 100 samples, one every 8 pixels
SKY, NOISE = 100.0, 4.0
# The reference's measures, as every map records them.
REFERENCE = {
    "ref_fwhm": 3.5,
    "ref_elongation": 1.1,
    "ref_n_detected": 300,
    "ref_noise": NOISE,
    "ref_sky": SKY,
}


def _frame(path, rng, level=SKY, noise=NOISE):
    data = rng.normal(level, noise, SHAPE).astype(np.float32)
    fits.PrimaryHDU(data).writeto(path)


def _map(path, **meta):
    measures = {"fwhm": 3.5, "elongation": 1.1, "n_detected": 300, "noise": NOISE, "sky": SKY}
    measures.update({"flux_scale": 1.0, "star_rms": 0.02, "reference": "light_0.fits"})
    measures.update({**REFERENCE, **meta})
    OffsetMap(np.zeros(SHAPE), np.zeros(SHAPE), meta=measures).write(path)


def sequence(folder, bad=(), missing=(), n=8, seed=3):
    """Write ``n`` frames ``light_K.fits`` (the first the reference) and their maps.

    ``bad`` maps a frame number to its map's measures and its data's sky
    level and noise; a frame of ``missing`` has no map (it fails).
    """
    rng = np.random.default_rng(seed)
    bad = dict(bad)
    frames = []
    for k in range(n):
        frame = os.path.join(folder, f"light_{k}.fits")
        frames.append(frame)
        spec = dict(bad.get(k, {}))
        level, noise = spec.pop("level", SKY), spec.pop("noise", NOISE)
        _frame(frame, rng, level, noise)
        if k and k not in missing:
            _map(os.path.join(folder, f"light_{k}.offsets.fits"), **spec)
    return frames


# A blurred (dew), a shaken and a capped frame, and thin cloud: stars at
# 30 % (flux scale 1 / 0.3), the sky 40 % up, and its noise with it.
BLURRED = {"fwhm": 3.5 * 2.6}
SHAKEN = {"elongation": 2.5}
CAPPED = {"flux_scale": 100.0, "n_detected": 13, "level": 1.0}
CLOUDED = {"flux_scale": 1 / 0.3, "n_detected": 200, "level": 1.4 * SKY, "noise": NOISE * 1.4**0.5}


def test_report_has_a_row_per_frame_with_its_measures(tmp_path):
    frames = sequence(tmp_path, missing=(3,))
    report = tmp_path / "stack.frames.ecsv"
    # The maps among the inputs (a light* glob takes them) are no frames of the report.
    maps = sorted(str(p) for p in tmp_path.glob("*.offsets.fits"))
    _, results = stack_frames([*frames, *maps], reject=False, report=report)
    assert [r.status for r in results[len(frames) :]] == ["ignored"] * len(maps)
    table = Table.read(report)
    assert list(table["frame"]) == frames
    for column in ("frame", "used", "weight", "fwhm", "elongation", "n_stars", "sky", "noise"):
        assert column in table.colnames
    assert {"flux_scale", "reason", "residual"} <= set(table.colnames)
    failed = table[3]
    assert not failed["used"]
    assert failed["weight"] == 0
    assert "no map" in failed["reason"]
    used = table[[k != 3 for k in range(len(frames))]]
    assert all(used["used"])
    assert all(used["reason"].filled("") == "")
    assert used["weight"][0] == 1  # the reference
    np.testing.assert_allclose(used["fwhm"], 3.5)
    np.testing.assert_allclose(used["noise"], NOISE, rtol=0.15)  # measured by the stack
    np.testing.assert_allclose(used["sky"], SKY, rtol=0.01)
    assert list(used["residual"]) == [0.0] + [0.02] * 6
    assert results[1].measures["n_stars"] == 300
    assert table["n_stars"].dtype.kind == "i"
    assert list(table["n_stars"].filled(-1)) == [300, 300, 300, -1, 300, 300, 300, 300]
    # The picture beside it; both ours, not frames of a later light_* glob.
    png = tmp_path / "stack.frames.png"
    assert png.stat().st_size > 1000
    assert product_kind(report) == "frame report"
    assert product_kind(png) == "frame plot"


def test_blurred_and_shaken_frames_are_left_out(tmp_path):
    frames = sequence(tmp_path, bad={2: BLURRED, 5: SHAKEN})
    stack, results = stack_frames(frames, reject=False)
    statuses = [r.status for r in results]
    assert (
        statuses
        == ["stacked"] * 2 + ["left out"] + ["stacked"] * 2 + ["left out"] + ["stacked"] * 2
    )
    assert "FWHM 9.1 px" in results[2].message
    assert "elongation 2.5" in results[5].message
    assert len(stack.meta["frames"]) == 6


def test_a_uniform_sequence_leaves_nothing_out():
    from astro_offsets.stack._quality import select_frames

    # Seeing from 3.0 to 3.9 px, elongation 1.05 to 1.25: a night's bulk.
    rng = np.random.default_rng(0)
    measures = {
        k: {"fwhm": rng.uniform(3.0, 3.9), "elongation": rng.uniform(1.05, 1.25), "n_stars": 300}
        for k in range(20)
    }
    assert select_frames(measures, reference=0) == {}
    # The reference is never left out, however blurred; two frames are no bulk.
    measures[0]["fwhm"] = 20.0
    assert select_frames(measures, reference=0) == {}
    assert select_frames({0: measures[0], 1: measures[1]}) == {}


def test_capped_frame_weighs_almost_nothing_and_clouded_by_its_noise(tmp_path):
    frames = sequence(tmp_path, bad={2: CAPPED, 4: CLOUDED})
    stack, results = stack_frames(frames, reject=False, filter_stars=None)
    weights = np.array([r.weight for r in results])
    assert all(r.status == "stacked" for r in results)
    assert weights[2] <= 0.25 * np.median(weights)
    assert weights[2] == pytest.approx(1e-4, rel=0.3)
    # (n_ref / (s n))**2 = 0.3**2 / 1.4: what the frame is worth.
    assert weights[4] == pytest.approx(0.09 / 1.4, rel=0.2)
    assert weights[0] == 1.0
    stack.write(tmp_path / "stack.fits")
    header = fits.getheader(tmp_path / "stack.fits")
    assert header["WEIGHTS"] == "noise"
    table = Table.read(tmp_path / "stack.fits", hdu="FRAMES")
    assert table["weight"][2] == pytest.approx(weights[2], rel=1e-12)
    # By default, its collapsed star count leaves the capped frame out.
    _, results = stack_frames(frames, reject=False)
    assert results[2].status == "left out"
    assert "13 stars" in results[2].message


def test_stack_is_the_weighted_mean():
    v1, v2, w1, w2 = 10.0, 40.0, 3.0, 0.5
    with Stacker(SHAPE, kernel="square") as stacker:
        stacker.add(np.full(SHAPE, v1, np.float32), frame_weight=w1)
        stacker.add(np.full(SHAPE, v2, np.float32), frame_weight=w2)
        image = stacker.stack().images["SCI"]
    np.testing.assert_allclose(image, (w1 * v1 + w2 * v2) / (w1 + w2), rtol=1e-6)


def test_stack_frames_weights_by_the_noise(tmp_path):
    rng = np.random.default_rng(5)
    frames = [os.path.join(tmp_path, f"light_{k}.fits") for k in range(2)]
    _frame(frames[0], rng, 100.0, 2.0)
    _frame(frames[1], rng, 200.0, 6.0)
    _map(os.path.join(tmp_path, "light_1.offsets.fits"))
    stack, results = stack_frames(frames, reject=False, normalize=False)
    w = [r.weight for r in results]
    assert w[1] == pytest.approx(1 / 9, rel=0.1)
    mean = float(np.nanmean(stack.images["SCI"]))
    assert mean == pytest.approx((w[0] * 100 + w[1] * 200) / (w[0] + w[1]), rel=2e-3)


def test_without_normalisation_a_longer_exposure_weighs_more(tmp_path):
    # The stacker takes each frame per second of its exposure: a frame of twice
    # the reference's exposure, of sqrt(2) its noise (photons), has 1/sqrt(2)
    # of its noise per second: twice its weight.
    rng = np.random.default_rng(6)
    frames = [os.path.join(tmp_path, f"light_{k}.fits") for k in range(2)]
    for frame, exptime, level in zip(frames, (30.0, 60.0), (100.0, 200.0), strict=True):
        data = rng.normal(level, np.sqrt(level), SHAPE).astype(np.float32)
        fits.PrimaryHDU(data, fits.Header([("EXPTIME", exptime)])).writeto(frame)
    _map(os.path.join(tmp_path, "light_1.offsets.fits"))
    _, results = stack_frames(frames, reject=False, normalize=False)
    assert results[1].weight == pytest.approx(2.0, rel=0.1)


def test_options_turn_selection_and_weighting_off(tmp_path):
    frames = sequence(tmp_path, bad={2: CAPPED, 4: CLOUDED, 5: BLURRED})
    off = {"select": False, "weighting": "none", "reject": False, "mask_hot_pixels": False}
    stack, results = stack_frames(frames, normalize=False, **off)
    assert [r.status for r in results] == ["stacked"] * len(frames)
    assert {r.weight for r in results} == {1.0}
    # Today's stack: every frame added as it is, weighed alike.
    with Stacker(SHAPE) as stacker:
        for k, frame in enumerate(frames):
            omap = None if k == 0 else OffsetMap.read(frame.replace(".fits", ".offsets.fits"))
            stacker.add(fits.getdata(frame), omap)
        today = stacker.stack().images["SCI"]
    np.testing.assert_array_equal(stack.images["SCI"], today)
    weighted, _ = stack_frames(frames, normalize=False, reject=False, mask_hot_pixels=False)
    assert not np.array_equal(weighted.images["SCI"], today)


def test_faint_frames_make_no_part_of_rejections_median():
    from astro_offsets.stack._quality import median_frames

    assert median_frames({0: 1.0, 1: 0.9, 2: 1.1, 3: 1e-4}) == [0, 1, 2]
    assert median_frames({0: 1.0, 1: 0.9, 2: 1e-4}) == [0, 1, 2]  # three at least
    assert median_frames({0: None, 1: None, 2: None}) == [0, 1, 2]


def test_rejection_with_weights_masks_a_trail(tmp_path):
    frames = sequence(tmp_path, bad={2: CAPPED, 4: CLOUDED}, n=6)
    with fits.open(frames[3], mode="update") as hdul:
        hdul[0].data[30, :] += 400.0  # a trail
    stack, results = stack_frames(frames, filter_stars=None, masks=True)
    assert all(r.status == "stacked" for r in results)
    assert results[3].masked > 0
    row = stack.images["SCI"][30]
    assert abs(float(np.nanmedian(row)) - SKY) < 2  # the capped frame, unweighted: 4 off


def test_frame_noise_of_a_bayer_mosaic_compares_one_colour():
    from astro_offsets.stack._quality import frame_noise

    rng = np.random.default_rng(2)
    colors = np.tile(np.array([[0, 1], [3, 2]]), (100, 100))
    levels = np.array([50.0, 200.0, 120.0, 200.0])[colors]
    data = rng.normal(levels, 3.0)
    assert frame_noise(data, colors) == pytest.approx(3.0, rel=0.05)


def test_command_reports_the_frames_left_out(tmp_path, capsys):
    frames = sequence(tmp_path, bad={2: BLURRED, 5: SHAKEN, 6: CAPPED}, missing=(7,))
    out = tmp_path / "out" / "stack.fits"
    status = main(["stack", *frames, "--out", str(out), "--no-reject"])
    captured = capsys.readouterr()
    assert status == 1  # the frame without a map
    line = captured.out.strip().splitlines()[-1]
    report = tmp_path / "out" / "stack.frames.ecsv"
    assert line.startswith(f"stack: 4 stacked, 3 left out (see {report}), 1 failed")
    assert "left out" in captured.err
    assert "FWHM" in captured.err
    table = Table.read(report)
    assert list(table["used"]) == [True, True, False, True, True, False, False, False]
    assert (tmp_path / "out" / "stack.frames.png").exists()
    # Kept unless --overwrite, like the stack.
    assert main(["stack", *frames[:7], "--out", str(out), "--no-reject"]) == 0
    assert "kept" in capsys.readouterr().out
    # Both off: every frame with a map stacked.
    options = ["--no-select", "--weight", "none", "--overwrite", "--no-reject"]
    assert main(["stack", *frames[:7], "--out", str(out), *options]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("stack: 7 stacked, 0 failed;")
    assert all(Table.read(report)["used"])


def test_bad_selection_options_are_usage_errors(tmp_path, capsys):
    frames = sequence(tmp_path, n=3)
    out = str(tmp_path / "stack.fits")
    assert main(["stack", *frames, "--out", out, "--keep-best", "0"]) == 2
    assert "keep_best" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stack", *frames, "--out", out, "--filter-fwhm", "wide"])
    with pytest.raises(ValueError, match="weighting must be one of noise, none"):
        stack_frames(frames, weighting="snr")


def test_frame_noise_of_a_colour_cube_counts_every_plane():
    from astro_offsets.stack._quality import frame_noise

    rng = np.random.default_rng(4)
    cube = np.stack([rng.normal(100.0, sigma, (300, 400)) for sigma in (1.0, 5.0, 9.0)])
    assert frame_noise(cube) == pytest.approx(np.sqrt((1 + 25 + 81) / 3), rel=0.03)
