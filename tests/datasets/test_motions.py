"""Known motions: a camera motion and its inverse agree."""

import numpy as np

from astro_offsets.datasets import CameraMotion


def test_camera_motion_round_trip():
    motion = CameraMotion((2848, 4256), drift=(40.0, -25.0), rotation_deg=0.9, barrel=2e-9)
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
