"""Calibration masters from real FITS and DNG files, and their correction of frames."""

import os

import numpy as np
import pytest
from astropy.io import fits

from astro_offsets.datasets import write_dng
from astro_offsets.frames import Calibration, Frame, calibration_frames, make_master, read_frame

SHAPE = (60, 80)
BIAS, CURRENT = 300.0, 2.0  # ADU, and ADU per second of dark current


def vignetting(shape=SHAPE, depth=0.15):
    """A flat field: 1 at the centre, down by ``depth`` at the corners."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r2 = ((xx - shape[1] / 2) / shape[1]) ** 2 + ((yy - shape[0] / 2) / shape[0]) ** 2
    return 1 - depth * r2 / r2.max()


def write_fits(path, data, exptime):
    hdu = fits.PrimaryHDU(np.asarray(data, np.float32))
    hdu.header["EXPTIME"] = exptime
    hdu.writeto(path)
    return str(path)


@pytest.fixture
def fits_calibration(tmp_path):
    rng = np.random.default_rng(0)
    folders = {kind: tmp_path / kind for kind in ("bias", "dark", "flat")}
    for folder in folders.values():
        folder.mkdir()
    for k in range(5):
        write_fits(folders["bias"] / f"b{k}.fits", BIAS + rng.normal(0, 3, SHAPE), 0.001)
        dark = BIAS + CURRENT * 120 + rng.normal(0, 3, SHAPE)
        if k == 2:
            dark[10, 20] = 5e4  # a cosmic ray, in one dark only
        write_fits(folders["dark"] / f"d{k}.fits", dark, 120.0)
        flat = BIAS + CURRENT * 2 + 20000 * vignetting() + rng.normal(0, 30, SHAPE)
        write_fits(folders["flat"] / f"f{k}.fits", flat, 2.0)
    return folders


def test_fits_masters_calibrate_a_frame(fits_calibration, tmp_path):
    calibration = Calibration.from_files(**fits_calibration)
    assert repr(calibration) == "<Calibration: bias, dark, flat>"
    # Five frames of 3 ADU noise: 1.3 ADU in their mean.
    assert np.std(calibration.bias - BIAS) < 1.6
    assert abs(np.mean(calibration.bias) - BIAS) < 0.1
    # The master dark is the current, the bias taken out; the cosmic ray in
    # one dark is clipped; the dark's exposure is kept.
    assert abs(np.median(calibration.dark) - CURRENT * 120) < 1
    assert abs(calibration.dark[10, 20] - CURRENT * 120) < 10
    assert calibration.dark_exptime == 120.0
    # The flat is divided by its median.
    level = np.median(vignetting())
    np.testing.assert_allclose(calibration.flat, vignetting() / level, rtol=0.01)
    # A 60 s light of a flat sky, vignetted by 15 %: calibrated, flat to 1 %.
    sky = 1000.0
    light = Frame((BIAS + CURRENT * 60 + sky * vignetting()).astype(np.float32), None, 60.0)
    calibrated = calibration.apply(light).data
    blocks = calibrated.reshape(6, 10, 8, 10).mean(axis=(1, 3))  # the masters' noise averaged
    assert np.ptp(blocks) < 0.01 * sky
    np.testing.assert_allclose(blocks, sky * level, rtol=0.01)


def test_masters_are_kept_beside_the_frames(fits_calibration):
    first = make_master("bias", fits_calibration["bias"])
    masters = [n for n in os.listdir(fits_calibration["bias"]) if n.startswith("astro_offsets")]
    assert len(masters) == 1
    with fits.open(fits_calibration["bias"] / masters[0]) as hdul:
        assert hdul[0].header["PRODUCT"] == "calibration master"
        assert hdul[0].header["NCOMBINE"] == 5
    # Read back, not combined again; and the master is no input of its own.
    np.testing.assert_array_equal(make_master("bias", fits_calibration["bias"])[0], first[0])
    assert len(calibration_frames(fits_calibration["bias"])) == 5
    # A frame changed: a new master.
    os.utime(fits_calibration["bias"] / "b0.fits", ns=(1, 1))
    make_master("bias", fits_calibration["bias"])
    masters = [n for n in os.listdir(fits_calibration["bias"]) if n.startswith("astro_offsets")]
    assert len(masters) == 2


def test_small_memory_gives_the_same_master(fits_calibration):
    whole, _, _ = make_master("dark", fits_calibration["dark"], cache=False)
    chunked, _, _ = make_master("dark", fits_calibration["dark"], cache=False, mem_limit=2e5)
    np.testing.assert_array_equal(whole, chunked)


def test_raw_flat_keeps_the_colours(tmp_path):
    rng = np.random.default_rng(1)
    shape = (64, 96)
    gains = np.ones(shape)
    gains[0::2, 0::2] = 0.5  # red pixels half as sensitive
    gains[1::2, 1::2] = 0.8
    flats = []
    for k in range(3):
        mosaic = 8000 * gains * vignetting(shape) + rng.normal(0, 20, shape) + 512
        flats.append(tmp_path / f"flat{k}.dng")
        write_dng(flats[-1], np.round(mosaic).astype(np.uint16), exptime=1.0)
    master, colors, _ = make_master("flat", flats)
    for c in np.unique(colors):
        assert np.median(master[colors == c]) == pytest.approx(1.0)
    level = np.median(vignetting(shape))
    np.testing.assert_allclose(master, vignetting(shape) / level, rtol=0.02)
    # A raw light of a grey sky, vignetted, calibrated by it: flat, colours kept.
    light = tmp_path / "light.dng"
    write_dng(light, np.round(2000 * gains * vignetting(shape) + 512).astype(np.uint16))
    calibrated = Calibration(flat=master, colors=colors).read(str(light))
    for c, gain in ((0, 0.5), (1, 1.0), (2, 0.8)):
        values = calibrated.data[colors == c]
        np.testing.assert_allclose(values, 2000 * gain * level, rtol=0.02)
    # The cached master, given as the flat: read as it is, colours and all.
    (cached,) = tmp_path.glob("astro_offsets_master_flat_*.fits")
    again = Calibration.from_files(flat=str(cached))
    np.testing.assert_array_equal(again.flat, master)
    np.testing.assert_array_equal(again.colors, colors)
    assert len(list(tmp_path.glob("astro_offsets_master_flat_*.fits"))) == 1


def test_bad_calibration_frames(tmp_path):
    with pytest.raises(ValueError, match="no bias frames"):
        make_master("bias", [])
    with pytest.raises(ValueError, match="kind must be one of bias, dark, flat"):
        make_master("twilight", [])
    a = write_fits(tmp_path / "a.fits", np.zeros(SHAPE), 1.0)
    b = write_fits(tmp_path / "b.fits", np.zeros((10, 10)), 1.0)
    with pytest.raises(
        ValueError, match=r"b\.fits: a \(10, 10\) mono frame among bias frames of \(60, 80\)"
    ):
        make_master("bias", [a, b])
    calibration = Calibration(bias=np.zeros(SHAPE))
    with pytest.raises(
        ValueError, match=r"x\.fits: shape \(10, 10\) differs from the master bias's"
    ):
        calibration.apply(read_frame(b), "x.fits")
    with pytest.raises(ValueError, match="the masters differ in shape"):
        Calibration(bias=np.zeros(SHAPE), flat=np.ones((3, 3)))
    raw = tmp_path / "r.dng"
    write_dng(raw, np.full(SHAPE, 600, np.uint16))
    with pytest.raises(
        ValueError, match="a mosaic frame, but the masters were made of mono frames"
    ):
        calibration.read(str(raw))


def test_dark_scaled_without_bias_warns():
    calibration = Calibration(dark=np.full(SHAPE, 50.0), dark_exptime=100.0)
    with pytest.warns(UserWarning, match=r"the dark \(100 s\) is scaled to 50 s without a bias"):
        frame = calibration.apply(Frame(np.full(SHAPE, 60.0, np.float32), None, 50.0))
    np.testing.assert_allclose(frame.data, 35.0)


def test_sky_levels_per_channel():
    from astro_offsets.frames import sky_levels

    rng = np.random.default_rng(3)
    colors = np.tile(np.array([[0, 1], [3, 2]], np.uint8), (300, 400))
    levels = np.array([120.0, 300.0, 80.0])[np.array([0, 1, 2, 1])[colors]]
    frame = rng.normal(levels, 10.0)
    frame[rng.random(frame.shape) < 0.02] = 1e4  # stars and hot pixels
    frame[:5] = np.nan
    np.testing.assert_allclose(sky_levels(frame, colors), [120.0, 300.0, 80.0], atol=0.3)
    assert sky_levels(frame).shape == (1,)


def test_ccdproc_is_quiet_without_touching_astropys_log_level(fits_calibration):
    # ccdproc's INFO lines (how it splits the frames) are not shown, but astropy's
    # log level, the process's, is not changed meanwhile for the other threads.
    import logging
    import threading

    from astropy import log

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    level = log.level
    log.setLevel("INFO")
    seen = set()
    try:
        thread = threading.Thread(
            target=make_master,
            args=("dark", fits_calibration["dark"]),
            kwargs={"cache": False, "mem_limit": 2e5},
        )
        thread.start()
        while thread.is_alive():
            seen.add(log.level)
        thread.join()
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert seen == {logging.INFO}
    assert not [r for r in records if getattr(r, "origin", "").startswith("ccdproc")]
    assert not log.filters
