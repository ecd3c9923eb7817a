"""Export an offset map as an `astropy.wcs.WCS` with lookup-table distortion.

The map is carried by the FITS "distortion paper" (Paper IV draft) prior
distortion, ``CPDISja = 'LOOKUP'`` with ``WCSDVARR`` image extensions, which
astropy implements as `astropy.wcs.DistortionLookupTable` objects attached to
``WCS.cpdis1`` / ``WCS.cpdis2``.
"""

import numpy as np

from .._utils.validation import positive_pair
from ._arrays import offset_maps

__all__ = ["default_wcs", "offsets_to_wcs"]

#: Pixel scale of the default WCS, in degrees (1 arcsec).
_DEFAULT_SCALE = 1.0 / 3600.0

#: Fiducial (RA, Dec) of the default WCS, in degrees.  RA = 180 keeps every
#: world longitude far from the 0/360 wrap, which would otherwise break
#: consumers that difference longitudes naively (e.g. drizzle's pixel-scale
#: estimate); Dec = 0 makes one pixel 1 arcsec along both axes.
_DEFAULT_CRVAL = (180.0, 0.0)


def default_wcs(shape):
    """Return the WCS used by `offsets_to_wcs` when no WCS is given.

    It is also the *target* WCS to pair with the default output, e.g.
    ``drizzle.utils.calc_pixmap(offsets_to_wcs(xo, yo), default_wcs(xo.shape))``.

    Parameters
    ----------
    shape : tuple of int
        Map shape ``(ny, nx)``.

    Returns
    -------
    wcs : `astropy.wcs.WCS`
        Distortion-free gnomonic (``RA---TAN``/``DEC--TAN``) WCS with a
        1 arcsec pixel, RA increasing to the left, reference point at
        (RA, Dec) = (180, 0) deg on the centre of the frame, and
        ``array_shape`` set to ``shape``.

    Raises
    ------
    ValueError
        If ``shape`` is not a pair of positive integers.

    Examples
    --------
    >>> from astro_offsets.maps import default_wcs
    >>> w = default_wcs((40, 57))
    >>> w.array_shape
    (40, 57)
    >>> print(w.wcs.crpix)
    [29.  20.5]
    """
    from astropy.wcs import WCS  # with astropy.coordinates: imported when a WCS is made

    shape = positive_pair(shape, "shape")
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.cdelt = [-_DEFAULT_SCALE, _DEFAULT_SCALE]
    w.wcs.crval = list(_DEFAULT_CRVAL)
    # FITS CRPIX is 1-based: the centre of 0-based pixels 0..n-1 is (n+1)/2.
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.set()
    w.array_shape = shape
    return w


def _lookup_table(offset, name):
    # The table holds the negated offset (pixmap = x - offset) as C-ordered
    # float32, which astropy adopts without a copy: the only full-frame
    # allocation.
    table = np.negative(offset, order="C")
    # A float64 sum is NaN iff an element is (the maps hold no infinity, and
    # float32 values cannot overflow it); unlike np.isnan(...).any(), it
    # needs no full-frame boolean temporary.
    if np.isnan(table.sum(dtype=np.float64)):
        raise ValueError(
            f"{name} contains NaN; fill it first. The lookup table is bilinearly "
            "interpolated, so one NaN node would also turn the neighbouring pixels into NaN."
        )
    # Table coordinate (0-based) = (p - CRVAL) / CDELT + CRPIX - 1 for a 1-based
    # image pixel p, so CRPIX = CRVAL = 1 with CDELT = 1 puts table node (i, j)
    # exactly on image pixel (i, j); the interpolation weights there are exactly
    # 0 and 1, so p4_pix2foc returns the stored values without rounding.
    from astropy.wcs import DistortionLookupTable

    return DistortionLookupTable(table, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0))


def _check_wcs(wcs, shape):
    from astropy.wcs import WCS

    if not isinstance(wcs, WCS):
        raise TypeError(f"wcs must be an astropy.wcs.WCS or None, got {type(wcs).__name__}")
    if wcs.naxis != 2:
        raise ValueError(f"wcs must have exactly 2 axes, got {wcs.naxis}")
    present = [
        name
        for name in ("sip", "cpdis1", "cpdis2", "det2im1", "det2im2")
        if getattr(wcs, name) is not None
    ]
    if present:
        raise ValueError(
            "wcs already has astropy-level distortion ("
            + ", ".join(present)
            + "); offsets cannot be attached without silently composing them "
            "incorrectly.  Pass a distortion-free WCS, or resample the existing "
            "distortion into the offset map first."
        )
    if wcs.pixel_shape is not None and tuple(wcs.array_shape) != shape:
        raise ValueError(
            f"wcs.array_shape {tuple(wcs.array_shape)} does not match the map shape {shape}"
        )


def _checked_copy(wcs):
    try:
        # Copying runs wcslib's set() on the copy, so an inconsistent WCS (e.g.
        # an unpaired celestial axis) fails here; set() is repeated in case the
        # copy skipped it, again on the copy only.
        out = wcs.deepcopy()
        out.wcs.set()
    except ValueError as exc:  # wcslib's WcsError subclasses ValueError
        raise ValueError(f"wcs is not a valid 2-D celestial or linear WCS: {exc}") from exc
    types = list(out.wcs.axis_types)
    celestial = out.wcs.lng >= 0 and out.wcs.lat >= 0
    # axis_types == 0: a non-specific axis (not Stokes, spectral, time, ...)
    # with a linear algorithm (not logarithmic or tabular).
    linear = all(t == 0 for t in types)
    if not (celestial or linear):
        raise ValueError(
            "wcs must be 2-D celestial (a longitude/latitude pair) or 2-D linear; "
            f"got CTYPE {list(out.wcs.ctype)}"
        )
    return out


def offsets_to_wcs(x_offset, y_offset, wcs=None):
    """Return an `astropy.wcs.WCS` carrying the map as distortion-paper lookup tables.

    The returned WCS maps pixel ``(x, y)`` of this frame to the world position
    that ``wcs`` assigns to pixel ``(x - x_offset[y, x], y - y_offset[y, x])``
    of the reference frame, i.e. the map becomes a ``CPDIS1``/``CPDIS2``
    ``LOOKUP`` distortion with full-resolution ``WCSDVARR`` tables.

    Parameters
    ----------
    x_offset, y_offset : array_like
        Offset map, shape ``(ny, nx)``: position in this frame minus position
        in the reference frame, in pixels.  Stored as float32 (the FITS
        ``WCSDVARR`` type), so float64 input is rounded to float32.
    wcs : `astropy.wcs.WCS`, optional
        WCS of the reference frame: 2-D celestial or 2-D linear, without SIP,
        ``cpdis`` or ``det2im`` distortion.  It is deep-copied, never
        modified.  Its ``pixel_shape``, if set, must match the map.  If `None`,
        ``default_wcs(x_offset.shape)`` is used (see Notes).

    Returns
    -------
    wcs : `astropy.wcs.WCS`
        Copy of ``wcs`` with ``cpdis1``/``cpdis2`` lookup tables holding
        ``-x_offset``/``-y_offset`` and ``pixel_shape`` = ``(nx, ny)``.

    Raises
    ------
    ValueError
        If the maps are not real numeric 2-D arrays of one non-empty shape,
        or contain NaN or infinite values; if ``wcs`` is not 2-D celestial or
        linear, already carries SIP/``cpdis``/``det2im`` distortion, or has a
        ``pixel_shape`` that differs from the map.
    TypeError
        If ``wcs`` is not an `astropy.wcs.WCS`.

    Notes
    -----
    Table node ``(i, j)`` sits on image pixel ``(i, j)`` (``CRPIX = CRVAL =
    CDELT = 1`` on both table axes).  astropy interpolates the table
    bilinearly, with weights exactly 0 and 1 on the nodes, so for every
    integer pixel ``w.p4_pix2foc(x, y, 0)`` returns ``x - x_offset`` and
    ``y - y_offset`` (0-based, no CRPIX involved) with no measurable
    rounding. Between pixels the offsets are interpolated bilinearly; outside
    the frame the edge values are held constant.

    astropy applies ``det2im`` before looking up the tables and adds SIP and
    table deltas, both evaluated at the same raw pixel, so attaching the map
    to a WCS that already has them would give ``sip(x) - offset(x)`` instead of
    the composition ``sip(x - offset(x))``.  Such WCSs are therefore
    rejected rather than composed.  Distortions handled inside wcslib (for
    example ``TPV``) act after the tables, on intermediate world coordinates,
    so they compose correctly and are allowed.

    With ``wcs=None`` the reference frame is ``default_wcs(shape)``: a
    ``TAN`` WCS with 1 arcsec pixels centred on (RA, Dec) = (180, 0) deg.
    A celestial default is chosen over a linear pixel WCS because drizzle's
    helpers (e.g. ``drizzle.utils.estimate_pixel_scale_ratio``) read world
    coordinates as degrees on the sky.  Use the same WCS as the target::

        pixmap = calc_pixmap(offsets_to_wcs(xo, yo), default_wcs(xo.shape))

    In general the target is ``wcs`` itself, or equivalently the result with
    ``cpdis1``/``cpdis2`` set to `None`.

    Write the result with ``to_fits()``; ``to_header()`` silently drops the
    tables.  ``to_fits()`` does not record the image size (``NAXIS = 0``), so
    put the header on an HDU holding the image (or set ``pixel_shape``
    after reading it back).

    The two float32 tables are the only full-frame arrays allocated; they
    are adopted by astropy without further copies.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import offsets_to_wcs
    >>> x_offset = np.full((3, 4), 0.5, dtype=np.float32)
    >>> y_offset = np.zeros((3, 4), dtype=np.float32)
    >>> y_offset[2, 3] = -1.25
    >>> w = offsets_to_wcs(x_offset, y_offset)
    >>> w.pixel_shape
    (4, 3)
    >>> fx, fy = w.p4_pix2foc(np.array([0.0, 3.0]), np.array([0.0, 2.0]), 0)
    >>> print(fx, fy)
    [-0.5  2.5] [0.   3.25]
    """
    x_offset, y_offset = offset_maps(x_offset, y_offset)
    shape = x_offset.shape

    if wcs is None:
        out = default_wcs(shape)
    else:
        _check_wcs(wcs, shape)
        out = _checked_copy(wcs)
        out.array_shape = shape

    out.cpdis1 = _lookup_table(x_offset, "x_offset")
    out.cpdis2 = _lookup_table(y_offset, "y_offset")
    return out
