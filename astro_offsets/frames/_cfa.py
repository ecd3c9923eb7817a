"""The colour filter array of raw frames: colours, channels and 2 x 2 super-pixels."""

import numpy as np

__all__ = ["BAYER_PATTERNS", "CFA_CHANNEL", "bayer_colors", "green", "superpixels"]

#: The 2 x 2 Bayer cells, row by row, as FITS ``BAYERPAT`` and DNG name them.
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

#: rawpy's raw_colors_visible (0 red, 1 green, 2 blue, 3 the other green) to
#: the channel of a colour stack: red, green, blue.
CFA_CHANNEL = np.array([0, 1, 2, 1], dtype=np.uint8)
CFA_CHANNEL.flags.writeable = False


def bayer_colors(shape, pattern, *, xoffset=0, yoffset=0, bottom_up=False):
    """Return the colour filter of each pixel of a Bayer mosaic, as rawpy gives a raw file's.

    ``pattern`` names the 2 x 2 cell row by row (``"RGGB"``: red and green,
    then green and blue), as the FITS card ``BAYERPAT`` does. Pixel
    ``[y, x]`` has the cell's colour ``[(y + yoffset) % 2, (x + xoffset) % 2]``
    (the cards ``YBAYROFF``, ``XBAYROFF``), with ``y`` counted from the
    image's top row. ``bottom_up`` says the array's first row is the image's
    bottom row (FITS ``ROWORDER = 'BOTTOM-UP'``): its top row is then the
    array's last, and a mosaic of an even number of rows starts on the
    cell's second row. The array itself is never flipped: only the phase of
    the pattern changes. This is how Siril reads these cards.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the mosaic.
    pattern : {'RGGB', 'BGGR', 'GRBG', 'GBRG'}
        The cell, upper case (``astro_offsets.frames.BAYER_PATTERNS``).
    xoffset, yoffset : int, optional
        Offsets of the cell's origin; only their parity matters.
    bottom_up : bool, optional
        The array's rows run from the image's bottom up. The default is
        `False`: its first row is the image's top.

    Returns
    -------
    `~numpy.ndarray` of uint8, shape ``(ny, nx)``
        0 red, 1 green, 2 blue, 3 the green in the blue rows, like rawpy's
        ``raw_colors_visible``, so that the frame is stacked like a raw one.

    Examples
    --------
    >>> from astro_offsets import bayer_colors
    >>> bayer_colors((2, 4), "RGGB").tolist()
    [[0, 1, 0, 1], [3, 2, 3, 2]]
    >>> bayer_colors((2, 4), "RGGB", xoffset=1).tolist()
    [[1, 0, 1, 0], [2, 3, 2, 3]]
    >>> bayer_colors((3, 2), "RGGB", bottom_up=True).tolist()
    [[0, 1], [3, 2], [0, 1]]
    """
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(BAYER_PATTERNS)}, got {pattern!r}")
    cell = np.array(
        [
            ["RGB".index(colour) for colour in pattern[:2]],
            ["RGB".index(colour) for colour in pattern[2:]],
        ],
        dtype=np.uint8,
    )
    # rawpy numbers the green that shares its row with blue 3.
    cell[(cell == 1) & (cell == 2).any(axis=1, keepdims=True)] = 3
    ny, nx = shape
    rows = np.arange(ny)
    if bottom_up:
        rows = ny - 1 - rows
    return cell[(rows[:, np.newaxis] + yoffset) % 2, (np.arange(nx) + xoffset) % 2]


def green(colors):
    """Return the mask of a mosaic's green pixels (both greens of a Bayer 2 x 2 cell).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import green
    >>> green(np.array([[0, 1], [3, 2]])).astype(int).tolist()
    [[0, 1], [1, 0]]
    """
    return CFA_CHANNEL[colors] == 1


def superpixels(mosaic):
    """Return the 2 x 2 super-pixel sums of a Bayer mosaic.

    Every 2 x 2 block of a Bayer mosaic holds one red, two green and one blue
    pixel, so the sums are a luminance image free of the colour pattern, at
    half the resolution. Super-pixel ``[j, i]`` covers raw pixels
    ``[2j:2j+2, 2i:2i+2]``; its centre is the raw point
    ``(2i + 0.5, 2j + 0.5)``. An odd last row or column is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import superpixels
    >>> superpixels(np.arange(20.0).reshape(4, 5))
    array([[12., 20.],
           [52., 60.]])
    """
    # Imported here: astropy.nddata brings astropy.wcs and coordinates, a
    # tenth of a second at every start of the command line and its workers.
    from astropy.nddata import block_reduce

    return block_reduce(mosaic, 2, func=np.sum)
