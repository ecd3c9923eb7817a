"""Dense per-pixel offset maps from star tables, for drizzle-stacking image sequences.

The package follows the pipeline, one subpackage per stage: ``frames``
(reading them), ``stars`` (star tables), ``field`` (offset fields and their
maps), ``maps`` (the maps, the product), ``stack`` (drizzle) and ``pipeline``
(all of them in one run), with synthetic data in `astro_offsets.datasets`.
Users import from here.

Stars measured in every frame of a sequence (`make_tables`, with
`detect_stars` and `match_stars`) give, per frame, a table of centroids and
offsets against the reference frame. `OffsetModel` turns such a
table into an offset field: the quadrant inverse-distance field, or a
polynomial or thin-plate spline fitted to the stars with mismatched stars
sigma-clipped, or whichever cross-validates best. `OffsetMap` holds the
field evaluated at every pixel, writes it as FITS and hands it to drizzle as a
pixel map; `write_maps` makes the maps of a whole sequence, and `Stacker` and
`stack_frames` drizzle the frames onto the reference grid (Bayer drizzle for
colour raw frames). `run_sequence` takes a whole sequence through all three
(``astro_offsets.pipeline``), each frame read once.
"""

from types import MappingProxyType

from ._utils.lazy import lazy_exports
from .version import __version__

# Where each public name lives. They are imported when first used (as the
# stages themselves): a worker process that runs one stage's function does
# not import the others.
_WHERE = MappingProxyType(
    {
        "MapResult": ".field",
        "OffsetModel": ".field",
        "SequenceChoice": ".field",
        "write_maps": ".field",
        "Calibration": ".frames",
        "Frame": ".frames",
        "bayer_colors": ".frames",
        "frame_header": ".frames",
        "read_frame": ".frames",
        "row_order": ".frames",
        "OffsetMap": ".maps",
        "StarOffsets": ".maps",
        "RunResult": ".pipeline",
        "run_sequence": ".pipeline",
        "KERNELS": ".stack",
        "Stack": ".stack",
        "StackResult": ".stack",
        "Stacker": ".stack",
        "stack_frames": ".stack",
        "MatchError": ".stars",
        "TableResult": ".stars",
        "detect_stars": ".stars",
        "make_tables": ".stars",
        "match_stars": ".stars",
        "offsets_table": ".stars",
        # The stages themselves, as attributes of the package.
        **{
            stage: f".{stage}"
            for stage in ("datasets", "field", "frames", "maps", "pipeline", "stack", "stars")
        },
    }
)

__all__ = [
    "KERNELS",
    "Calibration",
    "Frame",
    "MapResult",
    "MatchError",
    "OffsetMap",
    "OffsetModel",
    "RunResult",
    "SequenceChoice",
    "Stack",
    "StackResult",
    "Stacker",
    "StarOffsets",
    "TableResult",
    "__version__",
    "bayer_colors",
    "datasets",
    "detect_stars",
    "frame_header",
    "make_tables",
    "match_stars",
    "offsets_table",
    "read_frame",
    "row_order",
    "run_sequence",
    "stack_frames",
    "write_maps",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
