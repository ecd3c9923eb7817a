"""Outlier rejection and normalisation on sequences with a known truth, through real drizzle."""

import os
import tempfile

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.centroids import centroid_com, centroid_sources
from rejection_sequence import (
    EXPOSURE,
    EXPTIME,
    N_FRAMES,
    SHAPE,
    SIGMA,
    SKY,
    TRANSPARENCY,
    artefacts,
    bright_field,
    motion,
    write_sequence,
)

from astro_offsets import OffsetMap, stack_frames
from astro_offsets._cli import main
from astro_offsets.datasets import (
    cosmic_rays,
)
from astro_offsets.frames import sky_levels
from astro_offsets.stack import _rejection


@pytest.fixture(scope="module")
def stars():
    return bright_field()


@pytest.fixture(scope="module")
def sequences(stars, tmp_path_factory):
    dirty = write_sequence(tmp_path_factory.mktemp("dirty"), stars)
    clean = write_sequence(tmp_path_factory.mktemp("clean"), stars, with_artefacts=False)
    return dirty, clean


@pytest.fixture(scope="module")
def stacks(sequences):
    """The sequence with outliers stacked with and without rejection; the clean one without."""
    dirty, clean = sequences
    return {
        "rejected": stack_frames(dirty, n_jobs=2)[0],
        "kept": stack_frames(dirty, n_jobs=2, reject=False)[0],
        "truth": stack_frames(clean, n_jobs=2, reject=False)[0],
    }


def image(stack):
    return np.array(stack.images["SCI"])


def well_covered(stack):
    weight = np.array(stack.weights["SCI"])
    return weight > 0.8 * weight.max()


def isolated_bright(stars, separation=12.0, margin=15):
    x, y, flux = stars
    distance = np.hypot(x[:, None] - x, y[:, None] - y)
    np.fill_diagonal(distance, np.inf)
    inside = (x > margin) & (x < SHAPE[1] - margin) & (y > margin) & (y < SHAPE[0] - margin)
    return inside & (distance.min(axis=1) > separation) & (flux > 1e4)


def on_reference(k, selected):
    """Reference grid pixels of frame ``k``'s pixels ``selected``."""
    fy, fx = np.nonzero(selected)
    rx, ry = motion(k).to_reference(fx.astype(float), fy.astype(float)) if k else (fx, fy)
    rx, ry = np.round(rx).astype(int), np.round(ry).astype(int)
    inside = (rx >= 0) & (rx < SHAPE[1]) & (ry >= 0) & (ry < SHAPE[0])
    footprint = np.zeros(SHAPE, bool)
    footprint[ry[inside], rx[inside]] = True
    return footprint


def test_outliers_leave_the_stack(stacks, stars):
    truth, covered = image(stacks["truth"]), well_covered(stacks["truth"])
    # The stack's noise per pixel, on the sky; per second of the reference.
    noise = 1.4826 * np.median(np.abs(truth[covered] - np.median(truth[covered])))
    # Away from the stars' cores: a cosmic ray on a core stays (as in
    # drizzlepac), the core's steps hide it; the brighter the star, the
    # farther its steps reach.
    x, y, flux = stars
    yy, xx = np.indices(SHAPE)
    cores = np.zeros(SHAPE, bool)
    for bright in np.flatnonzero(flux > 5e3):
        reach = 5 if flux[bright] < 3e4 else 7
        cores |= np.hypot(xx - x[bright], yy - y[bright]) < reach
    where = covered & ~cores
    kept = (image(stacks["kept"]) - truth) / noise
    rejected = (image(stacks["rejected"]) - truth) / noise
    for k, name in ((3, "satellite"), (5, "aircraft")):
        path = on_reference(k, artefacts(k) > 3 * SIGMA) & where
        assert np.mean(kept[path]) > 5, name  # there to reject
        assert abs(np.mean(rejected[path])) < 0.1, name
    hits = np.zeros(SHAPE, bool)
    for k in range(N_FRAMES):
        hits |= on_reference(k, cosmic_rays(np.random.default_rng(k), SHAPE, 40) > 0)
    assert np.max(kept[hits & where]) > 100
    assert abs(np.mean(rejected[hits & where])) < 0.1
    # Anywhere, no more than the noise of a frame left out of a pixel.
    assert np.max(np.abs(rejected[where])) < 2.0


def test_star_fluxes_and_positions_kept(stacks, stars):
    x, y, flux = stars
    chosen = isolated_bright(stars)
    assert chosen.sum() >= 25
    radius = 7.0
    apertures = CircularAperture(np.column_stack([x[chosen], y[chosen]]), radius)
    sky = SKY / EXPTIME
    measured = {
        name: np.asarray(aperture_photometry(image(stack) - sky, apertures)["aperture_sum"])
        for name, stack in stacks.items()
    }
    # The stars that an outlier touched in some frame.
    touched = np.zeros(SHAPE, bool)
    for k in range(N_FRAMES):
        touched |= on_reference(k, artefacts(k) > 0)
    yy, xx = np.indices(SHAPE)
    hit = np.array(
        [touched[np.hypot(xx - x[i], yy - y[i]) < radius + 2].any() for i in np.flatnonzero(chosen)]
    )
    assert 3 <= hit.sum() < len(hit) - 10
    ratio = measured["rejected"] / measured["truth"]
    # Untouched stars are as in the stack without outliers; touched ones lose
    # a frame in a few pixels, no more.
    assert np.max(np.abs(ratio[~hit] - 1)) < 0.005
    assert np.max(np.abs(ratio[hit] - 1)) < 0.02
    assert np.max(measured["kept"][hit] / measured["truth"][hit]) > 1.05
    # Per second of the reference's exposure: the injected fluxes.
    assert np.median(measured["rejected"] / (flux[chosen] / EXPTIME)) == pytest.approx(1, abs=0.005)
    centroids = {
        name: np.array(
            centroid_sources(
                image(stacks[name]), x[chosen], y[chosen], box_size=7, centroid_func=centroid_com
            )
        )
        for name in ("rejected", "truth")
    }
    offsets = np.hypot(*(centroids["rejected"] - centroids["truth"]))
    assert np.max(offsets[~hit]) < 0.002
    assert np.max(offsets) < 0.02


def test_normalisation_to_the_reference(stacks, sequences):
    truth = stacks["truth"]
    covered = well_covered(truth)
    # Haze, a brighter sky, a longer exposure: all brought to the reference.
    reference = SKY / EXPTIME
    assert sky_levels(np.where(covered, image(truth), np.nan))[0] == pytest.approx(
        reference, rel=0.002
    )
    # One spelling: "normalised" (the stack's) beside "normalisation" (each frame's).
    assert truth.meta["normalised"] is True
    assert "normalized" not in truth.meta
    norms = truth.meta["normalisation"]
    assert [n.scale for n in norms] == pytest.approx(
        [1 / (TRANSPARENCY.get(k, 1.0) * EXPOSURE.get(k, EXPTIME) / EXPTIME) for k in range(8)]
    )
    assert norms[0].source == "reference"
    assert {n.source for n in norms[1:]} == {"stars"}
    # Not normalised, the hazy bright frame lifts the sky.
    plain = stack_frames(sequences[1], reject=False, normalize=False)[0]
    assert plain.meta["normalised"] is False
    assert sky_levels(np.where(covered, image(plain), np.nan))[0] > 1.03 * reference


def test_nothing_to_reject_changes_nothing(sequences, stacks, tmp_path):
    clean = sequences[1]
    stack, results = stack_frames(clean, n_jobs=2, masks=tmp_path)
    assert [r.masked for r in results] == [0.0] * N_FRAMES
    np.testing.assert_array_equal(image(stack), image(stacks["truth"]))
    np.testing.assert_array_equal(stack.weights["SCI"], stacks["truth"].weights["SCI"])
    for frame in clean:
        mask = fits.getdata(tmp_path / os.path.basename(frame).replace(".fits", ".outliers.fits"))
        assert not (mask == 1).any()


def test_masks_mark_the_outliers_and_spare_the_cores(sequences, stars, tmp_path):
    dirty = sequences[0]
    _, results = stack_frames(dirty, n_jobs=1, masks=tmp_path)
    x, y, flux = stars
    for k, (frame, result) in enumerate(zip(dirty, results, strict=True)):
        with fits.open(tmp_path / f"light{k}.outliers.fits") as hdul:
            mask, header = hdul[0].data, hdul[0].header
        assert header["PRODUCT"] == "outlier mask"
        assert header["NOUTLIER"] == np.count_nonzero(mask == 1)
        assert result.masked == pytest.approx(np.mean(mask == 1))
        truth = artefacts(k)
        # Every outlier pixel well above the noise is masked (those that
        # the frame's motion takes off the reference grid are not stacked)...
        yy, xx = np.indices(SHAPE, dtype=float)
        rx, ry = motion(k).to_reference(xx, yy) if k else (xx, yy)
        stacked = (rx > 0) & (rx < SHAPE[1] - 1) & (ry > 0) & (ry < SHAPE[0] - 1)
        strong = (truth > 5 * SIGMA) & stacked
        # (not on the bright stars' steps, which hide them)
        fx, fy = motion(k).to_frame(x, y) if k else (x, y)
        for i in np.flatnonzero(flux > 1e4):
            strong &= np.hypot(xx - fx[i], yy - fy[i]) > 6
        assert np.mean(mask[strong] > 0) > 0.99  # an outlier, or a hot pixel (a spike)
        # ...and no core of a bright star without an outlier on it.
        for i in np.flatnonzero((flux > 2e4) & (fx > 3) & (fx < SHAPE[1] - 4)):
            if not (3 < fy[i] < SHAPE[0] - 4):
                continue
            r, c = round(fy[i]), round(fx[i])
            if truth[r - 3 : r + 4, c - 3 : c + 4].max() > 0:
                continue
            assert not (mask[r - 1 : r + 2, c - 1 : c + 2] == 1).any(), (frame, i)


def test_rejection_is_the_same_for_any_workers(sequences, stacks):
    one = stack_frames(sequences[0], n_jobs=1)[0]
    np.testing.assert_array_equal(image(one), image(stacks["rejected"]))
    np.testing.assert_array_equal(one.weights["SCI"], stacks["rejected"].weights["SCI"])


def test_reads_at_an_offset_without_preadv(tmp_path, monkeypatch):
    # Windows has no os.preadv: the scratch files are read through a mapping.
    data = np.arange(200_000, dtype=np.float32)
    path = tmp_path / "scratch.npy"
    data.tofile(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        for preadv in (os.preadv, None):
            monkeypatch.setattr(_rejection, "_PREADV", preadv)
            for start, count in ((0, 10), (12_345, 70_000), (199_990, 10), (5, 0)):
                out = np.full(count, np.nan, np.float32)
                _rejection._read_into(fd, out, 4 * start)
                np.testing.assert_array_equal(out, data[start : start + count])
            with pytest.raises(OSError, match="a scratch file ended early"):
                _rejection._read_into(fd, np.empty(20, np.float32), 4 * 199_990)
    finally:
        os.close(fd)


def test_rejection_without_preadv_is_the_same(sequences, stacks, monkeypatch):
    # In this process (n_jobs=1), with os.preadv gone as on Windows.
    monkeypatch.setattr(_rejection, "_PREADV", None)
    monkeypatch.delattr(os, "preadv")
    stack = stack_frames(sequences[0], n_jobs=1)[0]
    np.testing.assert_array_equal(image(stack), image(stacks["rejected"]))
    np.testing.assert_array_equal(stack.weights["SCI"], stacks["rejected"].weights["SCI"])


def test_stack_command_rejects_and_says_so(sequences, tmp_path, capsys):
    dirty = sequences[0]
    out = tmp_path / "stack.fits"
    assert main(["stack", *dirty, "--out", str(out), "--write-masks", str(tmp_path)]) == 0
    printed, err = capsys.readouterr()
    # The scratch room, said before the first frame: 8 frames of 420 x 300
    # pixels, each kept with its single drizzle (8 bytes a pixel), and the
    # median (4): 8.57 MB.
    assert f"outlier rejection: 0.0086 GB of scratch space in {tempfile.gettempdir()}" in err
    assert "normalised to the reference: flux scales 0.5 to 1.429" in printed
    assert "outliers: " in printed
    assert "at most (" + dirty[5] + ")" in printed or "at most (" + dirty[3] + ")" in printed
    header = fits.getheader(out)
    assert header["REJECT"] is True
    assert header["NORMLZD"] is True
    table = Table.read(out, hdu="FRAMES")
    assert table["flux_scale"][0] == 1.0  # the reference, first
    assert 0.01 < table["rejected"][3] < 0.05  # light3, with the satellite
    # Two frames: nothing to tell an outlier by.
    assert main(["stack", *dirty[:2], "--out", str(tmp_path / "two.fits")]) == 0
    assert "rejection needs 3 or more" in capsys.readouterr().out
    assert fits.getheader(tmp_path / "two.fits")["REJECT"] is False
    # Turned off.
    assert main(["stack", *dirty, "--out", str(tmp_path / "off.fits"), "--no-reject"]) == 0
    assert fits.getheader(tmp_path / "off.fits")["REJECT"] is False


def test_scratch_room_and_clean_up(sequences, tmp_path, monkeypatch):
    import shutil

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stack_frames(sequences[0], scratch=scratch)
    assert os.listdir(scratch) == []

    class Full:
        free = 1000

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Full)
    short = r"needs 0\.0086 GB .*, less than 0\.001 GB are free: .* --no-reject"
    with pytest.raises(ValueError, match=short):
        stack_frames(sequences[0], scratch=scratch)
    assert os.listdir(scratch) == []
    with pytest.raises(ValueError, match="outlier masks need rejection"):
        stack_frames(sequences[0], reject=False, masks=True)


def test_a_map_gone_before_the_second_pass_fails_its_frame_alone(sequences, tmp_path, monkeypatch):
    import shutil

    from astro_offsets.stack._rejection import Rejection

    frames = []
    for frame in sequences[0][:5]:
        stem = os.path.basename(frame).removesuffix(".fits")
        for name in (f"{stem}.fits", f"{stem}.offsets.fits"):
            if os.path.exists(os.path.join(os.path.dirname(frame), name)):
                shutil.copy(os.path.join(os.path.dirname(frame), name), tmp_path / name)
        frames.append(str(tmp_path / f"{stem}.fits"))
    gone, changed = (
        tmp_path / f"{os.path.basename(frames[k]).removesuffix('.fits')}.offsets.fits"
        for k in (2, 3)
    )
    combine = Rejection.combine

    def combine_then_change(self, *args, **kwargs):
        combine(self, *args, **kwargs)
        # After the first pass read them: one map gone, one of another shape.
        os.remove(gone)
        OffsetMap(np.zeros((30, 40)), np.zeros((30, 40))).write(changed, overwrite=True)

    monkeypatch.setattr(Rejection, "combine", combine_then_change)
    stack, results = stack_frames(frames, n_jobs=2)
    assert [r.status for r in results] == ["stacked", "stacked", "failed", "failed", "stacked"]
    assert "no such file" in results[2].message
    assert "differs from its map's (30, 40)" in results[3].message
    assert len(stack.meta["frames"]) == 3
    # Context bit k is the k-th frame stacked: bits 0 to 2, no gap.
    context = stack.contexts["SCI"][0]
    assert [bool(np.any((context >> k) & 1)) for k in range(5)] == [True] * 3 + [False] * 2
