"""A real night through the three commands with their default options.

The night of `astro_offsets.datasets.night_sequence`: the field turns
0.08 deg a frame, the mount flips over the meridian after frame 6, frame 3
is shaken by wind, 9 under thin cloud, 11 dewed, 12 taken with the cap on,
and a satellite crosses frame 5. Every frame with stars must be registered,
the spoilt ones left out or weighted down, and the stack of the whole night
must be as sharp and as quiet as the stack of its good frames alone.
"""

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.table import Table

from astro_offsets._cli import main
from astro_offsets.datasets import night_sequence

pytestmark = pytest.mark.slow

SPOILT = ("shaken", "dewed", "capped")


def run(*args):
    assert main([str(a) for a in args]) == 0, args


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    folder = tmp_path_factory.mktemp("night")
    night = night_sequence(folder)
    frames = night.frames
    run("tables", *frames, "--reference", night.reference, "--jobs", 2)
    tables = sorted(str(p) for p in folder.glob("*.offsets_table.fits"))
    run("maps", *tables, "--image", night.reference, "--jobs", 2)
    run("stack", *frames, "--out", folder / "all" / "stack.fits", "--jobs", 2)
    # The good frames alone, with the maps made above.
    run("stack", *night.good(), "--out", folder / "good" / "stack.fits", "--jobs", 2)
    return night, folder


def science(path):
    with fits.open(path) as hdul:
        return hdul["SCI"].data.astype(np.float64), hdul["WHT"].data.astype(np.float64)


def well_covered(weight):
    return weight > 0.7 * np.median(weight[weight > 0])


def isolated_bright(stars, shape, separation=14.0, margin=25):
    x, y, flux = (np.asarray(stars[name]) for name in ("x", "y", "flux"))
    distance = np.hypot(x[:, None] - x, y[:, None] - y)
    np.fill_diagonal(distance, np.inf)
    ny, nx = shape
    inside = (x > margin) & (x < nx - margin) & (y > margin) & (y < ny - margin)
    return inside & (distance.min(axis=1) > separation) & (flux > 8e3)


def measure(image, x, y):
    """Return windowed centroids and FWHM (twice the half-light radius) of stars near ``x, y``."""
    data = np.ascontiguousarray(np.nan_to_num(image))
    data -= sep.Background(data).back()
    xw, yw, flag = sep.winpos(data, x, y, 1.7)
    radius, rflag = sep.flux_radius(data, xw, yw, np.full(len(x), 10.0), 0.5)
    good = (flag == 0) & (rflag == 0) & np.isfinite(xw) & np.isfinite(yw)
    return xw, yw, 2 * radius, good


def sky_noise(image, weight, stars):
    """Return the robust standard deviation of the well-covered sky, stars masked."""
    sky = well_covered(weight)
    for x, y in zip(stars["x"], stars["y"], strict=True):
        if 0 <= x < image.shape[1] and 0 <= y < image.shape[0]:
            box = (slice(max(int(y) - 8, 0), int(y) + 9), slice(max(int(x) - 8, 0), int(x) + 9))
            sky[box] = False
    values = image[sky]
    return 1.4826 * np.median(np.abs(values - np.median(values)))


def test_every_frame_with_stars_registered(night):
    night, folder = night
    image, weight = science(folder / "all" / "stack.fits")
    chosen = isolated_bright(night.stars, image.shape)
    x, y = np.asarray(night.stars["x"])[chosen], np.asarray(night.stars["y"])[chosen]
    covered = well_covered(weight)[np.round(y).astype(int), np.round(x).astype(int)]
    xw, yw, _, good = measure(image, x[covered], y[covered])
    assert good.sum() >= 30
    error = np.hypot(xw - x[covered], yw - y[covered])[good]
    assert np.sqrt(np.mean(error**2)) <= 0.05


def test_the_night_as_sharp_and_quiet_as_its_good_frames(night):
    night, folder = night
    stacks = {name: science(folder / name / "stack.fits") for name in ("all", "good")}
    chosen = isolated_bright(night.stars, stacks["all"][0].shape)
    x, y = np.asarray(night.stars["x"])[chosen], np.asarray(night.stars["y"])[chosen]
    fwhm, noise = {}, {}
    for name, (image, weight) in stacks.items():
        *_, size, good = measure(image, x, y)
        fwhm[name] = np.median(size[good])
        noise[name] = sky_noise(image, weight, night.stars)
    assert fwhm["all"] <= 1.03 * fwhm["good"], fwhm
    assert noise["all"] <= 1.03 * noise["good"], noise


def trail_mask(night, shape, across=0):
    """Return the reference grid's pixels within a pixel of the trail, moved ``across`` px."""
    k = int(np.flatnonzero(night.conditions["trail"])[0])
    ny, nx = shape
    # The trail's line in the frame, taken to the reference grid.
    t = np.linspace(0, 1, 4 * nx)
    fx, fy = -5 + t * (nx + 10), (0.2 + 0.5 * t) * ny + across
    rx, ry = night.motions[k].to_reference(fx, fy)
    mask = np.zeros(shape, bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            ix, iy = np.round(rx).astype(int) + dx, np.round(ry).astype(int) + dy
            inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
            mask[iy[inside], ix[inside]] = True
    return mask


def trail_excess(night, path):
    """Return the stack's mean on the trail less its mean beside it, in its sky noise."""
    image, weight = science(path)
    noise = sky_noise(image, weight, night.stars)
    sky = np.median(image[well_covered(weight)])
    usable = well_covered(weight) & (np.abs(image - sky) < 10 * noise)  # no star's light
    on = trail_mask(night, image.shape) & usable
    beside = (trail_mask(night, image.shape, -8) | trail_mask(night, image.shape, 8)) & usable
    assert on.sum() > 200
    assert beside.sum() > 400
    return (np.mean(image[on]) - np.mean(image[beside])) / noise


def test_the_trail_is_rejected(night, tmp_path):
    night, folder = night
    assert abs(trail_excess(night, folder / "all" / "stack.fits")) <= 1.0
    # There to reject: kept, it stands out.
    run("stack", *night.frames, "--out", tmp_path / "kept.fits", "--no-reject")
    assert trail_excess(night, tmp_path / "kept.fits") > 3.0


def test_the_report_leaves_out_or_weighs_down_the_spoilt_frames(night):
    night, folder = night
    report = Table.read(folder / "all" / "stack.frames.ecsv")
    assert list(report["frame"]) == [str(f) for f in night.frames]
    for name in (
        "used",
        "weight",
        "fwhm",
        "elongation",
        "n_stars",
        "sky",
        "noise",
        "flux_scale",
        "reason",
    ):
        assert name in report.colnames, name
    median = np.median(report["weight"][report["used"]])
    for row, condition in zip(report, night.conditions["condition"], strict=True):
        if condition in SPOILT:
            assert not row["used"] or row["weight"] <= 0.25 * median, (condition, row)
            if not row["used"]:
                assert row["weight"] == 0, row
                assert row["reason"], row
        elif condition == "good":
            assert row["used"], row
    assert (folder / "all" / "stack.frames.png").stat().st_size > 0


def test_one_run_stacks_the_night_of_the_three_commands(night, tmp_path):
    """``run`` with its defaults: the three commands' stack, bit for bit, and the same report.

    The commands' maps are written compressed, rounded to 2**-9 px, and run
    rounds the maps it keeps in memory alike (`OffsetMap.quantised`).
    """
    night, folder = night
    out = tmp_path / "stack.fits"
    run("run", *night.frames, "--out", out, "--tables", tmp_path, "--jobs", 2)
    ours, theirs = (science(path) for path in (out, folder / "all" / "stack.fits"))
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
    ours, theirs = (
        Table.read(path.with_name("stack.frames.ecsv")) for path in (out, folder / "all" / "x")
    )
    for column in ("used", "weight", "reason"):
        assert list(ours[column]) == list(theirs[column]), column
