"""Dense per-pixel offset maps from star tables, for drizzle-stacking image sequences.

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

from ._detect import detect_stars
from ._frames import Frame, read_frame
from ._match import MatchError, match_stars
from ._model import OffsetModel
from ._offset_map import OffsetMap
from ._sequence import MapResult, write_maps
from ._stack import KERNELS, Stack, Stacker, StackResult, stack_frames
from ._star_tables import TableResult, make_tables, offsets_table
from ._version import __version__

__all__ = [
    "KERNELS",
    "Frame",
    "MapResult",
    "MatchError",
    "OffsetMap",
    "OffsetModel",
    "Stack",
    "StackResult",
    "Stacker",
    "TableResult",
    "__version__",
    "detect_stars",
    "make_tables",
    "match_stars",
    "offsets_table",
    "read_frame",
    "stack_frames",
    "write_maps",
]
