"""Writing Bayer mosaics as DNG raw files that rawpy (LibRaw) reads back exactly."""

import math
from fractions import Fraction

import numpy as np

from ._atomic import atomic_path

__all__ = ["write_dng"]

# TIFF/EP CFAPattern codes (0 = red, 1 = green, 2 = blue), row by row.
_CFA_CODES = {"R": 0, "G": 1, "B": 2}
_BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

# LibRaw rejects raw images smaller than this in either direction as "not RAW".
_MIN_SIDE = 22
# pidng writes TileWidth and TileLength as TIFF SHORT.
_MAX_SIDE = 65535


def write_dng(
    path,
    mosaic,
    *,
    cfa="RGGB",
    bits=14,
    black_level=512,
    white_level=None,
    exposure_time=None,
    iso=None,
    make="astro_offsets",
    model="synthetic",
):
    """Write a Bayer mosaic (2-D integer array, ny x nx) as a DNG file that rawpy reads back.

    The file is uncompressed, one tile, with each sample in a 16-bit container
    whatever ``bits`` is: pidng 4.0.9 packs 14-bit samples wrongly and 10- and
    12-bit ones only for widths divisible by 4 and 2, while 16-bit containers
    work for any size, odd ones included. ``bits`` sets the value range and
    the default white level. The file is written under a temporary name next
    to ``path`` and renamed into place, so a crash never leaves a partial
    file; an existing file is replaced.

    Parameters
    ----------
    path : str or path-like
        Destination, used exactly as given (no suffix is added).
    mosaic : array-like of int, shape (ny, nx)
        Raw sensor values, ``0 <= value < 2**bits``; ``ny`` and ``nx`` are
        22 to 65535 (LibRaw rejects smaller images).
    cfa : {'RGGB', 'BGGR', 'GRBG', 'GBRG'}, optional
        Colours of the top-left 2x2 cell, row by row (case-insensitive).
    bits : int, optional
        Sensor bit depth, 1 to 16.
    black_level : int, optional
        Black level of every channel, below ``white_level``.
    white_level : int or `None`, optional
        Saturation value, at most 65535; `None` means ``2**bits - 1``.
    exposure_time : float or `None`, optional
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
    ImportError
        If pidng is not installed.
    FileNotFoundError
        If the destination directory does not exist.

    Examples
    --------
    >>> import numpy as np
    >>> mosaic = np.full((64, 96), 1000, dtype=np.uint16)
    >>> write_dng("frame.dng", mosaic, cfa="RGGB", exposure_time=30.0)  # doctest: +SKIP
    """
    mosaic = np.asarray(mosaic)
    cfa_codes = _check_cfa(cfa)
    _check_int("bits", bits, 1, 16)
    maximum = 2**bits - 1
    _check_mosaic(mosaic, maximum, bits)
    white_level = maximum if white_level is None else white_level
    _check_int("white_level", white_level, 1, 65535)
    _check_int("black_level", black_level, 0, white_level - 1)
    shutter = None if exposure_time is None else _exposure_rational(exposure_time)
    if iso is not None:
        _check_int("iso", iso, 1, 65535)
    for name, text in (("make", make), ("model", model)):
        if not isinstance(text, str) or not text.isascii():
            raise ValueError(f"{name} must be an ASCII string, got {text!r}")

    try:
        from pidng.core import RAW2DNG
        from pidng.defs import CalibrationIlluminant, Orientation, PhotometricInterpretation
        from pidng.dng import DNGTags, Tag, Type, dngIFD, dngTag
    except ImportError as exc:
        raise ImportError(
            'writing DNG files needs pidng: pip install "astro_offsets[test]"'
        ) from exc

    ny, nx = mosaic.shape
    identity = [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, nx),
        (Tag.ImageLength, ny),
        (Tag.TileWidth, nx),
        (Tag.TileLength, ny),
        (Tag.BitsPerSample, 16),
        (Tag.SamplesPerPixel, 1),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.Orientation, Orientation.Horizontal),
        (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, cfa_codes),
        (Tag.CFAPlaneColor, [0, 1, 2]),
        (Tag.CFALayout, 1),
        (Tag.BlackLevel, int(black_level)),
        (Tag.WhiteLevel, int(white_level)),
        # Raw camera values are already the output colours: identity colour
        # matrix and neutral white balance, which DNG readers require.
        (Tag.ColorMatrix1, identity),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.Make, make),
        (Tag.Model, model),
        (Tag.UniqueCameraModel, f"{make} {model}"),
    ):
        tags.set(tag, value)
    exif = dngIFD()
    if shutter is not None:
        exif.tags.append(dngTag(Tag.ExposureTime, [shutter]))
    if iso is not None:
        # LibRaw reads the ISO speed only from the EXIF IFD, not from IFD 0.
        exif.tags.append(dngTag(Tag.PhotographicSensitivity, [int(iso)]))
    if exif.tags:
        # pidng 4.0.9 cannot encode its own IFD-typed tags (it adds str to
        # bytes), so declare the pointer as the LONG TIFF stores and attach the
        # sub-IFD, which pidng then lays out and writes.
        pointer = (Tag.EXIF_IFD[0], Type.Long)
        tags.set(pointer, 0)
        tags.get(pointer).subIFD = exif

    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    # The DNG is little-endian: give pidng (which wants native uint16 and
    # calls tobytes) little-endian bytes on any machine.
    samples = np.ascontiguousarray(mosaic, dtype="<u2").view(np.uint16)
    # Without a file name pidng returns the bytes instead of writing
    # "<name>.dng" itself, which lets the write go through atomic_path.
    data = writer.convert(samples)
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as file:
        file.write(data)


def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low}..{high}, got {value}")


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
    if not (_MIN_SIDE <= ny <= _MAX_SIDE and _MIN_SIDE <= nx <= _MAX_SIDE):
        raise ValueError(
            f"mosaic must be {_MIN_SIDE} to {_MAX_SIDE} pixels in each direction "
            f"(LibRaw and DNG tile limits), got shape {mosaic.shape}"
        )
    low, high = int(mosaic.min()), int(mosaic.max())
    if low < 0 or high > maximum:
        raise ValueError(
            f"mosaic values must be within 0..{maximum} for bits={bits}, found {low}..{high}"
        )


def _exposure_rational(seconds):
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)):
        raise ValueError(f"exposure_time must be a number of seconds, got {seconds!r}")
    if not (math.isfinite(seconds) and 0 < seconds < 2**32 - 1):
        raise ValueError(f"exposure_time must be positive and finite seconds, got {seconds}")
    # TIFF RATIONAL is two uint32: the closest fraction never exceeds
    # ceil(seconds), so this denominator keeps the numerator in range too.
    # Going through str turns 1/8000 s into 1/8000, not its binary neighbour.
    largest = 2**32 - 1
    fraction = Fraction(str(float(seconds))).limit_denominator(largest // math.ceil(seconds))
    if fraction == 0:
        raise ValueError(f"exposure_time is too short to store as a TIFF rational: {seconds}")
    return [fraction.numerator, fraction.denominator]
