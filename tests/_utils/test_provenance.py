"""Our products are recognised by header and name, and left out of every command's inputs."""

import glob
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_offsets import OffsetMap, Stacker, make_tables, stack_frames, write_maps
from astro_offsets._cli import main
from astro_offsets._utils.provenance import not_an_input, product_kind, provenance_cards
from astro_offsets.datasets import CameraMotion, observe, star_field

SHAPE = (240, 320)


def test_products_are_known_by_their_header(tmp_path):
    omap = OffsetMap(np.zeros((4, 5)), np.zeros((4, 5)))
    omap.write(tmp_path / "renamed_map.fits")
    stacker = Stacker((4, 5))
    stacker.add(np.ones((4, 5)))
    stacker.stack().write(tmp_path / "light_stack.fits")
    table = Table({"x": [1.0]})
    table.meta.update((k, v) for k, v, _ in provenance_cards("star table"))
    table.write(tmp_path / "renamed_table.fits")
    # A star table of an earlier version: CREATOR in the table's header only.
    old = Table({"x": [1.0]}, meta={"CREATOR": "astro_offsets 0.1.0.dev1"})
    old.write(tmp_path / "old_table.fits")
    frame = tmp_path / "light_001.fits"
    fits.PrimaryHDU(np.zeros((4, 5), np.float32)).writeto(frame)
    (tmp_path / "broken.fits").write_bytes(b"not FITS at all")
    kinds = {
        name: product_kind(tmp_path / name)
        for name in (
            "renamed_map.fits",
            "light_stack.fits",
            "renamed_table.fits",
            "old_table.fits",
            "light_001.fits",
            "broken.fits",
            "missing.fits",
        )
    }
    assert kinds == {
        "renamed_map.fits": "offset map",
        "light_stack.fits": "stack",
        "renamed_table.fits": "star table",
        "old_table.fits": "file",
        "light_001.fits": None,
        "broken.fits": None,
        "missing.fits": None,
    }


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("DSC0001.offsets.fits", "offset map"),
        ("DSC0001.offsets_table.fits", "star table"),
        ("DSC0001.offsets_table_clean.fits", "star table"),
        ("DSC0001.OFFSETS.FITS", "offset map"),
        ("DSC0001.offsets.png", "map plot"),
        ("DSC0001.ARW", None),
        ("offsets.fits", None),
    ],
)
def test_products_are_known_by_their_name(name, kind):
    # The original notebooks wrote such files without our header cards.
    assert product_kind(name) == kind


def test_a_file_that_does_not_read_is_none_of_ours_but_a_bug_is_a_bug(tmp_path, monkeypatch):
    import astro_offsets._utils.provenance as provenance

    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"not a FITS file")
    image = tmp_path / "light.fits"
    fits.PrimaryHDU(np.ones((4, 5))).writeto(image)
    assert product_kind(broken) is None
    assert product_kind(image) is None

    def bug(header):
        raise AttributeError("'NoneType' object has no attribute 'get'")

    # Not taken for a file that cannot be read: raised, as what it is.
    monkeypatch.setattr(provenance, "_kind_from_header", bug)
    with pytest.raises(AttributeError):
        product_kind(image)


def test_not_an_input_says_what_the_file_is():
    assert not_an_input("a/x.offsets_table.fits", "frame") == (
        "a/x.offsets_table.fits: a star table written by astro_offsets, not a frame"
    )
    assert not_an_input("a/x.offsets_table.fits", "star table", keep=("star table",)) is None
    assert not_an_input("a/x.fits", "frame") is None
    # Frames are no star tables: raw files by their names.
    assert not_an_input("a/DSC0001.ARW", "star table") == (
        "a/DSC0001.ARW: a raw file (a frame?), not a star table"
    )
    assert not_an_input("a/DSC0001.ARW", "frame") is None


@pytest.fixture
def fits_sequence(tmp_path):
    """Four FITS frames light_000..003 of one star field, moved and rotated."""
    rng = np.random.default_rng(8)
    x, y, flux = star_field(rng, 260, SHAPE, faintest=3000.0)
    for k in range(4):
        motion = CameraMotion(SHAPE, drift=(4.3 * k, -2.9 * k), rotation_deg=0.1 * k, barrel=0.0)
        fx, fy = motion.to_frame(x, y)
        image = observe(rng, SHAPE, fx, fy, flux, sigma=1.4)
        hdu = fits.PrimaryHDU(image.astype(np.float32))
        hdu.header["EXPTIME"] = 60.0
        hdu.writeto(tmp_path / f"light_{k:03d}.fits")
    return tmp_path


@pytest.mark.slow
def test_a_fits_sequence_through_the_commands_twice(fits_sequence, capsys, monkeypatch):
    monkeypatch.chdir(fits_sequence)
    reference = "light_000.fits"

    def command(*argv):
        expanded = [a for arg in argv for a in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
        status = main(expanded)
        out, err = capsys.readouterr()
        return status, out, err

    runs = []
    for _ in range(2):
        runs.append(command("tables", "light_*.fits", "--reference", reference))
        runs.append(command("maps", "light_*.offsets_table.fits", "--image", reference))
        runs.append(command("stack", "light_*.fits", "--out", "light_stack.fits"))
    assert [status for status, _, _ in runs] == [0] * 6, runs
    assert all("error" not in err for _, _, err in runs), runs
    first_tables, first_maps, first_stack, tables, maps, stack = runs
    assert first_tables[1].strip().endswith("tables: 3 written, 0 skipped, 0 failed")
    assert first_maps[1].strip().endswith("maps: 3 written, 0 skipped, 0 failed")
    assert "stack: 4 stacked, 0 failed; wrote light_stack.fits" in first_stack[1]
    # The maps and star tables beside the frames match light_*.fits: they are
    # left out, in one line.
    assert (
        "astro-offsets: skipped 6 files written by astro-offsets (3 star tables, 3 offset maps)"
        in (first_stack[2])
    )
    # The second run: the frames' tables and maps are kept, and the stack too
    # (it matches light_*.fits now, and is left out as well).
    assert tables[1].strip().endswith("tables: 0 written, 3 skipped, 0 failed")
    assert (
        "skipped 7 files written by astro-offsets (3 star tables, 3 offset maps, 1 stack)"
        in (tables[2])
    )
    assert maps[1].strip().endswith("maps: 0 written, 3 skipped, 0 failed")
    # Each map records the frame its offsets are against, from its table.
    assert fits.getheader("light_002.offsets.fits")["REFFRAME"] == reference
    assert stack[1].strip() == (
        "stack: kept light_stack.fits, light_stack.png, light_stack.frames.ecsv and "
        "light_stack.frames.png (use --overwrite to replace them); nothing stacked"
    )
    # The stack's report and its picture are ours too, for a light_* glob.
    assert not_an_input("light_stack.frames.ecsv", "frame")
    assert not_an_input("light_stack.frames.png", "frame")

    # From Python alike: the products are "ignored", the frames processed.
    frames = sorted(glob.glob("light_*.fits"))
    results = make_tables(frames, reference, overwrite=True)
    assert [r.status for r in results].count("ignored") == 7
    assert [r.status for r in results].count("written") == 3
    maps_results = write_maps(sorted(glob.glob("light_*.fits")), SHAPE, overwrite=True)
    statuses = {os.path.basename(r.path): r.status for r in maps_results}
    assert statuses["light_001.offsets_table.fits"] == "written"
    assert statuses["light_001.offsets.fits"] == "ignored"
    assert statuses["light_stack.fits"] == "ignored"
    assert statuses["light_001.fits"] == "ignored"  # a frame, not a star table
    # The command line says so in one line.
    status, out, err = command("maps", "light_*.fits", "--image", reference)
    assert status == 0
    assert "astro-offsets: skipped 4 frames: not star tables" in err
    assert out.strip().endswith("maps: 0 written, 3 skipped, 0 failed")
    _, stacked = stack_frames(frames)
    assert [r.status for r in stacked].count("stacked") == 4
