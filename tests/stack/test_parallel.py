"""Stacking on several workers and in bands: bit for bit the same stack, and as one drizzle."""

import os
import tempfile
import warnings

import numpy as np
import pytest
from astropy.io import fits
from drizzle.resample import Drizzle

from astro_offsets import OffsetMap, Stacker, stack_frames
from astro_offsets.frames import CFA_CHANNEL

SHAPE = (320, 180)
EXPTIME = 20.0


def moved(k, *, distortion=1.5e-6):
    """Frame k's map: a drift, a rotation and barrel distortion; frames overhang."""
    ny, nx = SHAPE
    y, x = np.mgrid[:ny, :nx].astype(float)
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    angle = np.deg2rad(0.6 * k)
    rx, ry = x - cx, y - cy
    barrel = 1 + distortion * k * (rx * rx + ry * ry)
    fx = cx + barrel * (np.cos(angle) * rx - np.sin(angle) * ry) + 1.37 * k - 2.1
    fy = cy + barrel * (np.sin(angle) * rx + np.cos(angle) * ry) - 0.83 * k + 1.2
    return OffsetMap(x - fx, y - fy)


@pytest.fixture(scope="module")
def sequence():
    rng = np.random.default_rng(7)
    frames = [rng.normal(200, 15, SHAPE).astype(np.float32) for _ in range(4)]
    frames[2][50:60, 30] = np.nan  # no weight
    maps = [None] + [moved(k) for k in (1, 2, 3)]
    colors = np.ones(SHAPE, np.uint8)
    colors[0::2, 0::2] = 0
    colors[1::2, 1::2] = 2
    colors[1::2, 0::2] = 3
    return frames, maps, colors


def stacked(sequence, *, bayer, bands=None, n_jobs=None, record=None, maps=None, **options):
    frames, default_maps, colors = sequence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gaussian and lanczos do not conserve flux
        with Stacker(SHAPE, bayer=bayer, n_jobs=n_jobs, **options) as stacker:
            if bands is not None:
                stacker._bands = bands
            if record is not None:
                drizzle = stacker._drizzle
                stacker._drizzle = lambda tasks: (record.append(tasks), drizzle(tasks))
            for frame, omap in zip(frames, maps or default_maps, strict=True):
                stacker.add(frame, omap, colors=colors if bayer else None, exptime=EXPTIME)
            stack = stacker.stack()
            return {
                name: (
                    np.array(stack.images[name]),
                    np.array(stack.weights[name]),
                    np.array(stack.contexts[name]),
                )
                for name in stack.channels
            }


def one_drizzle(sequence, *, bayer, maps=None, kernel="square", pixfrac=1.0, scale=1.0):
    """The stack as drizzle gives it in one serial pass: each channel's pixels by weight maps."""
    frames, default_maps, colors = sequence
    channels = ("RED", "GREEN", "BLUE") if bayer else ("SCI",)
    out_shape = tuple(round(n * scale) for n in SHAPE)
    drizzles = {name: Drizzle(kernel=kernel, out_shape=out_shape) for name in channels}
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for frame, omap in zip(frames, maps or default_maps, strict=True):
            pixmap = np.dstack([x, y]) if omap is None else omap.pixmap()
            pixmap = (pixmap + 0.5) * scale - 0.5
            finite = np.isfinite(frame)
            for index, name in enumerate(channels):
                weight = finite & (CFA_CHANNEL[colors] == index) if bayer else finite
                drizzles[name].add_image(
                    np.where(finite, frame, 0),
                    exptime=EXPTIME,
                    pixmap=pixmap,
                    weight_map=weight.astype(np.float32),
                    pixfrac=pixfrac,
                    iscale=1 / scale**2,
                    pixel_scale_ratio=1 / scale,
                    in_units="counts",
                    wht_scale=EXPTIME,
                )
    return {name: (d.out_img, d.out_wht, d.out_ctx) for name, d in drizzles.items()}


def assert_identical(a, b):
    for name in a:
        for got, expected in zip(a[name], b[name], strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=name)


CASES = [
    ({"kernel": "square", "pixfrac": 0.7}, False),
    ({"kernel": "turbo"}, False),
    ({"kernel": "square", "scale": 2.0, "pixfrac": 0.6}, False),
    ({"kernel": "lanczos3"}, False),
    ({"kernel": "square"}, True),
    ({"kernel": "point"}, True),
    ({"kernel": "gaussian", "pixfrac": 0.8}, True),
]


@pytest.mark.parametrize(("options", "bayer"), CASES)
def test_same_stack_for_any_bands(sequence, options, bayer):
    record = []
    one = stacked(sequence, bayer=bayer, bands=1, **options)
    for bands in (2, 3, 8):
        assert_identical(stacked(sequence, bayer=bayer, bands=bands, record=record, **options), one)
    # The bands were really split, and run in two phases.
    phases = record[-1]
    assert len(phases[0]) > 1
    assert len(phases[1]) > 1


@pytest.mark.slow
def test_same_stack_for_any_workers(sequence):
    # Two worker processes, several kernels and scales in one pool of workers.
    for options, bayer in CASES[:3] + CASES[4:6]:
        one = stacked(sequence, bayer=bayer, n_jobs=1, **options)
        assert_identical(stacked(sequence, bayer=bayer, n_jobs=2, **options), one)


INNER = (slice(5, -5), slice(5, -5))


@pytest.mark.parametrize(
    "options",
    [
        {"kernel": "square"},
        {"kernel": "square", "pixfrac": 0.7},
        {"kernel": "turbo", "pixfrac": 0.8},
        {"kernel": "point"},
        {"kernel": "gaussian"},
        {"kernel": "square", "scale": 2.0, "pixfrac": 0.6},
    ],
)
def test_mono_as_one_drizzle(sequence, options):
    # Bit for bit as one serial drizzle, except where a frame overhangs the
    # output's edges: there drizzle drops the input pixels that straddle the
    # edge by an outline of the input rows it is given, whose sides are
    # straight between the rows' corners: the whole frame's for one drizzle,
    # a chunk's here. With a distorted map the whole frame's outline cuts
    # pixels off deeper inside (the 26 px bulge of the distortion in the
    # other tests), so the maps here are drifts and rotations.
    maps = [None] + [moved(k, distortion=0.0) for k in (1, 2, 3)]
    got = stacked(sequence, bayer=False, bands=3, maps=maps, **options)["SCI"]
    expected = one_drizzle(sequence, bayer=False, maps=maps, **options)["SCI"]
    scale = options.get("scale", 1.0)
    inner = tuple(slice(int(5 * scale), -int(5 * scale)) for _ in range(2))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a[..., *inner], b[..., *inner])
    # At the edges the stacks differ by whole input pixels' drops, dropped by
    # one and kept by the other: weights differ there, not the flux per pixel.
    assert np.count_nonzero(got[1] != expected[1]) < 0.05 * got[1].size


@pytest.mark.parametrize("kernel", ["turbo", "point", "gaussian", "lanczos3"])
def test_bayer_planes_as_one_drizzle(sequence, kernel):
    # A colour plane's drops are the raw pixels' drops: red and blue pixels
    # are drizzled in the same order as by weight maps, bit for bit; green's
    # two planes one after the other, so that its weighted means are summed
    # in another order, equal to float32 rounding.
    maps = [None] + [moved(k, distortion=0.0) for k in (1, 2, 3)]
    got = stacked(sequence, bayer=True, bands=3, maps=maps, kernel=kernel)
    expected = one_drizzle(sequence, bayer=True, maps=maps, kernel=kernel)
    for name in ("RED", "BLUE"):
        for a, b in zip(got[name], expected[name], strict=True):
            np.testing.assert_array_equal(a[..., *INNER], b[..., *INNER])
    image, weight = got["GREEN"][0][INNER], got["GREEN"][1][INNER]
    np.testing.assert_allclose(image, expected["GREEN"][0][INNER], rtol=2e-6)
    np.testing.assert_allclose(weight, expected["GREEN"][1][INNER], rtol=2e-6)
    np.testing.assert_array_equal(got["GREEN"][2][..., *INNER], expected["GREEN"][2][..., *INNER])


@pytest.mark.parametrize(("distortion", "rtol"), [(0.0, 2e-6), (2e-7, 4e-4)])
def test_bayer_square_as_one_drizzle(sequence, distortion, rtol):
    # The square kernel's drop corners are interpolated in the map between
    # pixels of one colour, two pixels apart, rather than between adjacent
    # pixels: the same for a map linear across two pixels (a drift and a
    # rotation), to float32 rounding; otherwise different by the map's
    # curvature (here a barrel distortion of about 2 px at the corners:
    # measured 1.6e-4 in the images, 1.4e-3 in the weights at most).
    maps = [None] + [moved(k, distortion=distortion) for k in (1, 2, 3)]
    got = stacked(sequence, bayer=True, bands=3, maps=maps, kernel="square", pixfrac=0.8)
    expected = one_drizzle(sequence, bayer=True, maps=maps, kernel="square", pixfrac=0.8)
    for name in got:
        image, weight = got[name][0][INNER], got[name][1][INNER]
        reached = weight > 0.05 * weight.max()
        np.testing.assert_allclose(
            image[reached], expected[name][0][INNER][reached], rtol=rtol, err_msg=name
        )
        np.testing.assert_allclose(
            weight[reached], expected[name][1][INNER][reached], rtol=5 * rtol, err_msg=name
        )


def test_more_than_32_frames_as_one_drizzle():
    # A second context plane from the 33rd frame on, as drizzle adds one.
    rng = np.random.default_rng(1)
    frames = [rng.normal(10, 1, (40, 50)).astype(np.float32) for _ in range(35)]
    shift = OffsetMap(np.full((40, 50), 0.4), np.full((40, 50), -0.3))
    maps = [None if k % 3 else shift for k in range(35)]
    with Stacker((40, 50), kernel="turbo") as stacker:
        for frame, omap in zip(frames, maps, strict=True):
            stacker.add(frame, omap)
        stack = stacker.stack()
        contexts = np.array(stack.contexts["SCI"])
    drizzle = Drizzle(kernel="turbo", out_shape=(40, 50))
    y, x = np.mgrid[:40, :50].astype(float)
    for frame, omap in zip(frames, maps, strict=True):
        pixmap = np.dstack([x, y]) if omap is None else omap.pixmap()
        drizzle.add_image(frame, exptime=1.0, pixmap=pixmap, in_units="counts")
    assert contexts.shape == (2, 40, 50)
    np.testing.assert_array_equal(contexts, drizzle.out_ctx)
    np.testing.assert_array_equal(stack.images["SCI"], drizzle.out_img)


def test_scratch_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Stacker((30, 40)) as stacker:
        stacker.add(np.ones((30, 40)))
        (scratch,) = os.listdir(tmp_path)
        assert scratch.startswith("astro_offsets-stack-")
        stack = stacker.stack()
    assert os.listdir(tmp_path) == []
    # The stack's arrays stay readable: they map the removed files.
    assert float(stack.images["SCI"][3, 4]) == 1.0
    with pytest.raises(ValueError, match="the stacker is closed"):
        stacker.add(np.ones((30, 40)))


def test_scratch_removed_after_an_interrupt(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = []
    for k in range(3):
        frames.append(str(folder / f"light{k}.fits"))
        fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(frames[-1])
        if k:
            OffsetMap(np.zeros((20, 30)), np.zeros((20, 30))).write(
                folder / f"light{k}.offsets.fits"
            )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def interrupt(result):
        if result.path == frames[1]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stack_frames(frames, callback=interrupt)
    assert os.listdir(scratch) == []


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((300, 420), np.float32), ((3, 5, 7), np.int32), ((5,), np.uint8), ((), np.float64)],
)
def test_memory_maps_open_without_an_ast(tmp_path, monkeypatch, shape, dtype):
    # numpy reads a .npy header with ast.literal_eval, which CPython before
    # 3.12 cannot run in two threads at once (gh-106905): the stacker's
    # threads read their maps' headers themselves.
    import ast

    from numpy.lib.format import open_memmap

    from astro_offsets.stack._bands import load_npy

    path = tmp_path / "map.npy"
    written = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    written[...] = np.arange(written.size).reshape(shape)
    written.flush()
    expected = np.load(path)

    def no_ast(*args, **kwargs):
        raise AssertionError("an AST was built")

    monkeypatch.setattr(ast, "literal_eval", no_ast)
    for mode in ("r", "r+"):
        array = load_npy(str(path), mode)
        assert array.shape == expected.shape
        assert array.dtype == expected.dtype
        np.testing.assert_array_equal(array, expected)


def test_other_memory_maps_still_open(tmp_path):
    from astro_offsets.stack._bands import load_npy

    path = tmp_path / "fortran.npy"
    np.save(path, np.asfortranarray(np.arange(12.0).reshape(3, 4)))
    np.testing.assert_array_equal(load_npy(str(path), "r"), np.arange(12.0).reshape(3, 4))
