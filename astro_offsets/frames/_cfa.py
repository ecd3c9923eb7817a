"""The colour filter array of raw frames: colours, channels, colour planes and super-pixels.

Everything the package knows of how a colour filter mosaic is laid out is
here: the colour of each pixel (`bayer_colors`, from a FITS file's Bayer
cards; rawpy gives a raw file's), the channel of a colour stack each colour
goes into (`CFA_CHANNEL`), how a frame's pixels split into the colour planes
that are drizzled and normalised together (`colour_planes`), the 2 x 2 cell
of a Bayer mosaic (`bayer_cell`), the period of any mosaic (`mosaic_period`)
and its green pixels and super-pixels (`green`, `superpixels`). The stages
after frames ask these functions rather than count pixels themselves.
"""

from typing import NamedTuple

import numpy as np

__all__ = [
    "BAYER_PATTERNS",
    "CFA_CHANNEL",
    "ColourPlane",
    "bayer_cell",
    "bayer_colors",
    "colour_planes",
    "green",
    "mosaic_period",
    "superpixels",
]

#: The 2 x 2 Bayer cells, row by row, as FITS ``BAYERPAT`` and DNG name them.
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")

#: rawpy's raw_colors_visible (0 red, 1 green, 2 blue, 3 the other green) to
#: the channel of a colour stack: red, green, blue.
CFA_CHANNEL = np.array([0, 1, 2, 1], dtype=np.uint8)
CFA_CHANNEL.flags.writeable = False
# The channels of a colour stack, red, green and blue: CFA_CHANNEL's values,
# and the planes of a colour cube.
_CHANNELS = 3
# The longest period of a colour filter mosaic along its rows (X-Trans: 6;
# Bayer: 2), and the rows looked at to find it (two periods).
_LONGEST_PERIOD = 6


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


def bayer_cell(colors):
    """Return the 2 x 2 cell that tiles a mosaic, or `None` if it is not a Bayer mosaic.

    A mosaic is a Bayer mosaic when each of its four sites of a 2 x 2 cell,
    ``colors[oy::2, ox::2]``, holds one colour: its top-left cell then
    tiles the whole of it. X-Trans and other mosaics, and mosaics less than
    two pixels across, are not.

    Parameters
    ----------
    colors : array-like of int, shape (ny, nx)
        The colour filter of each pixel (rawpy's ``raw_colors_visible``).

    Returns
    -------
    `~numpy.ndarray` or `None`
        ``colors[:2, :2]`` (a view), or `None`.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import bayer_colors
    >>> from astro_offsets.frames._cfa import bayer_cell
    >>> bayer_cell(bayer_colors((4, 6), "GBRG")).tolist()
    [[3, 2], [0, 1]]
    >>> print(bayer_cell(np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])))
    None
    """
    colors = np.asarray(colors)
    if min(colors.shape) < 2:
        return None
    cell = colors[:2, :2]
    if all(np.all(colors[oy::2, ox::2] == cell[oy, ox]) for oy in (0, 1) for ox in (0, 1)):
        return cell
    return None


def mosaic_period(colors):
    """Return a mosaic's period along its rows: the spacing of pixels of one colour filter.

    The least ``p`` such that every pixel has the colour of the pixel ``p``
    to its right: 2 for a Bayer mosaic, 6 for X-Trans, 1 for a mosaic of one
    colour. Colour filter arrays repeat within 6 pixels, so the first 12
    rows tell it, and a mosaic that repeats within no 6 columns is taken to
    repeat at 6.

    Parameters
    ----------
    colors : array-like of int, shape (ny, nx)
        The colour filter of each pixel (rawpy's ``raw_colors_visible``).

    Returns
    -------
    int
        From 1 to 6.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import bayer_colors
    >>> from astro_offsets.frames._cfa import mosaic_period
    >>> mosaic_period(bayer_colors((4, 6), "RGGB"))
    2
    >>> mosaic_period(np.tile([[1, 1, 0, 1, 1, 2]], (6, 2)))
    6
    """
    colors = np.asarray(colors)[: 2 * _LONGEST_PERIOD]
    return next(
        (p for p in range(1, _LONGEST_PERIOD + 1) if np.array_equal(colors[:, p:], colors[:, :-p])),
        _LONGEST_PERIOD,
    )


class ColourPlane(NamedTuple):
    """Pixels of a frame that go together into one channel of a stack.

    A frame splits into colour planes (`colour_planes`), each drizzled (the
    stacker's layers), normalised and searched for outliers as an image of
    its own: a mono frame is one plane; a Bayer mosaic four, one per site
    of its 2 x 2 cell (every other pixel of every other row, ``step`` 2),
    so that colours are never interpolated; another mosaic (X-Trans) three,
    one per channel, each the whole frame with the other channels' pixels
    left out (``select``); a colour cube ``(3, ny, nx)`` three, its planes.

    Examples
    --------
    >>> from astro_offsets.frames import bayer_colors
    >>> from astro_offsets.frames._cfa import colour_planes
    >>> blue = colour_planes((4, 6), bayer_colors((4, 6), "RGGB"))[3]
    >>> blue.channel, blue.origin, blue.step, blue.select
    (2, (1, 1), 2, None)
    >>> blue.sites
    (slice(1, None, 2), slice(1, None, 2))
    """

    channel: int
    """Its channel of the stack: 0 for mono; 0, 1, 2 for red, green, blue (`CFA_CHANNEL`)."""
    origin: tuple
    """``(y, x)`` of its first pixel in the frame."""
    step: int
    """Its pixels' spacing in the frame (2 for a Bayer colour plane)."""
    select: object
    """`None`, or (a mosaic that is not Bayer) the frame's pixels of this channel, a bool mask."""
    plane: int | None = None
    """`None`, or (a colour cube, data ``(3, ny, nx)``) the plane that holds its pixels."""

    @property
    def sites(self):
        """The slices of its pixels on the frame's ``(ny, nx)`` grid (maps, masks, weights)."""
        y, x = self.origin
        return slice(y, None, self.step), slice(x, None, self.step)

    @property
    def part(self):
        """The index of its pixels in the frame's data: `sites`, in its plane for a cube."""
        return self.sites if self.plane is None else (self.plane, *self.sites)


def colour_planes(shape, colors=None):
    """Return the colour planes of a frame: mono, a colour filter mosaic, or a colour cube.

    Parameters
    ----------
    shape : tuple of int
        The frame's data: ``(ny, nx)``, or ``(3, ny, nx)`` for a colour
        cube of red, green and blue planes.
    colors : array-like of int, shape (ny, nx), or `None`, optional
        The colour filter of each pixel of a mosaic (rawpy's
        ``raw_colors_visible``: 0 red, 1 green, 2 blue, 3 the other green);
        `None` for a mono frame and for a colour cube.

    Returns
    -------
    list of `ColourPlane`
        One for a mono frame; four, the sites of the 2 x 2 cell row by row,
        for a Bayer mosaic (`bayer_cell`); three, red, green and blue, for
        another mosaic and for a cube.

    Raises
    ------
    ValueError
        If ``shape`` is neither, a cube has ``colors`` or not 3 planes, or
        ``colors`` are not integer colour indices 0 to 3 of ``shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import bayer_colors
    >>> from astro_offsets.frames._cfa import colour_planes
    >>> colour_planes((4, 6))
    [ColourPlane(channel=0, origin=(0, 0), step=1, select=None, plane=None)]
    >>> [(p.channel, p.origin, p.step) for p in colour_planes((4, 6), bayer_colors((4, 6), "GRBG"))]
    [(1, (0, 0), 2), (0, (0, 1), 2), (2, (1, 0), 2), (1, (1, 1), 2)]
    >>> [(p.channel, p.plane) for p in colour_planes((3, 4, 6))]
    [(0, 0), (1, 1), (2, 2)]
    >>> other = np.tile([[1, 1, 0, 1, 1, 2]], (4, 1))  # a mosaic that is not Bayer
    >>> [p.select[0].astype(int).tolist() for p in colour_planes((4, 6), other)]
    [[0, 0, 1, 0, 0, 0], [1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
    """
    shape = tuple(shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"a frame is (ny, nx), or a colour cube (3, ny, nx), got shape {shape}")
    if len(shape) == 3:
        if shape[0] != _CHANNELS or colors is not None:
            raise ValueError(
                f"a colour cube has 3 planes (red, green, blue) and no colors, got shape {shape}"
            )
        return [ColourPlane(index, (0, 0), 1, None, index) for index in range(_CHANNELS)]
    if colors is None:
        return [ColourPlane(0, (0, 0), 1, None)]
    colors = np.asarray(colors)
    if colors.dtype.kind not in "iu":
        raise ValueError(f"colors must be integer colour indices, got dtype {colors.dtype}")
    if colors.shape != shape:
        raise ValueError(f"colors shape {colors.shape} differs from {shape}")
    if colors.size and (colors.min() < 0 or colors.max() > 3):
        raise ValueError(
            f"colors must be rawpy colour indices 0..3, found {colors.min()}..{colors.max()}"
        )
    cell = bayer_cell(colors)
    if cell is not None:
        return [
            ColourPlane(int(CFA_CHANNEL[cell[oy, ox]]), (oy, ox), 2, None)
            for oy in (0, 1)
            for ox in (0, 1)
        ]
    channel = CFA_CHANNEL[colors]
    return [ColourPlane(index, (0, 0), 1, channel == index) for index in range(_CHANNELS)]


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
