"""Stars: detection, matching to the reference, the star-table schema, star tables.

The second stage of the pipeline: from frames (`astro_offsets.frames`) to
one star table per frame, each star's centroid and its offset against the
reference frame.
"""

from ._detect import FLAGS, detect_stars
from ._make_tables import TableResult, make_tables
from ._match import MatchError, match_stars
from ._schema import (
    CENTROID,
    CENTROID_COLUMNS,
    CENTROID_ERR,
    OFFSET,
    OFFSET_COLUMNS,
    OFFSET_ERR,
    OFFSET_ERR_COLUMNS,
    offset_errors,
    offsets_table,
    photometry,
    read_table,
    star_columns,
)

__all__ = [
    "CENTROID",
    "CENTROID_COLUMNS",
    "CENTROID_ERR",
    "FLAGS",
    "OFFSET",
    "OFFSET_COLUMNS",
    "OFFSET_ERR",
    "OFFSET_ERR_COLUMNS",
    "MatchError",
    "TableResult",
    "detect_stars",
    "make_tables",
    "match_stars",
    "offset_errors",
    "offsets_table",
    "photometry",
    "read_table",
    "star_columns",
]
