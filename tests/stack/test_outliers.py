"""The compiled kernels of outlier rejection against numpy."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import astro_offsets
from astro_offsets.stack._outliers import blot, grow, nanmedian, outliers, scatter


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


HERE = os.path.dirname(__file__)
FRAME = (10, 13)
LAYER = (5, 7)  # every other pixel of FRAME from (1, 0)


def _f32(*shape):
    return np.zeros(shape, np.float32)


def _arguments(kernel):
    """Arguments of ``kernel`` that agree: a frame, its layer from (1, 0) every 2 pixels."""
    layer = {"origin_y": 1, "origin_x": 0, "step": 2}
    if kernel is scatter:
        frame = {name: _f32(*FRAME) for name in ("data", "x_offset", "y_offset")}
        sums = {"total": np.zeros(LAYER), "count": _f32(*LAYER)}
        return {**frame, **layer, **sums}
    if kernel is blot:
        offsets = {name: _f32(*FRAME) for name in ("x_offset", "y_offset")}
        rows = {"first": 0, "last": LAYER[0], "out": _f32(*LAYER)}
        return {"image": _f32(*LAYER), **offsets, **layer, **rows}
    if kernel is grow:
        mask = np.zeros(FRAME, np.uint8)
        return {"mask": mask, "first": 0, "last": FRAME[0], "out": np.zeros_like(mask)}
    if kernel is outliers:
        images = {name: _f32(*FRAME) for name in ("data", "blot")}
        noise = dict(block=8.0, sky=0.0, variance=1.0, gain=np.inf, snr=4.0, scale=1.2)
        rows = {"first": 0, "last": FRAME[0], "mask": np.zeros(FRAME, np.uint8), "near": False}
        near = {"snr_near": 3.0, "scale_near": 0.7}
        return {**images, "coarse": _f32(2, 2), **noise, **near, **rows}
    return {"cube": _f32(3, *FRAME), "out": _f32(*FRAME)}


MISMATCHES = [
    (scatter, {"x_offset": _f32(10, 12)}, "x_offset has shape (10, 12), expected (10, 13) as data"),
    (scatter, {"y_offset": _f32(9, 13)}, "y_offset has shape (9, 13), expected (10, 13) as data"),
    (scatter, {"count": _f32(5, 8)}, "count has shape (5, 8), expected (5, 7) as total"),
    (scatter, {"origin_x": -1}, "origin_x is -1, expected 0 or more"),
    (
        blot,
        {"y_offset": _f32(10, 12)},
        "y_offset has shape (10, 12), expected (10, 13) as x_offset",
    ),
    (
        blot,
        {"out": _f32(5, 8)},
        "out has shape (5, 8), expected (5, 7) as the layer of x_offset (10, 13) from (1, 0)"
        " every 2 pixels",
    ),
    (blot, {"origin_y": -2}, "origin_y is -2, expected 0 or more"),
    (blot, {"step": -1}, "step is -1, expected 1 or more"),
    (
        grow,
        {"out": np.zeros((10, 14), np.uint8)},
        "out has shape (10, 14), expected (10, 13) as mask",
    ),
    (grow, {"first": 4, "last": 3}, "rows first:last are 4:3, expected within the 10 rows of mask"),
    (outliers, {"blot": _f32(10, 12)}, "blot has shape (10, 12), expected (10, 13) as data"),
    (
        outliers,
        {"mask": np.zeros((11, 13), np.uint8)},
        "mask has shape (11, 13), expected (10, 13) as data",
    ),
    (outliers, {"coarse": _f32(0, 2)}, "coarse has shape (0, 2), expected a block at least"),
    (outliers, {"block": np.nan}, "block is nan, expected a positive number of pixels"),
    (nanmedian, {"out": _f32(13, 10)}, "out has shape (13, 10), expected (10, 13) as one image"),
]

# Unchecked, these write past an array or divide by zero: the process dies.
CRASHES = [
    (scatter, {"step": 0}, "step is 0, expected 1 or more"),
    (
        blot,
        {"first": 3, "last": 6},
        "rows first:last are 3:6, expected within the 5 rows of out (0 <= first <= last <= 5)",
    ),
    (blot, {"first": -1}, "rows first:last are -1:5, expected within the 5 rows of out"),
    (
        grow,
        {"first": 4, "last": 11},
        "rows first:last are 4:11, expected within the 10 rows of mask",
    ),
    (outliers, {"last": 12}, "rows first:last are 0:12, expected within the 10 rows of data"),
]


def _ids(cases):
    return [f"{kernel.__name__}-{'-'.join(changes)}" for kernel, changes, _ in cases]


@pytest.mark.parametrize(
    ("kernel", "changes", "message"),
    MISMATCHES,
    ids=_ids(MISMATCHES),
)
def test_kernels_check_their_arguments(kernel, changes, message):
    # Without bounds checks, a mismatch would read or write past an array.
    arguments = _arguments(kernel) | changes
    with pytest.raises(ValueError, match=re.escape(message)):
        kernel(**arguments)


@pytest.mark.parametrize("index", range(len(CRASHES)), ids=_ids(CRASHES))
def test_kernels_check_their_arguments_before_they_crash(index):
    # In another process: a crash would take pytest with it. The same
    # package as this process's, wherever run from.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{os.path.dirname(os.path.dirname(astro_offsets.__file__))!r}, {HERE!r}]
        from test_outliers import CRASHES, _arguments

        kernel, changes, _ = CRASHES[{index}]
        try:
            kernel(**(_arguments(kernel) | changes))
        except ValueError as error:
            print(error)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(CRASHES[index][2])


@pytest.mark.parametrize("kernel", [scatter, blot, grow, outliers, nanmedian])
def test_kernels_take_arguments_that_agree(kernel):
    kernel(**_arguments(kernel))


def test_layers_may_be_empty():
    # A layer's origin beyond a small frame, and no rows at all: nothing to do.
    offsets = _f32(1, 3), _f32(1, 3)
    scatter(_f32(1, 3), *offsets, 1, 0, 2, np.zeros((1, 2)), _f32(1, 2))
    blot(_f32(1, 2), *offsets, 1, 0, 2, 0, 0, _f32(0, 2))
    grow(np.zeros((4, 4), np.uint8), 2, 2, np.zeros((4, 4), np.uint8))
