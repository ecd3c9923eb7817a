"""Stars: detection, matching to the reference, the star-table schema, star tables.

The second stage of the pipeline: from frames (`astro_offsets.frames`) to
one star table per frame, each star's centroid and its offset against the
reference frame.
"""

from ._detect import detect_stars
from ._make_tables import TableResult, make_tables
from ._match import MatchError, match_stars
from ._schema import (
    CENTROID,
    CENTROID_COLUMNS,
    OFFSET,
    OFFSET_COLUMNS,
    offsets_table,
    read_table,
    star_columns,
)

__all__ = [
    "CENTROID",
    "CENTROID_COLUMNS",
    "OFFSET",
    "OFFSET_COLUMNS",
    "MatchError",
    "TableResult",
    "detect_stars",
    "make_tables",
    "match_stars",
    "offsets_table",
    "read_table",
    "star_columns",
]
