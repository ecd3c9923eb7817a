"""Synthetic star fields, for the demo, the docs and the tests."""

import numpy as np
from scipy.special import erf

__all__ = [
    "CameraMotion",
    "LocalDistortion",
    "PolynomialMotion",
    "observe",
    "render_stars",
    "star_field",
    "star_offsets",
]


def _pixel_integrals(centres, n, sigma):
    # Fraction of a 1-D Gaussian falling in each pixel [k - 0.5, k + 0.5].
    edges = np.arange(n + 1) - 0.5
    cdf = 0.5 * (1 + erf((edges[None, :] - centres[:, None]) / (np.sqrt(2) * sigma)))
    return np.diff(cdf, axis=1)


def render_stars(shape, x, y, flux, sigma=1.5):
    """Return an image of Gaussian stars, integrated exactly over each pixel.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    x, y : array-like
        Star positions (0-based, integer values at pixel centres).
    flux : array-like
        Total flux of each star.
    sigma : float, optional
        Gaussian sigma in pixels (FWHM = 2.3548 sigma). The default is 1.5.

    Returns
    -------
    `~numpy.ndarray`
        float64 image; each star's pixels sum to its flux (less what falls
        outside the image).

    Examples
    --------
    >>> from astro_offsets._synthetic import render_stars
    >>> image = render_stars((21, 21), [10.0], [10.0], [1000.0])
    >>> round(float(image.sum()), 6)
    1000.0
    """
    ny, nx = shape
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    flux = np.atleast_1d(np.asarray(flux, float))
    image = np.zeros(shape)
    # In chunks of stars, so that a large field needs no (stars x pixels) array.
    for start in range(0, len(x), 256):
        chunk = slice(start, start + 256)
        gx = _pixel_integrals(x[chunk], nx, sigma)
        gy = _pixel_integrals(y[chunk], ny, sigma)
        image += (gy * flux[chunk, None]).T @ gx
    return image


def star_field(rng, n, shape, *, margin=50.0, faintest=1500.0, slope=1.0):
    """Return ``x, y, flux`` of random stars with a power-law brightness distribution.

    Stars fill the frame and a ``margin`` around it (so that stars enter and
    leave as the frame moves); the number of stars brighter than F falls as
    F**-slope above ``faintest``, as star counts do over a few magnitudes.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets._synthetic import star_field
    >>> x, y, flux = star_field(np.random.default_rng(0), 100, (50, 80))
    >>> bool(flux.min() >= 1500.0), x.shape
    (True, (100,))
    """
    ny, nx = shape
    x = rng.uniform(-margin, nx - 1 + margin, n)
    y = rng.uniform(-margin, ny - 1 + margin, n)
    flux = faintest * (rng.pareto(slope, n) + 1)
    return x, y, flux


def observe(rng, shape, x, y, flux, *, sigma=1.6, sky=200.0, read_noise=8.0):
    """Return a noisy image of stars: sky, photon noise (gain 1) and read noise.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets._synthetic import observe
    >>> image = observe(np.random.default_rng(0), (64, 64), [32.0], [32.0], [1e4])
    >>> bool(abs(np.median(image) - 200) < 2)
    True
    """
    signal = sky + render_stars(shape, x, y, flux, sigma)
    return signal + rng.standard_normal(shape) * np.sqrt(signal + read_noise**2)


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
    >>> from astro_offsets._synthetic import CameraMotion
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
    >>> from astro_offsets._synthetic import PolynomialMotion
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
    >>> from astro_offsets._synthetic import LocalDistortion, PolynomialMotion
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


def star_offsets(rng, motion, shape, n, *, noise=0.05, mismatched=0.0, mismatch=5.0):
    """Return a star table's columns for a known motion: measured offsets of random stars.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Source of the positions, the noise and the mismatches.
    motion : object
        Has ``offset(x, y)`` giving the true offsets.
    shape : tuple of int
        Frame shape ``(ny, nx)``; stars are spread uniformly over it.
    n : int
        Number of stars.
    noise : float, optional
        Centroid noise: Gaussian sigma of each offset component, in pixels.
    mismatched : float, optional
        Fraction of stars given a wrong match: their offsets are off by
        ``mismatch`` pixels in a random direction.
    mismatch : float, optional
        Size of the mismatches, in pixels.

    Returns
    -------
    x, y, x_offset, y_offset : `~numpy.ndarray`
        The star columns.
    bad : `~numpy.ndarray`
        Boolean mask of the mismatched stars.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets._synthetic import PolynomialMotion, star_offsets
    >>> shape = (100, 200)
    >>> x, y, dx, dy, bad = star_offsets(np.random.default_rng(0), PolynomialMotion(shape),
    ...                                  shape, 50, mismatched=0.1)
    >>> int(bad.sum()), x.shape
    (5, (50,))
    """
    ny, nx = shape
    x = rng.uniform(0, nx - 1, n)
    y = rng.uniform(0, ny - 1, n)
    dx, dy = motion.offset(x, y)
    dx = dx + rng.normal(0, noise, n)
    dy = dy + rng.normal(0, noise, n)
    bad = np.zeros(n, bool)
    bad[rng.choice(n, round(mismatched * n), replace=False)] = True
    angle = rng.uniform(0, 2 * np.pi, int(bad.sum()))
    dx[bad] += mismatch * np.cos(angle)
    dy[bad] += mismatch * np.sin(angle)
    return x, y, dx, dy, bad
