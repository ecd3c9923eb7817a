"""Dense per-pixel offset maps from star tables, for drizzle-stacking image sequences.

The package follows the pipeline, one subpackage per stage: ``frames``
(reading them), ``stars`` (star tables), ``field`` (offset fields and their
maps), ``maps`` (the maps, the product) and ``stack`` (drizzle), with
synthetic data in `astro_offsets.datasets`. Users import from here.

Stars measured in every frame of a sequence (`make_tables`, with
`detect_stars` and `match_stars`) give, per frame, a table of centroids and
offsets against the reference frame. `OffsetModel` turns such a
table into an offset field: the quadrant inverse-distance field, or a
polynomial or thin-plate spline fitted to the stars with mismatched stars
sigma-clipped, or whichever cross-validates best. `OffsetMap` holds the
field evaluated at every pixel, writes it as FITS and hands it to drizzle as a
pixel map; `write_maps` makes the maps of a whole sequence, and `Stacker` and
`stack_frames` drizzle the frames onto the reference grid (Bayer drizzle for
colour raw frames).
"""

from ._version import __version__
from .field import MapResult, OffsetModel, write_maps
from .frames import Calibration, Frame, read_frame
from .maps import OffsetMap, StarOffsets
from .stack import KERNELS, Stack, Stacker, StackResult, stack_frames
from .stars import MatchError, TableResult, detect_stars, make_tables, match_stars, offsets_table

__all__ = [
    "KERNELS",
    "Calibration",
    "Frame",
    "MapResult",
    "MatchError",
    "OffsetMap",
    "OffsetModel",
    "Stack",
    "StackResult",
    "Stacker",
    "StarOffsets",
    "TableResult",
    "__version__",
    "datasets",
    "detect_stars",
    "make_tables",
    "match_stars",
    "offsets_table",
    "read_frame",
    "stack_frames",
    "write_maps",
]


def __getattr__(name):
    # The synthetic data (and scipy.special with them) load when first used:
    # the command line and its worker processes start faster without them.
    if name == "datasets":
        import importlib

        return importlib.import_module(f"{__name__}.datasets")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
