"""OffsetMap: pixmap, FITS files (ours and the original notebook's), atomic writes."""

import os

import numpy as np
import pytest
from astropy.io import fits

import astro_offsets
from astro_offsets import OffsetMap, OffsetModel


@pytest.fixture
def omap():
    rng = np.random.default_rng(7)
    model = OffsetModel(
        rng.uniform(0, 60, 20),
        rng.uniform(0, 40, 20),
        rng.normal(0, 2, 20),
        rng.normal(0, 2, 20),
        source="DSC01.offsets_table.fits",
    )
    return model.to_map((40, 60))


def test_pixmap_follows_sign_convention(omap):
    pixmap = omap.pixmap()
    assert pixmap.shape == (40, 60, 2)
    assert pixmap.dtype == np.float64
    j, i = 13, 52
    assert pixmap[j, i, 0] == i - np.float64(omap.x_offset[j, i])
    assert pixmap[j, i, 1] == j - np.float64(omap.y_offset[j, i])


def test_constructor_validation():
    with pytest.raises(ValueError, match=r"x_offset must be 2-D \(ny, nx\), got shape \(3,\)"):
        OffsetMap(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"differ in shape: \(3, 4\) and \(4, 3\)"):
        OffsetMap(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="y_offset must be a real numeric array, got dtype <U1"):
        OffsetMap(np.zeros((3, 4)), np.full((3, 4), "a"))
    omap = OffsetMap(np.zeros((3, 4), dtype=np.float64), np.zeros((3, 4), dtype=int))
    assert omap.x_offset.dtype == omap.y_offset.dtype == np.float32


@pytest.mark.parametrize(
    ("x_offset", "message"),
    [
        (np.zeros((0, 4)), r"x_offset must not be empty, got shape \(0, 4\)"),
        (
            np.zeros((3, 4), dtype=complex),
            "x_offset must be a real numeric array, got dtype complex",
        ),
        (np.zeros((3, 4), dtype=bool), "must be a real numeric array, got dtype bool"),
        (np.zeros((3, 4), dtype=object), "must be a real numeric array, got dtype object"),
        (np.full((3, 4), np.inf), "x_offset has infinite values"),
        (np.full((3, 4), 1e300), "values beyond float32's range"),
        (np.float32(1.0), r"x_offset must be 2-D \(ny, nx\), got shape \(\)"),
    ],
)
def test_bad_maps(x_offset, message):
    with pytest.raises(ValueError, match=message):
        OffsetMap(x_offset, np.zeros((3, 4)))


def test_nan_holes_are_kept_but_not_put_in_a_wcs():
    x_offset = np.zeros((3, 4))
    x_offset[1, 2] = np.nan
    omap = OffsetMap(x_offset, np.zeros((3, 4)))
    assert np.isnan(omap.pixmap()[1, 2, 0])
    with pytest.raises(ValueError, match="x_offset contains NaN; fill it first"):
        omap.to_wcs()


def test_write_read_round_trip_with_provenance(tmp_path, omap):
    path = tmp_path / "DSC01.offsets.fits"
    omap.write(path, compress=False)
    with fits.open(path) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "XOFFSET", "YOFFSET"]
        header = hdul[0].header
        assert header["CREATOR"] == f"astro_offsets {astro_offsets.__version__}"
        assert header["SRCTABLE"] == "DSC01.offsets_table.fits"
        assert header["NSTARS"] == 20
        assert header["METHOD"] == "quadrant"
        assert header["PRODUCT"] == "offset map"
        assert (header["PARNAME"], header["PARVALUE"]) == ("power", 1.0)
        assert (header["MAPNY"], header["MAPNX"]) == (40, 60)
        comments = [str(line) for line in header["COMMENT"]]
        assert "XOFFSET, YOFFSET: position in this frame minus position in the" in comments
        assert all(len(line) <= 72 for line in comments)
        assert len(header["DATE"]) == 19
        assert hdul["XOFFSET"].header["BAND"] == "X offsets"
        assert hdul["YOFFSET"].header["BAND"] == "Y offsets"
        assert hdul["XOFFSET"].data.dtype == np.dtype(">f4")
    back = OffsetMap.read(path)
    np.testing.assert_array_equal(back.x_offset, omap.x_offset)
    np.testing.assert_array_equal(back.y_offset, omap.y_offset)
    assert back.meta["source"] == "DSC01.offsets_table.fits"
    assert back.meta["n_stars"] == 20


def test_existing_file_is_kept(tmp_path, omap):
    path = tmp_path / "DSC01.offsets.fits"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        omap.write(path)
    assert path.read_bytes() == b"precious"
    omap.write(path, overwrite=True, compress=False)
    np.testing.assert_array_equal(OffsetMap.read(path).x_offset, omap.x_offset)
    assert os.listdir(tmp_path) == ["DSC01.offsets.fits"]


def test_failed_write_leaves_nothing(tmp_path, omap, monkeypatch):
    path = tmp_path / "DSC01.offsets.fits"
    path.write_bytes(b"precious")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", fail)
    with pytest.raises(OSError, match="disk full"):
        omap.write(path, overwrite=True)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["DSC01.offsets.fits"]


def test_write_into_missing_directory(tmp_path, omap):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        omap.write(tmp_path / "nowhere" / "a.offsets.fits")


def write_seed_file(path, x_map, y_map, dtype=np.float32):
    # The original notebook's layout: empty primary with DATE and PATH cards, then
    # two unnamed image extensions, X then Y, with BAND cards.
    primary = fits.PrimaryHDU()
    primary.header["DATE"] = "2023-03-02"
    primary.header["PATH"] = "../data/light/DSC03770.offsets_table.fits"
    hx = fits.ImageHDU(x_map.astype(dtype))
    hx.header["BAND"] = "X offsets"
    hy = fits.ImageHDU(y_map.astype(dtype))
    hy.header["BAND"] = "Y offsets"
    fits.HDUList([primary, hx, hy]).writeto(path)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_seed_layout(tmp_path, dtype):
    rng = np.random.default_rng(3)
    x_map = rng.normal(size=(6, 9))
    y_map = rng.normal(size=(6, 9))
    path = tmp_path / "DSC03770.offsets.fits"
    write_seed_file(path, x_map, y_map, dtype)
    omap = OffsetMap.read(path)
    np.testing.assert_array_equal(omap.x_offset, x_map.astype(np.float32))
    np.testing.assert_array_equal(omap.y_offset, y_map.astype(np.float32))
    assert omap.meta["source"] == "../data/light/DSC03770.offsets_table.fits"


@pytest.mark.parametrize(
    ("cards", "expected"),
    [
        ({"METHOD": "quadrant", "POWER": 2.0, "NREJECT": 3}, ("power", 2.0, 3)),
        ({"METHOD": "polynomial", "DEGREE": 4, "NREJECT": 0}, ("degree", 4, 0)),
        ({"METHOD": "thin-plate", "SMOOTH": 0.01, "NREJECT": 1}, ("smoothing", 0.01, 1)),
    ],
)
def test_read_maps_of_earlier_versions(tmp_path, cards, expected):
    # Maps written before the parameter became PARNAME/PARVALUE and the
    # dropped rows NDROPPED.
    primary = fits.PrimaryHDU()
    primary.header["CREATOR"] = "astro_offsets 0.1.0.dev1"
    primary.header.update(cards)
    images = [fits.ImageHDU(np.zeros((3, 4), np.float32), name=n) for n in ("XOFFSET", "YOFFSET")]
    fits.HDUList([primary, *images]).writeto(tmp_path / "old.offsets.fits")
    meta = OffsetMap.read(tmp_path / "old.offsets.fits").meta
    assert (meta["parameter"], meta["parameter_value"], meta["n_dropped"]) == expected
    assert OffsetMap(np.zeros((3, 4)), np.zeros((3, 4)), meta=meta).field_summary == (
        f"{cards['METHOD']} {expected[0]}={expected[1]:g}"
    )


def test_read_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        OffsetMap.read(tmp_path / "missing.fits")
    text = tmp_path / "text.fits"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"text\.fits: not a readable FITS file"):
        OffsetMap.read(text)
    one = tmp_path / "one.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)), name="SCI")]).writeto(one)
    with pytest.raises(
        ValueError,
        match=r"one.fits: no offset maps found .* HDUs: 0:PRIMARY "
        r"PrimaryHDU, 1:SCI ImageHDU \(2, 2\)",
    ):
        OffsetMap.read(one)
    mismatched = tmp_path / "mismatched.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.zeros((2, 2)), name="XOFFSET"),
            fits.ImageHDU(np.zeros((2, 3)), name="YOFFSET"),
        ]
    ).writeto(mismatched)
    with pytest.raises(ValueError, match=r"mismatched.fits: x_offset and y_offset differ"):
        OffsetMap.read(mismatched)


def test_to_wcs_reproduces_pixmap(omap):
    w = omap.to_wcs()
    ny, nx = omap.shape
    j, i = np.mgrid[0:ny, 0:nx]
    fx, fy = w.p4_pix2foc(i.ravel().astype(float), j.ravel().astype(float), 0)
    pixmap = omap.pixmap()
    np.testing.assert_array_equal(fx.reshape(omap.shape), pixmap[..., 0])
    np.testing.assert_array_equal(fy.reshape(omap.shape), pixmap[..., 1])


def test_long_provenance_values_are_kept(tmp_path):
    source = "/data/" + "very_long_directory_name/" * 6 + "DSC03770.offsets_table_clean.fits"
    omap = OffsetMap(
        np.zeros((2, 2)), np.zeros((2, 2)), meta={"source": source, "method": "quadrant" * 8}
    )
    path = tmp_path / "long.offsets.fits"
    omap.write(path)
    meta = OffsetMap.read(path).meta
    assert meta["source"] == source
    assert meta["method"] == "quadrant" * 8


def test_to_wcs_through_drizzle_calc_pixmap(omap):
    from astropy.wcs import WCS
    from drizzle.utils import calc_pixmap

    ny, nx = omap.shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [83.8, -5.4]
    w.wcs.crpix = [nx / 2, ny / 2]
    w.wcs.cd = [[-1.1e-3, 2e-5], [2e-5, 1.1e-3]]
    w.array_shape = omap.shape
    np.testing.assert_allclose(calc_pixmap(omap.to_wcs(w), w), omap.pixmap(), rtol=0, atol=1e-6)
    assert w.cpdis1 is None  # the caller's WCS is untouched


def test_read_in_chunks_compressed_scaled_and_truncated(tmp_path, omap, monkeypatch):
    from astropy.utils.exceptions import AstropyUserWarning

    from astro_offsets.maps import _offset_map

    path = tmp_path / "DSC01.offsets.fits"
    omap.write(path, compress=False)
    # Chunks of 1000 bytes: 250 floats, the last one partial.
    monkeypatch.setattr(_offset_map, "_CHUNK_BYTES", 1000)
    back = OffsetMap.read(path)
    assert back.x_offset.dtype == np.float32
    assert back.x_offset.dtype.isnative
    assert back.x_offset.flags.c_contiguous
    assert back.x_offset.flags.writeable
    np.testing.assert_array_equal(back.x_offset, omap.x_offset)
    np.testing.assert_array_equal(back.y_offset, omap.y_offset)
    # Compressed, and scaled integers: through astropy, the same values.
    with fits.open(path) as hdul:
        hdul.writeto(tmp_path / "DSC01.offsets.fits.gz")
        scaled = [fits.PrimaryHDU()]
        for name in ("XOFFSET", "YOFFSET"):
            hdu = fits.ImageHDU(hdul[name].data.astype(np.float64), name=name)
            hdu.scale("int16", bscale=0.01)  # stored as round(value / 0.01)
            scaled.append(hdu)
        fits.HDUList(scaled).writeto(tmp_path / "scaled.fits")
    gzipped = OffsetMap.read(tmp_path / "DSC01.offsets.fits.gz")
    np.testing.assert_array_equal(gzipped.x_offset, omap.x_offset)
    np.testing.assert_allclose(
        OffsetMap.read(tmp_path / "scaled.fits").y_offset, omap.y_offset, atol=0.006
    )
    # Cut within the Y map's data: the error names the file.
    data = path.read_bytes()
    (tmp_path / "cut.fits").write_bytes(data[: len(data) - 2880 - 100])
    with (
        pytest.warns(AstropyUserWarning, match="truncated"),
        pytest.raises(ValueError, match=r"cut\.fits: YOFFSET HDU: the file ends within its data"),
    ):
        OffsetMap.read(tmp_path / "cut.fits")


def test_read_into_arrays_of_the_caller(tmp_path, omap):
    path = tmp_path / "DSC01.offsets.fits"
    omap.write(path, compress=False)
    out = (np.full(omap.shape, np.nan, np.float32), np.full(omap.shape, np.nan, np.float32))
    back = OffsetMap.read(path, out=out)
    assert back.x_offset is out[0]
    assert back.y_offset is out[1]
    np.testing.assert_array_equal(out[0], omap.x_offset)
    np.testing.assert_array_equal(out[1], omap.y_offset)
    # The original notebook's float64 maps, through astropy, into the same arrays.
    seed = tmp_path / "seed.fits"
    write_seed_file(seed, 2 * omap.x_offset, 3 * omap.y_offset, np.float64)
    np.testing.assert_array_equal(OffsetMap.read(seed, out=out).y_offset, 3 * omap.y_offset)
    np.testing.assert_array_equal(out[0], 2 * omap.x_offset)
    wrong = [
        (out[0], np.zeros((2, 2), np.float32)),
        (out[0], out[1].astype(np.float64)),
        (out[0], np.asfortranarray(out[1])[:, ::-1]),
        (out[0], out[0]),  # Y would overwrite X
        out[0],
    ]
    for bad in wrong:
        with pytest.raises(ValueError, match=r"DSC01\.offsets\.fits: out must be two separate"):
            OffsetMap.read(path, out=bad)
    # Maps of two shapes: refused as without out, not read into one shape.
    mismatched = tmp_path / "mismatched.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(omap.x_offset, name="XOFFSET"),
            fits.ImageHDU(omap.y_offset[:, :-1], name="YOFFSET"),
        ]
    ).writeto(mismatched)
    with pytest.raises(ValueError, match=r"mismatched\.fits: x_offset and y_offset differ"):
        OffsetMap.read(mismatched, out=out)


def test_read_tile_compressed_maps(tmp_path, omap):
    # A tile-compressed HDU says BITPIX = -32 of the image, not of its bytes.
    path = tmp_path / "packed.fits"
    hdus = [fits.PrimaryHDU()]
    for name, data in (("XOFFSET", omap.x_offset), ("YOFFSET", omap.y_offset)):
        hdus.append(fits.CompImageHDU(data, name=name, compression_type="GZIP_1"))
    hdus.append(fits.ImageHDU(np.zeros((2, 2), np.float32), name="OTHER"))
    fits.HDUList(hdus).writeto(path)
    with fits.open(path) as hdul:  # quantised by the compression: astropy's values
        expected = [hdul[name].data.astype(np.float32) for name in ("XOFFSET", "YOFFSET")]
    np.testing.assert_allclose(expected[0], omap.x_offset, atol=0.01)
    for out in (None, (np.empty(omap.shape, np.float32), np.empty(omap.shape, np.float32))):
        back = OffsetMap.read(path, out=out)
        np.testing.assert_array_equal(back.x_offset, expected[0])
        np.testing.assert_array_equal(back.y_offset, expected[1])
