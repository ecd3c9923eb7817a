"""Colour FITS frames through tables, maps and stack: Bayer mosaics with BAYERPAT, RGB cubes."""

import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_offsets import OffsetMap, Stacker, make_tables, stack_frames, write_maps
from astro_offsets.datasets import (
    render_stars,
    star_field,
    write_dng,
    write_fits_cfa,
    write_fits_rgb,
)
from astro_offsets.frames import CFA_CHANNEL, bayer_colors
from astro_offsets.stack import Normalisation

SHAPE = (120, 180)
# The frames' shifts against the reference (the first): x, y.
SHIFTS = [(0.0, 0.0), (2.4, -1.7), (-3.2, 2.6)]
SKY = np.array([300.0, 500.0, 700.0])
# A red star and a blue star, bright and apart from the others (x, y).
RED_STAR, BLUE_STAR = (60.3, 40.6), (125.7, 85.2)


def colour_planes(shift, rng):
    """The scene in red, green and blue, moved by ``shift``: stars of many colours, and noise."""
    stars = np.random.default_rng(1)
    x, y, flux = star_field(stars, 50, SHAPE, margin=0.0, faintest=4000.0)
    keep = (np.hypot(x - RED_STAR[0], y - RED_STAR[1]) > 12) & (
        np.hypot(x - BLUE_STAR[0], y - BLUE_STAR[1]) > 12
    )
    x, y, flux = x[keep], y[keep], flux[keep]
    ratios = stars.uniform(0.3, 1.0, (len(x), 3))
    x = np.append(x, [RED_STAR[0], BLUE_STAR[0]])
    y = np.append(y, [RED_STAR[1], BLUE_STAR[1]])
    flux = np.append(flux, [6e4, 6e4])
    ratios = np.vstack([ratios, [1.0, 0.3, 0.1], [0.1, 0.3, 1.0]])
    return np.stack(
        [
            SKY[c]
            + render_stars(SHAPE, x + shift[0], y + shift[1], flux * ratios[:, c], sigma=1.6)
            + rng.normal(0.0, 4.0, SHAPE)
            for c in range(3)
        ]
    )


def sensor_mosaics():
    """Integer RGGB mosaics of the dithered scene, their black level (512) included."""
    rng = np.random.default_rng(7)
    channel = CFA_CHANNEL[bayer_colors(SHAPE, "RGGB")]
    mosaics = []
    for shift in SHIFTS:
        planes = colour_planes(shift, rng)
        mosaic = np.take_along_axis(planes, channel[np.newaxis], axis=0)[0]
        mosaics.append(np.round(mosaic).astype(np.uint16) + 512)
    return mosaics


def pipeline(frames, folder, **options):
    """make_tables, write_maps and stack_frames (with their defaults, or ``options``)."""
    (folder / "tables").mkdir()
    (folder / "maps").mkdir()
    tables = make_tables(frames, frames[0], outdir=folder / "tables")
    statuses = ["reference"] + ["written"] * (len(frames) - 1)
    assert [r.status for r in tables] == statuses, [r.message for r in tables]
    maps = write_maps(sorted((folder / "tables").iterdir()), SHAPE, outdir=folder / "maps")
    assert all(r.status == "written" for r in maps), [r.message for r in maps]
    stack, results = stack_frames(frames, maps=folder / "maps", **options)
    assert [r.status for r in results] == ["stacked"] * len(frames), [r.message for r in results]
    return stack


@pytest.fixture(scope="module")
def dng_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dng")
    frames = []
    for k, mosaic in enumerate(sensor_mosaics()):
        frames.append(str(folder / f"light_{k}.dng"))
        write_dng(frames[-1], mosaic, cfa="RGGB", exptime=30.0)
    return pipeline(frames, folder)


def assert_coloured(stack, red_star, blue_star):
    """The red star comes out red, the blue star blue."""
    red, blue = star_colour(stack, red_star), star_colour(stack, blue_star)
    assert red[0] > 5 * red[2], red
    assert red[0] > 2 * red[1], red
    assert blue[2] > 5 * blue[0], blue
    assert blue[2] > 2 * blue[1], blue


def star_colour(stack, star):
    """The star's peak above the sky in each channel of a colour stack."""
    x, y = (round(v) for v in star)
    box = (slice(y - 3, y + 4), slice(x - 3, x + 4))
    return [
        float(np.nanmax(stack.images[name][box]) - np.nanmedian(stack.images[name][:20]))
        for name in ("RED", "GREEN", "BLUE")
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("xoffset", "yoffset"), [(0, 0), (1, 1)])
def test_bayer_fits_stack_is_the_raw_stack(dng_stack, tmp_path, xoffset, yoffset):
    # The same sensor images as FITS with Bayer cards: the same tables, maps
    # and colour stack as the DNG files give.
    frames = []
    for k, mosaic in enumerate(sensor_mosaics()):
        frames.append(str(tmp_path / f"light_{k}.fits"))
        write_fits_cfa(
            frames[-1],
            mosaic.astype(np.float32) - 512,
            cfa="RGGB",
            xoffset=xoffset,
            yoffset=yoffset,
            exptime=30.0,
        )
    stack = pipeline(frames, tmp_path)
    assert stack.channels == ("RED", "GREEN", "BLUE")
    for name in stack.channels:
        # One code path: the same bits.
        np.testing.assert_array_equal(stack.images[name], dng_stack.images[name])
        np.testing.assert_array_equal(stack.weights[name], dng_stack.weights[name])
    assert_coloured(stack, RED_STAR, BLUE_STAR)


@pytest.mark.slow
def test_bottom_up_bayer_fits_keeps_its_colours(tmp_path):
    # Rows written from the bottom up: the frames are stacked as they are in
    # the file (upside down), each pixel with its own colour.
    frames = []
    for k, mosaic in enumerate(sensor_mosaics()):
        frames.append(str(tmp_path / f"light_{k}.fits"))
        write_fits_cfa(frames[-1], mosaic - 512, cfa="RGGB", row_order="BOTTOM-UP", exptime=30.0)
    stack = pipeline(frames, tmp_path)
    flipped = [(x, SHAPE[0] - 1 - y) for x, y in (RED_STAR, BLUE_STAR)]
    assert_coloured(stack, *flipped)


@pytest.mark.slow
def test_rgb_cube_stack_is_the_stack_of_its_planes(tmp_path):
    rng = np.random.default_rng(3)
    cubes = [colour_planes(shift, rng).astype(np.float32) for shift in SHIFTS]
    frames = []
    for k, cube in enumerate(cubes):
        frames.append(str(tmp_path / f"light_{k}.fits"))
        write_fits_rgb(frames[-1], cube, exptime=30.0)
    # A frame has one weight, from the noise of all its planes: the planes
    # stacked alone would weigh theirs by their own noise.
    stack = pipeline(frames, tmp_path, weighting="none")
    assert stack.channels == ("RED", "GREEN", "BLUE")
    assert_coloured(stack, RED_STAR, BLUE_STAR)
    # Each plane stacked alone, as a mono sequence with the cubes' maps.
    for c, name in enumerate(stack.channels):
        folder = tmp_path / name
        folder.mkdir()
        planes = []
        for k, cube in enumerate(cubes):
            planes.append(str(folder / f"light_{k}.fits"))
            fits.PrimaryHDU(cube[c], fits.Header({"EXPTIME": 30.0})).writeto(planes[-1])
        mono, results = stack_frames(planes, maps=tmp_path / "maps", weighting="none")
        assert [r.status for r in results] == ["stacked"] * len(planes)
        # Each plane drizzled, normalised and rejected as the mono frame is.
        np.testing.assert_array_equal(stack.images[name], mono.images["SCI"])
        np.testing.assert_array_equal(stack.weights[name], mono.weights["SCI"])


def test_stacker_drizzles_each_plane_of_a_cube_as_a_mono_frame():
    # Each plane with the frame's map, its own mask and the frame's weights:
    # the same bits as three mono stacks, on two workers as on one.
    rng = np.random.default_rng(5)
    shape = (40, 50)
    cubes = [rng.normal(100.0, 5.0, (3, *shape)).astype(np.float32) for _ in range(2)]
    masks = [rng.random((3, *shape)) < 0.05 for _ in range(2)]
    weight = rng.uniform(0.5, 1.0, shape).astype(np.float32)
    maps = [None, OffsetMap(np.full(shape, 1.3), np.full(shape, -0.6))]
    with Stacker(shape, bayer=True, n_jobs=2) as stacker:
        for cube, mask, omap in zip(cubes, masks, maps, strict=True):
            stacker.add(cube, omap, mask=mask, weight=weight, exptime=20.0)
        colour = stacker.stack()
    assert colour.channels == ("RED", "GREEN", "BLUE")
    for c, name in enumerate(colour.channels):
        with Stacker(shape) as stacker:
            for cube, mask, omap in zip(cubes, masks, maps, strict=True):
                stacker.add(cube[c], omap, mask=mask[c], weight=weight, exptime=20.0)
            mono = stacker.stack()
        np.testing.assert_array_equal(colour.images[name], mono.images["SCI"])
        np.testing.assert_array_equal(colour.weights[name], mono.weights["SCI"])
        np.testing.assert_array_equal(colour.contexts[name], mono.contexts["SCI"])


def test_bad_cubes_for_a_stacker():
    cube = np.zeros((3, 4, 5), np.float32)
    with pytest.raises(
        ValueError, match=re.escape("frame shape (3, 4, 5) differs from the stack's")
    ):
        Stacker((4, 5)).add(cube)
    with pytest.raises(
        ValueError, match=re.escape("a colour cube has 3 planes (red, green, blue)")
    ):
        Stacker((4, 5), bayer=True).add(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="and no colors"):
        Stacker((4, 5), bayer=True).add(cube, colors=np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=re.escape("mask shape (2, 4, 5) differs")):
        Stacker((4, 5), bayer=True).add(cube, mask=np.zeros((2, 4, 5), bool))


def test_cubes_and_mono_frames_do_not_mix(tmp_path):
    shape = (30, 40)
    write_fits_rgb(tmp_path / "cube.fits", np.ones((3, *shape), np.float32))
    fits.PrimaryHDU(np.ones(shape, np.float32)).writeto(tmp_path / "mono.fits")
    write_fits_cfa(tmp_path / "cfa.fits", np.ones(shape, np.float32))
    for name in ("mono", "cfa"):
        OffsetMap(np.zeros(shape), np.zeros(shape)).write(tmp_path / f"{name}.offsets.fits")
    frames = [str(tmp_path / f"{name}.fits") for name in ("cube", "mono", "cfa")]
    _stack, results = stack_frames(frames, reference=frames[0], reject=False)
    assert [r.status for r in results] == ["stacked", "failed", "failed"]
    assert "a mono frame, but the stack is colour (colour cubes)" in results[1].message
    assert "a colour mosaic, but the stack is colour (colour cubes)" in results[2].message


def test_sky_offsets_of_three_channels_kept_whole_in_the_frames_table(tmp_path):
    # A card held them rounded to 6 digits, in 80 characters; the table
    # holds each channel's offset as it is.
    with Stacker((4, 5), bayer=True) as stacker:
        stacker.add(np.ones((3, 4, 5), np.float32))
        stack = stacker.stack()
        offsets = (-0.055929812345, -1.2345678e-05, -123456.789012)
        meta = {
            **stack.meta,
            "normalised": True,
            "normalisation": [Normalisation(1.0, offsets, "stars", (0.0, 0.0, 0.0))],
        }
        stack._replace(meta=meta).write(tmp_path / "stack.fits")
    table = Table.read(tmp_path / "stack.fits", hdu="FRAMES")
    assert tuple(table["sky_offset"][0]) == offsets
    assert table["scale_source"][0] == "stars"


def test_rejection_counts_every_plane_of_a_cube_in_its_scratch_room():
    from astro_offsets.frames._cfa import colour_planes
    from astro_offsets.stack._rejection import Rejection

    mono = Rejection.disk_bytes(SHAPE, colour_planes(SHAPE), 10)
    cube = Rejection.disk_bytes(SHAPE, colour_planes((3, *SHAPE)), 10)
    # Each frame kept whole (its three planes) and drizzled alone per plane.
    assert cube == 3 * mono
