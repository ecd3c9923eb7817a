"""Find stars in a frame: background, FWHM, DAOStarFinder, Bayer super-pixels."""

import warnings

import numpy as np
from astropy.stats import SigmaClip, sigma_clipped_stats
from astropy.table import QTable
from photutils.background import Background2D, MedianBackground
from photutils.detection import DAOStarFinder
from photutils.psf import fit_fwhm
from photutils.utils import NoDetectionsWarning

from ..frames import green, superpixels
from ._schema import CENTROID

__all__ = ["detect_stars"]

_FWHM_GUESS = 3.0
_FWHM_STARS = 30


def _background(image):
    """Background and its noise: a smooth map for large frames, a constant for small ones."""
    box = min(64, max(8, min(image.shape) // 4))
    if min(image.shape) >= 4 * box:
        bkg = Background2D(
            image, box, filter_size=3, sigma_clip=SigmaClip(3.0), bkg_estimator=MedianBackground()
        )
        return bkg.background, float(bkg.background_rms_median)
    _, median, std = sigma_clipped_stats(image, sigma=3.0)
    return median, float(std)


def _find(image, threshold, fwhm):
    # photutils' default minimum separation (2.5 FWHM) drops stars beside
    # brighter ones that are well resolved; closer than one FWHM they blend.
    finder = DAOStarFinder(
        threshold=threshold,
        fwhm=fwhm,
        exclude_border=True,
        roundness_range=(-0.8, 0.8),
        min_separation=fwhm,
    )
    with warnings.catch_warnings():
        # No star is a result here (a frame of pure noise), not a warning.
        warnings.simplefilter("ignore", NoDetectionsWarning)
        return finder(image)


def _estimate_fwhm(image, noise):
    """FWHM (pixels) of the brightest isolated stars, by 2-D Gaussian fits."""
    fwhm = _FWHM_GUESS
    for _ in range(2):
        found = _find(image, 20 * noise, fwhm)
        if found is None or len(found) < 3:
            return fwhm
        found.sort("flux", reverse=True)
        x = np.asarray(found["x_centroid"], float)
        y = np.asarray(found["y_centroid"], float)
        # Isolated: no other detection within four FWHM.
        separation = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        np.fill_diagonal(separation, np.inf)
        keep = np.flatnonzero(separation.min(axis=1) > 4 * fwhm)[:_FWHM_STARS]
        if len(keep) < 3:
            return fwhm
        size = int(2 * np.ceil(1.5 * fwhm) + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fits of faint or clipped stars may not converge
            fitted = fit_fwhm(image, xypos=np.column_stack([x[keep], y[keep]]), fit_shape=size)
        fitted = np.asarray(fitted, float)
        fitted = fitted[np.isfinite(fitted) & (fitted > 0.5)]
        if len(fitted) < 3:
            return fwhm
        fwhm = float(np.median(fitted))
    return fwhm


def _windowed_centroids(image, x, y, fwhm, iterations=10):
    """Refine positions with Gaussian-windowed centroids (SExtractor's XWIN).

    Each position moves by twice the Gaussian-weighted mean offset of the
    pixels around it, until it settles: for a Gaussian star this converges
    to its centre without the pixel-phase bias of plain centroids, and the
    noise is weighted as in a PSF fit.
    """
    sigma = fwhm / 2.3548
    half = int(np.ceil(4 * sigma))
    offsets = np.arange(-half, half + 1)
    ny, nx = image.shape
    x0 = x = np.array(x, float)
    y0 = y = np.array(y, float)
    for _ in range(iterations):
        cols = np.round(x).astype(int)[:, None] + offsets[None, :]  # (n, w)
        rows = np.round(y).astype(int)[:, None] + offsets[None, :]
        inside = (cols >= 0) & (cols < nx)
        inside_rows = (rows >= 0) & (rows < ny)
        stamp = image[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
        stamp = stamp * (inside_rows[:, :, None] & inside[:, None, :])
        dx = cols[:, None, :] - x[:, None, None]
        dy = rows[:, :, None] - y[:, None, None]
        weight = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) * stamp
        total = weight.sum(axis=(1, 2))
        ok = total > 0
        step_x = np.where(ok, 2 * (weight * dx).sum(axis=(1, 2)) / np.where(ok, total, 1), 0)
        step_y = np.where(ok, 2 * (weight * dy).sum(axis=(1, 2)) / np.where(ok, total, 1), 0)
        # A step longer than the window means a blend or noise: keep the
        # detection's position for that star.
        steady = np.hypot(step_x, step_y) < sigma
        x = np.where(steady, x + step_x, x)
        y = np.where(steady, y + step_y, y)
        if np.all(np.abs(step_x) + np.abs(step_y) < 1e-4):
            break
    # A window that wandered off its detection slid towards a brighter
    # neighbour (a blend): keep the detection's position there.
    wandered = np.hypot(x - x0, y - y0) > 0.25 * fwhm
    return np.where(wandered, x0, x), np.where(wandered, y0, y)


def _green_centroids(mosaic, colors, x, y, fwhm):
    """Windowed centroids on the green pixels of a Bayer mosaic, at full resolution.

    Green pixels are half of the mosaic, in a regular checkerboard, and one
    colour channel is unaffected by the star's colour. The green background
    is estimated on the green super-pixel means and subtracted.
    """
    green_pixels = green(colors).astype(np.float32)
    level = superpixels(mosaic * green_pixels) / 2
    background, _ = _background(level)
    background = np.broadcast_to(background, level.shape)
    full = np.repeat(np.repeat(background, 2, axis=0), 2, axis=1)
    fine = np.zeros_like(mosaic)
    ny, nx = full.shape
    fine[:ny, :nx] = (mosaic[:ny, :nx] - full) * green_pixels[:ny, :nx]
    return _windowed_centroids(fine, x, y, fwhm)


def detect_stars(data, *, fwhm=None, threshold=5.0, colors=None):
    """Find the stars of a frame.

    The background is estimated (photutils `~photutils.background.Background2D`
    with sigma clipping) and subtracted, the FWHM estimated from the brightest
    isolated stars when not given, stars found with
    `~photutils.detection.DAOStarFinder`, and their positions refined with
    Gaussian-windowed centroids. For a colour raw frame (``colors``
    given) the search runs on 2 x 2 super-pixel sums of the Bayer mosaic (each
    holds one red, two green and one blue pixel), and the positions are
    refined on the mosaic's green pixels at full resolution, in raw pixel
    coordinates.

    Parameters
    ----------
    data : array-like
        The frame ``(ny, nx)``: an image, or a raw Bayer mosaic (black level
        subtracted).
    fwhm : float or `None`, optional
        Stars' full width at half maximum, in pixels of ``data``; estimated
        when `None`.
    threshold : float, optional
        Detection threshold in units of the background noise. The default
        is 5.
    colors : array-like or `None`, optional
        rawpy's ``raw_colors_visible`` for a raw frame; `None` for an image.

    Returns
    -------
    `~astropy.table.QTable`
        One row per star, brightest first: ``xcentroid``, ``ycentroid``
        (pixels of ``data``), ``flux``, ``peak`` (background subtracted),
        ``snr`` (flux over the noise in a disc of one FWHM radius), and
        ``meta`` with ``fwhm``, ``noise``, ``threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import detect_stars
    >>> from astro_offsets.datasets import render_stars
    >>> rng = np.random.default_rng(0)
    >>> image = 100 + render_stars((80, 90), [20.3, 61.8], [30.6, 50.2], [9e3, 6e3])
    >>> image += rng.normal(0, 3, image.shape)
    >>> stars = detect_stars(image)
    >>> [(round(float(x), 1), round(float(y), 1))
    ...  for x, y in zip(stars["xcentroid"], stars["ycentroid"])]
    [(20.3, 30.6), (61.8, 50.2)]
    """
    data = np.asarray(data, dtype=np.float32)
    bayer = colors is not None
    image = superpixels(data) if bayer else data
    factor = 2.0 if bayer else 1.0
    background, noise = _background(image)
    image = image - background
    fwhm_image = _estimate_fwhm(image, noise) if fwhm is None else float(fwhm) / factor
    found = _find(image, threshold * noise, fwhm_image) if noise > 0 else None
    table = QTable()
    if found is None:
        for name in (*CENTROID, "flux", "peak", "snr"):
            table[name] = np.zeros(0)
    else:
        found.sort("flux", reverse=True)
        x, y = _windowed_centroids(image, found["x_centroid"], found["y_centroid"], fwhm_image)
        if bayer:
            # Super-pixel (i, j) is centred on raw point (2i + 0.5, 2j + 0.5);
            # super-pixels undersample the stars, so refine at full resolution.
            x, y = _green_centroids(data, colors, 2 * x + 0.5, 2 * y + 0.5, 2 * fwhm_image)
        flux = np.asarray(found["flux"], float)
        table[CENTROID[0]] = x
        table[CENTROID[1]] = y
        table["flux"] = flux
        table["peak"] = np.asarray(found["peak"], float)
        area = np.pi * fwhm_image**2
        table["snr"] = flux / np.sqrt(np.maximum(flux, 0) + area * noise**2)
    table.meta.update(fwhm=fwhm_image * factor, noise=noise, threshold=threshold)
    return table
