"""Maps of a sequence: write_maps, writing into caller's arrays, dask clusters, SIP files."""

import os
import time
import warnings

import joblib
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from astro_offsets import OffsetMap, OffsetModel, write_maps

SHAPE = (90, 130)


def write_table(path, seed):
    rng = np.random.default_rng(seed)
    n = 25
    x, y = rng.uniform(0, SHAPE[1], n), rng.uniform(0, SHAPE[0], n)
    # A drift, a turn and centroid noise: maps that do not fold.
    Table(
        {
            "xcentroid": x,
            "ycentroid": y,
            "xoffset": 2.0 + 0.02 * y + rng.normal(0, 0.05, n),
            "yoffset": -1.0 - 0.02 * x + rng.normal(0, 0.05, n),
        }
    ).write(path)
    return str(path)


@pytest.fixture
def tables(tmp_path):
    return [write_table(tmp_path / f"IMG_{k:04d}.offsets_table.fits", k) for k in range(5)]


def test_write_maps_results_in_order(tables, tmp_path):
    (tmp_path / "out").mkdir()
    seen = []
    broken = tmp_path / "IMG_9999.offsets_table.fits"
    broken.write_text("not a table")
    argv = [tables[0], str(broken), *tables[1:], tables[2]]
    results = write_maps(
        argv, SHAPE, outdir=tmp_path / "out", n_jobs=2, callback=seen.append, compress=False
    )
    assert [r.path for r in results] == argv
    assert [r.status for r in results] == ["written", "failed", *["written"] * 4, "failed"]
    assert "cannot read as a table" in results[1].message
    assert "same output" in results[-1].message
    assert sorted(seen, key=results.index) == results
    for result in results:
        if result.status == "written":
            expected = OffsetModel.read(result.path, method="auto").to_map(SHAPE)
            got = OffsetMap.read(result.output)
            assert np.array_equal(got.x_offset, expected.x_offset)
            assert os.path.dirname(result.output) == str(tmp_path / "out")


def test_a_map_made_against_another_reference_is_made_again(tmp_path):
    # tables --reference B remade the table made against A: its map is stale.
    table = write_table(tmp_path / "IMG_0001.offsets_table.fits", 1)
    stars = Table.read(table)
    stars.meta["REFFRAME"] = "IMG_0000.fits"
    stars.write(table, overwrite=True)
    (first,) = write_maps([table], SHAPE)
    assert OffsetMap.read(first.output).meta["reference"] == "IMG_0000.fits"
    (kept,) = write_maps([table], SHAPE)
    assert kept.status == "skipped"
    stars.meta["REFFRAME"] = "IMG_0002.fits"
    stars.write(table, overwrite=True)
    (again,) = write_maps([table], SHAPE)
    assert again.status == "written"
    assert OffsetMap.read(again.output).meta["reference"] == "IMG_0002.fits"


def test_write_maps_keeps_existing(tables, tmp_path):
    existing = tmp_path / "IMG_0001.offsets.fits"
    existing.write_bytes(b"mine")
    results = write_maps(tables, SHAPE)
    assert [r.status for r in results].count("skipped") == 1
    assert existing.read_bytes() == b"mine"
    assert [r.status for r in write_maps(tables, SHAPE, overwrite=True)] == ["written"] * 5


def test_failed_write_reported_and_nothing_left(tables, tmp_path):
    results = write_maps(tables[:2], SHAPE, outdir=tmp_path / "missing")
    assert [r.status for r in results] == ["failed", "failed"]
    assert "does not exist" in results[0].message
    assert not (tmp_path / "missing").exists()


def test_to_map_into_memory_map(tmp_path):
    model = OffsetModel.read(write_table(tmp_path / "t.offsets_table.fits", 3))
    x_out = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=SHAPE)
    y_out = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.float32, shape=SHAPE)
    omap = model.to_map(SHAPE, n_jobs=2, block_size=(7, 50), out=(x_out, y_out))
    expected = model.to_map(SHAPE)
    assert np.shares_memory(omap.x_offset, x_out)
    x_out.flush()
    assert np.array_equal(np.load(tmp_path / "x.npy"), expected.x_offset)
    assert np.array_equal(y_out, expected.y_offset)


def test_to_map_out_from_other_processes():
    rng = np.random.default_rng(8)
    model = OffsetModel(
        rng.uniform(0, 60, 30), rng.uniform(0, 40, 30), rng.normal(size=30), rng.normal(size=30)
    )
    out = (np.zeros((40, 60), np.float32), np.zeros((40, 60), np.float32))
    with joblib.parallel_config(backend="loky", n_jobs=2):
        omap = model.to_map((40, 60), block_size=(9, 13), out=out)
    assert np.shares_memory(omap.x_offset, out[0])
    assert np.array_equal(out[0], model.to_map((40, 60)).x_offset)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ((np.zeros((4, 5), np.float32),), "out must be a pair of arrays"),
        (
            (np.zeros((4, 5)), np.zeros((4, 5), np.float32)),
            "out x_offset must be float32 of "
            r"shape \(4, 5\), got float64",
        ),
        ((np.zeros((4, 5), np.float32), np.zeros((5, 4), np.float32)), "out y_offset must"),
        (
            (np.zeros((4, 10), np.float32)[:, ::2], np.zeros((4, 5), np.float32)),
            "must be C-contiguous",
        ),
        (([[0.0]], np.zeros((4, 5), np.float32)), "out x_offset must be a numpy array"),
    ],
)
def test_bad_out(out, message):
    model = OffsetModel([1.0], [1.0], [0.0], [0.0])
    with pytest.raises(ValueError, match=message):
        model.to_map((4, 5), out=out)
    shared = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="must not share memory"):
        model.to_map((4, 5), out=(shared, shared))


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.mark.slow
def test_maps_on_a_dask_cluster(dask_cluster, tables):
    from distributed import Client, get_task_stream

    models = [OffsetModel.read(t) for t in tables[:2]]
    with (
        Client(dask_cluster) as client,
        get_task_stream(client) as stream,
        joblib.parallel_config(backend="dask"),
    ):
        remote = [m.to_map(SHAPE, n_jobs=-1, block_size=(16, 64)) for m in models]
    tile_tasks = [t for t in stream.data if "_evaluate_tile" in str(t["key"])]
    assert len(tile_tasks) >= 2 * 6 * 3 / 4  # tiles (batched by joblib) ran on the cluster
    assert len({t["worker"] for t in tile_tasks}) == 2
    for model, omap in zip(models, remote, strict=True):
        local = model.to_map(SHAPE)
        assert np.array_equal(local.x_offset, omap.x_offset)
        assert np.array_equal(local.y_offset, omap.y_offset)


def test_maps_written_while_the_next_is_computed_stay_intact(tables, tmp_path, monkeypatch):
    # A slow disk: each write starts long after the next map's computation,
    # which must not reuse the buffers still being written.
    original = OffsetMap.write

    def slow_write(self, *args, **kwargs):
        time.sleep(0.2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OffsetMap, "write", slow_write)
    results = write_maps(tables, SHAPE, outdir=tmp_path, n_jobs=2, compress=False)
    assert [r.status for r in results] == ["written"] * len(tables)
    for result in results:
        expected = OffsetModel.read(result.path, method="auto").to_map(SHAPE)
        got = OffsetMap.read(result.output)
        assert np.array_equal(got.x_offset, expected.x_offset)
        assert np.array_equal(got.y_offset, expected.y_offset)


# --- the maps as SIP polynomials (sip=True) ----------------------------------------


def read_sip(path):
    """The header and WCS of a ``<stem>.sip.fits`` (NAXIS = 0: astropy's warning ignored)."""
    header = fits.getheader(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The WCS transformation has more axes", FITSFixedWarning)
        return header, WCS(header)


def sip_positions(w, shape):
    """``x + A(u, v)``, ``y + B(u, v)`` on every pixel, by the FITS SIP convention."""
    y, x = np.indices(shape, dtype=np.float64)
    u, v = x + 1.0 - w.wcs.crpix[0], y + 1.0 - w.wcs.crpix[1]
    a = np.polynomial.polynomial.polyval2d(u, v, w.sip.a)
    b = np.polynomial.polynomial.polyval2d(u, v, w.sip.b)
    return np.dstack([x + a, y + b])


def test_write_maps_writes_sip_files(tables, tmp_path):
    # Plain maps: the SIP is measured against the map itself (a compressed
    # map's file adds its MAXERR, below).
    results = write_maps(tables[:2], SHAPE, sip=True, compress=False)
    assert [r.status for r in results] == ["written"] * 2
    for result in results:
        omap = OffsetMap.read(result.output)
        path = tmp_path / os.path.basename(result.output).replace(".offsets.fits", ".sip.fits")
        with fits.open(path) as hdul:
            assert len(hdul) == 1
            assert hdul[0].data is None
        header, w = read_sip(path)
        assert w.sip is not None
        assert header["PRODUCT"] == "SIP distortion"
        assert header["SRCTABLE"] == result.path
        assert header["METHOD"] == omap.meta["method"]
        assert (header["IMAGEH"], header["IMAGEW"]) == SHAPE
        assert "default one of" in str(header["COMMENT"])  # the tables name no reference
        assert header["CTYPE1"] == "RA---TAN-SIP"
        # The convention on every pixel, within the error recorded.
        error = np.hypot(*np.moveaxis(sip_positions(w, SHAPE) - omap.pixmap(), -1, 0))
        assert error.max() <= header["SIPERR"] + 1e-9
        assert error.max() == pytest.approx(header["SIPERR"], abs=1e-9)
        assert header["SIPERR"] <= header["SIPGOAL"] == 0.01
        assert not result.warnings
    (compressed,) = write_maps(tables[:1], SHAPE, sip=True, overwrite=True)
    assert compressed.status == "written"
    header, w = read_sip(tmp_path / "IMG_0000.sip.fits")
    pixmap = OffsetMap.read(compressed.output).pixmap()
    error = np.hypot(*np.moveaxis(sip_positions(w, SHAPE) - pixmap, -1, 0))
    maxerr = fits.getheader(compressed.output)["MAXERR"]
    assert error.max() <= header["SIPERR"] + np.sqrt(2) * maxerr


def test_sip_on_the_reference_frames_wcs(tmp_path, monkeypatch):
    reference = tmp_path / "IMG_0000.fits"
    base = WCS(naxis=2)
    base.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    base.wcs.crval = [83.8, -5.4]
    base.wcs.crpix = [60.0, 40.0]
    base.wcs.cd = [[-2.0e-4, 1.0e-5], [1.0e-5, 2.0e-4]]
    fits.PrimaryHDU(np.zeros(SHAPE, dtype=np.float32), base.to_header()).writeto(reference)
    table = write_table(tmp_path / "IMG_0001.offsets_table.fits", 1)
    stars = Table.read(table)
    # As make_tables records it: the name, and the absolute path (found
    # from anywhere, not only beside the frames).
    stars.meta["REFFRAME"] = reference.name
    stars.meta["REFPATH"] = str(reference)
    stars.write(table, overwrite=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (result,) = write_maps([table], SHAPE, sip=True)
    header, w = read_sip(tmp_path / "IMG_0001.sip.fits")
    text = f"WCS of the reference frame {reference}"  # spaces not compared: a long path is cut
    assert "".join(text.split()) in "".join("".join(header["COMMENT"]).split())
    assert list(w.wcs.crpix) == [60.0, 40.0]
    # Each pixel of the frame is on the sky where the reference puts its pixmap.
    pixmap = OffsetMap.read(result.output).pixmap()
    y, x = np.indices(SHAPE, dtype=np.float64)
    sky = w.all_pix2world(x.ravel(), y.ravel(), 0)
    expected = base.wcs_pix2world(pixmap[..., 0].ravel(), pixmap[..., 1].ravel(), 0)
    # Within SIPERR pixels of 0.72 arcsec, and the compressed map's own error.
    error = header["SIPERR"] + np.sqrt(2) * fits.getheader(result.output)["MAXERR"]
    assert np.abs(np.subtract(sky, expected)).max() * 3600 < 0.72 * error + 1e-7


def test_sip_files_kept_with_their_maps(tables, tmp_path):
    write_maps(tables[:2], SHAPE, sip=True)
    sips = [tmp_path / f"IMG_{k:04d}.sip.fits" for k in range(2)]
    sips[0].write_bytes(b"mine")  # kept, as its map is
    sips[1].unlink()  # made again from the kept map
    results = write_maps(tables[:2], SHAPE, sip=True)
    assert [r.status for r in results] == ["skipped"] * 2
    assert sips[0].read_bytes() == b"mine"
    _, w = read_sip(sips[1])
    assert w.sip is not None
    results = write_maps(tables[:2], SHAPE, sip=True, overwrite=True)
    assert [r.status for r in results] == ["written"] * 2
    assert read_sip(sips[0])[1].sip is not None


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # astropy's, reading it
def test_a_kept_map_damaged_since_is_a_warning(tables, tmp_path):
    # A damaged card makes astropy's decompression raise what it likes (here
    # an OverflowError): the map is kept, the SIP asked for a warning.
    write_maps(tables[:1], SHAPE)
    path = tmp_path / "IMG_0000.offsets.fits"
    raw = path.read_bytes()
    start = raw.index(b"ZTILE1  =")
    path.write_bytes(raw[:start] + b"ZTILE1  =                    0" + raw[start + 30 :])
    (result,) = write_maps(tables[:1], SHAPE, sip=True)
    assert result.status == "skipped"
    assert result.warnings == (f"{path}: OverflowError: cannot convert float infinity to integer",)


def test_a_file_of_the_users_at_a_sip_files_name_is_kept(tables, tmp_path):
    sip = tmp_path / "IMG_0000.sip.fits"
    fits.PrimaryHDU(header=fits.Header({"USERS": "mine"})).writeto(sip)
    (result,) = write_maps(tables[:1], SHAPE, sip=True)
    assert result.status == "written"  # the map is written all the same
    (line,) = result.warnings
    assert line == f"{sip}: exists and is no SIP file of astro-offsets: kept, the SIP not written"
    assert fits.getheader(sip)["USERS"] == "mine"
    # Asked to overwrite, it is replaced.
    (result,) = write_maps(tables[:1], SHAPE, sip=True, overwrite=True)
    assert not result.warnings
    assert fits.getheader(sip)["PRODUCT"] == "SIP distortion"


def test_a_field_sip_cannot_follow_is_a_warning(tables, tmp_path):
    (result,) = write_maps(tables[:1], SHAPE, sip=True, method="quadrant", trend=None)
    assert result.status == "written"
    (line,) = result.warnings
    sip = str(tmp_path / "IMG_0000.sip.fits")
    assert line.startswith(f"{sip}: the SIP polynomial of degree 9 is off the map by up to")
    assert "kinks" in line
    header, _ = read_sip(sip)
    assert header["SIPERR"] > 0.01


def test_maps_compressed_alike_for_any_n_jobs(tables, tmp_path):
    # Quantising is deterministic (no dither): the same map, the same bytes.
    written = {}
    for n_jobs in (1, 2):
        outdir = tmp_path / f"jobs{n_jobs}"
        outdir.mkdir()
        results = write_maps(tables[:2], SHAPE, outdir=outdir, n_jobs=n_jobs, block_size=(32, 48))
        written[n_jobs] = [OffsetMap.read(r.output) for r in results]
        with fits.open(results[0].output) as hdul:
            assert isinstance(hdul["XOFFSET"], fits.CompImageHDU)
    for one, two in zip(written[1], written[2], strict=True):
        assert np.array_equal(one.x_offset, two.x_offset)
        assert np.array_equal(one.y_offset, two.y_offset)
    plain = write_maps(tables[:1], SHAPE, outdir=tmp_path, compress=False)[0].output
    with fits.open(plain) as hdul:
        assert type(hdul["XOFFSET"]) is fits.ImageHDU
    expected = OffsetModel.read(tables[0], method="auto").to_map(SHAPE)
    assert np.array_equal(OffsetMap.read(plain).y_offset, expected.y_offset)
    np.testing.assert_allclose(written[1][0].y_offset, expected.y_offset, rtol=0, atol=2**-10)


def test_a_map_is_made_while_another_thread_catches_warnings():
    # The writer thread fits a SIP, and a dask worker's threads read tables, in turns
    # (the warning filters are the process's): the evaluation of a map takes no turn,
    # and its warning still comes back as a note naming the table.
    import threading

    from astro_offsets.field import _write_maps, make_map

    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 60, 40), rng.uniform(0, 60, 40)
    model = OffsetModel(
        x, y, 0.01 * x, -0.02 * y, method="polynomial", degree=2, trend=None, source="t.fits"
    )
    made = []
    with _write_maps._CATCHING:  # another thread's turn
        thread = threading.Thread(target=lambda: made.append(make_map(model, (200, 300))))
        thread.start()
        thread.join(10)
        assert made, "the map waited for another thread's warning capture"
    omap, notes, _ = made[0]
    assert omap.shape == (200, 300)
    assert len(notes) == 1
    assert notes[0].startswith("t.fits: ")
    assert "extrapolated that far is unreliable" in notes[0]
    with pytest.warns(AstropyUserWarning, match="extrapolated that far"):
        model.to_map((200, 300))
