"""Writing colour frames as FITS files, as astronomy cameras' capture software does.

Two kinds: a Bayer mosaic in one 2-D image with the cards ``BAYERPAT``,
``XBAYROFF``, ``YBAYROFF`` and ``ROWORDER`` (N.I.N.A., SharpCap, ASIAIR,
KStars/Ekos), and the red, green and blue planes of a 3-plane cube (Siril,
PixInsight).
"""

import numpy as np
from astropy.io import fits

from .._utils.atomic import atomic_path
from .._utils.validation import real
from ._dng import _BAYER_PATTERNS

__all__ = ["write_fits_cfa", "write_fits_rgb"]

_ROW_ORDERS = ("TOP-DOWN", "BOTTOM-UP")


def write_fits_cfa(
    path, mosaic, *, cfa="RGGB", xoffset=0, yoffset=0, row_order="TOP-DOWN", exptime=None
):
    """Write a Bayer mosaic as a FITS image with the Bayer cards of capture software.

    ``mosaic`` is the sensor's image, its top row first, its top-left 2 x 2
    cell of colours ``cfa`` (as for `~astro_offsets.datasets.write_dng`). The cards describe the
    same colours whatever the options: ``BAYERPAT`` is the cell that, moved
    by ``XBAYROFF = xoffset`` and ``YBAYROFF = yoffset``, gives ``cfa`` at
    the top left; with ``row_order="BOTTOM-UP"`` the rows are written from
    the bottom up (the FITS convention), and ``BAYERPAT`` still names the
    image's top rows. Every variant thus holds one and the same sensor
    image, which `~astro_offsets.read_frame` reads back with the same colour
    at each sensor pixel. The file is written under a temporary name and
    renamed into place; an existing file is replaced.

    Parameters
    ----------
    path : str or path-like
        Destination.
    mosaic : array-like, shape (ny, nx)
        The sensor's values (any real or integer type that FITS stores).
    cfa : {'RGGB', 'BGGR', 'GRBG', 'GBRG'}, optional
        Colours of the top-left 2 x 2 cell, row by row (case-insensitive).
    xoffset, yoffset : {0, 1}, optional
        The ``XBAYROFF`` and ``YBAYROFF`` cards to write.
    row_order : {'TOP-DOWN', 'BOTTOM-UP'}, optional
        The ``ROWORDER`` card, and the order of the rows in the file.
    exptime : float or `None`, optional
        Exposure time in seconds (``EXPTIME``).

    Raises
    ------
    ValueError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import read_frame
    >>> from astro_offsets.datasets import write_fits_cfa
    >>> mosaic = np.arange(24, dtype=np.uint16).reshape(4, 6)
    >>> write_fits_cfa("light.fits", mosaic, cfa="RGGB", xoffset=1, exptime=60.0)
    >>> from astropy.io import fits
    >>> fits.getval("light.fits", "BAYERPAT"), fits.getval("light.fits", "XBAYROFF")
    ('GRBG', 1)
    >>> read_frame("light.fits").colors[:2, :2].tolist()  # red at the top left
    [[0, 1], [3, 2]]
    """
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2:
        raise ValueError(f"mosaic must be a 2-D (ny, nx) array, got shape {mosaic.shape}")
    pattern = cfa.upper() if isinstance(cfa, str) else cfa
    if pattern not in _BAYER_PATTERNS:
        raise ValueError(f"cfa must be one of {', '.join(_BAYER_PATTERNS)}, got {cfa!r}")
    for name, value in (("xoffset", xoffset), ("yoffset", yoffset)):
        if value not in (0, 1) or isinstance(value, bool):
            raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    order = row_order.upper() if isinstance(row_order, str) else row_order
    if order not in _ROW_ORDERS:
        raise ValueError(f"row_order must be 'TOP-DOWN' or 'BOTTOM-UP', got {row_order!r}")
    # The cell whose colour [(i + yoffset) % 2][(j + xoffset) % 2] is cfa's [i][j].
    cell = [pattern[:2], pattern[2:]]
    named = "".join(cell[(a + yoffset) % 2][(b + xoffset) % 2] for a in (0, 1) for b in (0, 1))
    header = fits.Header()
    header["BAYERPAT"] = (named, "Bayer color pattern")
    header["XBAYROFF"] = (xoffset, "X offset of Bayer array")
    header["YBAYROFF"] = (yoffset, "Y offset of Bayer array")
    header["ROWORDER"] = (order, "Order of the rows in the image array")
    data = mosaic[::-1] if order == "BOTTOM-UP" else mosaic
    _write(path, data, header, exptime)


def write_fits_rgb(path, planes, *, exptime=None):
    """Write a colour image as a FITS cube of 3 planes: red, green and blue.

    As Siril and PixInsight write colour: ``NAXIS3 = 3``, the planes in
    the order red, green, blue. The file is written under a temporary name
    and renamed into place; an existing file is replaced.

    Parameters
    ----------
    path : str or path-like
        Destination.
    planes : array-like, shape (3, ny, nx)
        The red, green and blue images.
    exptime : float or `None`, optional
        Exposure time in seconds (``EXPTIME``).

    Raises
    ------
    ValueError
        If ``planes`` is not 3 images of one shape, or ``exptime`` is not
        positive.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import read_frame
    >>> from astro_offsets.datasets import write_fits_rgb
    >>> write_fits_rgb("light.fits", np.ones((3, 4, 6), np.float32), exptime=60.0)
    >>> read_frame("light.fits").data.shape
    (3, 4, 6)
    """
    planes = np.asarray(planes)
    if planes.ndim != 3 or planes.shape[0] != 3:
        raise ValueError(f"planes must be a (3, ny, nx) array, got shape {planes.shape}")
    _write(path, planes, fits.Header(), exptime)


def _write(path, data, header, exptime):
    if exptime is not None:
        header["EXPTIME"] = (real(exptime, "exptime", low=0, low_open=True), "[s] Exposure time")
    with atomic_path(path, overwrite=True) as tmp:
        fits.PrimaryHDU(data, header).writeto(tmp)
