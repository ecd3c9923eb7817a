"""What a stack takes from its reference frame's header: its grid's WCS, the observation, the rows.

The stack's grid is the reference frame's, ``scale`` times finer: output
pixel ``p`` (0-based) is at reference pixel ``(p + 0.5) / scale - 0.5``
(the drizzle's pixmap, `~astro_offsets.stack._bands.layer_pixmap`; a
Bayer stack's colour planes are drizzled onto the full frame's grid too).
The reference's celestial WCS is carried onto that grid; so are the cards
that say what was observed, where and with what.
"""

import warnings

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from .._utils.wcs import celestial_wcs
from ..frames import frame_header, row_order

__all__ = [
    "OBSERVATION_KEYWORDS",
    "flipped_wcs",
    "grid_wcs",
    "observation_cards",
    "reference_meta",
]

# The reference's cards that describe the observation as a whole, carried to
# the stack as they are. Not its exposure (EXPTIME, EXPOSURE: the stack is
# per second and has its own TEXPTIME), its pixels' encoding or Bayer cards
# (the stack is neither), nor its WCS (carried onto the grid, `grid_wcs`).
OBSERVATION_KEYWORDS = (
    "OBJECT",
    "DATE-OBS",
    "MJD-OBS",
    "TELESCOP",
    "INSTRUME",
    "FILTER",
    "OBSERVER",
    "OBSERVAT",
    "RA",
    "DEC",
    "OBJCTRA",
    "OBJCTDEC",
    "SITELAT",
    "SITELONG",
    "SITEELEV",
    "FOCALLEN",
    "APTDIA",
    "GAIN",
    "EGAIN",
    "ISOSPEED",
    "CCD-TEMP",
    "SET-TEMP",
    "XBINNING",
    "YBINNING",
)
# Pixel sizes (micrometres), which Siril and ASTAP take with FOCALLEN for the
# pixel scale: a finer grid's pixels are smaller.
_PIXEL_SIZES = ("XPIXSZ", "YPIXSZ", "PIXSIZE1", "PIXSIZE2")
# How far the carried WCS may stray from the reference's, in reference pixels:
# it is exact but for rounding, unless the WCS is of a kind not foreseen.
_CHECK = 1e-3


def reference_meta(path, scale, shape):
    """Return the stack's ``meta`` from its reference frame: ``wcs``, ``observation``, ``roworder``.

    Parameters
    ----------
    path : str or `None`
        The reference frame's file; `None` if the stack has none among its
        frames (every entry then says nothing, as for a reference that
        cannot be read).
    scale : float
        Output pixels per reference pixel, per axis.
    shape : tuple of int
        The stack's ``(ny, nx)``.

    Returns
    -------
    dict
        ``wcs``: the grid's `~astropy.wcs.WCS` or `None` (`grid_wcs`);
        ``observation``: a list of ``(keyword, value, comment)``
        (`observation_cards`); ``roworder``: ``"TOP-DOWN"``,
        ``"BOTTOM-UP"`` (`~astro_offsets.frames.row_order`), or `None`.
    """
    try:
        header = frame_header(path) if path is not None else None
    except (OSError, ValueError):
        path = None  # a reference that failed: its failure is reported
    if path is None:
        return {"wcs": None, "observation": [], "roworder": None}
    return {
        "wcs": grid_wcs(header, scale, shape, name=path),
        "observation": observation_cards(header, scale),
        "roworder": row_order(header),
    }


def observation_cards(header, scale=1.0):
    """Return the cards of ``header`` that describe the observation: ``(keyword, value, comment)``.

    Those of ``OBSERVATION_KEYWORDS`` that it has, and its pixel sizes
    (``XPIXSZ``, ...) divided by ``scale``. `None` (a raw file) has none.

    Examples
    --------
    >>> from astropy.io import fits
    >>> from astro_offsets.stack._header import observation_cards
    >>> header = fits.Header({"OBJECT": "M 42", "EXPTIME": 30.0, "XPIXSZ": 3.76})
    >>> observation_cards(header, scale=2.0)
    [('OBJECT', 'M 42', ''), ('XPIXSZ', 1.88, "of the stack's pixels (um)")]
    """
    if header is None:
        return []
    cards = [
        (key, header[key], header.comments[key]) for key in OBSERVATION_KEYWORDS if key in header
    ]
    for key in _PIXEL_SIZES:
        value = header.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            comment = header.comments[key] if scale == 1 else "of the stack's pixels (um)"
            cards.append((key, value / scale, comment))
    return cards


def grid_wcs(header, scale, shape, *, name="the reference frame"):
    """Return the celestial WCS of a stack's grid, from its reference frame's header.

    The reference's WCS (TAN, TAN-SIP, TPV, any celestial projection),
    with its reference pixel and pixel scale (and SIP coefficients, which
    are in pixels) carried onto the grid ``scale`` times finer, so that
    every output pixel has the sky position of the reference pixel under
    it. A header without WCS cards (or `None`, a raw file) gives `None`; a
    WCS that cannot be carried (not celestial, distortion-paper lookup
    tables, a WCS that does not read) gives `None` and one warning.

    Parameters
    ----------
    header : `~astropy.io.fits.Header` or `None`
        The reference frame's (`~astro_offsets.frames.frame_header`).
    scale : float
        Output pixels per reference pixel, per axis.
    shape : tuple of int
        The stack's ``(ny, nx)``.
    name : str, optional
        The reference frame, for the warning.

    Returns
    -------
    `~astropy.wcs.WCS` or `None`

    Examples
    --------
    >>> from astropy.io import fits
    >>> from astro_offsets.stack._header import grid_wcs
    >>> header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 50.5,
    ...                       "CRPIX2": 40.5, "CRVAL1": 83.8, "CRVAL2": -5.4,
    ...                       "CDELT1": -0.0004, "CDELT2": 0.0004})
    >>> wcs = grid_wcs(header, 2.0, (160, 200))
    >>> wcs.wcs.crpix.tolist(), wcs.wcs.cdelt.tolist()
    ([100.5, 80.5], [-0.0002, 0.0002])
    """
    reference, why = celestial_wcs(header)
    if reference is None:
        return None if why is None else _left_out(name, why)
    from astropy.wcs import WCS, FITSFixedWarning

    grid = _scaled(reference, scale, shape)
    # Checked as written: what its header cards say, read back.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        written = WCS(grid.to_header(relax=True), relax=True)
    error = _stray(
        written, reference, shape, lambda x, y: ((x + 0.5) / scale - 0.5, (y + 0.5) / scale - 0.5)
    )
    if not error <= _CHECK:
        return _left_out(
            name, f"carried onto the stack's grid, it strays by {error:.3g} reference pixels"
        )
    return grid


def flipped_wcs(wcs, shape):
    """Return the WCS of an image of ``shape`` turned upside down (its rows in reverse).

    Row ``y`` (0-based) of the image, ``shape`` ``(ny, nx)``, is row
    ``ny - 1 - y`` of the flipped one: ``CRPIX2`` becomes ``ny + 1 -
    CRPIX2``, the second column of the ``CD`` (or ``PC``) matrix changes
    sign, and so do the SIP terms of odd powers of ``v`` (and of ``B`` all
    the others).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.wcs import WCS
    >>> from astro_offsets.stack._header import flipped_wcs
    >>> wcs = WCS(naxis=2)
    >>> wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> wcs.wcs.crpix = [10.0, 3.0]
    >>> wcs.wcs.cdelt = [-0.001, 0.001]
    >>> wcs.wcs.crval = [30.0, 40.0]
    >>> flipped = flipped_wcs(wcs, (20, 30))
    >>> flipped.wcs.crpix.tolist(), flipped.wcs.get_pc().tolist()
    ([10.0, 18.0], [[1.0, 0.0], [0.0, -1.0]])
    >>> sky = flipped.pixel_to_world_values(4, 20 - 1 - 7)
    >>> bool(np.allclose(sky, wcs.pixel_to_world_values(4, 7)))
    True
    """
    from astropy.wcs import Sip

    flipped = wcs.deepcopy()
    flipped.wcs.crpix = [wcs.wcs.crpix[0], shape[0] + 1 - wcs.wcs.crpix[1]]
    # + 0.0: no -0.0 on the cards.
    if flipped.wcs.has_cd():
        flipped.wcs.cd = wcs.wcs.cd * [1.0, -1.0] + 0.0
    else:
        flipped.wcs.pc = wcs.wcs.get_pc() * [1.0, -1.0] + 0.0
    if wcs.sip is not None:
        sip = wcs.sip
        flipped.sip = Sip(
            _flipped_polynomial(sip.a, 1.0),
            _flipped_polynomial(sip.b, -1.0),
            _flipped_polynomial(sip.ap, 1.0),
            _flipped_polynomial(sip.bp, -1.0),
            flipped.wcs.crpix,
        )
    flipped.wcs.set()
    ny = shape[0]
    error = _stray(flipped, wcs, shape, lambda x, y: (x, ny - 1 - y))
    if not error <= _CHECK:
        raise ValueError(f"this WCS cannot be turned upside down: it strays by {error:.3g} pixels")
    return flipped


def _flipped_polynomial(coefficients, sign):
    if coefficients is None:
        return None
    _, q = np.indices(coefficients.shape)
    return sign * coefficients * (-1.0) ** q


def _scaled(reference, scale, shape):
    """Return the WCS of the grid ``scale`` times finer than ``reference``'s."""
    from astropy.wcs import Sip

    grid = reference.deepcopy()
    # FITS pixel P (1-based) of the grid is reference pixel (P - 0.5) / scale + 0.5.
    grid.wcs.crpix = scale * (reference.wcs.crpix - 0.5) + 0.5
    if grid.wcs.has_cd():
        grid.wcs.cd = reference.wcs.cd / scale
    else:
        grid.wcs.cdelt = reference.wcs.cdelt / scale
    if reference.sip is not None:
        # Offsets from CRPIX are scale times larger, and so are the focal
        # plane's: a term of degree n is multiplied by scale ** (1 - n).
        sip = reference.sip
        grid.sip = Sip(
            *(_scaled_polynomial(c, scale) for c in (sip.a, sip.b, sip.ap, sip.bp)),
            grid.wcs.crpix,
        )
    grid.wcs.set()
    grid.pixel_shape = (shape[1], shape[0])
    return grid


def _scaled_polynomial(coefficients, scale):
    if coefficients is None:
        return None
    p, q = np.indices(coefficients.shape)
    return coefficients * float(scale) ** (1 - p - q)


def _stray(wcs, reference, shape, to_reference):
    """Return how far ``wcs`` strays from ``reference`` (in its pixels) over an image of ``shape``.

    ``to_reference(x, y)`` gives the reference's pixel under ``wcs``'s.
    """
    ny, nx = shape
    y, x = np.meshgrid(np.linspace(0, ny - 1, 5), np.linspace(0, nx - 1, 5), indexing="ij")
    lon, lat = wcs.pixel_to_world_values(x.ravel(), y.ravel())
    lon0, lat0 = reference.pixel_to_world_values(*to_reference(x.ravel(), y.ravel()))
    step = np.deg2rad((lon - lon0 + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(lat0))
    apart = np.rad2deg(np.hypot(step, np.deg2rad(lat - lat0)))
    pixel = float(np.sqrt(abs(np.linalg.det(reference.pixel_scale_matrix))))
    return float(np.nanmax(apart)) / pixel


def _left_out(name, why):
    warnings.warn(
        f"{name}: its WCS is left out of the stack: {why}", AstropyUserWarning, stacklevel=3
    )
