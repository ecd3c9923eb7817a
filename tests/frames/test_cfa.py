"""How a colour filter mosaic is laid out: its Bayer cell, its period, its colour planes."""

import re

import numpy as np
import pytest
from mosaics import COLORS

from astro_offsets.frames import BAYER_PATTERNS, CFA_CHANNEL, bayer_colors
from astro_offsets.frames._cfa import ColourPlane, bayer_cell, colour_planes, mosaic_period

R, G, B = 0, 1, 2
# Fujifilm's X-Trans cell (6 x 6): no 2 x 2 cell tiles it.
XTRANS = np.array(
    [
        [G, G, R, G, G, B],
        [G, G, B, G, G, R],
        [B, R, G, R, B, G],
        [G, G, B, G, G, R],
        [G, G, R, G, G, B],
        [R, B, G, B, R, G],
    ],
    dtype=np.uint8,
)


def xtrans(shape):
    ny, nx = shape
    return np.tile(XTRANS, (-(-ny // 6), -(-nx // 6)))[:ny, :nx]


def assert_planes_cover_the_frame_once(planes, colors):
    """Every pixel is in exactly one plane, the plane of its colour's channel."""
    channel = CFA_CHANNEL[colors]
    covered = np.zeros(colors.shape, int)
    for plane in planes:
        taken = np.zeros(colors.shape, bool)
        taken[plane.sites] = True
        if plane.select is not None:
            taken &= plane.select
        covered += taken
        assert np.all(channel[taken] == plane.channel)
    np.testing.assert_array_equal(covered, 1)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("shape", [(4, 6), (5, 7), (2, 2)])
def test_a_bayer_mosaic_is_four_planes_of_every_other_pixel(pattern, shape):
    colors = bayer_colors(shape, pattern)
    np.testing.assert_array_equal(bayer_cell(colors), COLORS[pattern])
    planes = colour_planes(shape, colors)
    assert [(p.origin, p.step, p.select, p.plane) for p in planes] == [
        ((0, 0), 2, None, None),
        ((0, 1), 2, None, None),
        ((1, 0), 2, None, None),
        ((1, 1), 2, None, None),
    ]
    # Red and blue once, green twice (both greens go into the green channel).
    assert sorted(p.channel for p in planes) == [R, G, G, B]
    assert_planes_cover_the_frame_once(planes, colors)
    assert mosaic_period(colors) == 2


@pytest.mark.parametrize("shape", [(6, 6), (12, 18), (7, 11)])
def test_another_mosaic_is_three_planes_of_the_whole_frame(shape):
    colors = xtrans(shape)
    assert bayer_cell(colors) is None
    planes = colour_planes(shape, colors)
    assert [(p.channel, p.origin, p.step, p.plane) for p in planes] == [
        (R, (0, 0), 1, None),
        (G, (0, 0), 1, None),
        (B, (0, 0), 1, None),
    ]
    assert all(p.select.shape == shape and p.select.dtype == bool for p in planes)
    assert_planes_cover_the_frame_once(planes, colors)


def test_a_mosaic_less_than_two_pixels_across_is_not_bayer():
    colors = bayer_colors((1, 6), "RGGB")
    assert bayer_cell(colors) is None
    planes = colour_planes((1, 6), colors)
    assert [p.step for p in planes] == [1, 1, 1]
    assert_planes_cover_the_frame_once(planes, colors)


def test_a_bayer_cell_must_tile_the_whole_mosaic():
    colors = bayer_colors((6, 8), "RGGB")
    colors[5, 6] = 2  # one red pixel turned blue, far from the top-left cell
    assert bayer_cell(colors) is None
    assert bayer_cell(bayer_colors((6, 8), "RGGB")) is not None


def test_a_mono_frame_and_a_cube():
    assert colour_planes((4, 6)) == [ColourPlane(0, (0, 0), 1, None)]
    (mono,) = colour_planes((4, 6))
    assert mono.sites == mono.part == (slice(0, None, 1), slice(0, None, 1))
    cube = colour_planes((3, 4, 6))
    assert [(p.channel, p.origin, p.step, p.select, p.plane) for p in cube] == [
        (index, (0, 0), 1, None, index) for index in (R, G, B)
    ]
    data = np.arange(3 * 4 * 6).reshape(3, 4, 6)
    for plane in cube:
        np.testing.assert_array_equal(data[plane.part], data[plane.plane])


def test_a_planes_sites_and_part():
    data = np.arange(4 * 6).reshape(4, 6)
    blue = colour_planes((4, 6), bayer_colors((4, 6), "RGGB"))[3]
    assert blue.sites == blue.part == (slice(1, None, 2), slice(1, None, 2))
    np.testing.assert_array_equal(data[blue.part], [[7, 9, 11], [19, 21, 23]])
    in_a_cube = blue._replace(plane=2)
    assert in_a_cube.part == (2, slice(1, None, 2), slice(1, None, 2))


@pytest.mark.parametrize(
    ("colors", "period"),
    [
        (np.zeros((4, 6), np.uint8), 1),
        (bayer_colors((4, 6), "GBRG"), 2),
        (np.tile([[0, 1, 2]], (5, 4)), 3),
        (xtrans((12, 18)), 6),
        # Stripes across the rows repeat along them at once.
        (np.repeat([[0], [1], [2]], 4, axis=1), 1),
        # Repeating within no 6 columns: taken as 6.
        (np.array([[0, 1, 2, 3, 0, 1, 2, 3, 0, 0]]), 6),
    ],
)
def test_the_period_of_a_mosaic_along_its_rows(colors, period):
    assert mosaic_period(colors) == period


@pytest.mark.parametrize(
    ("shape", "colors", "message"),
    [
        ((24,), None, "a frame is (ny, nx), or a colour cube (3, ny, nx), got shape (24,)"),
        ((1, 2, 3, 4), None, "got shape (1, 2, 3, 4)"),
        ((4, 4, 6), None, "a colour cube has 3 planes (red, green, blue) and no colors"),
        ((3, 4, 6), np.zeros((4, 6), np.uint8), "and no colors, got shape (3, 4, 6)"),
        ((4, 6), np.zeros((4, 6)), "colors must be integer colour indices, got dtype float64"),
        ((4, 6), np.zeros((2, 2), np.uint8), "colors shape (2, 2) differs from (4, 6)"),
        ((4, 6), np.full((4, 6), 4), "colors must be rawpy colour indices 0..3, found 4..4"),
        ((2, 2), [[-1, 1], [3, 2]], "colors must be rawpy colour indices 0..3, found -1..3"),
    ],
)
def test_bad_colour_layouts_are_refused(shape, colors, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        colour_planes(shape, colors)
