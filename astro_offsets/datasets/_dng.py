"""Writing Bayer mosaics as DNG raw files that rawpy (LibRaw) reads back exactly.

A DNG file is a TIFF file with a few more tags. The writer lays out a
little-endian TIFF by hand: the header, the main image file directory (IFD),
an EXIF IFD for the exposure, and the pixels as one uncompressed strip of
16-bit samples. No third-party encoder is needed.
"""

import math
import struct
from fractions import Fraction
from types import MappingProxyType

import numpy as np

from .._utils.atomic import atomic_path
from .._utils.validation import integer, real

__all__ = ["write_dng"]

# TIFF/EP CFAPattern codes (0 = red, 1 = green, 2 = blue), row by row.
_CFA_CODES = MappingProxyType({"R": 0, "G": 1, "B": 2})
_BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

# LibRaw rejects raw images smaller than this in either direction as "not RAW".
_MIN_SIDE = 22
# The pixels are one strip, whose length TIFF stores as a 32-bit count.
_MAX_BYTES = 2**32 - 1

# TIFF field types: code and struct format of one value.
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = (
    (1, "B"),
    (2, "s"),
    (3, "H"),
    (4, "I"),
    (5, "II"),
    (10, "ii"),
)
_D65 = 21  # CalibrationIlluminant: standard light D65


def write_dng(
    path,
    mosaic,
    *,
    cfa="RGGB",
    bits=14,
    black_level=512,
    white_level=None,
    exptime=None,
    iso=None,
    make="astro_offsets",
    model="synthetic",
):
    """Write a Bayer mosaic (2-D integer array, ny x nx) as a DNG file that rawpy reads back.

    The file is uncompressed, with each sample in a 16-bit container whatever
    ``bits`` is; ``bits`` sets the value range and the default white level.
    The file is written under a temporary name next to ``path`` and renamed
    into place, so a crash never leaves a partial file; an existing file is
    replaced.

    Parameters
    ----------
    path : str or path-like
        Destination, used exactly as given (no suffix is added).
    mosaic : array-like of int, shape (ny, nx)
        Raw sensor values, ``0 <= value < 2**bits``; ``ny`` and ``nx`` are
        at least 22 (LibRaw rejects smaller images).
    cfa : {'RGGB', 'BGGR', 'GRBG', 'GBRG'}, optional
        Colours of the top-left 2x2 cell, row by row (case-insensitive).
    bits : int, optional
        Sensor bit depth, 1 to 16.
    black_level : int, optional
        Black level of every channel, below ``white_level``.
    white_level : int or `None`, optional
        Saturation value, at most 65535; `None` means ``2**bits - 1``.
    exptime : float or `None`, optional
        Exposure time in seconds, stored in the EXIF IFD (rawpy reports it as
        ``other.shutter_speed``).
    iso : int or `None`, optional
        ISO speed, 1 to 65535, stored in the EXIF IFD (rawpy reports it as
        ``other.iso_speed``).
    make, model : str, optional
        ASCII camera make and model.

    Raises
    ------
    ValueError
        If any argument is out of range; the message says what was found.
    FileNotFoundError
        If the destination directory does not exist.

    Examples
    --------
    >>> import numpy as np
    >>> mosaic = np.full((64, 96), 1000, dtype=np.uint16)
    >>> from astro_offsets.datasets import write_dng
    >>> write_dng("frame.dng", mosaic, cfa="RGGB", exptime=30.0)
    """
    mosaic = np.asarray(mosaic)
    cfa_codes = _check_cfa(cfa)
    integer(bits, "bits", low=1, high=16)
    maximum = 2**bits - 1
    _check_mosaic(mosaic, maximum, bits)
    white_level = maximum if white_level is None else white_level
    integer(white_level, "white_level", low=1, high=65535)
    integer(black_level, "black_level", low=0, high=white_level - 1)
    shutter = None if exptime is None else _exposure_rational(exptime)
    if iso is not None:
        integer(iso, "iso", low=1, high=65535)
    for name, text in (("make", make), ("model", model)):
        if not isinstance(text, str) or not text.isascii():
            raise ValueError(f"{name} must be an ASCII string, got {text!r}")

    ny, nx = mosaic.shape
    # The DNG is little-endian, on any machine.
    pixels = np.ascontiguousarray(mosaic, dtype="<u2").tobytes()
    exif = []
    if shutter is not None:
        exif.append((33434, _RATIONAL, [shutter]))  # ExposureTime
    if iso is not None:
        # LibRaw reads the ISO speed only from the EXIF IFD, not from IFD 0.
        exif.append((34855, _SHORT, [int(iso)]))  # ISOSpeedRatings
    main = [
        (254, _LONG, [0]),  # NewSubFileType: the main image
        (256, _LONG, [nx]),  # ImageWidth
        (257, _LONG, [ny]),  # ImageLength
        (258, _SHORT, [16]),  # BitsPerSample
        (259, _SHORT, [1]),  # Compression: none
        (262, _SHORT, [32803]),  # PhotometricInterpretation: colour filter array
        (271, _ASCII, make),  # Make
        (272, _ASCII, model),  # Model
        (273, _LONG, [0]),  # StripOffsets, set below
        (274, _SHORT, [1]),  # Orientation: row 0 at the top, column 0 at the left
        (277, _SHORT, [1]),  # SamplesPerPixel
        (278, _LONG, [ny]),  # RowsPerStrip: one strip
        (279, _LONG, [len(pixels)]),  # StripByteCounts
        (284, _SHORT, [1]),  # PlanarConfiguration: chunky
        (33421, _SHORT, [2, 2]),  # CFARepeatPatternDim
        (33422, _BYTE, cfa_codes),  # CFAPattern
        (50706, _BYTE, [1, 4, 0, 0]),  # DNGVersion
        (50707, _BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
        (50708, _ASCII, f"{make} {model}"),  # UniqueCameraModel
        (50710, _BYTE, [0, 1, 2]),  # CFAPlaneColor
        (50711, _SHORT, [1]),  # CFALayout: rectangular
        (50714, _LONG, [int(black_level)]),  # BlackLevel
        (50717, _LONG, [int(white_level)]),  # WhiteLevel
        # Raw camera values are already the output colours: identity colour
        # matrix and neutral white balance, which DNG readers require.
        (50721, _SRATIONAL, [[int(i == j), 1] for i in range(3) for j in range(3)]),
        (50728, _RATIONAL, [[1, 1]] * 3),  # AsShotNeutral
        (50778, _SHORT, [_D65]),  # CalibrationIlluminant1
    ]
    if exif:
        main.append((34665, _LONG, [0]))  # ExifIFD pointer, set below
    # Entries and their values keep their size whatever the offsets, so the
    # layout is known before the offsets are: header, IFD 0, EXIF IFD, pixels.
    exif_offset = 8 + len(_ifd(main, 0))
    pixel_offset = exif_offset + (len(_ifd(exif, 0)) if exif else 0)
    pixel_offset += pixel_offset % 2
    main = [
        (tag, kind, {273: [pixel_offset], 34665: [exif_offset]}.get(tag, values))
        for tag, kind, values in main
    ]
    head = b"II" + struct.pack("<HI", 42, 8) + _ifd(main, 8)
    if exif:
        head += _ifd(exif, exif_offset)
    head = head.ljust(pixel_offset, b"\0")
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as file:
        file.write(head)
        file.write(pixels)


def _encode(kind, values):
    """Return the TIFF type code, the value count and the bytes of a field."""
    code, fmt = kind
    if kind is _ASCII:
        data = values.encode("ascii") + b"\0"
        return code, len(data), data
    count = len(values)
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return code, count, struct.pack(f"<{fmt * count}", *flat)


def _ifd(entries, offset):
    """Return the bytes of an image file directory placed at ``offset``, with its values.

    Values longer than four bytes follow the directory, each at an even
    offset; shorter ones sit in their entry.
    """
    entries = sorted(entries, key=lambda entry: entry[0])
    values_at = offset + 2 + 12 * len(entries) + 4
    table = struct.pack("<H", len(entries))
    values = b""
    for tag, kind, content in entries:
        code, count, data = _encode(kind, content)
        if len(data) <= 4:
            field = data.ljust(4, b"\0")
        else:
            field = struct.pack("<I", values_at + len(values))
            values += data + b"\0" * (len(data) % 2)
        table += struct.pack("<HHI", tag, code, count) + field
    return table + struct.pack("<I", 0) + values


def _check_cfa(cfa):
    pattern = cfa.upper() if isinstance(cfa, str) else cfa
    if pattern not in _BAYER_PATTERNS:
        raise ValueError(f"cfa must be one of {', '.join(_BAYER_PATTERNS)}, got {cfa!r}")
    return [_CFA_CODES[colour] for colour in pattern]


def _check_mosaic(mosaic, maximum, bits):
    if mosaic.ndim != 2:
        raise ValueError(
            f"mosaic must be a 2-D (ny, nx) array, got {mosaic.ndim}-D with shape {mosaic.shape}"
        )
    if mosaic.dtype.kind not in "iu":
        raise ValueError(f"mosaic must have an integer dtype, got {mosaic.dtype}")
    ny, nx = mosaic.shape
    if ny < _MIN_SIDE or nx < _MIN_SIDE or 2 * ny * nx > _MAX_BYTES:
        raise ValueError(
            f"mosaic must be at least {_MIN_SIDE} pixels in each direction (LibRaw's limit) "
            f"and at most 2 Gpix in all, got shape {mosaic.shape}"
        )
    low, high = int(mosaic.min()), int(mosaic.max())
    if low < 0 or high > maximum:
        raise ValueError(
            f"mosaic values must be within 0..{maximum} for bits={bits}, found {low}..{high}"
        )


def _exposure_rational(seconds):
    # TIFF RATIONAL is two uint32.
    largest = 2**32 - 1
    seconds = real(seconds, "exptime", low=0, high=largest, low_open=True, high_open=True)
    # The closest fraction never exceeds ceil(seconds), so this denominator
    # keeps the numerator in range too. Going through str turns 1/8000 s
    # into 1/8000, not its binary neighbour.
    fraction = Fraction(str(seconds)).limit_denominator(largest // math.ceil(seconds))
    if fraction == 0:
        raise ValueError(f"exptime is too short to store as a TIFF rational: {seconds}")
    return [fraction.numerator, fraction.denominator]
