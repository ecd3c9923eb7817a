"""A map that made drizzle 3.0 crash (SIGSEGV): the stacker trims each chunk's columns."""

import os
import subprocess
import sys
import textwrap

import numpy as np

from astro_offsets.stack._bands import chunk_columns

# The offsets of rows 1279 to 1312 of a fitted map of a 2000 x 1350 frame
# (the bench_cluster sequence, seed 1, frame 37): drizzle's chunk of rows
# 1280 to 1311, all 2000 columns, crashed; its columns mapped onto the
# output, from 181 to 1999, do not.
ROWS = os.path.join(os.path.dirname(__file__), "data", "drizzle_crash_rows.npz")
SHAPE = (1350, 2000)


def test_the_stacker_refuses_the_map_that_crashed_drizzle(tmp_path):
    # The map folds (a literal quadrant field of a turned frame: its offsets
    # step by 3.4 px between neighbouring pixels): refused before drizzle.
    script = textwrap.dedent(
        f"""
        import numpy as np
        from astro_offsets import OffsetMap, Stacker

        saved = np.load({ROWS!r})
        rows = np.clip(np.arange({SHAPE[0]}) - 1279, 0, 33)
        omap = OffsetMap(saved["x_offset"][rows], saved["y_offset"][rows])
        with Stacker({SHAPE!r}, n_jobs=1, kernel="point") as stacker:
            try:
                stacker.add(np.ones({SHAPE!r}, np.float32), omap)
            except ValueError as error:
                print(error)
        """
    )
    # In another process: a crash would take pytest with it. Run elsewhere
    # than the source tree: the package is the installed one.
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("the offset map folds at 2909 pixels at x 256-1994, ")


def test_chunk_columns_keep_what_lands_on_the_output():
    saved = np.load(ROWS)
    x = np.arange(SHAPE[1], dtype=np.float64)
    y = np.arange(1280, 1312, dtype=np.float64)
    pixmap = np.stack(
        np.broadcast_arrays(
            x[np.newaxis, :] - saved["x_offset"][1:33], y[:, np.newaxis] - saved["y_offset"][1:33]
        ),
        axis=-1,
    )
    first, last = chunk_columns(pixmap, SHAPE, "point", 1.0)
    assert (first, last) == (181, 1999)
    # Left out: columns whose every pixel is beyond the point kernel's
    # margin (3 px) left of the output; kept: the first within it.
    assert np.all(pixmap[:, :first, 0] <= -3.0)
    assert np.any(pixmap[:, first, 0] > -3.0)
    below = pixmap + np.array([0.0, 500.0])
    assert chunk_columns(below, SHAPE, "point", 1.0) is None  # all below the output
    # A chunk inside the output keeps every column.
    inside = np.stack(np.meshgrid(x, y), axis=-1)
    assert chunk_columns(inside, SHAPE, "turbo", 1.0) == (0, SHAPE[1] - 1)
