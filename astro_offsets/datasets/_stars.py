"""Synthetic stars: positions and fluxes, images of them, star tables of a known motion."""

import numpy as np
from scipy.special import erf

__all__ = ["observe", "render_stars", "star_field", "star_offsets"]


def _pixel_integrals(centres, n, sigma):
    # Fraction of a 1-D Gaussian falling in each pixel [k - 0.5, k + 0.5].
    edges = np.arange(n + 1) - 0.5
    cdf = 0.5 * (1 + erf((edges[None, :] - centres[:, None]) / (np.sqrt(2) * sigma)))
    return np.diff(cdf, axis=1)


def render_stars(shape, x, y, flux, sigma=1.5, *, elongation=1.0, angle=0.0):
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
    elongation : float, optional
        Stars stretched along ``angle``, as by wind shake or poor tracking:
        their sigma along it is ``elongation * sigma``, across it
        ``sigma``. The default is 1 (round stars).
    angle : float, optional
        Direction of the stretch, degrees counter-clockwise from the x axis
        (towards +y). The default is 0.

    Returns
    -------
    `~numpy.ndarray`
        float64 image; each star's pixels sum to its flux (less what falls
        outside the image).

    Notes
    -----
    Round stars are integrated exactly over each pixel. Elongated ones
    exactly along x, and over 8 sub-rows of each pixel along y (the
    Gaussian's x profile moves with y when the stretch is oblique).

    Examples
    --------
    >>> from astro_offsets.datasets import render_stars
    >>> image = render_stars((21, 21), [10.0], [10.0], [1000.0])
    >>> round(float(image.sum()), 6)
    1000.0
    >>> shaken = render_stars((61, 61), [30.0], [30.0], [1000.0], elongation=2.5, angle=30)
    >>> round(float(shaken.sum()), 6)
    1000.0
    """
    if elongation <= 0 or not np.isfinite(elongation):
        raise ValueError(f"elongation must be a positive number, got {elongation!r}")
    if elongation != 1:
        return _render_elongated(shape, x, y, flux, sigma, elongation, angle)
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


def _render_elongated(shape, x, y, flux, sigma, elongation, angle):
    """`render_stars` of stars stretched ``elongation`` times along ``angle``, star by star.

    An elliptical Gaussian is the Gaussian of y times the Gaussian of x given
    y, whose centre moves linearly with y: exact integrals along x, 8
    sub-rows per pixel along y.
    """
    ny, nx = shape
    x, y, flux = (np.atleast_1d(np.asarray(v, float)) for v in (x, y, flux))
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    major, minor = (elongation * sigma) ** 2, sigma**2
    var_x = major * c * c + minor * s * s
    var_y = major * s * s + minor * c * c
    cov = (major - minor) * c * s
    slope = cov / var_y  # the x centre moves by this per pixel of y
    sigma_x = np.sqrt(var_x - cov * slope)
    sigma_y = np.sqrt(var_y)
    half_x, half_y = 8 * np.sqrt(var_x), 8 * sigma_y
    sub = 8
    image = np.zeros(shape)
    for xk, yk, fk in zip(x, y, flux, strict=True):
        j0, j1 = max(0, int(np.floor(yk - half_y))), min(ny, int(np.ceil(yk + half_y)) + 1)
        i0, i1 = max(0, int(np.floor(xk - half_x))), min(nx, int(np.ceil(xk + half_x)) + 1)
        if j0 >= j1 or i0 >= i1:
            continue
        edges = j0 - 0.5 + np.arange((j1 - j0) * sub + 1) / sub
        weight = np.diff(0.5 * (1 + erf((edges - yk) / (np.sqrt(2) * sigma_y))))
        middle = 0.5 * (edges[1:] + edges[:-1])
        profile = _pixel_integrals(xk - i0 + slope * (middle - yk), i1 - i0, sigma_x)
        rows = (weight[:, None] * profile).reshape(j1 - j0, sub, i1 - i0).sum(axis=1)
        image[j0:j1, i0:i1] += fk * rows
    return image


def star_field(rng, n, shape, *, margin=50.0, faintest=1500.0, slope=1.0):
    """Return ``x, y, flux`` of random stars with a power-law brightness distribution.

    Stars fill the frame and a ``margin`` around it (so that stars enter and
    leave as the frame moves); the number of stars brighter than F falls as
    F**-slope above ``faintest``, as star counts do over a few magnitudes.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.datasets import star_field
    >>> x, y, flux = star_field(np.random.default_rng(0), 100, (50, 80))
    >>> bool(flux.min() >= 1500.0), x.shape
    (True, (100,))
    """
    ny, nx = shape
    x = rng.uniform(-margin, nx - 1 + margin, n)
    y = rng.uniform(-margin, ny - 1 + margin, n)
    flux = faintest * (rng.pareto(slope, n) + 1)
    return x, y, flux


def observe(
    rng, shape, x, y, flux, *, sigma=1.6, sky=200.0, read_noise=8.0, elongation=1.0, angle=0.0
):
    """Return a noisy image of stars: sky, photon noise (gain 1) and read noise.

    The stars are those of `render_stars`, with its ``sigma``, ``elongation``
    and ``angle``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.datasets import observe
    >>> image = observe(np.random.default_rng(0), (64, 64), [32.0], [32.0], [1e4])
    >>> bool(abs(np.median(image) - 200) < 2)
    True
    """
    signal = sky + render_stars(shape, x, y, flux, sigma, elongation=elongation, angle=angle)
    return signal + rng.standard_normal(shape) * np.sqrt(signal + read_noise**2)


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
    >>> from astro_offsets.datasets import PolynomialMotion, star_offsets
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
