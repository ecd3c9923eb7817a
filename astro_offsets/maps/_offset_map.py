"""Dense X/Y offset maps: the pixmap for drizzle, WCS lookup tables, FITS files."""

import sys

import numpy as np
from astropy.io import fits
from astropy.io.fits.hdu.compressed import NO_DITHER

from .._utils.provenance import provenance_header, text_of_card, write_product
from .._utils.validation import input_file
from ._arrays import offset_maps
from ._diagnostics import largest_jump, star_rms
from ._folds import find_folds
from ._plot import plot_map
from ._sip import offsets_to_sip
from ._wcs import offsets_to_wcs

__all__ = ["OffsetMap", "field_summary"]

# meta key, FITS keyword, comment. One table drives both writing and reading;
# the software, date and product cards come first (see provenance_header).
_PROVENANCE = (
    ("source", "SRCTABLE", "star table of the map"),
    ("reference", "REFFRAME", "reference frame of the offsets"),
    ("reference_path", "REFPATH", "reference frame, absolute path"),
    ("roworder", "REFROWS", "rows of the reference: TOP-DOWN or BOTTOM-UP"),
    ("n_stars", "NSTARS", "stars used"),
    ("n_dropped", "NDROPPED", "table rows dropped (NaN/inf)"),
    ("trend", "TREND", "global transform under the field"),
    ("trend_rms", "TRENDRMS", "trend's RMS residual at the stars (px)"),
    ("trend_rotation", "TRENDROT", "frame's rotation against the reference (deg)"),
    ("method", "METHOD", "offset field method"),
    ("selection", "SELECTED", "how the method was chosen"),
    ("parameter", "PARNAME", "the method's parameter"),
    ("parameter_value", "PARVALUE", "its value"),
    ("weighted", "WEIGHTED", "stars weighted by their uncertainties"),
    ("clip", "CLIPSIG", "sigma-clipping threshold (robust sigma)"),
    ("n_clipped", "NCLIPPED", "stars left out by sigma-clipping"),
    ("cv_rms", "CVRMS", "5-fold cross-validated RMS at stars (px)"),
    ("max_jump", "MAXJUMP", "largest pixel-to-pixel step (px)"),
    ("star_rms", "STARRMS", "map minus star offsets at the stars (px)"),
    ("sky", "SKY", "median sky level of the frame"),
    ("ref_sky", "REFSKY", "median sky level of the reference"),
    ("flux_scale", "FLUXSCL", "reference / frame star flux (median)"),
    ("fwhm", "FWHM", "median star FWHM in the frame (px)"),
    ("elongation", "ELONG", "median star elongation a/b in the frame"),
    ("n_detected", "NDETECT", "stars detected in the frame"),
    ("noise", "NOISE", "sky noise of the frame (RMS)"),
    ("ref_fwhm", "REFFWHM", "median star FWHM in the reference (px)"),
    ("ref_elongation", "REFELONG", "median star elongation a/b in the reference"),
    ("ref_n_detected", "REFNDET", "stars detected in the reference"),
    ("ref_noise", "REFNOISE", "sky noise of the reference (RMS)"),
)
# Maps of earlier versions: their keyword, the meta key and parameter now.
_EARLIER = (
    ("NREJECT", "n_dropped", None),
    ("POWER", "parameter_value", "power"),
    ("DEGREE", "parameter_value", "degree"),
    ("SMOOTH", "parameter_value", "smoothing"),
)
_CONVENTION = (
    "XOFFSET, YOFFSET: position in this frame minus position in the",
    "reference frame, in pixels, at each pixel centre; 0-based, pixel",
    "[j, i] is the point x=i, y=j.",
    "Drizzle pixmap onto the reference grid: (x - XOFFSET, y - YOFFSET).",
)
_EXTENSIONS = (("XOFFSET", "X offsets"), ("YOFFSET", "Y offsets"))
# Maps are written tile-compressed (the FITS convention, which astropy and
# CFITSIO read: fitsio, funpack): each value rounded to the nearest multiple of
# _QSTEP, then coded without loss. The step is a power of two, so rounding
# and restoring are exact in float64, and every value restored is a
# multiple of it that float32 holds exactly below _QUANTISED px: the error
# is at most _QSTEP / 2 = 0.00098 px at every pixel, a bound, not a typical
# figure. No dither: a smooth map then codes small, and restores exactly.
# The values are rounded here (half to even), before CFITSIO sees them: its
# own rounding of a tie depends on each tile's zero point, and a map held in
# memory (`OffsetMap.quantised`, `astro-offsets run`) is then the file's, bit
# for bit.
_QSTEP = 2.0**-9
_QUANTISED = 2.0**15
# RICE_1 codes each pixel's step from its left neighbour, fast: a map steep
# along its rows (a frame flipped over the meridian: 2 px a pixel) costs
# bits at every pixel. Beyond _STEEP px a pixel, HCOMPRESS_1 (a wavelet,
# here without loss on the quantised values) codes it 1.2 to 2.6 times
# smaller, at 3 times the time to read. Tiles of about 16 whole rows: few
# enough to decode fast (HCOMPRESS_1 wants 4 rows in the last one).
_STEEP = 0.01
_TILE_ROWS = 16


def field_summary(meta):
    """Return the field of a map's ``meta`` in words, or `None` if it names no method.

    Examples
    --------
    >>> from astro_offsets.maps import field_summary
    >>> field_summary({"method": "polynomial", "parameter": "degree", "parameter_value": 4,
    ...                "selection": "auto", "cv_rms": 0.0731, "n_clipped": 3})
    'polynomial degree=4 (auto), CV RMS 0.073 px, 3 stars clipped'
    >>> field_summary({"method": "quadrant", "parameter": "power", "parameter_value": 1.0,
    ...                "trend": "affine", "trend_rms": 0.052, "trend_rotation": 179.93})
    'quadrant power=1; affine trend: rotation 179.930 deg, RMS 0.052 px'
    """
    method = meta.get("method")
    if not method:
        return None
    words = method
    if meta.get("parameter") and meta.get("parameter_value") is not None:
        words += f" {meta['parameter']}={meta['parameter_value']:g}"
    if meta.get("selection"):
        words += f" ({meta['selection']})"
    if meta.get("cv_rms") is not None:
        words += f", CV RMS {meta['cv_rms']:.3f} px"
    if meta.get("n_clipped"):
        words += f", {meta['n_clipped']} star{'s' if meta['n_clipped'] > 1 else ''} clipped"
    if meta.get("trend"):
        words += f"; {meta['trend']} trend"
        details = []
        if meta.get("trend_rotation") is not None:
            details.append(f"rotation {meta['trend_rotation']:.3f} deg")
        if meta.get("trend_rms") is not None:
            details.append(f"RMS {meta['trend_rms']:.3f} px")
        if details:
            words += ": " + ", ".join(details)
    return words


class OffsetMap:
    """Per-pixel X and Y offsets of a frame against the reference frame.

    Parameters
    ----------
    x_offset, y_offset : array-like
        2-D maps of equal shape ``(ny, nx)``: at pixel ``[j, i]`` (the point
        ``x = i, y = j``), position in this frame minus position in the
        reference frame. Stored as float32.
    meta : dict or `None`, optional
        Provenance (``source``, ``n_stars``, ``method``, ``parameter``,
        ``parameter_value``, ...), written to the FITS header by `write`.
    stars : `StarOffsets` or `None`, optional
        The stars the map was made from, for the diagnostics at the stars
        and the plot; `OffsetModel.to_map` gives them. A map read from a
        file has none.

    Raises
    ------
    ValueError
        If the maps are not numeric, not 2-D, empty, differ in shape, or hold
        infinite values (NaN is allowed: drizzle skips such pixels).

    See Also
    --------
    OffsetModel.to_map

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import OffsetMap
    >>> omap = OffsetMap(np.full((3, 4), 0.25), np.zeros((3, 4)))
    >>> omap
    <OffsetMap: 3 x 4 pixels>
    >>> omap.pixmap()[0, :, 0]
    array([-0.25,  0.75,  1.75,  2.75])
    """

    def __init__(self, x_offset, y_offset, *, meta=None, stars=None):
        self.x_offset, self.y_offset = offset_maps(x_offset, y_offset)
        self.meta = dict(meta or {})
        self.stars = stars

    @property
    def field_summary(self):
        """The field of the map in words (method, parameter, CV RMS, stars clipped), or `None`."""
        return field_summary(self.meta)

    @property
    def shape(self):
        """Map shape ``(ny, nx)``."""
        return self.x_offset.shape

    def __repr__(self):
        ny, nx = self.shape
        stars = self.meta.get("n_stars")
        extra = f", {stars} stars" if stars is not None else ""
        return f"<{type(self).__name__}: {ny} x {nx} pixels{extra}>"

    def pixmap(self):
        """Return the drizzle pixel map of this frame onto the reference grid.

        Returns
        -------
        `~numpy.ndarray`
            float64 array of shape ``(ny, nx, 2)``: ``[..., 0] = x - x_offset``
            and ``[..., 1] = y - y_offset``, as
            `drizzle.resample.Drizzle.add_image` expects.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> pixmap = OffsetMap(np.ones((2, 3)), np.zeros((2, 3))).pixmap()
        >>> pixmap.shape, pixmap[1, 2]
        ((2, 3, 2), array([1., 1.]))
        """
        ny, nx = self.shape
        pixmap = np.empty((ny, nx, 2), dtype=np.float64)
        np.subtract(
            np.arange(nx, dtype=np.float64)[np.newaxis, :], self.x_offset, out=pixmap[..., 0]
        )
        np.subtract(
            np.arange(ny, dtype=np.float64)[:, np.newaxis], self.y_offset, out=pixmap[..., 1]
        )
        return pixmap

    def to_wcs(self, wcs=None):
        """Return a WCS carrying this map as distortion lookup tables.

        The maps become FITS distortion-paper ``CPDIS1``/``CPDIS2`` lookup
        tables (written as ``WCSDVARR`` extensions by
        `astropy.wcs.WCS.to_fits`), which astropy.wcs and drizzlepac apply.

        Parameters
        ----------
        wcs : `~astropy.wcs.WCS` or `None`, optional
            The reference frame's WCS to attach the tables to (a copy; the
            argument is not modified). It must carry no distortion of its
            own (SIP, lookup tables). `None` attaches them to a gnomonic WCS
            with 1 arcsec pixels centred on the frame at (RA, Dec) =
            (180, 0) deg.

        Returns
        -------
        `~astropy.wcs.WCS`
            ``w.p4_pix2foc(x, y, 0)`` equals `pixmap`, and
            ``drizzle.utils.calc_pixmap(omap.to_wcs(base), base)`` reproduces
            it (to about 1e-9 px). With ``wcs=None`` the ``base`` is the
            result with its tables removed (``w.cpdis1 = w.cpdis2 = None`` on
            a copy).

        Raises
        ------
        ValueError
            If the map holds NaN or infinite values (lookup tables spread
            them to neighbouring pixels), or ``wcs`` is not 2-D, already
            carries distortion, or has a different pixel shape.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> omap = OffsetMap(np.full((4, 5), 0.5), np.zeros((4, 5)))
        >>> w = omap.to_wcs()
        >>> w.p4_pix2foc(np.array([2.0]), np.array([1.0]), 0)
        [array([1.5]), array([1.])]
        """
        return offsets_to_wcs(self.x_offset, self.y_offset, wcs)

    def to_sip(self, degree=None, max_error=0.01, *, wcs=None):
        """Return a WCS carrying this map as SIP polynomials (FITS ``A_p_q``, ``B_p_q``).

        With ``u = x + 1 - CRPIX1`` and ``v = y + 1 - CRPIX2`` (0-based
        ``x``, ``y``), ``x + A(u, v)`` and ``y + B(u, v)`` reproduce
        `pixmap`, ``x - x_offset`` and ``y - y_offset``, within the error
        recorded in the result's ``sip_error``. The constant and linear terms
        are in ``A`` and ``B`` (the frame's shift and turn); ``CD`` and
        ``CRPIX`` are the reference frame's, so ``w.all_pix2world(x, y, 0)``
        is ``wcs.wcs_pix2world(*pixmap, 0)``. astropy's ``sip_pix2foc``
        returns ``u + A(u, v)``, the same point counted from ``CRPIX``.

        The polynomials are fitted by least squares on a grid of up to 128 x
        128 pixels (the frame's edges included), in coordinates scaled to
        [-1, 1] and converted exactly to SIP's unscaled coefficients; the
        error is then measured on every pixel of the frame, in bands of rows
        (a few tens of MB whatever the frame's size). Pixels whose offsets
        are NaN are left out of the fit and of the error.

        SIP is one polynomial over the whole frame: it cannot follow a
        quadrant field's kinks (the literal field, ``trend=None``, turns
        at every star), local bumps (a star's offset unlike its neighbours')
        or a fold. There the error stays above ``max_error`` at the highest
        degree, and a warning says by how much.

        Parameters
        ----------
        degree : int or `None`, optional
            The degree of ``A`` and ``B`` (``A_ORDER``, ``B_ORDER``), from 2
            (astropy reads no lower) to 9 (``astro_offsets.maps.MAX_SIP_DEGREE``,
            the highest astrometry.net's SIP library holds). The default, `None`,
            takes the lowest that reaches ``max_error``, or else 9.
        max_error : float, optional
            The largest error wanted, in pixels: the distance between
            ``(x + A, y + B)`` and `pixmap` at the worst pixel. The default
            is 0.01.
        wcs : `~astropy.wcs.WCS` or `None`, optional
            The reference frame's WCS, as for `to_wcs` (a copy gets the
            polynomials, at its ``CRPIX``). A plate solver's SIP in it (the
            lens's distortion, ``TAN-SIP``) is composed with the map: the
            frame's polynomials then put each pixel where the reference's
            whole WCS puts its pixmap (``wcs.all_pix2world(*pixmap, 0)``);
            lookup tables are refused. `None`
            takes a gnomonic WCS with 1 arcsec pixels, ``CRPIX`` on the
            centre of the frame (``astro_offsets.maps.default_wcs``).

        Returns
        -------
        `~astropy.wcs.WCS`
            With ``sip`` set, ``CTYPE`` ending in ``-SIP``, and three
            attributes beyond astropy's: ``sip_error``, the largest error
            reached over every pixel (px); ``sip_max_error``, the
            ``max_error`` asked; ``sip_pixels``, the pixels measured.
            ``to_header()`` cannot carry them:
            ``astro_offsets.maps.sip_header`` gives a header with them
            (``SIPERR``, ``SIPGOAL``, ``SIPNPIX``), and
            ``astro_offsets.maps.write_sip`` writes it as a header-only FITS
            file, as ``astro-offsets maps --sip`` does.

        Raises
        ------
        ValueError
            If ``degree`` or ``max_error`` is out of range, the map has too
            few pixels with finite offsets for the degree, or ``wcs`` is not
            2-D, carries distortion or has another pixel shape.

        Warns
        -----
        `~astropy.utils.exceptions.AstropyUserWarning`
            If the error reached is above ``max_error``.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> y, x = np.indices((300, 400), dtype=float)
        >>> omap = OffsetMap(1.5 + 2e-3 * (y - 150), -0.5 - 2e-3 * (x - 200))
        >>> w = omap.to_sip()
        >>> w.sip.a_order, bool(w.sip_error < 1e-6)
        (2, True)
        >>> u, v = 0 + 1 - w.wcs.crpix[0], 0 + 1 - w.wcs.crpix[1]
        >>> a = sum(w.sip.a[p, q] * u**p * v**q for p in range(3) for q in range(3))
        >>> print(f"{0 + a:.6f} {omap.pixmap()[0, 0, 0]:.6f}")
        -1.200000 -1.200000
        """
        return offsets_to_sip(
            self.x_offset, self.y_offset, degree=degree, max_error=max_error, wcs=wcs
        )

    def to_gwcs(self):
        """Return a ``gwcs.WCS`` from this frame's pixels to the reference frame's, with an inverse.

        The forward transform takes 0-based frame pixel ``(x, y)`` to
        reference pixel ``(x - x_offset, y - y_offset)``: exactly `pixmap`
        at the pixels, bilinear between them (the offsets are tabulated as
        `astropy.modeling.models.Tabular2D`, ``method="linear"``). Its
        inverse is tabulated on the reference grid, solved once by Newton's
        method on that bilinear map. Both are astropy models, so the WCS
        serialises to ASDF. Needs the optional extra ``gwcs`` (gwcs, asdf,
        asdf-astropy).

        Returns
        -------
        ``gwcs.WCS``
            From the frame ``"frame"`` to ``"reference"``, both
            ``gwcs.coordinate_frames.Frame2D`` in pixels, with the frame's
            ``pixel_shape`` and its ``bounding_box``: the pixels' edges,
            ``-0.5 <= x <= nx - 0.5``, ``-0.5 <= y <= ny - 0.5``. ``w(x, y)``
            is the forward transform, ``w.invert(X, Y)`` the inverse.

        Raises
        ------
        ImportError
            If gwcs is not installed: ``pip install 'astro_offsets[gwcs]'``.
        ValueError
            If the map is smaller than 2 x 2 pixels or all NaN.

        Notes
        -----
        *Forward.* At the pixels it returns `pixmap` exactly (the float32
        offsets are tabulated as they are; the subtraction is float64).
        Between them the offsets are interpolated bilinearly, as drizzle's
        pixel corners and the ``to_wcs`` lookup tables do. Beyond the outer
        pixels' centres, up to their edges, the edge cells are extrapolated
        linearly; outside the bounding box ``w(x, y)`` is NaN.

        *Inverse.* Its tables hold, at every reference pixel ``(X, Y)`` that
        the frame covers, the frame point that the bilinear forward map
        takes there (Newton's method to 1e-9 px), and 2 px beyond the
        frame's edges so that the inverse interpolates up to them;
        elsewhere NaN (gwcs 1 also sets frame coordinates outside the
        bounding box to NaN). Between reference pixels the inverse is
        bilinear too, which cannot follow the forward map's kinks exactly:
        ``w.invert(*w(x, y))`` returns ``(x, y)`` to within the float32
        rounding of the offsets (about ``|offset| * 6e-8``: 2e-5 px for
        offsets of 300 px) on smooth maps (``method="auto"``'s fitted
        fields, a turned frame), but only to about a third of the map's
        largest pixel-to-pixel step on a quadrant field (0.05 px for steps
        of 0.19 px). gwcs's own ``numerical_inverse`` is no substitute
        here: it treats the outputs as degrees on the sky and wraps their
        differences at 360 (on pixels it gave NaN, or answers hundreds of
        pixels off, for a fifth of the points tried).

        *NaN in the map.* A NaN offset makes the bilinear cells that touch
        it NaN: the point ``(x, y)`` belongs to the cell of pixels
        ``floor(x)`` and ``floor(x) + 1`` (likewise in y), so a valid pixel
        whose right, upper or upper-right neighbour is NaN comes out NaN
        too; every other pixel is exact. The inverse is NaN where the
        frame point lies in such a cell.

        *Memory.* The forward tables are float32, 8 bytes per frame pixel;
        the inverse tables float64, 16 bytes per reference pixel covered
        (a little more than the frame when it is shifted or turned): for a
        42-Mpix frame turned by 3 degrees, 336 MB and 750 MB, and as much
        in an ASDF file. Building the inverse takes about a second per
        million pixels (36 s for that frame).

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> omap = OffsetMap(np.full((4, 5), 0.5), np.full((4, 5), -1.0))
        >>> w = omap.to_gwcs()
        >>> [float(v) for v in w(2.0, 1.0)]
        [1.5, 2.0]
        >>> [round(float(v), 9) for v in w.invert(1.5, 2.0)]
        [2.0, 1.0]
        >>> [float(v) for v in w(9.0, 1.0)]  # outside the frame
        [nan, nan]
        """
        from ._gwcs import offsets_to_gwcs

        return offsets_to_gwcs(self.x_offset, self.y_offset)

    def diagnostics(self):
        """Return the map's largest pixel-to-pixel jump and its residual at the stars.

        Returns
        -------
        dict
            ``max_jump``: the largest difference between neighbouring pixels
            of either map, in pixels (jumps over 1 px move neighbouring input
            pixels apart in drizzle's output); ``star_rms``: the RMS over the
            stars of the map (bilinearly interpolated) minus the star's
            offset, in pixels, or `None` when the map has no ``stars``.

        Examples
        --------
        >>> from astro_offsets import OffsetModel
        >>> model = OffsetModel([5.3, 20.2, 12.7], [5.6, 12.4, 3.1], [1.0, 2.0, 1.5],
        ...                     [0.0, 0.5, 0.2])
        >>> d = model.to_map((16, 24)).diagnostics()
        >>> round(d["max_jump"], 3), round(d["star_rms"], 3)
        (0.067, 0.0)
        """
        return {
            "max_jump": largest_jump(self.x_offset, self.y_offset),
            "star_rms": None
            if self.stars is None
            else star_rms(self.x_offset, self.y_offset, self.stars),
        }

    def folds(self):
        """Return where the map's pixmap folds, or `None` if it never does.

        A map folds where neighbouring pixels land out of order on the
        reference grid: drizzle cannot use it there (its pixel polygons turn
        inside out). Each quadrilateral of four neighbouring pixel centres,
        mapped by `pixmap`, must stay convex with positive orientation: the
        finite-difference Jacobian determinants at its four corners must all
        be > 0. `~astro_offsets.write_maps` (the ``maps`` command) and
        `~astro_offsets.Stacker.add` refuse a folded map.

        Returns
        -------
        ``astro_offsets.maps.Folds`` or `None`
            How many cells fold, the range of their first pixels and the
            smallest determinant (1 for the identity).

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> x = np.zeros((4, 6))
        >>> OffsetMap(x, x).folds() is None
        True
        >>> x[:, 3:] = 2.0  # columns 3 onwards land left of column 2
        >>> print(OffsetMap(x, np.zeros((4, 6))).folds())
        3 pixels at x 2-2, y 0-2 (smallest Jacobian determinant -1)
        """
        return find_folds(self.x_offset, self.y_offset)

    def check_folds(self, name=None, *, origin=(0, 0), step=1):
        """Raise a `ValueError` naming ``name`` (the map's source) if the map folds.

        See `folds`. ``origin`` ``(y, x)`` and ``step`` check the pixels
        ``[y::step, x::step]`` alone, as drizzle sees a Bayer colour plane.
        """
        if step == 1 and tuple(origin) == (0, 0):
            folds = self.folds()
        else:
            part = (slice(origin[0], None, step), slice(origin[1], None, step))
            folds = find_folds(self.x_offset[part], self.y_offset[part], step=step)
            if folds is not None:  # where they are in the frame's pixels
                folds = folds._replace(
                    x_range=tuple(origin[1] + step * i for i in folds.x_range),
                    y_range=tuple(origin[0] + step * j for j in folds.y_range),
                )
        if folds is not None:
            name = name or self.meta.get("source")
            if str(self.meta.get("selection", "")).startswith("auto"):
                # auto's fitted field folded first, then the quadrant field on the trend.
                cause = (
                    "the fields auto tried all fold there, so the stars' offsets disagree "
                    "beyond what a field can follow: check the star matches and the reference "
                    "frame (enough stars, not capped or clouded)"
                )
            elif self.meta.get("method") == "quadrant":
                cause = (
                    "a star whose offset differs from its neighbours' by more than their "
                    "distance, a mismatch, does that to a field through every star: try a fitted "
                    "method (auto), which clips mismatched stars"
                )
            else:
                cause = (
                    "a field extrapolated far beyond its stars, or mismatched stars, can do that: "
                    "try a lower degree or the quadrant method"
                )
            raise ValueError(
                f"{f'{name}: the map' if name else 'the offset map'} folds at {folds}: drizzle "
                f"cannot use it (neighbouring pixels would land out of order; {cause})"
            )

    def plot(self, stars=None, *, figure=None):
        """Plot the X and Y maps, their pixel-to-pixel jumps and the star offsets.

        Large maps are shown subsampled; the jumps are still between
        neighbouring pixels. The title names the frame and the field.

        Parameters
        ----------
        stars : `StarOffsets`, `OffsetModel` or `None`, optional
            The stars, drawn as arrows (offset minus the median offset), the
            clipped ones marked; by default the map's own ``stars``.
        figure : `matplotlib.figure.Figure` or `None`, optional
            Figure to draw on; a new one (not attached to pyplot) by default.

        Returns
        -------
        `matplotlib.figure.Figure`

        Examples
        --------
        >>> from astro_offsets import OffsetModel
        >>> model = OffsetModel([5.0, 20.0, 12.0], [5.0, 12.0, 3.0], [1.0, 2.0, 1.5],
        ...                     [0.0, 0.5, 0.2])
        >>> figure = model.to_map((16, 24)).plot()
        >>> len(figure.axes)  # four panels and three colour bars
        7
        """
        return plot_map(self, stars, figure=figure)

    def header(self):
        """Return the primary header of the map's file: its provenance and diagnostics.

        What `write` writes, and `read` reads back into ``meta``.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> OffsetMap(np.zeros((4, 5)), np.ones((4, 5))).header()["MAPNX"]
        5
        """
        meta = dict(self.meta)
        meta.update((k, v) for k, v in self.diagnostics().items() if v is not None)
        for key in ("max_jump", "star_rms", "cv_rms", "trend_rms", "trend_rotation"):
            if meta.get(key) is not None:
                meta[key] = round(meta[key], 6)
        ny, nx = self.shape
        cards = [(keyword, meta.get(key), comment) for key, keyword, comment in _PROVENANCE]
        cards += [
            ("MAPNY", ny, "map rows (image height)"),
            ("MAPNX", nx, "map columns (image width)"),
        ]
        return provenance_header("offset map", cards, _CONVENTION)

    def quantised(self, *, copy=True):
        """Return the map as its compressed file holds it: offsets rounded to 2**-9 px.

        `write` (``compress=True``, the default) rounds each offset to the
        nearest multiple of 2**-9 px (ties to even), within 0.00098 px, and
        `read` gives those values back exactly. A map used in memory
        where its file could have been used instead (``astro-offsets run``
        stacks its maps from memory) is rounded alike, so that both give the
        same stack, bit for bit. A map with offsets of 2**15 px or more,
        which `write` writes uncompressed, is returned as it is.

        Parameters
        ----------
        copy : bool, optional
            Round copies of the arrays (the default), or this map's own, in
            place, and return this map.

        Returns
        -------
        `OffsetMap`

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> omap = OffsetMap(np.full((4, 5), 0.1234567), np.zeros((4, 5)))
        >>> float(omap.quantised().x_offset[0, 0]) * 512
        63.0
        >>> path = os.path.join(tempfile.mkdtemp(), "frame.offsets.fits")
        >>> omap.write(path)
        >>> np.array_equal(OffsetMap.read(path).x_offset, omap.quantised().x_offset)
        True
        """
        maps = (self.x_offset, self.y_offset)
        if not all(_quantisable(data) for data in maps):
            return self
        rounded = [data.copy() if copy else data for data in maps]
        for data in rounded:
            # Exact in float32: a power of two scales, and rint keeps the
            # integers, below 2**24 steps.
            data *= 1.0 / _QSTEP
            np.rint(data, out=data)
            data *= _QSTEP
        if not copy:
            return self
        return type(self)(*rounded, meta=self.meta, stars=self.stars)

    def write(self, path, *, overwrite=False, compress=True):
        """Write the map as FITS, atomically.

        Layout: HDU 0 holds the provenance (software and version, date,
        source table, star count, method and its parameter, shape, sign
        convention);
        HDU 1 ``XOFFSET`` and HDU 2 ``YOFFSET`` hold the float32 maps,
        tile-compressed by default: quantised in steps of 2**-9 px
        (``QSTEP``), so that every pixel is within 0.00098 px (``MAXERR``)
        of the map, then coded without loss in tiles of about 16 rows
        (``RICE_1``, or ``HCOMPRESS_1`` for a map steep along its rows, as
        a frame flipped over the meridian). A smooth map's file is 5 to 15
        times smaller; astropy reads its maps as float32 images all the
        same.

        Parameters
        ----------
        path : str or path-like
            Output file, by convention ``<stem>.offsets.fits``.
        overwrite : bool, optional
            Replace an existing file. The default is `False`.
        compress : bool, optional
            Write the maps tile-compressed (`True`, the default), or as plain
            float32 images, bit for bit. Offsets of 32768 px or more, which
            float32 holds to less than the step, are written plain anyway.

        Raises
        ------
        FileExistsError
            If the file exists and ``overwrite`` is `False`; it is left as is.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> path = os.path.join(tempfile.mkdtemp(), "frame.offsets.fits")
        >>> OffsetMap(np.zeros((4, 5)), np.ones((4, 5))).write(path)
        >>> OffsetMap.read(path).y_offset[0, 0]
        np.float32(1.0)
        """
        header = self.header()
        maps = (self.x_offset, self.y_offset)
        compress = compress and all(_quantisable(data) for data in maps)
        if compress:
            maps = (quantised := self.quantised()).x_offset, quantised.y_offset
        if compress:
            kinds = [_compression(data) for data in maps]
            header["COMPRESS"] = (", ".join(dict.fromkeys(kinds)), "tile compression of the maps")
            header["QSTEP"] = (_QSTEP, "maps quantised in steps of QSTEP px")
            header["MAXERR"] = (_QSTEP / 2, "largest error of a map pixel (px)")
        hdus = [fits.PrimaryHDU(header=header)]
        for k, ((extname, band), data) in enumerate(zip(_EXTENSIONS, maps, strict=True)):
            if compress:
                hdu = fits.CompImageHDU(
                    data,
                    name=extname,
                    compression_type=kinds[k],
                    tile_shape=(_tile_rows(data.shape[0]), data.shape[1]),
                    quantize_level=-_QSTEP,  # negative: the step itself
                    quantize_method=NO_DITHER,
                )
            else:
                hdu = fits.ImageHDU(data=data, name=extname)
            hdu.header["BAND"] = (band, "offsets, this frame minus reference")
            hdu.header["BUNIT"] = ("pixel", "offsets are in pixels")
            hdus.append(hdu)
        write_product(path, hdus, overwrite=overwrite)

    @classmethod
    def read(cls, path, *, out=None):
        """Read a map written by `write`, or by the original notebook.

        Files with ``XOFFSET`` and ``YOFFSET`` extensions are read by name;
        files of the original notebook (an empty primary HDU and two unnamed
        image extensions, X then Y) by position.

        Parameters
        ----------
        path : str or path-like
            A ``<stem>.offsets.fits`` file.
        out : tuple of `~numpy.ndarray`, optional
            ``(x_array, y_array)``: C-contiguous float32 arrays of the map's
            shape to read the maps into, which the map returned holds: the
            previous frame's, say, memory the process holds already, where
            fresh memory would first be cleared by the system.

        Returns
        -------
        `OffsetMap`

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If it is not a FITS file or holds no recognisable pair of maps
            (the message lists the HDUs found), or ``out`` does not fit them.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from astro_offsets import OffsetMap
        >>> path = os.path.join(tempfile.mkdtemp(), "DSC0001.offsets.fits")
        >>> OffsetMap(np.full((2, 3), 1.5), np.zeros((2, 3))).write(path)
        >>> omap = OffsetMap.read(path)
        >>> float(omap.x_offset[1, 2])
        1.5
        >>> again = OffsetMap.read(path, out=(omap.x_offset, omap.y_offset))
        >>> again.x_offset is omap.x_offset
        True
        """
        path = input_file(path, "map file")
        try:
            hdul = fits.open(path, memmap=False)
        except OSError as exc:
            raise ValueError(f"{path}: not a readable FITS file ({exc})") from exc
        with hdul:
            x_hdu, y_hdu = _find_map_hdus(hdul, path)
            meta = _read_provenance(hdul[0].header)
            if out is None:
                out = (None, None)
            elif x_hdu.shape != y_hdu.shape:
                raise ValueError(
                    f"{path}: x_offset and y_offset differ in shape: {x_hdu.shape} and "
                    f"{y_hdu.shape}"
                )
            elif not _usable_out(out, x_hdu.shape):
                shapes = (
                    [getattr(a, "shape", type(a).__name__) for a in out]
                    if isinstance(out, (tuple, list))
                    else f"a {type(out).__name__}"
                )
                raise ValueError(
                    f"{path}: out must be two separate C-contiguous, writeable float32 arrays "
                    f"of the maps' shape {x_hdu.shape} (out: {shapes})"
                )
            try:
                return cls(_native(x_hdu, path, out[0]), _native(y_hdu, path, out[1]), meta=meta)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None


def _quantisable(data):
    """Whether a map's values lie where quantising them errs by ``_QSTEP / 2`` at most."""
    return max(np.nanmax(data, initial=0.0), -np.nanmin(data, initial=0.0)) < _QUANTISED


def _compression(data):
    """Return a map's tile compression: ``HCOMPRESS_1`` if steep along its rows, else ``RICE_1``."""
    ny, nx = data.shape
    if min(ny, nx) < 4:  # HCOMPRESS_1's least tile
        return "RICE_1"
    steps = np.abs(np.diff(data[:: max(ny // 64, 1)], axis=1))  # 64 rows tell
    steps = steps[np.isfinite(steps)]
    return "HCOMPRESS_1" if steps.size and np.median(steps) > _STEEP else "RICE_1"


def _tile_rows(ny):
    """Return the rows of a map's tiles: about 16, and none or 4 or more in the last one."""
    if ny <= _TILE_ROWS:
        return ny
    return next(r for r in range(_TILE_ROWS, 2 * _TILE_ROWS) if ny % r == 0 or ny % r >= 4)


def _usable_out(out, shape):
    """Whether ``out`` is a pair of arrays that `OffsetMap.read` can read maps of ``shape`` into."""
    return (
        isinstance(out, (tuple, list))
        and len(out) == 2
        and all(
            isinstance(a, np.ndarray)
            and a.dtype == np.float32
            and a.dtype.isnative
            and a.shape == shape
            and a.flags.c_contiguous
            and a.flags.writeable
            for a in out
        )
        and not np.shares_memory(out[0], out[1])
    )


def _native(hdu, path, out=None):
    """Return an image HDU's data, C-ordered, in the machine's byte order (in ``out`` if given).

    The floats of an uncompressed file are read straight into the array a
    chunk at a time, each chunk's bytes swapped while in the cache: one pass
    over the array's fresh memory, and no mapping of the file that would
    count in the process's memory (the two maps of a 42-Mpix frame in 0.1 s,
    against 0.2 s read whole and swapped after). Other data through astropy:
    tile-compressed maps (`OffsetMap.write`'s default) are decoded there,
    three quarters of the time in its Rice or HCOMPRESS decoder (the two
    Rice maps of 42 Mpix in 0.5 s).
    """
    header, info = hdu.header, hdu.fileinfo()
    compression = getattr(info["file"], "compression", None) if info else "unknown"
    dtype = {-32: np.dtype(">f4"), -64: np.dtype(">f8")}.get(header.get("BITPIX"))
    plain = (
        type(hdu) in (fits.ImageHDU, fits.PrimaryHDU)  # not tile-compressed
        and compression is None  # nor the whole file
        and dtype is not None
        and (out is None or out.dtype == dtype.newbyteorder("="))
        and "BSCALE" not in header
        and "BZERO" not in header
    )
    if not plain:
        data = hdu.data
        if out is not None:
            # Beyond float32's range: infinite, which the map refuses.
            with np.errstate(over="ignore"):
                np.copyto(out, data, casting="same_kind")
            return out
        # Fresh memory (the file is not mapped): swapped if need be, not copied.
        return None if data is None else data.astype(data.dtype.newbyteorder("="), copy=False)
    array = np.empty(hdu.shape, dtype) if out is None else out.view(dtype)
    swap = sys.byteorder == "little"  # FITS is big-endian
    flat = array.reshape(-1)
    chunk = _CHUNK_BYTES // dtype.itemsize
    with open(path, "rb") as file:
        file.seek(info["datLoc"])
        for start in range(0, flat.size, chunk):
            part = flat[start : start + chunk]
            if file.readinto(memoryview(part).cast("B")) != part.nbytes:
                raise ValueError(f"{hdu.name or 'an image'} HDU: the file ends within its data")
            if swap:
                part.byteswap(inplace=True)
    return array.view(dtype.newbyteorder("=")) if out is None else out


# Bytes of a map read at a time: a few megabytes, within the cache.
_CHUNK_BYTES = 4 * 2**20


def _read_provenance(header):
    """Return the ``meta`` a map's primary header records, also of earlier versions' maps."""
    meta = {key: header[keyword] for key, keyword, _ in _PROVENANCE if keyword in header}
    for keyword, key, parameter in _EARLIER:
        if keyword in header and key not in meta:
            meta[key] = header[keyword]
            if parameter is not None:
                meta["parameter"] = parameter
    if "source" not in meta and "PATH" in header:  # the original notebook's card
        meta["source"] = header["PATH"]
    return {key: text_of_card(value) for key, value in meta.items()}


def _find_map_hdus(hdul, path):
    names = [hdu.name for hdu in hdul]
    if "XOFFSET" in names and "YOFFSET" in names:
        return hdul["XOFFSET"], hdul["YOFFSET"]
    # The original notebook's layout: unnamed image extensions after the
    # primary, X first.
    images = [hdu for hdu in hdul[1:] if isinstance(hdu, fits.ImageHDU) and len(hdu.shape) == 2]
    if len(images) == 2:
        bands = [str(hdu.header.get("BAND", "")).strip().lower() for hdu in images]
        if bands in (["x offsets", "y offsets"], ["", ""]):
            return images
    found = ", ".join(
        f"{i}:{hdu.name or '(unnamed)'} {type(hdu).__name__}"
        f"{'' if getattr(hdu, 'shape', None) in (None, ()) else ' ' + str(hdu.shape)}"
        for i, hdu in enumerate(hdul)
    )
    raise ValueError(
        f"{path}: no offset maps found (expected XOFFSET and YOFFSET image extensions, "
        f"or two unnamed image extensions X then Y); HDUs: {found}"
    )
