"""Frame files: their size and their pixels, from FITS images or camera raw files."""

import math
import os
from typing import NamedTuple

import numpy as np
import rawpy
from astropy.io import fits

from .._utils.naming import is_fits_name
from .._utils.unreadable import UNREADABLE_FITS
from .._utils.validation import input_file
from ._cfa import BAYER_PATTERNS, bayer_colors

__all__ = ["ROW_ORDERS", "Frame", "frame_header", "frame_shape", "read_frame", "row_order"]

#: FITS's ROWORDER values: the array's first row is the image's top, or its bottom.
ROW_ORDERS = ("TOP-DOWN", "BOTTOM-UP")


class _CardError(ValueError):
    """A FITS file read, whose cards or axes say something not understood (not wrapped)."""


class Frame(NamedTuple):
    """Pixels of one frame, as returned by `read_frame`.

    Attributes
    ----------
    data : `~numpy.ndarray` of float32, shape (ny, nx) or (3, ny, nx)
        Pixel values: for raw files the sensor values minus the black level
        of each pixel's colour channel; for FITS files the image, or the red,
        green and blue planes of a colour cube.
    colors : `~numpy.ndarray` of uint8, shape (ny, nx), or `None`
        For colour mosaics (raw files, and FITS files with a ``BAYERPAT``
        card): the colour filter of each pixel, as rawpy's
        ``raw_colors_visible`` gives it (0 red, 1 green, 2 blue, 3 the green
        in the blue rows; see `~astro_offsets.bayer_colors`). `None`
        for other FITS files.
    exptime : float or `None`
        Exposure time in seconds: the raw file's shutter speed, or the FITS
        ``EXPTIME`` (or ``EXPOSURE``) card; `None` if the file does not say.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_offsets import read_frame
    >>> path = os.path.join(tempfile.mkdtemp(), "light.fits")
    >>> fits.PrimaryHDU(np.ones((4, 6), np.float32), fits.Header({"EXPTIME": 30.0})).writeto(path)
    >>> frame = read_frame(path)
    >>> frame.data.shape, frame.colors, frame.exptime
    ((4, 6), None, 30.0)
    """

    data: np.ndarray
    colors: np.ndarray | None
    exptime: float | None

    @property
    def luminance(self):
        """The image to find stars in: ``data``, or the mean of a colour cube's planes."""
        return self.data.mean(axis=0, dtype=np.float32) if self.data.ndim == 3 else self.data


def frame_shape(path):
    """Return (ny, nx) of a frame file: FITS from its header, raw files through rawpy.

    FITS files (``.fits``, ``.fit``, ``.fts``, optionally ``.gz`` or ``.bz2``
    compressed, and tile-compressed ``.fz``) use their first HDU holding a
    2-D image or a 3-D cube of red, green and blue planes (then its last two
    axes); no pixel data is read. Any other file is read with rawpy, and its shape is
    that of ``raw_image_visible``: the sensor area without the masked margins.
    Decoding those pixels also proves the raw file is complete.

    Parameters
    ----------
    path : str or path-like
        Frame file.

    Returns
    -------
    tuple of int
        ``(ny, nx)``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is a directory, an unreadable FITS or raw file, a FITS
        file without an image, or a FITS cube of other than 3 planes.

    Examples
    --------
    >>> frame_shape("light_0001.fits")  # doctest: +SKIP
    (4000, 6000)
    """
    return _read(path, _fits_shape, _raw_shape)


def read_frame(path):
    """Read the pixels of a frame file, and for colour mosaics the colour of each pixel.

    The file types and the HDU used are those of ``frame_shape``, so
    ``read_frame(path).data.shape[-2:] == frame_shape(path)``. A FITS cube
    of 3 planes (``NAXIS3 = 3``, as Siril and PixInsight write colour) is a
    colour frame: its planes are red, green and blue. A 2-D FITS image with
    a ``BAYERPAT`` card is a colour mosaic, as a raw file is: its colours
    come from the cards ``BAYERPAT``, ``XBAYROFF``, ``YBAYROFF`` and
    ``ROWORDER`` (`~astro_offsets.bayer_colors` says how), and its
    pixels are kept as they are in the file (never flipped).

    Parameters
    ----------
    path : str or path-like
        Frame file.

    Returns
    -------
    `Frame`
        ``data`` as float32 and, for raw files, ``colors``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is a directory, an unreadable FITS or raw file, a FITS
        file without an image, a FITS cube of other than 3 planes, a FITS
        file whose Bayer cards are not understood, or a raw file that is not
        a colour filter mosaic (such as a Foveon or linear DNG file).

    Examples
    --------
    >>> frame = read_frame("light_0001.CR2")  # doctest: +SKIP
    >>> frame.data.dtype, frame.colors[:2, :2]  # doctest: +SKIP
    (dtype('float32'), array([[0, 1], [3, 2]], dtype=uint8))
    """
    return _read(path, _fits_frame, _raw_frame)


def frame_header(path):
    """Return the FITS header of a frame file's image, or `None` for a raw file.

    The header is that of the HDU `read_frame` reads (a tile-compressed
    image's, as it would be uncompressed); a copy, so that it outlives
    the file. No pixel data is read. Raw files have no FITS header: their
    file is not opened.

    Parameters
    ----------
    path : str or path-like
        Frame file.

    Returns
    -------
    `~astropy.io.fits.Header` or `None`

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is a directory, an unreadable FITS file or a FITS file
        without an image.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_offsets import frame_header
    >>> path = os.path.join(tempfile.mkdtemp(), "light.fits")
    >>> fits.PrimaryHDU(np.ones((4, 6), np.float32), fits.Header({"OBJECT": "M 31"})).writeto(path)
    >>> frame_header(path)["OBJECT"]
    'M 31'
    """
    path = input_file(path, "frame file")
    if not is_fits_name(path):
        return None
    return _read_fits(path, lambda path, hdu: hdu.header.copy())


def row_order(header):
    """Return how a frame's rows run: ``"TOP-DOWN"`` or ``"BOTTOM-UP"``.

    A raw file (``header`` `None`) runs top-down: its first row is the
    photo's top. A FITS image runs bottom-up, by the FITS convention (its
    first row is shown at the bottom, as DS9 shows it), unless its
    ``ROWORDER`` card says otherwise, as some capture programs write it.
    A ``ROWORDER`` card of another value is not understood, and ignored.

    Parameters
    ----------
    header : `~astropy.io.fits.Header` or `None`
        The frame's header (`frame_header`).

    Returns
    -------
    str
        One of ``ROW_ORDERS``.

    Examples
    --------
    >>> from astropy.io import fits
    >>> from astro_offsets import row_order
    >>> row_order(None), row_order(fits.Header()), row_order(fits.Header({"ROWORDER": "TOP-DOWN"}))
    ('TOP-DOWN', 'BOTTOM-UP', 'TOP-DOWN')
    """
    if header is None:
        return ROW_ORDERS[0]
    order = header.get("ROWORDER")
    if isinstance(order, str) and order.strip().upper() in ROW_ORDERS:
        return order.strip().upper()
    return ROW_ORDERS[1]


def _read(path, from_fits, from_raw):
    """Return ``from_fits(path, hdu)`` or ``from_raw(path, raw)``, as ``path`` is FITS or raw."""
    # rawpy takes only str paths (anything else it reads as a file object).
    path = input_file(path, "frame file")
    # Files not named as FITS go to rawpy, which recognizes raw formats by content.
    if is_fits_name(path):
        return _read_fits(path, from_fits)
    return _read_raw(path, from_raw)


def _read_fits(path, use):
    found = []
    try:
        with fits.open(path) as hdul:
            for index, hdu in enumerate(hdul):
                axes = _image_axes(hdu)
                if axes is not None and len(axes) in (2, 3) and min(axes) > 0:
                    try:
                        return use(path, hdu)
                    except MemoryError as exc:
                        raise _memory_error(path, hdu.header, axes, exc) from exc
                shape = "" if axes is None else f" shape {axes}"
                found.append(f"HDU {index} {type(hdu).__name__} {hdu.name!r}{shape}")
    except _CardError:
        raise
    # Corrupt files surface as OSError, short data as TypeError, bad cards as
    # ValueError; a KeyError (a BITPIX of no type) says little without its type.
    except UNREADABLE_FITS as exc:
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, LookupError) else exc
        raise ValueError(f"{path}: not a readable FITS file ({reason})") from exc
    raise ValueError(f"{path}: no 2-D image in any HDU (found: {', '.join(found)})")


def _memory_error(path, header, axes, exc):
    """Return what a `MemoryError` reading an image is: the file's, or the machine's.

    A header that declares an image larger than this machine's memory (a
    corrupt ``NAXISn``) fails its file alone, a `ValueError` (``_CardError``); any other
    shortage of memory is the run's, and stays a `MemoryError`.
    """
    bitpix = header.get("ZBITPIX", header.get("BITPIX", 8))
    size = abs(int(bitpix)) // 8 * math.prod(axes) if isinstance(bitpix, int) else 0
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no such figure on this system
        memory = math.inf
    if size > memory:
        return _CardError(
            f"{path}: its header declares an image of {' x '.join(map(str, axes))} pixels "
            f"({size / 1e9:.0f} GB), more than this machine's memory ({memory / 1e9:.0f} GB)"
        )
    return exc


def _image_axes(hdu):
    """Return the axis lengths of an image HDU, numpy order, from its header; `None` if no image."""
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return None
    header = hdu.header
    return tuple(header.get(f"NAXIS{axis}", 0) for axis in range(header.get("NAXIS", 0), 0, -1))


def _fits_shape(path, hdu):
    axes = _image_axes(hdu)
    if len(axes) == 3 and axes[0] not in (1, 3):
        raise _CardError(
            f"{path}: a FITS cube of {axes[0]} planes (NAXIS3 = {axes[0]}); a colour "
            "frame has 3 (red, green, blue), a mono frame is a 2-D image"
        )
    return axes[-2:]


def _fits_frame(path, hdu):
    shape = _fits_shape(path, hdu)
    # np.array copies, so the pixels outlive the (possibly memory-mapped) file.
    data = np.array(hdu.data, dtype=np.float32)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]  # a mono image in a cube of one plane
    colors = _fits_colors(path, hdu.header, shape) if data.ndim == 2 else None
    exptime = None
    for keyword in ("EXPTIME", "EXPOSURE"):
        value = hdu.header.get(keyword)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            exptime = float(value)
            break
    return Frame(data, colors, exptime)


def _fits_colors(path, header, shape):
    """Return the colours of a FITS mosaic from its Bayer cards; `None` without ``BAYERPAT``."""
    pattern = header.get("BAYERPAT")
    # Siril writes 'NONE' for no pattern.
    if pattern is None or (isinstance(pattern, str) and pattern.strip().upper() in ("", "NONE")):
        return None
    if not isinstance(pattern, str) or pattern.strip().upper() not in BAYER_PATTERNS:
        raise _CardError(
            f"{path}: BAYERPAT = {pattern!r} is not a Bayer pattern that is understood "
            f"({', '.join(BAYER_PATTERNS)})"
        )
    offsets = []
    for card in ("XBAYROFF", "YBAYROFF"):
        value = header.get(card, 0)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != int(value)
            or value < 0
        ):
            raise _CardError(
                f"{path}: {card} = {value!r} is not an offset of the Bayer pattern (0 or 1)"
            )
        offsets.append(int(value))
    order = header.get("ROWORDER", "TOP-DOWN")
    if not isinstance(order, str) or order.strip().upper() not in ROW_ORDERS:
        raise _CardError(f"{path}: ROWORDER = {order!r} is neither 'TOP-DOWN' nor 'BOTTOM-UP'")
    return bayer_colors(
        shape,
        pattern.strip().upper(),
        xoffset=offsets[0],
        yoffset=offsets[1],
        bottom_up=order.strip().upper() == "BOTTOM-UP",
    )


def _read_raw(path, use):
    try:
        with rawpy.imread(path) as raw:
            return use(path, raw)
    # LibRaw's own allocation failed: no problem of the file's (it refuses
    # sizes it cannot take as LibRawTooBigError).
    except rawpy.LibRawUnsufficientMemoryError as exc:
        raise MemoryError(f"{path}: LibRaw could not allocate the memory to decode it") from exc
    # LibRaw reports short or non-raw files as I/O errors as well as
    # unsupported formats, and a damaged one only when its pixels are decoded.
    except rawpy.LibRawError as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise ValueError(
            f"{path}: not a readable raw file (LibRaw: {type(exc).__name__}: {detail})"
        ) from exc


def _raw_shape(path, raw):
    return raw.raw_image_visible.shape[:2]


# Rows of a raw frame's black levels at a time.
_ROWS = 256


def _raw_frame(path, raw):
    image = raw.raw_image_visible
    if image.ndim != 2:
        raise ValueError(
            f"{path}: raw pixels have {image.shape[2]} colour values each, "
            "not one colour filter value (not a Bayer or X-Trans mosaic)"
        )
    if raw.color_desc != b"RGBG":
        raise ValueError(
            f"{path}: colour filters {raw.color_desc.decode(errors='replace')}, "
            "not red, green and blue (RGBG)"
        )
    # Both arrays view LibRaw memory that is freed when the file closes.
    colors = raw.raw_colors_visible.copy()
    black = np.asarray(raw.black_level_per_channel, dtype=np.float32)
    data = image.astype(np.float32)
    # A few rows at a time: the black levels of a whole frame would be a
    # frame's worth of fresh memory.
    for start in range(0, data.shape[0], _ROWS):
        rows = slice(start, start + _ROWS)
        data[rows] -= black[colors[rows]]
    shutter = raw.other.shutter_speed
    return Frame(data, colors, float(shutter) if shutter > 0 else None)
