"""One list of FITS suffixes: the reader of frames, the product kinds and the stems agree."""

import bz2

import numpy as np
import pytest
from astropy.io import fits

from astro_offsets import read_frame
from astro_offsets._utils.naming import FITS_SUFFIXES, fits_root, stem
from astro_offsets._utils.provenance import not_an_input, product_kind

DATA = np.arange(6 * 8, dtype=np.int16).reshape(6, 8)


def _tile_compressed(path):
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(DATA)]).writeto(path)


def _bzip2(path):
    plain = path.with_name("plain.fits")
    fits.PrimaryHDU(DATA).writeto(plain)
    path.write_bytes(bz2.compress(plain.read_bytes()))
    plain.unlink()


@pytest.mark.parametrize(
    ("suffix", "write"),
    [(".fits.fz", _tile_compressed), (".fit.bz2", _bzip2), (".FTS.FZ", _tile_compressed)],
)
def test_every_user_of_the_list_knows_a_fits_name(tmp_path, suffix, write):
    frame = tmp_path / f"x{suffix}"
    write(frame)
    # Read as a FITS frame, not handed to rawpy.
    np.testing.assert_array_equal(read_frame(frame).data, DATA)
    assert stem(frame) == "x"
    assert fits_root(frame) == str(tmp_path / "x")
    # A user's image: no product of ours, a frame where star tables are wanted.
    assert product_kind(frame) is None
    assert not_an_input(str(frame), "frame") is None
    assert (
        not_an_input(str(frame), "star table")
        == f"{frame}: a FITS image (a frame?), not a star table"
    )
    # Our products under the same suffix, by their names.
    assert product_kind(f"x.offsets{suffix}") == "offset map"
    assert product_kind(f"x.offsets_table{suffix}") == "star table"
    assert stem(f"x.offsets_table_clean{suffix}") == "x"


def test_the_suffixes():
    for base in (".fits", ".fit", ".fts"):
        for packing in ("", ".gz", ".bz2", ".fz"):
            assert base + packing in FITS_SUFFIXES
    assert fits_root("DSC01.ARW") is None
    assert fits_root("frame.fz") == "frame"


@pytest.mark.parametrize("suffix", [".fits", ".fits.gz", ".FIT", ".fts.bz2", ".fits.fz"])
def test_the_files_of_a_product_are_named_from_its_root(suffix):
    from astro_offsets._utils.naming import checkpoint_path, png_path, sip_path, weights_path
    from astro_offsets.stack._report import report_paths

    assert png_path(f"out/stack{suffix}") == "out/stack.png"
    assert checkpoint_path(f"out/stack{suffix}") == "out/stack.checkpoint"
    assert weights_path(f"out/stack{suffix}") == "out/stack.weights.fits"
    assert report_paths(f"out/stack{suffix}")[0] == "out/stack.frames.ecsv"
    assert sip_path(f"maps/DSC01.offsets{suffix}") == "maps/DSC01.sip.fits"
