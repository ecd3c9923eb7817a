"""Offset maps: the product of the pipeline, per frame.

An `OffsetMap` holds a frame's X and Y offsets at every pixel; it gives
drizzle its pixel map, astropy.wcs its lookup tables, and reads and writes
its FITS files. It knows nothing of the field that made it: what it records
of its stars (`StarOffsets`) and its provenance are given to it.
"""

from ._diagnostics import (
    StarOffsets,
    affine_slopes,
    jump_map,
    largest_jump,
    star_residuals,
    star_rms,
)
from ._folds import Folds, find_folds
from ._offset_map import OffsetMap, field_summary
from ._plot import plot_map, write_plot
from ._sip import (
    MAX_SIP_DEGREE,
    offsets_to_sip,
    reference_wcs,
    sip_header,
    sip_shortfall,
    write_sip,
)
from ._wcs import default_wcs, offsets_to_wcs

__all__ = [
    "MAX_SIP_DEGREE",
    "Folds",
    "OffsetMap",
    "StarOffsets",
    "affine_slopes",
    "default_wcs",
    "field_summary",
    "find_folds",
    "jump_map",
    "largest_jump",
    "offsets_to_sip",
    "offsets_to_wcs",
    "plot_map",
    "reference_wcs",
    "sip_header",
    "sip_shortfall",
    "star_residuals",
    "star_rms",
    "write_plot",
    "write_sip",
]
