"""The compiled kernels of outlier rejection against numpy."""

import numpy as np
import pytest

from astro_offsets.stack._outliers import grow, nanmedian, outliers


@pytest.mark.parametrize("n", [1, 2, 3, 8, 33])
def test_nanmedian_is_numpys(n):
    rng = np.random.default_rng(n)
    cube = rng.normal(size=(n, 30, 41)).astype(np.float32)
    cube[rng.random(cube.shape) < 0.2] = np.nan
    cube[:, 3, 4] = np.nan  # no value at all
    cube[:, 5, 6] = 2.5  # ties
    out = np.empty(cube.shape[1:], np.float32)
    nanmedian(cube, out)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(cube, axis=0)
    np.testing.assert_array_equal(out, expected)


def test_outliers_and_their_neighbours():
    blot = np.full((9, 12), 100.0, np.float32)
    blot[6, 8] = 5000.0  # a star: steep, so deviations at it are tolerated
    data = blot.copy()
    data[2, 3] += 60.0  # 6 sigma: an outlier
    data[2, 4] += 35.0  # 3.5 sigma next to it: joins it
    data[4, 9] += 35.0  # 3.5 sigma alone: not one
    data[6, 8] += 300.0  # on the star
    data += 7.0  # a smooth residual, known
    coarse = np.full((2, 2), 7.0, np.float32)
    mask = np.zeros(blot.shape, np.uint8)
    args = (data, blot, coarse, 8.0, 100.0, 100.0, np.inf, 4.0, 1.2, 3.0, 0.7)
    # Row by row: the same as all at once.
    for near in (False, True):
        for row in range(9):
            outliers(*args, row, row + 1, mask, near)
    assert {tuple(p) for p in np.argwhere(mask == 1)} == {(2, 3)}
    assert {tuple(p) for p in np.argwhere(mask == 2)} == {(2, 4)}
    grown = np.zeros_like(mask)
    for row in range(9):
        grow(mask, row, row + 1, grown)
    assert grown.sum() == 12
    assert grown[1:4, 2:6].all()
