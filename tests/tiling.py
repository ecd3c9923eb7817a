"""Maps made in every way of tiling them, for the tests that they are all one map."""

import joblib
import numpy as np


def same_map_for_any_tiling(model, shape):
    """Return ``model``'s map of ``shape``, checked bit-identical for ragged tiles and backends."""
    ny, nx = shape
    reference = model.to_map(shape)
    variants = [
        model.to_map(shape, n_jobs=2, block_size=(7, 33)),
        model.to_map(shape, n_jobs=1, block_size=(ny, 1)),
        model.to_map(shape, n_jobs=3, block_size=(17, nx)),
    ]
    with joblib.parallel_config(backend="loky"):
        variants.append(model.to_map(shape, n_jobs=2, block_size=(64, 64)))
    for omap in variants:
        np.testing.assert_array_equal(omap.x_offset, reference.x_offset)
        np.testing.assert_array_equal(omap.y_offset, reference.y_offset)
    return reference
