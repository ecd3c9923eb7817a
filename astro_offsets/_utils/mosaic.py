"""The 2 x 2 cell of a Bayer mosaic's colour indices, which frames and stacking both need."""

import numpy as np

__all__ = ["bayer_cell"]


def bayer_cell(colors):
    """Return the 2 x 2 cell of colour indices that tiles ``colors``, or `None`.

    Parameters
    ----------
    colors : `~numpy.ndarray`
        A mosaic's colour index of each pixel (rawpy's ``raw_colors_visible``).

    Returns
    -------
    `~numpy.ndarray` or `None`
        ``colors[:2, :2]`` when every pixel's index is that of its place in
        the cell (``colors[y % 2, x % 2]``): a Bayer mosaic. `None` for any
        other mosaic (X-Trans repeats every 6 x 6 pixels) or one smaller
        than 2 x 2.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets._utils.mosaic import bayer_cell
    >>> bayer_cell(np.tile([[0, 1], [3, 2]], (3, 4))).tolist()
    [[0, 1], [3, 2]]
    >>> bayer_cell(np.zeros((1, 5), int)) is None
    True
    """
    colors = np.asarray(colors)
    if colors.ndim != 2 or min(colors.shape) < 2:
        return None
    cell = colors[:2, :2]
    for oy in range(2):
        for ox in range(2):
            if not np.all(colors[oy::2, ox::2] == cell[oy, ox]):
                return None
    return cell.copy()
