"""Tile-compressed maps: the error bound, the size, and what reads them."""

import numpy as np
import pytest
from astropy.io import fits

from astro_offsets import OffsetMap
from astro_offsets.datasets import CameraMotion, observe, star_field

BOUND = 0.001  # px, at every pixel


def camera_map(shape, rotation_deg, drift=(8.0, -5.0), flip=False):
    """Return the map of a turned (or flipped), drifting frame through a distorting lens."""
    ny, nx = shape
    motion = CameraMotion(
        shape,
        drift=drift,
        rotation_deg=rotation_deg,
        pole=(-0.3 * nx, 2.4 * ny),
        barrel=1e-8 * (4000 / nx) ** 2,
        mustache=1.5e-15 * (4000 / nx) ** 4,
    )
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    fx, fy = motion.to_frame(x.ravel(), y.ravel())
    fx, fy = fx.reshape(shape), fy.reshape(shape)
    if flip:
        fx, fy = nx - 1 - fx, ny - 1 - fy
    return OffsetMap(fx - x, fy - y)


def sizes(omap, tmp_path):
    plain, packed = tmp_path / "plain.fits", tmp_path / "packed.fits"
    omap.write(plain, compress=False)
    omap.write(packed)
    return plain.stat().st_size, packed.stat().st_size


def largest_error(omap, path):
    back = OffsetMap.read(path)
    return max(
        np.nanmax(np.abs(back.x_offset.astype(np.float64) - omap.x_offset)),
        np.nanmax(np.abs(back.y_offset.astype(np.float64) - omap.y_offset)),
    )


@pytest.mark.parametrize(
    ("rotation", "flip"),
    [(0.2, False), (3.0, False), (0.5, True)],
    ids=["turned", "steep ramp", "meridian flip"],
)
def test_error_at_most_a_thousandth_of_a_pixel_everywhere(tmp_path, rotation, flip):
    omap = camera_map((301, 450), rotation, flip=flip)  # a last tile of 13 rows
    # Values in every binary range up to 2**14 px: the bound is not a
    # property of small offsets.
    omap.x_offset[0, :15] = 2.0 ** np.arange(15) - 1e-3 * np.pi
    path = tmp_path / "map.offsets.fits"
    omap.write(path)
    with fits.open(path) as hdul:
        assert hdul[0].header["MAXERR"] <= BOUND
        assert hdul[0].header["QSTEP"] == 2 * hdul[0].header["MAXERR"]
        error = largest_error(omap, path)
        assert error <= hdul[0].header["MAXERR"]
    assert error > 0.9 * 2**-10  # quantised indeed: the bound is reached, not beaten


@pytest.mark.parametrize(
    ("rotation", "flip", "kinds"),
    [
        (0.2, False, "RICE_1"),
        (3.0, False, "RICE_1, HCOMPRESS_1"),
        (0.5, True, "HCOMPRESS_1, RICE_1"),
    ],
    ids=["turned", "steep ramp", "meridian flip"],
)
def test_five_times_smaller_on_a_smooth_map(tmp_path, rotation, flip, kinds):
    # The benchmark's motion at 2.7 Mpix: a drift, a field rotation, a
    # wide-angle lens' distortion (18 px in the corners). Turned by 3
    # degrees, the Y offsets change by 0.05 px a pixel along the rows;
    # flipped, the X offsets by 2 px: Rice coding alone gave 4.4 and 3.7.
    omap = camera_map((1350, 2000), rotation, drift=(28.0, -17.5), flip=flip)
    plain, packed = sizes(omap, tmp_path)
    assert plain / packed >= 5
    assert fits.getheader(tmp_path / "packed.fits")["COMPRESS"] == kinds


def test_astropy_reads_float32_images_of_our_names(tmp_path):
    omap = camera_map((40, 60), 0.2)
    path = tmp_path / "map.offsets.fits"
    omap.write(path)
    with fits.open(path) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "XOFFSET", "YOFFSET"]
        for name, band in (("XOFFSET", "X offsets"), ("YOFFSET", "Y offsets")):
            hdu = hdul[name]
            assert isinstance(hdu, fits.CompImageHDU)
            assert hdu.header["BAND"] == band
            assert hdu.header["BUNIT"] == "pixel"
            assert hdu.data.dtype == np.float32
            assert hdu.data.shape == (40, 60)
        np.testing.assert_allclose(hdul["YOFFSET"].data, omap.y_offset, rtol=0, atol=2**-10)
    # No dither (no ZQUANTIZ card): the values restored are multiples of
    # the step (ZVAL3 = -step), exactly.
    with fits.open(path, disable_image_compression=True) as hdul:
        kinds = []
        for name in ("XOFFSET", "YOFFSET"):
            header = hdul[name].header
            assert header.get("ZQUANTIZ", "NO_DITHER") == "NO_DITHER"
            assert header["ZCMPTYPE"] in ("RICE_1", "HCOMPRESS_1")
            quantised = {header[f"ZNAME{i}"]: header[f"ZVAL{i}"] for i in range(1, 4)}
            assert quantised["NOISEBIT"] == -(2**-9)
            assert quantised.get("SCALE", 0) == 0  # HCOMPRESS_1 without loss
            kinds.append(header["ZCMPTYPE"])
        assert hdul[0].header["COMPRESS"] == ", ".join(dict.fromkeys(kinds))


def test_read_both_forms_into_arrays_of_the_caller(tmp_path):
    omap = camera_map((40, 60), 0.2)
    out = (np.full(omap.shape, np.nan, np.float32), np.full(omap.shape, np.nan, np.float32))
    for compress in (True, False):
        path = tmp_path / f"{compress}.offsets.fits"
        omap.write(path, compress=compress)
        alone = OffsetMap.read(path)
        into = OffsetMap.read(path, out=out)
        assert into.x_offset is out[0]
        assert into.y_offset is out[1]
        for back in (alone, into):
            assert back.x_offset.dtype == np.float32
            assert back.x_offset.dtype.isnative
            np.testing.assert_allclose(
                back.y_offset, omap.y_offset, rtol=0, atol=2**-10 if compress else 0
            )
        np.testing.assert_array_equal(alone.x_offset, into.x_offset)
    with pytest.raises(ValueError, match=r"True\.offsets\.fits: out must be two separate"):
        OffsetMap.read(tmp_path / "True.offsets.fits", out=(out[0], out[0]))


def test_no_compress_writes_plain_float32_images(tmp_path):
    omap = camera_map((40, 60), 0.2)
    path = tmp_path / "map.offsets.fits"
    omap.write(path, compress=False)
    with fits.open(path) as hdul:
        assert [type(hdu) for hdu in hdul] == [fits.PrimaryHDU, fits.ImageHDU, fits.ImageHDU]
        assert hdul["XOFFSET"].data.dtype == np.dtype(">f4")
        assert "QSTEP" not in hdul[0].header
    np.testing.assert_array_equal(OffsetMap.read(path).x_offset, omap.x_offset)


@pytest.mark.parametrize("flip", [False, True], ids=["rice", "hcompress"])
def test_nan_pixels_stay_nan(tmp_path, flip):
    omap = camera_map((40, 60), 0.2, flip=flip)
    omap.x_offset[3, 5] = np.nan
    omap.x_offset[20:, :] = np.nan  # whole tiles
    omap.y_offset[0, 0] = np.nan
    path = tmp_path / "map.offsets.fits"
    omap.write(path)
    with fits.open(path) as hdul:
        assert isinstance(hdul["XOFFSET"], fits.CompImageHDU)
        assert np.isnan(hdul["XOFFSET"].data[3, 5])
    back = OffsetMap.read(path)
    np.testing.assert_array_equal(np.isnan(back.x_offset), np.isnan(omap.x_offset))
    np.testing.assert_array_equal(np.isnan(back.y_offset), np.isnan(omap.y_offset))
    assert largest_error(omap, path) <= 2**-10


def test_same_map_same_bytes(tmp_path):
    omap = camera_map((40, 60), 0.2)
    maps = []
    for name in ("a", "b"):
        omap.write(tmp_path / name)
        with fits.open(tmp_path / name) as hdul:
            assert isinstance(hdul[1], fits.CompImageHDU)
            start = hdul[1].fileinfo()["hdrLoc"]  # past the primary header and its DATE
        maps.append((tmp_path / name).read_bytes()[start:])
    assert maps[0] == maps[1]


def test_beyond_what_float32_holds_to_the_step_plain(tmp_path):
    omap = camera_map((40, 60), 0.2)
    omap.x_offset[0, 0] = 40000.0  # float32 spacing there: 0.004 px
    path = tmp_path / "map.offsets.fits"
    omap.write(path)
    with fits.open(path) as hdul:
        assert type(hdul["XOFFSET"]) is fits.ImageHDU
        assert "MAXERR" not in hdul[0].header
    np.testing.assert_array_equal(OffsetMap.read(path).x_offset, omap.x_offset)


def test_drizzled_through_a_compressed_map_within_what_its_error_moves(tmp_path):
    # A frame of stars drizzled with its map, plain and read back compressed:
    # each pixel moves by at most 0.001 px, so the image differs by about
    # that times its slope, as it would with the map moved by that much.
    from drizzle.resample import Drizzle

    shape = (240, 360)
    rng = np.random.default_rng(5)
    image = observe(rng, shape, *star_field(rng, 60, shape), sigma=1.6).astype(np.float32)
    omap = camera_map(shape, 0.2)
    path = tmp_path / "map.offsets.fits"
    omap.write(path)
    with fits.open(path) as hdul:
        assert isinstance(hdul["XOFFSET"], fits.CompImageHDU)
    step = np.float32(2**-10)
    moved = OffsetMap(omap.x_offset + step, omap.y_offset - step)

    def drizzled(m):
        driz = Drizzle(kernel="square", out_shape=shape)
        driz.add_image(image, exptime=1.0, pixmap=m.pixmap(), pixfrac=1.0)
        return driz.out_img.astype(np.float64), driz.out_wht

    plain, weight = drizzled(omap)
    covered = weight > 0.99
    slope_y, slope_x = np.gradient(np.where(covered, plain, 0.0))
    bound = 0.001 * (np.abs(slope_x) + np.abs(slope_y))[covered]
    differences = {}
    for name, other in (("compressed", OffsetMap.read(path)), ("moved", moved)):
        differences[name] = np.abs(drizzled(other)[0] - plain)[covered]
    ratio = differences["compressed"] / np.maximum(bound, 1e-12)
    assert np.median(ratio) < 1
    assert np.percentile(ratio, 99) < 5
    for q in (50, 99, 100):
        assert np.percentile(differences["compressed"], q) <= np.percentile(differences["moved"], q)


def test_quantised_is_the_file_bit_for_bit(tmp_path):
    # The rounding is ours (ties to even), not CFITSIO's, whose ties depend
    # on each tile's zero point: a map in memory is then its file's.
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:200, 0:300].astype(np.float64)
    dx = (x * (np.cos(0.05) - 1) - y * np.sin(0.05) + 12.3).astype(np.float32)
    dy = (-7.1 + 2e-4 * y + rng.normal(0, 1e-5, y.shape)).astype(np.float32)
    dx[10, 10:20] = np.arange(10) / 512 + 1 / 1024  # ties, both signs
    dx[11, 10:20] = -np.arange(10) / 512 - 1 / 1024
    dx[50:70] = np.nan
    omap = OffsetMap(dx, dy)
    path = tmp_path / "m.offsets.fits"
    omap.write(path)
    read, rounded = OffsetMap.read(path), omap.quantised()
    np.testing.assert_array_equal(read.x_offset, rounded.x_offset)
    np.testing.assert_array_equal(read.y_offset, rounded.y_offset)
    assert np.array_equal(omap.x_offset, dx, equal_nan=True)  # a copy
    assert np.nanmax(np.abs(rounded.x_offset - dx)) <= 2**-10
    assert omap.quantised(copy=False) is omap
    np.testing.assert_array_equal(omap.x_offset, rounded.x_offset)
    # Offsets too large to be quantised exactly: written plain, left as they are.
    big = OffsetMap(np.full((8, 8), 40000.3), np.zeros((8, 8)))
    assert big.quantised() is big
