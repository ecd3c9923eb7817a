"""The offset field of a frame, from its stars, and the maps of a sequence.

The third stage of the pipeline: an `OffsetModel` fits one of the field
methods (``field/_methods``: quadrant, polynomial, thin-plate, or the best by
cross-validation) to a star table (`astro_offsets.stars`) and evaluates it at
every pixel, in parallel tiles, into an `~astro_offsets.OffsetMap`
(`astro_offsets.maps`); `write_maps` does so for a sequence.
"""

from ._methods import METHODS
from ._model import OffsetModel, check_options
from ._sequence import SEQUENCE_SELECTION, SequenceChoice
from ._trend import DEFAULT_TREND, TRENDS
from ._write_maps import CHOICES, MAPS_METHOD, MapResult, make_map, write_maps

__all__ = [
    "CHOICES",
    "DEFAULT_TREND",
    "MAPS_METHOD",
    "METHODS",
    "TRENDS",
    "MapResult",
    "OffsetModel",
    "SEQUENCE_SELECTION",
    "SequenceChoice",
    "check_options",
    "make_map",
    "write_maps",
]
