"""Bayer mosaics for the tests of DNG files and raw frames."""

import numpy as np

# rawpy's raw_colors: 0 red, 1 green, 2 blue, 3 the green in the blue rows.
COLORS = {
    "RGGB": [[0, 1], [3, 2]],
    "BGGR": [[2, 3], [1, 0]],
    "GRBG": [[1, 0], [2, 3]],
    "GBRG": [[3, 2], [0, 1]],
}


def mosaic(shape=(64, 96), bits=14, seed=0):
    """Random sensor values covering the whole range of ``bits``, both ends included."""
    values = np.random.default_rng(seed).integers(0, 2**bits, shape, dtype=np.uint16)
    values.flat[:2] = [0, 2**bits - 1]
    return values


def expected_colors(cfa, shape):
    ny, nx = shape
    return np.tile(np.array(COLORS[cfa], dtype=np.uint8), ((ny + 1) // 2, (nx + 1) // 2))[:ny, :nx]
