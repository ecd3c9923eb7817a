"""Known motions of the stars between the reference and a frame."""

import numpy as np

__all__ = ["CameraMotion", "LocalDistortion", "PolynomialMotion"]


class CameraMotion:
    """A known motion of the stars between the reference and a frame.

    Drift and field rotation about a pole, seen through a lens with barrel
    and mustache distortion. The distortion is fixed to the camera, so it shows in the offsets
    only through the stars' motion across it.

    Parameters
    ----------
    shape : tuple of int
        Frame shape ``(ny, nx)``; the lens axis is at its centre.
    drift : tuple of float, optional
        Shift of the sky in pixels (undistorted).
    rotation_deg : float, optional
        Field rotation about ``pole``, in degrees.
    pole : tuple of float, optional
        Centre of the field rotation, in pixels (often outside the frame).
    barrel, mustache : float, optional
        Radial distortion: a point at radius r from the axis is drawn at
        r (1 - barrel r**2 + mustache r**4).

    Examples
    --------
    >>> from astro_offsets.datasets import CameraMotion
    >>> motion = CameraMotion((100, 200), drift=(3.0, -1.0), rotation_deg=0.0, barrel=0.0)
    >>> [float(v) for v in motion.to_frame(50.0, 40.0) + motion.offset(53.0, 39.0)]
    [53.0, 39.0, 3.0, -1.0]
    """

    def __init__(
        self,
        shape,
        *,
        drift=(12.3, -7.8),
        rotation_deg=0.12,
        pole=(-900.0, 5200.0),
        barrel=8e-10,
        mustache=0.0,
    ):
        ny, nx = shape
        self.centre = ((nx - 1) / 2, (ny - 1) / 2)
        self.drift = drift
        self.rotation = np.deg2rad(rotation_deg)
        self.pole = pole
        self.barrel = barrel
        self.mustache = mustache

    def _distort(self, x, y):
        cx, cy = self.centre
        rx, ry = x - cx, y - cy
        r2 = rx * rx + ry * ry
        scale = 1 - self.barrel * r2 + self.mustache * r2 * r2
        return cx + rx * scale, cy + ry * scale

    def _undistort(self, x, y):
        # Fixed-point inversion; converges to 1e-12 px in a few steps for
        # distortions of a few per cent.
        ux, uy = x, y
        for _ in range(8):
            dx, dy = self._distort(ux, uy)
            ux, uy = ux + (x - dx), uy + (y - dy)
        return ux, uy

    def _rotate(self, x, y, sign):
        px, py = self.pole
        c, s = np.cos(self.rotation), sign * np.sin(self.rotation)
        return px + c * (x - px) - s * (y - py), py + s * (x - px) + c * (y - py)

    def to_frame(self, x_ref, y_ref):
        """Return where stars at reference positions appear in the frame."""
        ux, uy = self._rotate(*self._undistort(x_ref, y_ref), +1)
        return self._distort(ux + self.drift[0], uy + self.drift[1])

    def to_reference(self, x, y):
        """Return where stars at frame positions appear in the reference."""
        ux, uy = self._undistort(x, y)
        return self._distort(*self._rotate(ux - self.drift[0], uy - self.drift[1], -1))

    def offset(self, x, y):
        """Return the true ``(x_offset, y_offset)`` at frame points ``(x, y)``."""
        ref_x, ref_y = self.to_reference(x, y)
        return x - ref_x, y - ref_y


class PolynomialMotion:
    """A known offset field that is a cubic polynomial of the position.

    Examples
    --------
    >>> from astro_offsets.datasets import PolynomialMotion
    >>> [round(float(v), 3) for v in PolynomialMotion((100, 200)).offset(0.0, 0.0)]
    [3.0, -2.0]
    """

    def __init__(self, shape):
        ny, nx = shape
        self.scale = max(nx, ny) / 2

    def offset(self, x, y):
        """Return the true ``(x_offset, y_offset)`` at frame points ``(x, y)``."""
        u, v = np.asarray(x) / self.scale, np.asarray(y) / self.scale
        return (
            3.0 + 0.8 * u - 0.5 * v + 0.4 * u * v - 0.3 * u**3 + 0.2 * u * v * v,
            -2.0 + 0.3 * u + 0.6 * v - 0.25 * u * u + 0.35 * v**3 - 0.15 * u * u * v,
        )


class LocalDistortion:
    """A smooth motion plus a local Gaussian bump no low-order polynomial follows.

    Parameters
    ----------
    base : object
        A motion with an ``offset(x, y)`` method, such as `CameraMotion`.
    centre : tuple of float
        Centre ``(x, y)`` of the bump, in pixels.
    sigma : float
        Gaussian width of the bump, in pixels.
    amplitude : tuple of float
        Peak ``(x, y)`` offset the bump adds, in pixels.

    Examples
    --------
    >>> from astro_offsets.datasets import LocalDistortion, PolynomialMotion
    >>> field = LocalDistortion(PolynomialMotion((100, 200)), (0.0, 0.0), 10.0, (1.0, 0.5))
    >>> [round(float(v), 3) for v in field.offset(0.0, 0.0)]
    [4.0, -1.5]
    """

    def __init__(self, base, centre, sigma, amplitude):
        self.base = base
        self.centre = centre
        self.sigma = sigma
        self.amplitude = amplitude

    def offset(self, x, y):
        """Return the true ``(x_offset, y_offset)`` at frame points ``(x, y)``."""
        u, v = self.base.offset(x, y)
        cx, cy = self.centre
        g = np.exp(-((np.asarray(x) - cx) ** 2 + (np.asarray(y) - cy) ** 2) / (2 * self.sigma**2))
        return u + self.amplitude[0] * g, v + self.amplitude[1] * g
