"""The colour filter array of raw frames: colours, channels and 2 x 2 super-pixels."""

import numpy as np

__all__ = ["CFA_CHANNEL", "green", "superpixels"]

# rawpy's raw_colors_visible (0 red, 1 green, 2 blue, 3 the other green) to
# the channel of a colour stack: red, green, blue.
CFA_CHANNEL = np.array([0, 1, 2, 1], dtype=np.uint8)
CFA_CHANNEL.flags.writeable = False


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
