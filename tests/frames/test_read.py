"""Frame sizes and pixels from real DNG and FITS files."""

import bz2
import gzip
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from mosaics import expected_colors, mosaic

from astro_offsets.datasets import write_dng
from astro_offsets.frames import frame_header, frame_shape, read_frame, row_order


def write_fits(path, hdus):
    fits.HDUList(hdus).writeto(path)
    return path


# --- frame_shape and read_frame on raw files ----------------------------------


@pytest.mark.parametrize(("cfa", "shape"), [("RGGB", (64, 96)), ("GRBG", (63, 97))])
def test_raw_frame(tmp_path, cfa, shape):
    path = tmp_path / "frame.dng"
    values = mosaic(shape)
    write_dng(path, values, cfa=cfa)
    assert frame_shape(path) == shape
    assert frame_shape(str(path)) == shape
    frame = read_frame(path)
    assert frame.data.dtype == np.float32
    assert frame.colors.dtype == np.uint8
    np.testing.assert_array_equal(frame.data, values - 512.0)
    np.testing.assert_array_equal(frame.colors, expected_colors(cfa, shape))
    assert frame.exptime is None


def test_raw_frame_black_level_and_exposure(tmp_path):
    path = tmp_path / "frame.dng"
    values = np.full((30, 40), 1000, dtype=np.uint16)
    write_dng(path, values, black_level=200, exptime=30.0)
    frame = read_frame(path)
    assert np.all(frame.data == 800.0)
    assert frame.exptime == 30.0


@pytest.mark.parametrize(
    ("card", "value", "expected"),
    [
        ("EXPTIME", 120.0, 120.0),
        ("EXPOSURE", 60, 60.0),
        ("EXPTIME", 0.0, None),
        ("OBJECT", "M31", None),
    ],
)
def test_fits_frame_exposure(tmp_path, card, value, expected):
    path = tmp_path / "frame.fits"
    hdu = fits.PrimaryHDU(np.zeros((4, 5), np.float32))
    hdu.header[card] = value
    hdu.writeto(path)
    assert read_frame(path).exptime == expected


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
@pytest.mark.parametrize("name", ["x.ARW", "x.fits"])
def test_missing_file(tmp_path, reader, name):
    with pytest.raises(FileNotFoundError, match=f"{name}: no such file"):
        reader(tmp_path / name)


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
def test_directory(tmp_path, reader):
    with pytest.raises(ValueError, match="is a directory, not a frame file"):
        reader(tmp_path)


# LibRaw calls a short file an I/O error and a longer one an unsupported format.
@pytest.mark.parametrize("reader", [frame_shape, read_frame])
@pytest.mark.parametrize(
    ("lines", "error"), [(1, "LibRawIOError"), (1000, "LibRawFileUnsupportedError")]
)
def test_text_file_is_not_raw(tmp_path, reader, lines, error):
    path = tmp_path / "x.ARW"
    path.write_text("not a raw file\n" * lines)
    with pytest.raises(ValueError, match=rf"x\.ARW: not a readable raw file \(LibRaw: {error}: "):
        reader(path)


# Cut in the header LibRaw fails on opening; cut in the pixels, on decoding.
@pytest.mark.parametrize("reader", [frame_shape, read_frame])
@pytest.mark.parametrize("keep", [0.01, 0.5, 0.99])
def test_truncated_dng(tmp_path, reader, keep):
    path = tmp_path / "frame.dng"
    write_dng(path, mosaic())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"frame\.dng: not a readable raw file \(LibRaw: "):
        reader(path)


# --- frame_shape and read_frame on FITS files ---------------------------------


def test_fits_primary_image(tmp_path):
    data = np.random.default_rng(0).normal(size=(64, 96)).astype(np.float32)
    path = write_fits(tmp_path / "frame.fits", [fits.PrimaryHDU(data)])
    assert frame_shape(path) == (64, 96)
    frame = read_frame(path)
    assert frame.colors is None
    assert frame.data.dtype == np.float32
    np.testing.assert_array_equal(frame.data, data)


def test_fits_scaled_integers(tmp_path):
    data = mosaic(bits=16)
    path = tmp_path / "frame.fit"
    fits.PrimaryHDU(data).writeto(path)  # stored as int16 with BZERO = 32768
    assert fits.getheader(path)["BZERO"] == 32768
    np.testing.assert_array_equal(read_frame(path).data, data.astype(np.float32))


def test_fits_image_in_extension(tmp_path):
    data = np.arange(64 * 96, dtype=np.int32).reshape(64, 96)
    path = write_fits(tmp_path / "frame.FTS", [fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")])
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_skips_hdus_without_a_2d_image(tmp_path):
    table = fits.BinTableHDU(Table({"x": [1.0, 2.0]}), name="STARS")
    data = np.ones((64, 96), np.float32)
    hdus = [fits.PrimaryHDU(np.ones(5)), table, fits.ImageHDU(data, name="SCI")]
    path = write_fits(tmp_path / "frame.fits", hdus)
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_colour_cube(tmp_path):
    cube = np.stack([np.full((64, 96), value, np.uint16) for value in (10, 20, 60)])
    path = write_fits(tmp_path / "frame.fits", [fits.PrimaryHDU(cube)])
    assert frame_shape(path) == (64, 96)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, cube.astype(np.float32))
    assert frame.colors is None
    np.testing.assert_array_equal(frame.luminance, np.full((64, 96), 30, np.float32))


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
def test_fits_without_image(tmp_path, reader):
    table = fits.BinTableHDU(Table({"x": [1.0, 2.0]}), name="STARS")
    path = write_fits(tmp_path / "stars.fits", [fits.PrimaryHDU(), table])
    found = "HDU 0 PrimaryHDU 'PRIMARY' shape (), HDU 1 BinTableHDU 'STARS'"
    with pytest.raises(ValueError, match=re.escape(f"no 2-D image in any HDU (found: {found})")):
        reader(path)


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".fits.gz", gzip.compress), (".FIT.BZ2", bz2.compress)]
)
def test_fits_compressed_file(tmp_path, suffix, compress):
    data = np.random.default_rng(0).normal(size=(64, 96)).astype(np.float32)
    plain = write_fits(tmp_path / "plain.fits", [fits.PrimaryHDU(data)])
    path = tmp_path / f"frame{suffix}"
    path.write_bytes(compress(plain.read_bytes()))
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_tile_compressed(tmp_path):
    data = np.arange(64 * 96, dtype=np.int16).reshape(64, 96)
    path = write_fits(tmp_path / "frame.fz", [fits.PrimaryHDU(), fits.CompImageHDU(data)])
    assert frame_shape(path) == (64, 96)
    np.testing.assert_array_equal(read_frame(path).data, data)


def test_fits_shape_reads_only_the_header(tmp_path):
    path = write_fits(tmp_path / "frame.fits", [fits.PrimaryHDU(np.ones((64, 96)))])
    path.write_bytes(path.read_bytes()[: 2 * 2880])
    with pytest.warns(AstropyUserWarning, match="truncated"):
        assert frame_shape(path) == (64, 96)
    with (
        pytest.warns(AstropyUserWarning, match="truncated"),
        pytest.raises(ValueError, match=r"frame\.fits: not a readable FITS file \("),
    ):
        read_frame(path)


@pytest.mark.parametrize("reader", [frame_shape, read_frame])
def test_corrupt_fits(tmp_path, reader):
    path = tmp_path / "frame.fits"
    path.write_text("not a FITS file\n" * 200)
    with pytest.raises(ValueError, match=r"frame\.fits: not a readable FITS file \(.*SIMPLE"):
        reader(path)


def damaged(path, kind):
    """Write at ``path`` a FITS file of one ``kind`` of damage astropy raises other than OSError."""
    if kind in ("rice", "tile"):  # tile-compressed pixels overwritten: they do not decompress
        dtype, where = (np.int16, -4880) if kind == "rice" else (np.float32, None)
        data = np.arange(64 * 96, dtype=dtype).reshape(64, 96)
        write_fits(path, [fits.PrimaryHDU(), fits.CompImageHDU(data)])
        whole = bytearray(path.read_bytes())
        start = len(whole) // 2 if where is None else len(whole) + where
        whole[start : start + 1024] = bytes(range(256)) * 4
        path.write_bytes(bytes(whole))
        return
    data = np.arange(64 * 96, dtype=np.float32).reshape(64, 96)
    write_fits(path, [fits.PrimaryHDU(data, fits.Header({"EXPTIME": 30.0}))])
    whole = path.read_bytes()
    if kind == "gzip":  # a corrupt gzip stream: zlib.error
        path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8)
    elif kind == "bitpix":  # BITPIX of no data type: KeyError
        path.write_bytes(
            whole.replace(b"BITPIX  =                  -32", b"BITPIX  =  -33".ljust(30))
        )
    elif kind == "card":  # a card that does not parse, once read: VerifyError
        path.write_bytes(
            whole.replace(b"EXPTIME =                 30.0", b"EXPTIME =  30.0.0".ljust(30))
        )


# Each escaped as itself (KeyError, VerifyError, ...), not as a file that cannot be read.
@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("frame.fits.gz", "gzip", "Error -3 while decompressing data"),
        ("frame.fits", "bitpix", "KeyError: -33"),
        ("frame.fits", "card", r"Unparsable card \(EXPTIME\)"),
        ("frame.fits.fz", "rice", "decompression error"),
        ("frame.fits.fz", "tile", "Compressed file ended"),
    ],
)
def test_damaged_fits(tmp_path, name, kind, reason):
    path = tmp_path / name
    damaged(path, kind)
    with pytest.raises(ValueError, match=rf"frame\.fits.*: not a readable FITS file \({reason}"):
        read_frame(path)


def test_a_header_larger_than_memory_fails_its_file(tmp_path):
    # A corrupt NAXISn: decompressing the image raises MemoryError, which is
    # the file's problem (it declares more than the machine has), not the run's.
    header = fits.PrimaryHDU(np.zeros((10, 10), np.int32)).header
    header["NAXIS1"] = header["NAXIS2"] = 400_000
    path = tmp_path / "big.fits.gz"
    path.write_bytes(gzip.compress(header.tostring().encode() + bytes(2880)))
    with pytest.raises(
        ValueError,
        match=r"^\S*big\.fits\.gz: its header declares an image of "
        r"400000 x 400000 pixels \(640 GB\), more than this machine's memory",
    ):
        read_frame(path)


def test_libraw_out_of_memory_is_out_of_memory(tmp_path, monkeypatch):
    import rawpy

    def imread(path):
        raise rawpy.LibRawUnsufficientMemoryError(b"Unsufficient memory")

    path = tmp_path / "frame.dng"
    write_dng(path, mosaic())
    monkeypatch.setattr(rawpy, "imread", imread)
    with pytest.raises(MemoryError, match=r"frame\.dng: LibRaw could not allocate"):
        read_frame(path)


# --- frame_header and row_order -------------------------------------------------


def test_frame_header_of_the_image_read(tmp_path):
    # The header of the HDU read_frame reads: here the first extension, tile-compressed.
    data = np.ones((8, 10), np.float32)
    path = write_fits(
        tmp_path / "light.fits.fz",
        [fits.PrimaryHDU(), fits.CompImageHDU(data, fits.Header({"OBJECT": "M 31"}))],
    )
    header = frame_header(path)
    assert header["OBJECT"] == "M 31"
    assert (header["NAXIS2"], header["NAXIS1"]) == frame_shape(path)
    assert row_order(header) == "BOTTOM-UP"


def test_frame_header_of_a_raw_file_is_none(tmp_path):
    path = tmp_path / "frame.dng"
    write_dng(path, mosaic((32, 40)))
    assert frame_header(path) is None
    assert row_order(None) == "TOP-DOWN"


@pytest.mark.parametrize(
    ("card", "expected"),
    [("TOP-DOWN", "TOP-DOWN"), ("bottom-up ", "BOTTOM-UP"), ("SIDEWAYS", "BOTTOM-UP")],
)
def test_row_order_of_fits(card, expected):
    assert row_order(fits.Header({"ROWORDER": card})) == expected


def test_frame_header_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        frame_header(tmp_path / "missing.fits")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a FITS file")
    with pytest.raises(ValueError, match=r"bad.fits: not a readable FITS file"):
        frame_header(bad)
