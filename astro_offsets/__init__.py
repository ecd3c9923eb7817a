"""Dense per-pixel offset maps from star tables, for drizzle-stacking image sequences.

Stars measured in every frame of a sequence give, per frame, a table of
centroids and offsets against the reference frame. `OffsetModel` turns such a
table into the quadrant inverse-distance offset field, `OffsetMap` holds the
field evaluated at every pixel, writes it as FITS and hands it to drizzle as a
pixel map; `write_maps` makes the maps of a whole sequence.
"""

from ._model import OffsetModel
from ._offset_map import OffsetMap
from ._sequence import MapResult, write_maps
from ._version import __version__

__all__ = ["MapResult", "OffsetMap", "OffsetModel", "__version__", "write_maps"]
