"""Find stars in a frame with Source Extractor's algorithms (sep), mono or Bayer.

The background is estimated on a coarse mesh and subtracted, sources are
found above a threshold after a filter matched to the stars' FWHM, and each
position is refined by a Gaussian-windowed centroid (SExtractor's XWIN),
all in compiled code. Each star gets its signal-to-noise ratio, its FWHM and
shape, flags for blends, edges and extended sources, and the uncertainty of
its centroid.
"""

from types import MappingProxyType

import numpy as np
import sep
from astropy.table import QTable

from ..frames import green, superpixels
from ._schema import CENTROID

__all__ = ["FLAGS", "detect_stars"]

#: Bits of the ``flags`` column.
FLAGS = MappingProxyType({"blended": 1, "edge": 2, "extended": 4, "window": 8})
_FWHM_GUESS = 3.0
_BOX = 64  # background mesh, pixels of the image searched
_MIN_AREA = 4
# Stars used to estimate the FWHM: the brightest that are alone and whole.
_FWHM_STARS = 50
# A star whose FWHM is this much larger than the median is a galaxy, a blend
# that was not split, or a defect: no point source.
_EXTENDED = 1.5
# Centroids no better than this (px): pixel-phase and PSF-shape errors stay
# when photon and read noise vanish.
_CENTROID_FLOOR = 0.01
# sep's pixel stack holds the pixels of the sources being extracted; frames
# of tens of Mpix with bright stars need more than its default.
_PIXSTACK = 3_000_000


def _background(image):
    """Background map and noise: sep's mesh, sized to the image."""
    box = int(min(_BOX, max(8, min(image.shape) // 4)))
    background = sep.Background(image, bw=box, bh=box, fw=3, fh=3)
    return background.back(), float(background.globalrms)


def _extract(image, noise, threshold):
    """Return the sources above ``threshold`` noise sigmas, and the segmentation map.

    After sep's 3 x 3 smoothing filter, which suits stars of a few pixels'
    FWHM (those of a wide-field camera, or super-pixels of a Bayer mosaic):
    measured on a 10.8-Mpix frame it found a third more faint stars than a
    Gaussian matched to the FWHM, in a third of the time. The segmentation
    map tells each source's pixels from its neighbours'.
    """
    # The pixel stack is a setting of sep's, the process's: it is raised when
    # an image needs more, never lowered, so that a larger one (the user's, or
    # a larger frame's in another thread) stays, and it is set once, not on
    # every detection.
    needed = max(_PIXSTACK, image.size // 4)
    if sep.get_extract_pixstack() < needed:
        sep.set_extract_pixstack(needed)
    if noise <= 0:
        return np.zeros(0, dtype=[(name, float) for name in ("x", "y", "flux")]), None
    return sep.extract(
        image,
        threshold,
        err=noise,
        minarea=_MIN_AREA,
        deblend_cont=0.005,
        segmentation_map=True,
    )


def _radii(image, x, y, fwhm, segments):
    """Half-flux radii, without the neighbours' pixels: twice that is a Gaussian's FWHM.

    ``segments`` is ``(ids, segmentation map)`` of the sources at ``x, y``.
    """
    ids, segmap = segments
    rmax = np.full(len(x), 3.0 * fwhm)
    radius, _ = sep.flux_radius(image, x, y, rmax, 0.5, seg_id=ids, segmap=segmap, subpix=5)
    return radius


def _kron_fluxes(image, x, y, objects, segments):
    """Return each source's flux in its Kron ellipse (Source Extractor's FLUX_AUTO).

    The ellipse is 2.5 Kron radii of the source's own light, at least
    3.5 px: it takes the same share of a star's light whatever the seeing,
    where the disc of ``flux`` (a radius of the reference's FWHM) takes less
    of a blurred frame's stars. The neighbours' pixels are left out.
    """
    ids, segmap = segments
    a, b = objects["a"], objects["b"]
    # sep computes theta in float32, where pi/2 rounds to just above pi/2:
    # its apertures refuse that ("invalid aperture parameters") for a source
    # stretched along y, as wind shake makes them.
    theta = np.clip(objects["theta"], -np.pi / 2, np.pi / 2)
    kron, _ = sep.kron_radius(image, x, y, a, b, theta, 6.0, seg_id=ids, segmap=segmap)
    # Sources too small for their ellipse, or whose ellipse sep cannot
    # measure (no Kron radius, a degenerate shape): a disc of 3.5 px.
    with np.errstate(invalid="ignore"):
        ellipse = (kron * np.sqrt(a * b) >= 3.5 / 2.5) & (b > 0) & (a >= b)
    flux = np.empty(len(x))
    if ellipse.any():
        flux[ellipse], _, _ = sep.sum_ellipse(
            image,
            x[ellipse],
            y[ellipse],
            a[ellipse],
            b[ellipse],
            theta[ellipse],
            2.5 * kron[ellipse],
            subpix=1,
            seg_id=ids[ellipse],
            segmap=segmap,
        )
    if not ellipse.all():
        flux[~ellipse], _, _ = sep.sum_circle(
            image, x[~ellipse], y[~ellipse], 3.5, subpix=1, seg_id=ids[~ellipse], segmap=segmap
        )
    return flux


def _estimate_fwhm(image, objects, segmap):
    """Return the FWHM (pixels) of the brightest stars that are alone and whole.

    Their half-flux radii measure it (twice a Gaussian's half-flux radius is
    its FWHM), within a radius set by their second moments, which a
    threshold makes too small but not by much.
    """
    ids = np.arange(1, len(objects) + 1, dtype=np.int32)
    alone = (objects["flag"] & (sep.OBJ_MERGED | sep.OBJ_TRUNC)) == 0 if len(objects) else []
    brightest = np.flatnonzero(alone)[np.argsort(-objects["flux"][alone])][:_FWHM_STARS]
    if len(brightest) < 3:
        return _FWHM_GUESS
    stars = objects[brightest]
    moments = 2.3548 * float(np.median(np.sqrt(stars["a"] * stars["b"])))
    radius = _radii(
        image, stars["x"], stars["y"], max(moments, _FWHM_GUESS), (ids[brightest], segmap)
    )
    radius = radius[np.isfinite(radius) & (radius > 0.25)]
    return float(2 * np.median(radius)) if len(radius) >= 3 else _FWHM_GUESS


def _windowed(image, x, y, fwhm, mask=None):
    """Gaussian-windowed centroids; the detection's position where the window wandered.

    A window that moved by more than a quarter of the FWHM slid towards a
    brighter neighbour (a blend) or into noise: the detection's position
    stays, and the star is flagged.
    """
    # sep's flags say the window held masked or outside pixels: no failure.
    xw, yw, _ = sep.winpos(image, x, y, np.full(len(x), fwhm / 2.3548), mask=mask)
    moved = np.hypot(xw - x, yw - y)
    bad = ~np.isfinite(moved) | (moved > 0.25 * fwhm)
    return np.where(bad, x, xw), np.where(bad, y, yw), bad


def _green_centroids(mosaic, colors, x, y, fwhm):
    """Windowed centroids on the green pixels of a Bayer mosaic, at full resolution.

    Green pixels are half of the mosaic, in a regular checkerboard, and one
    colour channel is unaffected by the star's colour; the other pixels are
    masked. The green background is estimated on the green super-pixel means
    and subtracted.
    """
    greens = green(colors)
    level = np.ascontiguousarray(superpixels(mosaic * greens) / 2, dtype=np.float32)
    background, _ = _background(level)
    full = np.repeat(np.repeat(background, 2, axis=0), 2, axis=1)
    fine = np.zeros_like(mosaic)
    ny, nx = full.shape
    fine[:ny, :nx] = mosaic[:ny, :nx] - full
    return _windowed(fine, x, y, fwhm, mask=~greens)


def detect_stars(data, *, fwhm=None, threshold=5.0, colors=None):
    r"""Find the stars of a frame.

    The background is estimated on a mesh and subtracted, the FWHM
    estimated from the brightest stars that are alone and whole when not
    given, sources extracted above ``threshold`` times the background noise
    (after a small smoothing filter), and their positions refined by
    Gaussian-windowed centroids: Source Extractor's algorithms, through
    ``sep``. For a colour raw frame (``colors`` given) the search runs on
    2 x 2 super-pixel sums of the Bayer mosaic (each holds one red, two green
    and one blue pixel), and the positions are refined on the mosaic's green
    pixels at full resolution, in raw pixel coordinates.

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
        One row per star, brightest first, in the manner of photutils' star
        finders: ``id`` (from 1), ``xcentroid``, ``ycentroid`` (pixels of
        ``data``), ``xcentroid_err``, ``ycentroid_err`` (their
        standard uncertainty, px), ``flux`` (background subtracted, in a
        disc of one FWHM radius) and ``flux_err``, ``flux_auto`` (in the
        source's Kron ellipse, as Source Extractor's ``FLUX_AUTO``: the same
        share of a star's light whatever the seeing), ``snr``, ``peak``,
        ``fwhm`` (the star's own, twice its half-flux radius), ``roundness``
        (minor over major axis), ``npix`` (pixels above the threshold),
        ``mag`` (``-2.5 log10(flux)``) and ``flags``: the sum of bits
        (``astro_offsets.stars.FLAGS``), 1 blended with a neighbour, 2 on
        the frame's edge, 4 extended (its FWHM over 1.5 times the median of
        the stars alone and whole),
        8 the windowed centroid failed (the detection's position is kept).
        ``meta`` holds ``fwhm`` (the FWHM searched with: ``fwhm``, or the
        estimate), ``noise`` (the background's RMS) and ``sky`` (its
        median), both per pixel of ``data``, ``threshold``, and the stars'
        measures: ``star_fwhm``, the median of their ``fwhm``, and
        ``elongation``, the median of their major over minor axis, both
        over the stars without flags (over all if none has none; NaN
        without stars).

    Notes
    -----
    The centroid uncertainty is that of a Gaussian star of the frame's FWHM
    (sigma ``s``), flux ``F`` and background noise ``n`` per pixel, in either
    axis, :math:`\sqrt{s^2/F + 8\pi s^4 n^2/F^2}` (the photon term taking a
    gain of 1), and at least 0.01 px.

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
    data = np.ascontiguousarray(data, dtype=np.float32)
    bayer = colors is not None
    image = np.ascontiguousarray(superpixels(data)) if bayer else data
    factor = 2.0 if bayer else 1.0
    background, noise = _background(image)
    image = image - background
    objects, segmap = _extract(image, noise, threshold)
    given = None if fwhm is None else float(fwhm) / factor
    fwhm_image = _estimate_fwhm(image, objects, segmap) if given is None else given
    table = QTable()
    if not len(objects):
        for name in (*CENTROID, "xcentroid_err", "ycentroid_err", "flux", "flux_err"):
            table[name] = np.zeros(0)
        for name in ("flux_auto", "snr"):
            table[name] = np.zeros(0)
        for name in ("peak", "fwhm", "roundness"):
            table[name] = np.zeros(0)
        table["npix"] = table["flags"] = np.zeros(0, int)
        table["mag"] = np.zeros(0)
        table.add_column(np.zeros(0, int), name="id", index=0)
        table.meta.update(_meta(fwhm_image * factor, noise, threshold, background, factor))
        return table
    x, y, wandered = _windowed(image, objects["x"], objects["y"], fwhm_image)
    flux, flux_err, _ = sep.sum_circle(image, x, y, fwhm_image, err=noise, gain=1.0)
    ids = np.arange(1, len(objects) + 1, dtype=np.int32)
    flux_auto = _kron_fluxes(image, x, y, objects, (ids, segmap))
    star_fwhm = 2 * _radii(image, x, y, fwhm_image, (ids, segmap))
    if bayer:
        # Super-pixel (i, j) is centred on raw point (2i + 0.5, 2j + 0.5);
        # super-pixels undersample the stars, so refine at full resolution.
        x, y, green_wandered = _green_centroids(
            data, np.asarray(colors), 2 * x + 0.5, 2 * y + 0.5, 2 * fwhm_image
        )
        wandered |= green_wandered
    flags = np.where(objects["flag"] & sep.OBJ_MERGED, FLAGS["blended"], 0)
    flags |= np.where(objects["flag"] & sep.OBJ_TRUNC, FLAGS["edge"], 0)
    # Against the stars' own median, not the FWHM searched with (perhaps the
    # reference's): in a blurred or shaken frame every star is wider than
    # that, and none is extended for it.
    alone = (objects["flag"] & (sep.OBJ_MERGED | sep.OBJ_TRUNC)) == 0
    typical = _median(star_fwhm, alone)
    typical = fwhm_image if np.isnan(typical) else typical
    flags |= np.where(star_fwhm > _EXTENDED * typical, FLAGS["extended"], 0)
    flags |= np.where(wandered, FLAGS["window"], 0)
    sigma = factor * fwhm_image / 2.3548
    positive = np.maximum(flux, 1e-30)
    error = np.sqrt(
        sigma**2 / positive
        # A super-pixel sums four raw pixels: its noise is twice theirs.
        + 8 * np.pi * sigma**4 * (noise / factor) ** 2 / positive**2
        + _CENTROID_FLOOR**2
    )
    order = np.argsort(-flux, kind="stable")
    columns = {
        CENTROID[0]: x,
        CENTROID[1]: y,
        "xcentroid_err": error,
        "ycentroid_err": error,
        "flux": flux,
        "flux_err": flux_err,
        "flux_auto": flux_auto,
        "snr": flux / flux_err,
        "peak": objects["peak"],
        "fwhm": star_fwhm * factor,
        "roundness": objects["b"] / np.maximum(objects["a"], 1e-30),
        "npix": objects["npix"],
        "flags": flags,
    }
    table["id"] = np.arange(1, len(order) + 1)
    for name, values in columns.items():
        table[name] = np.asarray(values)[order]
    with np.errstate(invalid="ignore", divide="ignore"):
        table["mag"] = -2.5 * np.log10(table["flux"])
    table.meta.update(_meta(fwhm_image * factor, noise, threshold, background, factor))
    point = table["flags"] == 0
    table.meta["star_fwhm"] = _median(table["fwhm"], point)
    table.meta["elongation"] = _median(1 / np.maximum(table["roundness"], 1e-30), point)
    return table


def _median(values, point):
    """Median of the point sources' finite values (of all sources' if none); NaN if none."""
    values = np.asarray(values, float)
    finite = np.isfinite(values)
    for chosen in (finite & point, finite):
        if chosen.any():
            return float(np.median(values[chosen]))
    return float("nan")


def _meta(fwhm, noise, threshold, background, factor):
    """Return the frame's measures the table carries: FWHM, noise, threshold, sky level."""
    # A super-pixel sums four raw pixels: its sky is four times theirs, its
    # noise twice.
    sky = float(np.median(background)) / factor**2
    return {
        "fwhm": fwhm,
        "noise": noise / factor,
        "threshold": threshold,
        "sky": sky,
        "star_fwhm": float("nan"),
        "elongation": float("nan"),
    }
