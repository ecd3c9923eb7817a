"""The embedded demo: runs with no data of its own and reports an honest accuracy."""

import numpy as np
import pytest

from astro_offsets import OffsetMap
from astro_offsets._cli import main
from astro_offsets._demo import DEMO_SHAPE
from astro_offsets._synthetic import CameraMotion


def test_camera_motion_round_trip():
    motion = CameraMotion(DEMO_SHAPE, drift=(40.0, -25.0), rotation_deg=0.9, barrel=2e-9)
    x = np.array([0.0, 1000.5, 4255.0])
    y = np.array([0.0, 2000.25, 2847.0])
    dx, dy = motion._distort(*motion._undistort(x, y))
    np.testing.assert_allclose(dx, x, atol=1e-9)
    np.testing.assert_allclose(dy, y, atol=1e-9)
    back_x, back_y = motion.to_reference(*motion.to_frame(x, y))
    np.testing.assert_allclose(back_x, x, atol=1e-9)
    np.testing.assert_allclose(back_y, y, atol=1e-9)
    fx, fy = motion.to_frame(x, y)
    ox, oy = motion.offset(fx, fy)
    np.testing.assert_allclose(ox, fx - x, atol=1e-9)
    np.testing.assert_allclose(oy, fy - y, atol=1e-9)


@pytest.mark.slow
def test_demo_command(tmp_path, capsys):
    assert main(["demo", "--outdir", str(tmp_path / "demo")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[1].startswith(f"offset map: {tmp_path / 'demo' / 'demo.offsets.fits'}")
    rms = float(lines[2].split("RMS ")[1].split(" px")[0])
    assert 0 < rms < 0.15
    omap = OffsetMap.read(tmp_path / "demo" / "demo.offsets.fits")
    assert omap.shape == DEMO_SHAPE
    assert omap.meta["n_stars"] == 500
