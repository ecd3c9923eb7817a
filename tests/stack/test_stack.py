"""Stacking through real drizzle: positions, flux, Bayer drizzle of real DNG files, errors."""

import os
import pathlib
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from photutils.centroids import centroid_com, centroid_sources

from astro_offsets import OffsetMap, OffsetModel, Stack, Stacker, stack_frames
from astro_offsets._cli import main
from astro_offsets.datasets import render_stars, write_dng

SHAPE = (200, 260)


def distortion(x, y, shift=(3.37, -2.61), angle_deg=0.25, barrel=4e-7):
    """Positions in a frame of stars at reference positions (x, y)."""
    cy, cx = (SHAPE[0] - 1) / 2, (SHAPE[1] - 1) / 2
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    rx, ry = x - cx, y - cy
    k = 1 + barrel * (rx * rx + ry * ry)
    return (cx + k * (c * rx - s * ry) + shift[0], cy + k * (s * rx + c * ry) + shift[1])


@pytest.fixture(scope="module")
def star_field():
    rng = np.random.default_rng(4)
    n = 320
    x = rng.uniform(8, SHAPE[1] - 9, n)
    y = rng.uniform(8, SHAPE[0] - 9, n)
    flux = rng.uniform(3e3, 3e4, n)
    return x, y, flux


def isolated(x, y, radius=9.0):
    separation = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(separation, np.inf)
    return separation.min(axis=1) > radius


def test_distorted_frame_lands_on_reference(star_field):
    x, y, flux = star_field
    fx, fy = distortion(x, y)
    frame = render_stars(SHAPE, fx, fy, flux)
    reference = render_stars(SHAPE, x, y, flux)
    # Noise-free offsets at the stars: this frame minus the reference.
    omap = OffsetModel(fx, fy, fx - x, fy - y).to_map(SHAPE)
    stacker = Stacker(SHAPE)
    stacker.add(frame, omap)
    image = np.nan_to_num(stacker.stack().images["SCI"])

    inside = isolated(x, y) & (fx > 8) & (fx < SHAPE[1] - 9) & (fy > 8) & (fy < SHAPE[0] - 9)
    assert inside.sum() > 40
    ref_x, ref_y = centroid_sources(
        reference, x[inside], y[inside], box_size=7, centroid_func=centroid_com
    )
    out_x, out_y = centroid_sources(
        image, x[inside], y[inside], box_size=7, centroid_func=centroid_com
    )
    error = np.hypot(out_x - ref_x, out_y - ref_y)
    assert error.mean() < 0.02
    # Without the map the stars would be off by the distortion itself.
    assert np.hypot(fx - x, fy - y)[inside].mean() > 2


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_flux_conserved_and_positions_scaled(star_field, scale):
    x, y, flux = star_field
    shift = (1.6, -0.7)
    frame = render_stars(SHAPE, x + shift[0], y + shift[1], flux)
    omap = OffsetMap(np.full(SHAPE, shift[0]), np.full(SHAPE, shift[1]))
    stacker = Stacker(SHAPE, scale=scale, kernel="square")
    stacker.add(frame, omap)
    stack = stacker.stack()
    assert stack.images["SCI"].shape == (round(SHAPE[0] * scale), round(SHAPE[1] * scale))
    image = np.nan_to_num(stack.images["SCI"])
    # All the frame's flux lands somewhere on the output grid.
    np.testing.assert_allclose(image.sum(), frame.sum(), rtol=1e-4)
    # A bright isolated star lands at scale * (x + 0.5) - 0.5 on the finer grid.
    k = np.flatnonzero(isolated(x, y, 14))[0]
    box = max(5, int(7 * scale) | 1)
    cx, cy = centroid_sources(
        image,
        scale * (x[k] + 0.5) - 0.5,
        scale * (y[k] + 0.5) - 0.5,
        box_size=box,
        centroid_func=centroid_com,
    )
    ref = render_stars(SHAPE, x[k : k + 1], y[k : k + 1], flux[k : k + 1])
    rx, ry = centroid_sources(ref, x[k], y[k], box_size=7, centroid_func=centroid_com)
    assert abs(cx[0] - (scale * (rx[0] + 0.5) - 0.5)) < 0.05 * max(scale, 1)
    assert abs(cy[0] - (scale * (ry[0] + 0.5) - 0.5)) < 0.05 * max(scale, 1)


def test_provenance_of_frames_and_maps():
    stacker = Stacker((6, 7))
    stacker.add(np.ones((6, 7)), name="ref.fits")
    stacker.add(np.ones((6, 7)), OffsetMap(np.zeros((6, 7)), np.zeros((6, 7))))
    stacker.add(
        np.ones((6, 7)),
        OffsetMap(np.zeros((6, 7)), np.zeros((6, 7))),
        name="b.fits",
        map_name="b.offsets.fits",
    )
    meta = stacker.stack().meta
    assert meta["frames"] == ["ref.fits", "frame 2", "b.fits"]
    assert meta["maps"] == [None, "(an OffsetMap in memory)", "b.offsets.fits"]


def test_exposure_weighting_and_units():
    short = np.full((10, 12), 10.0, dtype=np.float32)  # 10 counts in 1 s
    long = np.full((10, 12), 60.0, dtype=np.float32)  # 60 counts in 3 s
    weighted = Stacker((10, 12))
    weighted.add(short, exptime=1.0)
    weighted.add(long, exptime=3.0)
    stack = weighted.stack()
    np.testing.assert_allclose(stack.images["SCI"], 17.5)  # (1 * 10 + 3 * 20) / 4 per second
    np.testing.assert_allclose(stack.weights["SCI"], 4.0)
    assert stack.meta["total_exptime"] == 4.0
    plain = Stacker((10, 12), exposure_weighting=False)
    plain.add(short, exptime=1.0)
    plain.add(long, exptime=3.0)
    np.testing.assert_allclose(plain.stack().images["SCI"], 15.0)


def test_masks_weights_and_nan_pixels():
    data = np.full((8, 9), 5.0, dtype=np.float32)
    data[2, 3] = np.nan
    mask = np.zeros((8, 9), bool)
    mask[4, 4] = True
    weight = np.ones((8, 9), np.float32)
    weight[6, 1] = 0.0
    stacker = Stacker((8, 9), kernel="point")
    stacker.add(data, mask=mask, weight=weight)
    stack = stacker.stack()
    for j, i in [(2, 3), (4, 4), (6, 1)]:
        assert stack.weights["SCI"][j, i] == 0
        assert np.isnan(stack.images["SCI"][j, i])
    assert stack.images["SCI"][0, 0] == 5.0
    assert stack.contexts["SCI"].shape == (1, 8, 9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": "boxy"}, "kernel must be one of auto, square"),
        ({"pixfrac": 0}, r"pixfrac must be a number in \(0, 1\]"),
        ({"pixfrac": 1.5}, "pixfrac must be"),
        ({"scale": -2}, r"scale must be a number in \(0, 8\]"),
        ({"scale": float("nan")}, "scale must be"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Stacker((4, 4), **kwargs)


def test_bad_frames_for_a_stacker():
    stacker = Stacker((4, 5))
    with pytest.raises(ValueError, match=r"frame shape \(5, 4\) differs from the stack's"):
        stacker.add(np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"map shape \(3, 3\) differs from the frame shape"):
        stacker.add(np.zeros((4, 5)), OffsetMap(np.zeros((3, 3)), np.zeros((3, 3))))
    with pytest.raises(ValueError, match="colors given for a mono stack"):
        stacker.add(np.zeros((4, 5)), colors=np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="exptime must be a number > 0, got 0"):
        stacker.add(np.zeros((4, 5)), exptime=0)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        stacker.add(np.zeros((4, 5)), weight=-np.ones((4, 5)))
    with pytest.raises(ValueError, match="weight must be non-negative and finite"):
        stacker.add(np.zeros((4, 5)), weight=np.full((4, 5), np.inf))
    with pytest.raises(ValueError, match="colors must be integer colour indices, got dtype float"):
        Stacker((4, 5), bayer=True).add(np.zeros((4, 5)), colors=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="needs each frame's colors"):
        Stacker((4, 5), bayer=True).add(np.zeros((4, 5)))


# --- Bayer drizzle of real DNG files -------------------------------------------------------

RAW_SHAPE = (64, 80)
DITHERS = [(0.0, 0.0), (1.25, 0.1), (0.2, 1.3), (1.1, 1.2), (0.6, 0.7)]
# A colour scene: grey-blue sky with three stars of different colours.
SKY = {"R": 300.0, "G": 500.0, "B": 700.0}
STARS = [(20.3, 30.6, (4e4, 2e4, 1e4)), (50.7, 15.2, (1e4, 2e4, 4e4)), (60.1, 45.8, (2e4,) * 3)]


def colour_scene(shift):
    planes = []
    for c, colour in enumerate("RGB"):
        xs = [x + shift[0] for x, _, _ in STARS]
        ys = [y + shift[1] for _, y, _ in STARS]
        flux = [f[c] for _, _, f in STARS]
        planes.append(SKY[colour] + render_stars(RAW_SHAPE, xs, ys, flux, sigma=1.8))
    return planes


def rggb_mosaic(planes):
    r, g, b = planes
    mosaic = g.copy()
    mosaic[0::2, 0::2] = r[0::2, 0::2]
    mosaic[1::2, 1::2] = b[1::2, 1::2]
    return mosaic


def write_raw_sequence(folder, rng=None):
    """The dithered colour scene as DNG files with their maps; photon noise with ``rng``."""
    frames = []
    for k, shift in enumerate(DITHERS):
        path = folder / f"DSC{k:04d}.dng"
        mosaic = rggb_mosaic(colour_scene(shift))
        if rng is not None:
            mosaic = rng.poisson(mosaic)
        mosaic = np.round(mosaic) + 512
        write_dng(path, mosaic.astype(np.uint16), cfa="RGGB", exptime=30.0)
        if k:
            OffsetMap(np.full(RAW_SHAPE, shift[0]), np.full(RAW_SHAPE, shift[1])).write(
                folder / f"DSC{k:04d}.offsets.fits"
            )
        frames.append(str(path))
    return folder, frames


@pytest.fixture(scope="module")
def raw_sequence(tmp_path_factory):
    return write_raw_sequence(tmp_path_factory.mktemp("raw"))


def test_colour_preview_has_a_grey_sky_and_no_holes(tmp_path):
    _, frames = write_raw_sequence(tmp_path, np.random.default_rng(6))
    stack, _ = stack_frames(frames, pixfrac=0.8)
    # The dithers leave holes in red and blue at the edges, where a colour's
    # pixels alternate: whole columns and rows of NaN.
    assert any(np.isnan(stack.images[name]).all(axis=0).any() for name in ("RED", "BLUE"))
    preview = stack.preview()
    assert preview.shape == (*RAW_SHAPE, 3)
    # No black column or row: the holes take their colour from neighbours.
    assert preview.max(axis=(0, 2)).min() > 0
    assert preview.max(axis=(1, 2)).min() > 0
    # The sky is a neutral grey above black, whatever each colour's sky.
    sky = preview[:12, 35:]  # away from the stars
    levels = [float(np.mean(sky[..., c])) for c in range(3)]
    assert 20 < min(levels) < 45, levels  # a dark grey: about 30 of 255
    assert max(levels) <= 1.02 * min(levels), levels
    assert np.mean(sky == 0) < 0.02
    # Colours are balanced on the stars: with red half as sensitive, the
    # white star stays white and the red star red.
    dim = stack._replace(images={**stack.images, "RED": 0.5 * stack.images["RED"]})
    for image in (preview, dim.preview()):
        white = image[43:49, 57:64].astype(float).max(axis=(0, 1))
        assert np.ptp(white) <= 0.1 * white.max(), white
        red = image[28:34, 17:24].astype(float).max(axis=(0, 1))
        assert red[0] > 1.3 * red[2], red


def test_colour_preview_keeps_saturated_stars_white():
    # White stars seen through a red half as sensitive; one star clips the
    # sensor in every channel at the same level. Balanced on the stars, red
    # is doubled: its clipped core must not turn pink.
    rng = np.random.default_rng(2)
    shape = (120, 160)
    xs, ys = rng.uniform(10, 150, 12), rng.uniform(10, 110, 12)
    scene = 100 + render_stars(shape, xs, ys, np.full(12, 3e4), sigma=1.5)
    clipped = np.minimum(100 + render_stars(shape, [80.0], [60.0], [1e7], sigma=1.5), 5000)
    images = {}
    for name, sensitivity in (("RED", 0.5), ("GREEN", 1.0), ("BLUE", 1.0)):
        images[name] = np.minimum(sensitivity * scene + rng.normal(0, 3, shape), 5000)
        images[name] = np.maximum(images[name], clipped).astype(np.float32)
    preview = Stack(("RED", "GREEN", "BLUE"), images, {}, None, {}).preview()
    core = preview[59:62, 79:82].astype(float)
    assert core.min() > 200
    assert np.ptp(core, axis=2).max() <= 3, core


def test_bayer_stack_covers_every_colour_without_checkerboard(raw_sequence):
    _, frames = raw_sequence
    stack, results = stack_frames(frames, pixfrac=1.0)
    assert [r.status for r in results] == ["stacked"] * len(frames)
    assert results[0].map is None  # the reference
    assert stack.channels == ("RED", "GREEN", "BLUE")
    footprint = (slice(4, RAW_SHAPE[0] - 4), slice(4, RAW_SHAPE[1] - 4))
    for name, colour in zip(stack.channels, "RGB", strict=True):
        weight = stack.weights[name][footprint]
        assert np.all(weight > 0), name
        image = stack.images[name][footprint]
        # The sky, away from the stars, is flat: no 2 x 2 Bayer pattern.
        sky = image[:10, 40:]
        blocks = [sky[a::2, b::2].mean() for a in (0, 1) for b in (0, 1)]
        assert np.ptp(blocks) < 0.01 * SKY[colour], (name, blocks)
        np.testing.assert_allclose(np.median(sky), SKY[colour] / 30.0, rtol=0.01)
    # Above the sky, the red star is red and the blue star blue.
    above = {
        name: stack.images[name] - SKY[c] / 30.0
        for name, c in zip(stack.channels, "RGB", strict=True)
    }
    red_star = (slice(28, 34), slice(17, 24))
    blue_star = (slice(13, 18), slice(48, 54))
    assert above["RED"][red_star].max() > 3 * above["BLUE"][red_star].max()
    assert above["BLUE"][blue_star].max() > 3 * above["RED"][blue_star].max()


def test_stack_command_colour(raw_sequence, tmp_path, capsys):
    folder, frames = raw_sequence
    out = tmp_path / "stack.fits"
    assert main(["stack", *frames, "--out", str(out), "--pixfrac", "0.8"]) == 0
    notes, summary = capsys.readouterr().out.strip().rsplit("\n", 1)
    assert notes == "outliers: none found"
    assert summary == (
        f"stack: 5 stacked, 0 failed; wrote {out}, {tmp_path / 'stack.weights.fits'} and "
        f"{tmp_path / 'stack.png'} (RED, GREEN, BLUE in one cube, and their weights)"
    )
    with fits.open(tmp_path / "stack.weights.fits") as hdul:
        assert hdul["WHT"].shape == (3, *RAW_SHAPE)
    with fits.open(out) as hdul:
        # The file's one image, of 3 planes, in the primary HDU, as Siril
        # and PixInsight open colour; the weights a cube in a file beside it.
        assert [h.name for h in hdul] == ["PRIMARY", "FRAMES"]
        assert hdul[0].shape == (3, *RAW_SHAPE)
        assert hdul[0].header["BUNIT"] == "adu / s"
        header = hdul[0].header
        assert header["NFRAMES"] == 5
        assert header["PIXFRAC"] == 0.8
        assert header["KERNEL"] == "auto"  # the default: turbo here (small turns)
        assert header.comments["KERNEL"] == "drizzle kernel; frames: 5 turbo"
        assert header["TEXPTIME"] == 150.0
        assert "FRM00001" not in header
        table = Table.read(hdul["FRAMES"], mask_invalid=False)  # "" (no map) unmasked
        assert table["frame"].tolist() == frames
        assert table["map"][:2].tolist() == ["", str(folder / "DSC0001.offsets.fits")]
        assert table["sky_offset"].shape == (5, 3)
        assert table["flux_scale"][0] == 1.0
        assert table["scale_source"][0] == "reference"
    import matplotlib.image

    preview = matplotlib.image.imread(tmp_path / "stack.png")
    assert preview.shape[:2] == RAW_SHAPE
    # The picture holds the preview's RGB bytes as they are, no alpha.
    assert preview.shape[2] == 3


def test_stack_command_writes_the_extensions_layout_on_request(raw_sequence, tmp_path, capsys):
    _, frames = raw_sequence
    out = tmp_path / "planes.fits"
    argv = ["stack", *frames[:3], "--out", str(out), "--no-preview", "--layout", "extensions"]
    assert main(argv) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(f"wrote {out} (RED, GREEN, BLUE and their weights)")
    )
    with fits.open(out) as hdul:
        assert [h.name for h in hdul][:4] == ["PRIMARY", "RED", "GREEN", "BLUE"]
    assert not (tmp_path / "planes.weights.fits").exists()
    assert Stack.read(out).meta["frames"] == frames[:3]


def test_stack_command_keeps_the_weights_file_of_a_stack_since_removed(
    raw_sequence, tmp_path, capsys
):
    _, frames = raw_sequence
    out, weights = tmp_path / "stack.fits", tmp_path / "stack.weights.fits"
    argv = ["stack", *frames[:3], "--out", str(out), "--no-preview"]
    assert main(argv) == 0
    out.unlink()
    before = weights.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"{weights}: exists, the weights of a stack since removed; move it, or replace it "
            "with --overwrite"
        )
    )
    assert not out.exists()
    assert weights.read_bytes() == before
    # A file of that name that is not ours is refused, with --overwrite too.
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(weights, overwrite=True)
    theirs = weights.read_bytes()
    for options in ([], ["--overwrite"]):
        assert main([*argv, *options]) == 2
        assert "exists and was not written by astro-offsets" in capsys.readouterr().err
        assert weights.read_bytes() == theirs
    weights.unlink()
    # Both kept, as the stack alone was: nothing stacked.
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 0
    kept = capsys.readouterr().out.strip()
    assert kept.startswith(f"stack: kept {out}, {weights}, {tmp_path / 'stack.frames.ecsv'}")
    assert kept.endswith("(use --overwrite to replace them); nothing stacked")
    assert Stack.read(out).channels == ("RED", "GREEN", "BLUE")


def test_preview_file_holds_the_preview(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    image = rng.normal(100.0, 5.0, (60, 80)).astype(np.float32)
    stack = Stack(("SCI",), {"SCI": image}, {"SCI": np.ones_like(image)}, None, {})
    stack.write_preview(tmp_path / "mono.png")
    with Image.open(tmp_path / "mono.png") as png:
        assert png.mode == "L"  # grey, one byte a pixel
        assert png.text["Description"] == "stack preview"
        np.testing.assert_array_equal(np.asarray(png), stack.preview())


def test_stack_command_reports_bad_frames(raw_sequence, tmp_path, capsys):
    _folder, frames = raw_sequence
    orphan = tmp_path / "DSC0099.dng"
    write_dng(orphan, np.full(RAW_SHAPE, 600, np.uint16))
    broken = tmp_path / "DSC0098.ARW"
    broken.write_text("not raw")
    odd = tmp_path / "DSC0097.dng"
    write_dng(odd, np.full((40, 50), 600, np.uint16))
    OffsetMap(np.zeros(RAW_SHAPE), np.zeros(RAW_SHAPE)).write(tmp_path / "DSC0097.offsets.fits")
    OffsetMap(np.zeros(RAW_SHAPE), np.zeros(RAW_SHAPE)).write(tmp_path / "DSC0098.offsets.fits")
    out = tmp_path / "stack.fits"
    argv = [*frames, str(orphan), str(broken), str(odd)]
    # Two frames without a map: which is the reference must be said.
    assert main(["stack", *argv, "--out", str(out), "--no-preview"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"astro-offsets: error: 2 frames have no map ({frames[0]}, {orphan}), and only the "
        "reference frame may have none: make the maps first: astro-offsets tables FRAME... "
        "--reference FRAME, then astro-offsets maps TABLE... --image FRAME; or, if the "
        "others' tables or maps failed, name the reference (--reference) to stack the frames "
        "that have maps"
    )
    assert not out.exists()
    status = main(["stack", *argv, "--out", str(out), "--no-preview", "--reference", frames[0]])
    captured = capsys.readouterr()
    assert status == 1
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert errors == [
        f"astro-offsets: error: {orphan}: no map {tmp_path / 'DSC0099.offsets.fits'}, and it "
        "is not the reference frame",
        f"astro-offsets: error: {broken}: not a readable raw file (LibRaw: "
        + errors[1].split("(LibRaw: ")[1],
        f"astro-offsets: error: {odd}: frame shape (40, 50) differs from its map's (64, 80) "
        f"({tmp_path / 'DSC0097.offsets.fits'})",
    ]
    assert captured.out.splitlines()[-1].startswith("stack: 5 stacked, 3 failed (")
    with fits.open(out) as hdul:
        assert hdul[0].header["NFRAMES"] == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--pixfrac", "1.5"], r"pixfrac must be a number in \(0, 1\], got 1.5"),
        (["--scale", "0"], r"scale must be a number in \(0, 8\]"),
        (["--kernel", "lanczos3", "--pixfrac", "0.5"], "the lanczos3 kernel takes no pixfrac"),
    ],
)
def test_stack_command_bad_options(raw_sequence, tmp_path, capsys, options, message):
    _, frames = raw_sequence
    status = main(["stack", *frames, "--out", str(tmp_path / "s.fits"), *options])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("astro-offsets: error: ")
    assert re.search(message, err)
    assert not os.listdir(tmp_path)


def test_stack_command_mono_and_existing_output(tmp_path, capsys):
    frames = []
    for k in range(3):
        path = tmp_path / f"light{k}.fits"
        hdu = fits.PrimaryHDU(np.full((30, 40), 100.0 * (k + 1), np.float32))
        hdu.header["EXPTIME"] = 10.0 * (k + 1)
        hdu.writeto(path)
        frames.append(str(path))
    (tmp_path / "maps").mkdir()
    for k in (1, 2):
        OffsetMap(np.zeros((30, 40)), np.zeros((30, 40))).write(
            tmp_path / "maps" / f"light{k}.offsets.fits"
        )
    out = tmp_path / "mono.fits"
    assert main(["stack", *frames, "--out", str(out), "--maps", str(tmp_path / "maps")]) == 0
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT", "FRAMES"]
        np.testing.assert_allclose(hdul["SCI"].data, 10.0)  # every frame: 10 counts / s
        np.testing.assert_allclose(hdul["WHT"].data, 60.0)  # weights: exposure times
    capsys.readouterr()
    # A rerun keeps the outputs, as tables and maps keep theirs, and says so.
    before = out.read_bytes()
    assert main(["stack", *frames, "--out", str(out), "--maps", str(tmp_path / "maps")]) == 0
    assert capsys.readouterr().out.strip() == (
        f"stack: kept {out}, {tmp_path / 'mono.png'}, {tmp_path / 'mono.frames.ecsv'} and "
        f"{tmp_path / 'mono.frames.png'} (use --overwrite to replace them); nothing stacked"
    )
    assert out.read_bytes() == before
    # The stack removed to redo it: its preview and report, ours, are remade with it.
    out.unlink()
    assert main(["stack", *frames, "--out", str(out), "--maps", str(tmp_path / "maps")]) == 0
    assert out.exists()
    assert "wrote" in capsys.readouterr().out
    # A file of that name that is not ours is kept, and the run refused.
    out.unlink()
    (tmp_path / "mono.png").write_bytes(b"a picture of the user's")
    assert main(["stack", *frames, "--out", str(out), "--maps", str(tmp_path / "maps")]) == 2
    assert capsys.readouterr().err == (
        f"astro-offsets: error: {tmp_path / 'mono.png'}: exists and was not written by "
        "astro-offsets, which replaces only its own files (--overwrite too): move it, or "
        "choose another --out\n"
    )
    assert (tmp_path / "mono.png").read_bytes() == b"a picture of the user's"
    assert not out.exists()


def test_mixed_mono_and_colour(raw_sequence, tmp_path):
    _, frames = raw_sequence
    mono = tmp_path / "mono.fits"
    fits.PrimaryHDU(np.zeros(RAW_SHAPE, np.float32)).writeto(mono)
    OffsetMap(np.zeros(RAW_SHAPE), np.zeros(RAW_SHAPE)).write(tmp_path / "mono.offsets.fits")
    _stack, results = stack_frames([frames[0], str(mono)], reference=frames[0])
    assert results[1].status == "failed"
    assert "a mono frame, but the stack is colour" in results[1].message
    broken = tmp_path / "broken.fits"
    broken.write_text("not FITS")
    OffsetMap(np.zeros(RAW_SHAPE), np.zeros(RAW_SHAPE)).write(tmp_path / "broken.offsets.fits")
    with pytest.raises(ValueError, match="no frame could be stacked"):
        stack_frames([str(broken)])
    with pytest.raises(ValueError, match="the reference frame is not among the frames"):
        stack_frames(frames, reference="other.dng")


def test_stack_before_maps_says_to_make_them(tmp_path, capsys):
    frames = []
    for k in range(3):
        frames.append(str(tmp_path / f"light{k}.fits"))
        fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(frames[-1])
    out = tmp_path / "stack.fits"
    for extra in ([], ["--reference", frames[0]]):
        assert main(["stack", *frames, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"astro-offsets: error: none of the 3 frames has a map beside the frames (such as "
            f"{tmp_path / 'light0.offsets.fits'}): make the maps first: astro-offsets tables "
            "FRAME... --reference FRAME, then astro-offsets maps TABLE... --image FRAME\n"
        )
        assert sorted(os.listdir(tmp_path)) == ["light0.fits", "light1.fits", "light2.fits"]


def test_stack_output_directory(tmp_path, capsys):
    frames = [str(tmp_path / f"light{k}.fits") for k in range(2)]
    for frame in frames:
        fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(frame)
    OffsetMap(np.zeros((20, 30)), np.zeros((20, 30))).write(tmp_path / "light1.offsets.fits")
    # A missing directory is made, as --outdir of tables and maps is.
    out = tmp_path / "new" / "dir" / "stack.fits"
    assert main(["stack", *frames, "--out", str(out)]) == 0
    assert out.exists()
    # One that cannot be made is a usage error, found before any frame is read.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    assert main(["stack", *frames, "--out", str(blocker / "stack.fits")]) == 2
    assert capsys.readouterr().err.startswith(f"astro-offsets: error: {blocker}: ")


def test_maps_made_against_another_reference(tmp_path, capsys):
    # light0 was the reference, then light2: the maps record which (REFFRAME).
    frames = [str(tmp_path / f"light{k}.fits") for k in range(4)]
    for frame in frames:
        fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(frame)

    def write_map(k, reference, shift=0.0):
        omap = OffsetMap(
            np.full((20, 30), shift), np.zeros((20, 30)), meta={"reference": reference}
        )
        omap.write(tmp_path / f"light{k}.offsets.fits", overwrite=True)

    for k in (1, 2, 3):
        write_map(k, "light0.fits", shift=5.0)
    # Without --reference, the frame the maps were made against is found.
    _, results = stack_frames(frames)
    assert [r.map for r in results] == [
        None,
        *(str(tmp_path / f"light{k}.offsets.fits") for k in (1, 2, 3)),
    ]
    # Remade against light2: light2's old map stays beside it, but light2 is
    # now the reference and stacks unmoved.
    for k in (0, 1, 3):
        write_map(k, "light2.fits")
    for argv in ([], ["--reference", frames[2]]):
        assert (
            main(["stack", *frames, "--out", str(tmp_path / "s.fits"), "--overwrite", *argv]) == 0
        )
        with fits.open(tmp_path / "s.fits") as hdul:
            # The reference stacks first: the others are normalised to it.
            assert Table.read(hdul["FRAMES"])["frame"][0] == frames[2]
            assert Table.read(hdul["FRAMES"], mask_invalid=False)["map"][0] == ""
    # One map still made against light0: that frame fails, the others stack.
    write_map(3, "light0.fits")
    status = main(["stack", *frames, "--out", str(tmp_path / "t.fits"), "--reference", frames[2]])
    assert status == 1
    err = capsys.readouterr().err
    assert (
        f"{frames[3]}: its map {tmp_path / 'light3.offsets.fits'} was made against light0.fits, "
        "not against the reference light2.fits: remake its table and map (--overwrite)"
    ) in err
    # Without --reference, two references are named: which one must be said.
    with pytest.raises(
        ValueError, match=r"made against different reference frames \(light0\.fits, light2\.fits\)"
    ):
        stack_frames(frames)


@pytest.mark.slow
def test_stack_command_jobs(raw_sequence, tmp_path, capsys):
    # All cores by default; any number of workers gives the same file.
    _, frames = raw_sequence
    data = {}
    for jobs in ("1", "2", None):
        out = tmp_path / f"stack{jobs}.fits"
        argv = ["stack", *frames, "--out", str(out), "--no-preview", "--context"]
        assert main(argv + (["--jobs", jobs] if jobs else [])) == 0
        with fits.open(out) as hdul:
            data[jobs] = [hdu.data for hdu in hdul[1:]]
    capsys.readouterr()
    for jobs in ("2", None):
        for a, b in zip(data[jobs], data["1"], strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(SystemExit) as exit_info:
        main(["stack", *frames, "--out", str(tmp_path / "s.fits"), "--jobs", "0"])
    assert exit_info.value.code == 2
    assert "0 jobs" in capsys.readouterr().err


def mono_sequence(folder):
    """Three mono FITS frames, the last two with their maps beside them."""
    frames = []
    for k in range(3):
        frames.append(str(folder / f"light{k}.fits"))
        fits.PrimaryHDU(np.full((20, 30), 5.0, np.float32)).writeto(frames[-1])
        if k:
            OffsetMap(np.zeros((20, 30)), np.zeros((20, 30))).write(
                folder / f"light{k}.offsets.fits"
            )
    return frames


def test_stack_names_missing_empty_and_foreign_frames(tmp_path, capsys):
    frames = mono_sequence(tmp_path)
    missing, empty, text = (tmp_path / f"light{k}.fits" for k in (9, 8, 7))
    empty.touch()
    text.write_text("hello")
    pattern = tmp_path / "dark_*.fits"  # the shell passes on a pattern that matched nothing
    argv = [*frames, missing, empty, text, pattern]
    out = tmp_path / "stack.fits"
    expected = [
        f"astro-offsets: error: {missing}: no such file",
        f"astro-offsets: error: {empty}: empty file (0 bytes)",
        f"astro-offsets: error: {text}: not a readable FITS file (",
        f"astro-offsets: error: {pattern}: no file matches this pattern",
    ]

    def errors():
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if "error:" in line]
        assert len(lines) == len(expected)
        for line, start in zip(lines, expected, strict=True):
            assert line == start or (start.endswith("(") and line.startswith(start)), line
        return captured.out.splitlines()[-1]

    # Named as such, not as frames without a map, with or without --reference.
    outputs = [out, tmp_path / "stack.frames.ecsv", tmp_path / "stack.frames.png"]
    for reference in ([], ["--reference", frames[0]]):
        for path in outputs:
            path.unlink(missing_ok=True)
        assert main(["stack", *map(str, argv), "--out", str(out), "--no-preview", *reference]) == 1
        assert errors().startswith("stack: 3 stacked, 4 failed (")
    # An existing output is kept, but the bad inputs still fail the run.
    before = out.read_bytes()
    assert main(["stack", *map(str, argv), "--out", str(out), "--no-preview"]) == 1
    assert errors() == (
        f"stack: kept {out}, {outputs[1]} and {outputs[2]} (use --overwrite to replace them); "
        "nothing stacked"
    )
    assert out.read_bytes() == before
    assert main(["stack", *frames, "--out", str(out), "--no-preview"]) == 0
    # A reference that is not there: exit 2, whatever outputs exist.
    gone = str(tmp_path / "light5.fits")
    assert main(["stack", *frames, "--out", str(out), "--no-preview", "--reference", gone]) == 2
    assert capsys.readouterr().err == (
        f"astro-offsets: error: --reference {gone}: no such file or folder\n"
    )
    assert main(["stack", *frames, gone, "--out", str(out), "--reference", gone]) == 2
    assert capsys.readouterr().err == (
        f"astro-offsets: error: --reference {gone}: no such file or folder\n"
    )
    # One that is there but not among the frames.
    other = tmp_path / "other.fits"
    other.write_bytes(pathlib.Path(frames[0]).read_bytes())
    assert main(["stack", *frames, "--out", str(out), "--reference", str(other)]) == 2
    assert capsys.readouterr().err == (
        f"astro-offsets: error: {other}: the reference frame is not among the frames\n"
    )
    assert out.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_stack_names_an_unreadable_frame(tmp_path, capsys):
    frames = mono_sequence(tmp_path)
    os.chmod(frames[2], 0)
    assert main(["stack", *frames, "--out", str(tmp_path / "s.fits"), "--no-preview"]) == 1
    assert f"error: {frames[2]}: not readable (permission denied)" in capsys.readouterr().err


def test_a_pattern_that_matched_nothing(tmp_path, capsys):
    frames = mono_sequence(tmp_path)
    for argv in (
        ["stack", "light_*.fits", "--out", str(tmp_path / "s.fits")],
        ["maps", "light_*.offsets_table.fits", "--shape", "20", "30", "--outdir", str(tmp_path)],
    ):
        assert main(argv) == 1
        assert capsys.readouterr().err.splitlines()[0] == (
            f"astro-offsets: error: {argv[1]}: no file matches this pattern"
        )
    # One frame without its map: said so (it said "the frame has a map").
    assert main(["stack", frames[0], "--out", str(tmp_path / "s.fits")]) == 2
    assert capsys.readouterr().err.startswith(
        "astro-offsets: error: the frame has no map beside the frames (such as "
    )


def test_the_reference_alone_writes_no_stack(tmp_path, capsys):
    # Every other frame fails (maps of another size): no one-frame "stack",
    # which the corrected rerun would keep, and no checkpoint left behind.
    frames = mono_sequence(tmp_path)
    for k in (1, 2):
        OffsetMap(np.zeros((10, 30)), np.zeros((10, 30))).write(
            tmp_path / f"light{k}.offsets.fits", overwrite=True
        )
    out = tmp_path / "stack.fits"
    assert main(["stack", *frames, "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "astro-offsets: error: only the reference of the 3 frames could be stacked: "
        "no stack written"
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("stack")) == []
    # The maps remade, the rerun stacks.
    for k in (1, 2):
        OffsetMap(np.zeros((20, 30)), np.zeros((20, 30))).write(
            tmp_path / f"light{k}.offsets.fits", overwrite=True
        )
    assert main(["stack", *frames, "--out", str(out)]) == 0
    assert out.exists()
