"""The celestial WCS a FITS image's header carries: one reader for the stack, its file and SIP."""

import re
import warnings

__all__ = ["celestial_wcs"]

# Cards of a WCS, any kind; of the distortion-paper lookup tables (and
# -TAB coordinates), which the package cannot carry nor compose.
_WCS_CARD = re.compile(r"^(CTYPE|CRVAL|CRPIX|CDELT|CUNIT|CD\d+_\d+|PC\d+_\d+)")
_TABLE_CARD = re.compile(r"^(CPDIS|CQDIS|D2IMDIS|D2IMFILE|D2IMERR|CPERR)")


def celestial_wcs(header):
    """Return the celestial WCS of an image's ``header``, and why there is none.

    The image's x and y must be the sky's axes (a colour cube's third axis
    is dropped); TAN, TAN-SIP, TPV and other projections are read as
    astropy reads them, the fixes it makes of legacy cards (``DATE-OBS``,
    ``RADECSYS``) without warnings. Distortion-paper lookup tables are
    refused: neither the stack's grid nor a SIP can take them.

    Parameters
    ----------
    header : `~astropy.io.fits.Header` or `None`
        The image's header; `None` for a frame without one (a raw file).

    Returns
    -------
    wcs : `~astropy.wcs.WCS` or `None`
        Two axes, longitude then latitude.
    why : str or `None`
        Why there is no WCS, in words, if the header has WCS cards; `None`
        if it has none (nothing to say) or a WCS was read.

    Examples
    --------
    >>> from astropy.io import fits
    >>> from astro_offsets._utils.wcs import celestial_wcs
    >>> cards = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 83.8, "CRVAL2": -5.4}
    >>> wcs, why = celestial_wcs(fits.Header(cards))
    >>> wcs.wcs.ctype[0], why
    ('RA---TAN', None)
    >>> celestial_wcs(fits.Header({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR"}))
    (None, 'it is not celestial (CTYPE LINEAR, LINEAR)')
    """
    if header is None or not any(_WCS_CARD.match(key) for key in header):
        return None, None
    # astropy.wcs (50 ms) is imported when a frame has a WCS: the command line starts fast.
    from astropy.wcs import WCS, FITSFixedWarning

    tables = sorted({key for key in header if _TABLE_CARD.match(key)})
    if tables:
        return None, f"its distortion lookup tables ({', '.join(tables)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, relax=True)
    # wcslib's errors are ValueErrors; astropy adds TypeError, KeyError and
    # AttributeError (CTYPE1 = 3) for cards it cannot take, and wcslib a
    # MemoryError for the axes a header asks for (WCSAXES = 1000000): the
    # header's problem, said as the others.
    except (ValueError, TypeError, KeyError, AttributeError, MemoryError) as exc:
        return None, f"it does not read ({exc})"
    if not wcs.has_celestial:
        kinds = ", ".join(t or "(none)" for t in wcs.wcs.ctype)
        return None, f"it is not celestial (CTYPE {kinds})"
    if wcs.naxis != 2:
        if sorted((wcs.wcs.lng, wcs.wcs.lat)) != [0, 1]:
            return None, "its sky axes are not the image's x and y"
        wcs = wcs.celestial
    if any(t is not None for t in (wcs.cpdis1, wcs.cpdis2, wcs.det2im1, wcs.det2im2)):
        return None, "its distortion lookup tables"
    return wcs, None
