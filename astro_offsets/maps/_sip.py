"""Export an offset map as SIP polynomials: an `astropy.wcs.WCS` that DS9, Siril and ASTAP read.

The Simple Imaging Polynomial convention (Shupe et al. 2005) adds to the
pixel ``(x, y)`` polynomials of ``u = x + 1 - CRPIX1`` and
``v = y + 1 - CRPIX2`` (``x``, ``y`` 0-based)::

    x' = x + A(u, v),  A(u, v) = sum of A_p_q u**p v**q, p + q <= A_ORDER

and ``B`` likewise for ``y``. The map is carried exactly when ``x'`` and
``y'`` are the pixmap, ``x - x_offset`` and ``y - y_offset``: ``A`` fits
``-x_offset`` and ``B`` fits ``-y_offset``, their constant and linear terms
included (the shift and turn of the frame; ``CD`` is the reference frame's,
unchanged).

The fit is a least-squares one (`~astro_offsets._utils.polynomial`) on a
subsample of the pixels, in ``u / h`` and ``v / k`` for the powers of two
``h`` and ``k`` at least the largest ``|u|`` and ``|v|``: the design
matrix's columns stay within [-1, 1] (its condition number at degree 9 is
that of a 128 x 128 grid on the unit square, whatever the frame's size), and
the SIP coefficients, ``c_p_q / (h**p k**q)``, are exact in binary. The
error is then measured, with those coefficients, on every pixel of the
frame, a band of rows at a time.
"""

import math
import warnings

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from .._utils.blas import one_blas_thread
from .._utils.polynomial import Polynomial
from .._utils.provenance import provenance_header, write_product
from .._utils.unreadable import UNREADABLE_FITS
from .._utils.wcs import celestial_wcs
from ._arrays import offset_maps
from ._wcs import _check_wcs, _checked_copy, default_wcs

__all__ = [
    "MAX_SIP_DEGREE",
    "MIN_SIP_DEGREE",
    "offsets_to_sip",
    "reference_wcs",
    "sip_header",
    "sip_shortfall",
    "write_sip",
]

MAX_SIP_DEGREE = 9
"""The highest SIP degree `offsets_to_sip` fits.

astropy and wcslib read any order, but astrometry.net's library, whose
``wcs.fits`` headers the amateur tools (DS9, Siril, ASTAP) are made to read,
holds the coefficients in 10 x 10 arrays (``SIP_MAXORDER 10`` in its
``sip.h``): orders up to 9. Solvers write orders of 2 to 5. A field that a
degree-9 polynomial does not follow to 0.01 px over the frame (a kink, a
local bump) is one that more terms follow only by ringing between the
pixels measured.
"""

MIN_SIP_DEGREE = 2
"""The lowest SIP degree: astropy ignores SIP of ``A_ORDER`` below 2."""

# Fit nodes per axis (the frame's edges among them): 128 x 128 points
# determine the 55 coefficients of degree 9 many times over (nodes 55 px
# apart on a 7000-px side, where a degree-9 term turns every 400 px or
# more), in a design matrix of 7 MB, each degree's QR in a fraction of a
# second; the midpoints between them check each degree before every pixel.
_FIT_NODES = 128
# Pixels of the frame measured at a time: a few float64 bands of 8 MB.
_BAND_PIXELS = 2**20


def _nodes(n, count):
    """Return up to ``count`` pixel indices spread over ``0..n-1``, both ends included."""
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(np.intp))


def _midpoints(nodes):
    """Return the pixels halfway between consecutive nodes (not nodes themselves)."""
    middle = (nodes[:-1] + nodes[1:]) // 2
    return np.setdiff1d(middle, nodes)


def _sample(x_offset, y_offset, rows, columns):
    """Return the coordinates ``x``, ``y`` and targets ``-offset`` of finite pixels of a grid."""
    x, y = np.meshgrid(columns.astype(np.float64), rows.astype(np.float64))
    targets = np.column_stack(
        [-x_offset[np.ix_(rows, columns)].ravel(), -y_offset[np.ix_(rows, columns)].ravel()]
    ).astype(np.float64)
    finite = np.isfinite(targets).all(axis=1)
    return x.ravel()[finite], y.ravel()[finite], targets[finite]


def _power_of_two(half_width):
    """Return the lowest power of two at least ``half_width`` (and 1)."""
    return 2.0 ** math.ceil(math.log2(max(half_width, 1.0)))


def _sip_coefficients(scaled, scales):
    """Return the SIP coefficients of a polynomial of ``u / scales[0]`` and ``v / scales[1]``."""
    powers = np.arange(scaled.degree + 1, dtype=np.float64)
    # The scales are powers of two: the division is exact.
    return scaled.coefficients / np.multiply.outer(scales[0] ** powers, scales[1] ** powers)


def _largest_error(x_offset, y_offset, coefficients, crpix):
    """Return the largest distance from the SIP position to the pixmap, and the pixels measured.

    Every pixel with finite offsets is measured, with the SIP coefficients
    themselves (as a reader evaluates them), a band of rows at a time.
    """
    ny, nx = x_offset.shape
    polynomial = Polynomial(coefficients)
    u = (np.arange(nx, dtype=np.float64) + 1.0 - crpix[0])[np.newaxis, :]
    rows = max(1, _BAND_PIXELS // nx)
    a = np.empty((rows, nx))
    b = np.empty((rows, nx))
    largest, measured = 0.0, 0
    for start in range(0, ny, rows):
        stop = min(ny, start + rows)
        band_a, band_b = a[: stop - start], b[: stop - start]
        v = (np.arange(start, stop, dtype=np.float64) + 1.0 - crpix[1])[:, np.newaxis]
        polynomial.grid(u, v, (band_a, band_b))
        # x + A - (x - x_offset) = A + x_offset
        np.add(band_a, x_offset[start:stop], out=band_a)
        np.add(band_b, y_offset[start:stop], out=band_b)
        np.hypot(band_a, band_b, out=band_a)
        # fmax skips NaN (a pixel without offsets) unless all are.
        band = np.fmax.reduce(band_a, axis=None, initial=-np.inf)
        if band > largest:
            largest = float(band)
        measured += int(np.count_nonzero(~np.isnan(band_a)))
    return largest, measured


def _check_degree(degree):
    if degree is None:
        return None
    if (
        isinstance(degree, bool)
        or not isinstance(degree, (int, np.integer))
        or not MIN_SIP_DEGREE <= degree <= MAX_SIP_DEGREE
    ):
        raise ValueError(
            f"degree must be None or an integer from {MIN_SIP_DEGREE} to {MAX_SIP_DEGREE}, "
            f"got {degree!r}"
        )
    return int(degree)


def sip_shortfall(w):
    """Return, in words, by how much a SIP of `offsets_to_sip` misses its ``max_error``, or `None`.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import offsets_to_sip, sip_shortfall
    >>> print(sip_shortfall(offsets_to_sip(np.ones((20, 30)), np.zeros((20, 30)))))
    None
    """
    if w.sip_error <= w.sip_max_error:
        return None
    return (
        f"the SIP polynomial of degree {w.sip.a_order} is off the map by up to "
        f"{w.sip_error:.3g} px, more than max_error={w.sip_max_error:g}: SIP cannot follow a "
        "field's kinks (the quadrant field's), local bumps or folds"
    )


def offsets_to_sip(x_offset, y_offset, *, degree=None, max_error=0.01, wcs=None, warn=True):
    """Return an `astropy.wcs.WCS` carrying the map as SIP polynomials.

    See `OffsetMap.to_sip`, which calls it.

    Parameters
    ----------
    x_offset, y_offset : array_like
        Offset maps ``(ny, nx)``, position in this frame minus position in the
        reference frame; NaN marks a pixel without offsets.
    degree : int or `None`, optional
        The SIP degree, from 2 to `MAX_SIP_DEGREE`; `None` (the default)
        chooses the lowest that reaches ``max_error``.
    max_error : float, optional
        The largest error wanted over the frame's pixels, in pixels. The
        default is 0.01.
    wcs : `~astropy.wcs.WCS` or `None`, optional
        The reference frame's WCS, as for `OffsetMap.to_sip`: its own SIP,
        if any, composed with the map.
    warn : bool, optional
        Warn if ``max_error`` is not reached (see `sip_shortfall`, which
        says it without a warning). The default is `True`.

    Returns
    -------
    `~astropy.wcs.WCS`
        With ``sip`` set, and the attribute ``sip_error``: the largest error
        reached, in pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import offsets_to_sip
    >>> y, x = np.indices((30, 40))
    >>> w = offsets_to_sip(0.5 + 1e-3 * x * y, np.full((30, 40), -0.25))
    >>> w.sip.a_order, bool(w.sip_error < 1e-6)
    (2, True)
    """
    from astropy.wcs import Sip

    x_offset, y_offset = offset_maps(x_offset, y_offset)
    shape = x_offset.shape
    degree = _check_degree(degree)
    if not (isinstance(max_error, (int, float, np.floating, np.integer)) and max_error > 0):
        raise ValueError(f"max_error must be a positive number of pixels, got {max_error!r}")
    if wcs is None:
        out, own = default_wcs(shape), None
    else:
        wcs, own = _without_sip(wcs)
        _check_wcs(wcs, shape)
        out = _checked_copy(wcs)
        out.array_shape = shape
    crpix = tuple(float(c) for c in out.wcs.crpix)
    if own is not None:  # a plate-solved reference: the map is composed with its SIP
        x_offset, y_offset = _through_sip(x_offset, y_offset, own, crpix)

    ny, nx = shape
    rows, columns = _nodes(ny, _FIT_NODES), _nodes(nx, _FIT_NODES)
    x, y, targets = _sample(x_offset, y_offset, rows, columns)
    if not len(targets):
        raise ValueError(
            f"the map has no pixel with finite offsets on the fit's grid of {rows.size} x "
            f"{columns.size} pixels: no SIP polynomial to fit"
        )
    # A second, interleaved sample: a degree that misses max_error there
    # misses it over the frame, and is left without measuring every pixel.
    cx, cy, check = _sample(x_offset, y_offset, _midpoints(rows), _midpoints(columns))
    cx, cy, check = np.concatenate([x, cx]), np.concatenate([y, cy]), np.vstack([targets, check])
    # Each axis in [-1, 1] (by a power of two, whatever the frame's aspect).
    scales = [
        _power_of_two(max(abs(1.0 - c), abs(n - c))) for c, n in zip(crpix, (nx, ny), strict=True)
    ]
    u, v = (x + 1.0 - crpix[0]) / scales[0], (y + 1.0 - crpix[1]) / scales[1]

    candidates = [degree] if degree is not None else range(MIN_SIP_DEGREE, MAX_SIP_DEGREE + 1)
    cu, cv = cx + 1.0 - crpix[0], cy + 1.0 - crpix[1]
    unmeasured, best = None, None
    for d in candidates:
        try:
            with one_blas_thread():  # a QR of 55 columns: threads cost more than they save
                fitted, _ = Polynomial.fit(u, v, targets, d)
        except ValueError as exc:
            if unmeasured is None:
                raise ValueError(
                    f"the pixels with finite offsets {exc}: too few for a SIP of degree {d}"
                ) from None
            break  # too few pixels with offsets for more terms: the last degree that fits
        unmeasured = _sip_coefficients(fitted, scales)
        sampled = np.hypot(
            *(p - t for p, t in zip(Polynomial(unmeasured)(cu, cv), check.T, strict=True))
        )
        if degree is None and d < MAX_SIP_DEGREE and sampled.max() > max_error:
            continue
        best = (unmeasured, *_largest_error(x_offset, y_offset, unmeasured, crpix))
        unmeasured = None
        if best[1] <= max_error:
            break
    if unmeasured is not None:
        best = (unmeasured, *_largest_error(x_offset, y_offset, unmeasured, crpix))
    coefficients, error, measured = best
    out.wcs.ctype = [t if t.endswith("-SIP") else f"{t}-SIP" for t in out.wcs.ctype]
    out.sip = Sip(coefficients[0], coefficients[1], None, None, out.wcs.crpix)
    out.wcs.set()
    out.sip_error = error
    out.sip_max_error = float(max_error)
    out.sip_pixels = measured
    shortfall = sip_shortfall(out)
    if warn and shortfall is not None:
        warnings.warn(shortfall, AstropyUserWarning, stacklevel=3)
    return out


def _without_sip(wcs):
    """Return a copy of ``wcs`` without its SIP polynomials, and them (`None` if it has none).

    A plate solver's ``TAN-SIP`` WCS (ASTAP, astrometry.net, Siril) carries
    the lens's distortion as SIP: a frame's SIP is then the map composed with
    it (`_through_sip`). Other distortion (lookup tables) is left in, for
    `_check_wcs` to refuse.
    """
    if getattr(wcs, "sip", None) is None:
        return wcs, None
    base = wcs.deepcopy()
    own, base.sip = base.sip, None
    base.wcs.ctype = [t[:-4] if t.endswith("-SIP") else t for t in base.wcs.ctype]
    base.wcs.set()
    return base, own


def _through_sip(x_offset, y_offset, own, crpix):
    """Return the offsets to the reference's focal plane: the map composed with its SIP ``own``.

    The frame's pixel ``p`` lies on the reference's pixel ``r = p - offset``,
    whose focal point (counted from ``CRPIX``) is ``r + 1 - CRPIX + A(r + 1
    - CRPIX)``: a SIP ``A'`` of the frame at the same ``CRPIX`` and ``CD``
    reproduces it with ``A'(u) = A(u - offset) - offset``, the offsets
    ``offset - A(u - offset)``. Row bands keep the temporaries small.
    """
    from numpy.polynomial.polynomial import polyval2d

    ny, nx = x_offset.shape
    x_out, y_out = np.empty_like(x_offset), np.empty_like(y_offset)
    u0 = np.arange(nx, dtype=np.float64) + 1.0 - crpix[0]
    band = max(1, _BAND_PIXELS // nx)
    for start in range(0, ny, band):
        rows = slice(start, min(start + band, ny))
        v0 = np.arange(rows.start, rows.stop, dtype=np.float64)[:, None] + 1.0 - crpix[1]
        ur = u0 - x_offset[rows].astype(np.float64)
        vr = v0 - y_offset[rows].astype(np.float64)
        x_out[rows] = x_offset[rows] - polyval2d(ur, vr, own.a)
        y_out[rows] = y_offset[rows] - polyval2d(ur, vr, own.b)
    return x_out, y_out


# The cards of a SIP file beyond the WCS, in the order written.
_SIP_CARDS = (
    ("sip_error", "SIPERR", "largest SIP error over the frame's pixels (px)"),
    ("sip_max_error", "SIPGOAL", "max_error asked for (px)"),
    ("sip_pixels", "SIPNPIX", "pixels measured (all with finite offsets)"),
)
_SIP_CONVENTION = (
    "SIP polynomials of this frame's offset map (FITS SIP convention):",
    "with u = x + 1 - CRPIX1, v = y + 1 - CRPIX2 (x, y 0-based), the pixel",
    "(x + A(u, v), y + B(u, v)) of the reference frame is where pixel",
    "(x, y) of this frame lies, within SIPERR pixels; A_ORDER is the degree.",
)


def reference_wcs(path, shape):
    """Return the celestial WCS of a reference frame to attach a map's SIP to, and why not.

    Parameters
    ----------
    path : str or `None`
        The reference frame (a map's ``REFFRAME``).
    shape : tuple of int
        The map's ``(ny, nx)``.

    Returns
    -------
    wcs : `~astropy.wcs.WCS` or `None`
        The celestial axes of the first image HDU of a FITS file, if it has
        them without lookup tables (which `offsets_to_sip` cannot compose;
        a plate solver's SIP it composes with the map's), and of the map's
        size; else `None`.
    comments : tuple of str
        Where the WCS comes from, or why it is `default_wcs`, in words.

    Examples
    --------
    >>> from astro_offsets.maps._sip import reference_wcs
    >>> wcs, comments = reference_wcs(None, (20, 30))
    >>> wcs is None, comments[0]
    (True, 'No reference frame recorded: the WCS is the default one of')
    """
    default = ("astro_offsets (TAN, 1 arcsec pixels, centred on RA 180, Dec 0 deg).",)
    if not path:
        return None, ("No reference frame recorded: the WCS is the default one of", *default)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cards astropy or wcslib fix: not ours to report
            with fits.open(path, lazy_load_hdus=True) as hdul:
                header = next(h.header for h in hdul if h.header.get("NAXIS", 0) >= 2)
            wcs, why = celestial_wcs(header)
            if wcs is None:
                raise ValueError(why or "no celestial WCS")
            wcs.array_shape = (header["NAXIS2"], header["NAXIS1"])
            _check_wcs(_without_sip(wcs)[0], shape)  # its own SIP is composed with the map's
    except StopIteration:
        why = "no image"
    # Not FITS (a raw file), unreadable, no WCS (ValueError) or one _check_wcs refuses.
    except UNREADABLE_FITS as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    else:
        return wcs, (f"WCS of the reference frame {path}.",)
    return None, (
        f"Reference frame {path}: {why[:200]};",
        "the WCS is the default one of",
        *default,
    )


def sip_header(w, cards=(), comments=()):
    """Return the header of a SIP WCS made by `offsets_to_sip`: provenance, SIPERR, WCS and SIP.

    Parameters
    ----------
    w : `~astropy.wcs.WCS`
        A WCS returned by `offsets_to_sip` (or `OffsetMap.to_sip`).
    cards : iterable of tuple, optional
        ``(keyword, value, comment)`` of the map's provenance, written after
        the first cards (``provenance_header``).
    comments : iterable of str, optional
        ``COMMENT`` lines after those of the convention: where the WCS comes
        from, say.

    Returns
    -------
    `~astropy.io.fits.Header`
        A header without data (``NAXIS = 0``), the image's size in
        ``IMAGEW`` and ``IMAGEH``, as astrometry.net's ``wcs.fits`` and
        ASTAP's ``.wcs`` files: astropy reads its WCS with a
        `~astropy.wcs.FITSFixedWarning` (more WCS axes than the header's
        ``NAXIS``), which is harmless.

    Raises
    ------
    ValueError
        If ``w`` holds no SIP polynomials with their error.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.maps import offsets_to_sip, sip_header
    >>> header = sip_header(offsets_to_sip(np.ones((20, 30)), np.zeros((20, 30))))
    >>> header["CTYPE1"], header["A_ORDER"], bool(header["SIPERR"] < 1e-9)
    ('RA---TAN-SIP', 2, True)
    """
    if w.sip is None or not hasattr(w, "sip_error"):
        raise ValueError("the WCS holds no SIP polynomials of an offset map (see to_sip)")
    own = [(keyword, getattr(w, key), comment) for key, keyword, comment in _SIP_CARDS]
    if w.pixel_shape is not None:  # astrometry.net's cards of a header without data
        own += [
            ("IMAGEW", w.pixel_shape[0], "image width (px)"),
            ("IMAGEH", w.pixel_shape[1], "image height (px)"),
        ]
    header = provenance_header("SIP distortion", [*cards, *own], (*_SIP_CONVENTION, *comments))
    header.extend(w.to_header(relax=True), end=True)
    return header


def write_sip(path, w, cards=(), comments=(), *, overwrite=False):
    """Write a SIP WCS as a header-only FITS file (a primary HDU without data), atomically.

    Parameters
    ----------
    path : str or path-like
        The file, by convention ``<stem>.sip.fits``.
    w, cards, comments
        As for `sip_header`.
    overwrite : bool, optional
        Replace an existing file. The default is `False`.

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is `False`; it is left as is.

    Examples
    --------
    >>> import os, tempfile, warnings
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astropy.wcs import WCS, FITSFixedWarning
    >>> from astro_offsets.maps import offsets_to_sip, write_sip
    >>> path = os.path.join(tempfile.mkdtemp(), "frame.sip.fits")
    >>> write_sip(path, offsets_to_sip(np.ones((20, 30)), np.zeros((20, 30))))
    >>> with warnings.catch_warnings():  # NAXIS = 0: more WCS axes than the header's
    ...     warnings.simplefilter("ignore", FITSFixedWarning)
    ...     w = WCS(fits.getheader(path))
    >>> w.sip.a_order
    2
    """
    header = sip_header(w, cards, comments)
    write_product(path, [fits.PrimaryHDU(header=header)], overwrite=overwrite)
