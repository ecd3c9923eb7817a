"""One run from frames to stack: the three commands' stack, each frame read once."""

import collections
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import astro_offsets.pipeline._stream as stream
import astro_offsets.stack._reading as stack_reading
from astro_offsets import OffsetMap, make_tables, run_sequence, stack_frames, write_maps
from astro_offsets._cli import main
from astro_offsets.datasets import (
    CameraMotion,
    night_sequence,
    observe,
    star_field,
    write_dng,
    write_fits_cfa,
    write_fits_rgb,
)
from astro_offsets.frames import frame_shape


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Six frames that turn, flip over the meridian, one shaken, one crossed by a satellite."""
    folder = tmp_path_factory.mktemp("night")
    return night_sequence(
        folder,
        shape=(240, 360),
        n_frames=6,
        n_stars=260,
        flip_after=2,
        bad={4: "shaken"},
        trail_frame=3,
        rotation_per_frame=0.3,
    )


@pytest.fixture(scope="module")
def three_commands(night, tmp_path_factory):
    """The stack of tables, maps and stack, one after the other, and the maps."""
    folder = tmp_path_factory.mktemp("three")
    make_tables(night.frames, night.reference, outdir=folder)
    tables = sorted(str(p) for p in folder.glob("*.offsets_table.fits"))
    # Compressed maps (the default), as run rounds those it keeps in memory:
    # the same stack, bit for bit.
    write_maps(tables, frame_shape(night.reference), outdir=folder)
    stack, results = stack_frames(night.frames, maps=folder, reference=night.reference)
    return stack, results, folder


def same_stack(a, b):
    for channel in a.channels:
        np.testing.assert_array_equal(a.images[channel], b.images[channel])
        np.testing.assert_array_equal(a.weights[channel], b.weights[channel])


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_stack_of_the_three_commands(night, three_commands, tmp_path, n_jobs):
    expected, expected_results, folder = three_commands
    stack, results = run_sequence(night.frames, tables=tmp_path, n_jobs=n_jobs)
    same_stack(stack, expected)
    assert [(r.status, r.weight, r.message) for r in results] == [
        (r.status, r.weight, r.message) for r in expected_results
    ]
    # The shaken frame is left out, as the three commands leave it out.
    assert results[4].status == "left out"
    assert [r.table is not None for r in results] == [False, True, True, True, True, True]
    # Each frame's field chosen as write_maps chose it: auto on the first, its
    # choice re-checked on the others.
    assert "(auto)" in results[1].field
    for result in results[1:]:
        written = folder / os.path.basename(result.path).replace(".fits", ".offsets.fits")
        assert result.field == OffsetMap.read(written).field_summary
    assert results[1].matched > 50


def test_each_frame_read_and_searched_for_hot_pixels_once(night, tmp_path, monkeypatch):
    reads, searches = collections.Counter(), collections.Counter()
    read_frame, hot_pixels = stack_reading.read_frame, stream.hot_pixels

    def counted_read(path, *args, **kwargs):
        reads[os.path.basename(path)] += 1
        return read_frame(path, *args, **kwargs)

    def counted_search(data, *args, **kwargs):
        searches[data.shape] += 1
        return hot_pixels(data, *args, **kwargs)

    monkeypatch.setattr(stack_reading, "read_frame", counted_read)
    monkeypatch.setattr(stream, "hot_pixels", counted_search)
    monkeypatch.setattr(stack_reading, "hot_pixels", counted_search)
    # In this process (one job): the counts are this process's.
    run_sequence(night.frames, tables=tmp_path, n_jobs=1)
    assert set(reads.values()) == {1}, reads
    assert len(reads) == len(night.frames)
    assert sum(searches.values()) == len(night.frames)


def test_the_maps_stay_in_memory_unless_asked(night, three_commands, tmp_path):
    _, _, folder = three_commands
    run_sequence(night.frames, tables=tmp_path, reject=False)
    assert not list(tmp_path.glob("*.offsets.fits"))
    maps = tmp_path / "maps"
    maps.mkdir()
    run_sequence(night.frames, tables=tmp_path, write_maps=maps, sip=True, reject=False)
    written = sorted(maps.glob("*.offsets.fits"))
    assert len(written) == len(night.frames) - 1
    for path in written:  # compressed, as write_maps writes them: the same maps
        ours, theirs = OffsetMap.read(path), OffsetMap.read(folder / path.name)
        np.testing.assert_array_equal(ours.x_offset, theirs.x_offset)
        np.testing.assert_array_equal(ours.y_offset, theirs.y_offset)
        with fits.open(path) as hdul:
            assert isinstance(hdul["XOFFSET"], fits.CompImageHDU)
        # and its SIP polynomials beside it (sip=True), of the same map
        header = fits.getheader(str(path).replace(".offsets.fits", ".sip.fits"))
        assert header["PRODUCT"] == "SIP distortion"
        assert header["SRCTABLE"] == ours.meta["source"]
    # As maps --no-compress: plain float32 images, the maps as made, within
    # 2**-10 px of the compressed ones.
    plain = tmp_path / "plain"
    plain.mkdir()
    frames = night.frames[:2]
    run_sequence(frames, tables=tmp_path, write_maps=plain, compress_maps=False, reject=False)
    (path,) = plain.glob("*.offsets.fits")
    with fits.open(path) as hdul:
        assert type(hdul["XOFFSET"]) is fits.ImageHDU
    ours, theirs = OffsetMap.read(path), OffsetMap.read(folder / path.name)
    np.testing.assert_array_equal(ours.quantised().x_offset, theirs.x_offset)
    np.testing.assert_array_equal(ours.quantised().y_offset, theirs.y_offset)
    assert not np.array_equal(ours.x_offset, theirs.x_offset)


def test_sip_files_need_the_maps(night, tmp_path, capsys):
    with pytest.raises(ValueError, match="ask for write_maps too"):
        run_sequence(night.frames, tables=tmp_path, sip=True)
    out = str(tmp_path / "stack.fits")
    assert main(["run", *night.frames, "--out", out, "--sip"]) == 2
    assert "--sip needs --write-maps" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_bad_frame_fails_alone(night, tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  = not a FITS file")
    _, results = run_sequence([*night.frames[:4], broken], tables=tmp_path, reject=False)
    assert [r.status for r in results] == ["stacked"] * 4 + ["failed"]
    assert results[-1].message.startswith(f"{broken}:")


def test_an_unreadable_reference_is_an_error(night, tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  = not a FITS file")
    with pytest.raises(ValueError, match=r"broken\.fits"):
        run_sequence([broken, *night.frames[:3]], tables=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.fits"):
        run_sequence(night.frames, reference=tmp_path / "missing.fits", tables=tmp_path)
    with pytest.raises(ValueError, match="unknown star options"):
        run_sequence(night.frames, stars={"sigma": 3})


def test_the_run_command(night, three_commands, tmp_path):
    expected, _, _ = three_commands
    out = tmp_path / "out" / "stack.fits"
    status = main(["run", *night.frames, "--out", str(out), "--tables", str(tmp_path)])
    assert status == 0
    with fits.open(out) as hdul:
        np.testing.assert_array_equal(hdul["SCI"].data, expected.images["SCI"])
    report = Table.read(tmp_path / "out" / "stack.frames.ecsv")
    assert list(report["used"]) == [True, True, True, True, False, True]
    assert len(list(tmp_path.glob("*.offsets_table.fits"))) == len(night.frames) - 1
    assert not list(tmp_path.glob("*.offsets.fits"))
    # A second run keeps the stack, as stack does.
    assert main(["run", *night.frames, "--out", str(out), "--tables", str(tmp_path)]) == 0


def test_the_run_command_names_a_reference_that_is_not_there(night, tmp_path, capsys):
    out = tmp_path / "out" / "stack.fits"
    missing = str(tmp_path / "missing.fits")
    assert main(["run", *night.frames, "--reference", missing, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"astro-offsets: error: --reference {missing}: no such file or folder\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_killed_and_resumed_is_the_uninterrupted_run(night, three_commands, tmp_path):
    """Killed (SIGKILL) once two frames are stacked, then resumed: the same stack."""
    checkpoint = tmp_path / "run.checkpoint"
    script = textwrap.dedent(
        f"""
        import os, signal
        from astro_offsets import run_sequence

        stacked = 0

        def on_frame(result):
            global stacked
            stacked += result.status == "stacked"
            if stacked == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            run_sequence({night.frames!r}, tables={str(tmp_path)!r}, n_jobs=2,
                         callback=on_frame, checkpoint={str(checkpoint)!r}, checkpoint_every=1)
        """
    )
    log = tmp_path / "killed.log"
    with open(log, "w") as file:
        # Run elsewhere than the source tree: the package is the installed one.
        done = subprocess.run(
            [sys.executable, "-c", script], stdout=file, stderr=file, cwd=tmp_path
        )
    assert done.returncode == -signal.SIGKILL, log.read_text()
    assert checkpoint.is_dir()
    stack, results = run_sequence(night.frames, tables=tmp_path, checkpoint=checkpoint, resume=True)
    same_stack(stack, three_commands[0])
    # The frame the selection left out is left out again, and said why.
    assert [r.status for r in results] == [r.status for r in three_commands[1]]
    assert results[4].status == "left out"
    assert all(np.isfinite(r.measures["fwhm"]) for r in results)
    assert not checkpoint.exists()


def write_colour(folder, kind):
    """Four colour frames of one sky, drifting and turning: raw DNG, BAYERPAT FITS or RGB cubes."""
    shape = (240, 360)
    rng = np.random.default_rng(7)
    x, y, flux = star_field(rng, 260, shape)
    frames = []
    for k in range(4):
        motion = CameraMotion(shape, drift=(3.1 * k, -2.2 * k), rotation_deg=0.05 * k)
        if kind == "cube":
            planes = [observe(rng, shape, *motion.to_frame(x, y), s * flux) for s in (0.8, 1, 0.6)]
            frames.append(str(folder / f"L{k}.fits"))
            write_fits_rgb(frames[-1], np.stack(planes).astype(np.float32), exptime=30.0)
            continue
        image = observe(rng, shape, *motion.to_frame(x, y), 2 * flux)
        mosaic = np.clip(image + 512, 0, 2**14 - 1).astype(np.uint16)
        if kind == "raw":
            frames.append(str(folder / f"DSC{k}.dng"))
            write_dng(frames[-1], mosaic, exptime=30.0)
        else:
            frames.append(str(folder / f"C{k}.fits"))
            write_fits_cfa(frames[-1], mosaic, exptime=30.0)
    return frames


@pytest.mark.parametrize(
    ("kind", "compress"), [("raw", True), ("mosaic", True), ("cube", True), ("raw", False)]
)
def test_colour_frames_stack_as_the_three_commands_stack_them(kind, compress, tmp_path):
    # compress=False: maps --no-compress, and run's maps as made.
    frames = write_colour(tmp_path, kind)
    (tmp_path / "three").mkdir()
    make_tables(frames, frames[0], outdir=tmp_path / "three")
    tables = sorted(str(p) for p in (tmp_path / "three").glob("*.offsets_table.fits"))
    write_maps(tables, frame_shape(frames[0]), outdir=tmp_path / "three", compress=compress)
    expected, _ = stack_frames(frames, maps=tmp_path / "three", reference=frames[0])
    (tmp_path / "run").mkdir()
    stack, results = run_sequence(frames, tables=tmp_path / "run", n_jobs=2, compress_maps=compress)
    assert [r.status for r in results] == ["stacked"] * 4
    assert stack.channels == ("RED", "GREEN", "BLUE")
    same_stack(stack, expected)


def test_a_reference_without_stars_leaves_nothing(night, tmp_path, capsys):
    """No stack without the reference: its problem said, no checkpoint left to resume."""
    blank = str(tmp_path / "blank.fits")
    fits.PrimaryHDU(np.random.default_rng(0).normal(100, 3, (240, 360)).astype(np.float32)).writeto(
        blank
    )
    out = tmp_path / "out" / "stack.fits"
    assert main(["run", blank, *night.frames[1:4], "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"astro-offsets: error: {blank}: only 0 stars found in the reference")
    assert err[1] == (
        f"astro-offsets: error: no frame could be stacked without the reference frame {blank}"
    )
    assert not (tmp_path / "out").exists()


def test_too_few_frames_left_to_reject(night, tmp_path):
    """Three frames given, one without stars: two stacked, without rejection, as stack does."""
    blank = str(tmp_path / "blank.fits")
    fits.PrimaryHDU(np.random.default_rng(1).normal(100, 3, (240, 360)).astype(np.float32)).writeto(
        blank
    )
    stack, results = run_sequence([*night.frames[:2], blank], tables=tmp_path)
    assert [r.status for r in results] == ["stacked", "stacked", "failed"]
    assert stack.meta["rejected"] is False
    assert [r.masked for r in results[:2]] == [None, None]


def test_what_is_not_ours_is_kept(night, tmp_path):
    """A file of the user's at a table's name, frames of one name in two folders, another size."""
    theirs = tmp_path / os.path.basename(night.frames[1]).replace(".fits", ".offsets_table.fits")
    theirs.write_text("my notes")
    other = tmp_path / "other"
    other.mkdir()
    twin = other / os.path.basename(night.frames[2])
    shutil.copy(night.frames[2], twin)
    small = tmp_path / "small.fits"
    fits.PrimaryHDU(np.zeros((100, 150), np.float32)).writeto(small)
    frames = [*night.frames[:4], str(twin), str(small)]
    _, results = run_sequence(frames, tables=tmp_path, reject=False)
    assert [r.status for r in results] == ["stacked", "failed", "stacked", "stacked"] + [
        "failed"
    ] * 2
    assert results[1].message.endswith(
        f"{theirs}: exists and is no star table of astro-offsets; move it, or write the star "
        "tables elsewhere"
    )
    assert theirs.read_text() == "my notes"
    assert f"{night.frames[2]}'s" in results[4].message
    assert "differs from the stack's" in results[5].message
    assert not (tmp_path / "small.offsets_table.fits").exists()


def test_a_night_in_a_folder_of_any_name(night, tmp_path, capsys, monkeypatch):
    # FITS cards hold ASCII: the paths of "Nächte/" are written encoded
    # (utf8:...), the FRAMES table's as UTF-8, and read back as they were.
    from astro_offsets import Stack

    folder = tmp_path / "Nächte Orión"
    folder.mkdir()
    frames = [shutil.copy(frame, folder) for frame in night.frames[:3]]
    monkeypatch.chdir(tmp_path)
    names = [os.path.relpath(frame, tmp_path) for frame in frames]
    out = os.path.join("Nächte Orión", "stack.fits")
    assert main(["run", *names, "--out", out, "--write-maps", "--sip", "--no-reject"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert Stack.read(out).meta["frames"] == names
    omap = OffsetMap.read(folder / "light_001.offsets.fits")
    assert omap.meta["reference_path"] == os.path.realpath(frames[0])
    header = fits.getheader(folder / "light_001.offsets.fits")
    assert header["REFPATH"].startswith("utf8:")
    # The SIP found the reference by its path; a second tables run keeps the
    # tables, made against the same reference.
    # (COMMENT cards are whole words, a long path cut; spaces are not compared)
    comments = "".join("".join(fits.getheader(folder / "light_001.sip.fits")["COMMENT"]).split())
    assert "nocelestialWCS" in comments  # found and read: it has none
    assert "No such file" not in comments
    assert main(["tables", *names, "--reference", names[0]]) == 0
    assert "2 skipped" in capsys.readouterr().out


def test_relative_paths_in_any_working_directory(night, tmp_path, monkeypatch):
    # The worker processes outlive a call: started in one directory, they
    # must still write the tables and maps a later call names relative to another.
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        for frame in night.frames[:3]:
            shutil.copy(frame, tmp_path / name)
    monkeypatch.chdir(tmp_path / "first")
    names = [os.path.basename(frame) for frame in night.frames[:3]]
    run_sequence(names, n_jobs=2, reject=False, write_maps=True)
    monkeypatch.chdir(tmp_path / "second")
    _, results = run_sequence(names, n_jobs=2, reject=False, write_maps=True)
    assert [r.status for r in results] == ["stacked"] * 3
    for name in ("first", "second"):
        assert len(list((tmp_path / name).glob("*.offsets_table.fits"))) == 2
        assert len(list((tmp_path / name).glob("*.offsets.fits"))) == 2


@pytest.mark.parametrize("command", ["stack", "run"])
@pytest.mark.parametrize("which", ["frame", "reference"])
def test_an_input_is_never_replaced(night, tmp_path, capsys, command, which):
    # --out naming an input: refused, --overwrite or not, the input untouched.
    frames = [shutil.copy(frame, tmp_path) for frame in night.frames[:3]]
    reference = str(tmp_path / "reference.fits")
    shutil.copy(night.frames[3], reference)
    target = frames[1] if which == "frame" else reference
    before = pathlib.Path(target).read_bytes()
    what = "one of the frames to stack" if which == "frame" else "the reference frame"
    for options in ([], ["--overwrite"]):
        argv = [command, *frames, "--reference", reference, "--out", target, *options]
        assert main(argv) == 2
        assert capsys.readouterr().err == (
            f"astro-offsets: error: {target}: is {what}; the stack's outputs would replace it: "
            "choose another --out\n"
        )
    assert pathlib.Path(target).read_bytes() == before


@pytest.mark.slow
def test_a_capped_reference_is_warned_of(tmp_path, capsys):
    # The lens cap on the reference: the frames match few stars and are
    # scaled down to it. tables and run both say so, and name the reference.
    night = night_sequence(
        tmp_path, shape=(300, 450), n_frames=6, bad={3: "capped"}, trail_frame=None, flip_after=None
    )
    capped = night.frames[3]
    assert main(["tables", *night.frames, "--reference", capped]) == 0
    err = capsys.readouterr().err
    assert f"astro-offsets: warning: the reference {capped} has " in err
    assert "a capped, clouded or dewed reference matches few stars" in err
    out = str(tmp_path / "stack.fits")
    assert main(["run", *night.frames, "--reference", capped, "--out", out]) == 0
    err = capsys.readouterr().err
    assert "times brighter than the reference (median flux scale 0.01" in err
    # A clear reference: no warning.
    assert main(["tables", *night.frames, "--reference", night.frames[0], "--overwrite"]) == 0
    assert "warning" not in capsys.readouterr().err
