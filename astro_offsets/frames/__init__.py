"""Frames: reading FITS images and camera raw files, colour filters, hot pixels, calibration, sky.

The first stage of the pipeline: everything after it works on the pixels,
colour filters and exposure times that `read_frame` gives.
"""

from ._background import sky_levels
from ._calibration import KINDS, Calibration, calibration_frames, make_master
from ._cfa import BAYER_PATTERNS, CFA_CHANNEL, bayer_colors, green, superpixels
from ._cosmetic import fill_hot_pixels, hot_pixels
from ._read import ROW_ORDERS, Frame, frame_header, frame_shape, read_frame, row_order

__all__ = [
    "BAYER_PATTERNS",
    "CFA_CHANNEL",
    "KINDS",
    "ROW_ORDERS",
    "Calibration",
    "calibration_frames",
    "make_master",
    "Frame",
    "bayer_colors",
    "fill_hot_pixels",
    "frame_header",
    "frame_shape",
    "green",
    "hot_pixels",
    "read_frame",
    "row_order",
    "sky_levels",
    "superpixels",
]
