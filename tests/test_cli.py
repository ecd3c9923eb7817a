"""The ``astro-offsets maps`` command: naming, options, and every bad input."""

import os
import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import astro_offsets
from astro_offsets import OffsetMap, OffsetModel, SequenceChoice
from astro_offsets._cli import main
from astro_offsets._utils.batch import describe
from astro_offsets.datasets import render_stars, write_dng
from astro_offsets.stars import read_table

SHAPE = (30, 44)


def write_table(path, n=12, seed=0, names=("xcentroid", "ycentroid", "xoffset", "yoffset")):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, SHAPE[1], n), rng.uniform(0, SHAPE[0], n)
    # A drift, a slight turn and centroid noise: a map that does not fold.
    values = (
        x,
        y,
        0.8 + 0.01 * (y - 15) + rng.normal(0, 0.05, n),
        -0.4 - 0.01 * (x - 22) + rng.normal(0, 0.05, n),
    )
    Table(dict(zip(names, values, strict=True))).write(path)
    return path


@pytest.fixture
def sequence(tmp_path):
    return [write_table(tmp_path / f"DSC0{k}.offsets_table.fits", seed=k) for k in range(3)]


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# The installed console script, run outside the source tree so that it uses
# the installed package, as a user's shell would.
SCRIPT = str(Path(sys.executable).with_name("astro-offsets"))


def test_help_lists_subcommands_in_pipeline_order(tmp_path):
    result = subprocess.run(
        [SCRIPT, "--help"], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")]
    assert listed == ["tables", "maps", "stack", "run", "demo"]


def imported(stderr):
    """Return the modules that ``-X importtime`` (its stderr) lists as imported."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    }


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_import_neither_numpy_nor_astropy(tmp_path, argv):
    # The answer comes at once (0.15 s, not 1 to 2.5 s): the stages, and
    # numpy, astropy and scipy with them, are imported by the commands, not
    # to parse their options. (Modules counted, not seconds: no timed tests.)
    result = subprocess.run(
        [SCRIPT, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = imported(result.stderr)
    assert "astro_offsets._cli" in modules  # the profile is there
    assert not modules & {"numpy", "astropy", "scipy", "joblib", "astro_offsets.field"}
    if argv == ["--version"]:
        assert result.stdout == f"astro-offsets {astro_offsets.__version__}\n"


def test_demo_help_describes_the_demo(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "synthetic raw frames (DNG" in text
    assert "Bayer drizzle stack (stack.fits, its weights stack.weights.fits, and stack.png)" in text


def test_mistyped_option_gets_its_command_usage(capsys, tmp_path):
    frame = tmp_path / "f.fits"
    with pytest.raises(SystemExit) as exit_info:
        main(["tables", str(frame), "--reference", str(frame), "--min-snrr", "5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: astro-offsets tables ")
    assert "error: unrecognized arguments: --min-snrr" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--min-snr", "-5"], "argument --min-snr: expected a number >= 0, got '-5'"),
        (["--threshold", "0"], "argument --threshold: expected a positive number, got '0'"),
        (["--fwhm", "nan"], "argument --fwhm: expected a positive number, got 'nan'"),
    ],
)
def test_tables_numbers_are_checked(capsys, tmp_path, argv, message):
    frame = str(tmp_path / "f.fits")
    with pytest.raises(SystemExit) as exit_info:
        main(["tables", frame, "--reference", frame, *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_optional_dependency_is_one_line(capsys, sequence, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask were not installed
    status, out, err = run(capsys, "maps", *sequence, "--shape", *SHAPE, "--scheduler", "x:1")
    assert status == 2
    assert err == (
        "astro-offsets: error: --scheduler needs dask.distributed: "
        "pip install 'dask[distributed]'\n"
    )
    assert out == ""


def test_problems_name_their_file_once():
    path = "light/DSC0001.dng"
    for error in (
        ImportError(f"{path}: reading it needs a module"),
        ValueError(f"{path}: not a readable raw file"),
        OSError("disk full"),
    ):
        line = describe(path, error)
        assert line.count(path) == 1, line
    assert describe(path, KeyError("x")) == f"{path}: KeyError: 'x'"


def test_maps_for_a_sequence(capsys, sequence, tmp_path):
    status, out, err = run(capsys, "maps", *sequence, "--shape", *SHAPE, "--jobs", 2)
    assert status == 0
    *lines, last = out.strip().splitlines()
    assert last == "maps: 3 written, 0 skipped, 0 failed"
    assert [line.split(": ")[0] for line in lines] == [
        str(tmp_path / f"DSC0{k}.offsets.fits") for k in range(3)
    ]
    # The default field: auto's choice on an affine trend, made on the first
    # table and re-checked on the others.
    # (A table whose stars disagree makes its own.)
    assert " (auto), CV RMS " in lines[0]
    assert " (auto, sequence), CV RMS " in lines[-1]
    assert all(re.search(r" \(auto(, sequence)?\), CV RMS ", line) for line in lines), lines
    assert all("; affine trend: rotation " in line for line in lines), lines
    assert "error" not in err
    choice = SequenceChoice.from_model(OffsetModel.read(sequence[0], method="auto"))
    for k, table in enumerate(sequence):
        omap = OffsetMap.read(tmp_path / f"DSC0{k}.offsets.fits")
        expected = choice.model(read_table(table)).to_map(SHAPE)
        # Written compressed: within 2**-10 px.
        np.testing.assert_allclose(omap.x_offset, expected.x_offset, rtol=0, atol=2**-10)
        assert omap.meta["source"] == str(table)


def test_naming_and_outdir(capsys, tmp_path):
    tables = [
        write_table(tmp_path / "A.offsets_table_clean.fits"),
        write_table(tmp_path / "B.offsets_table.ecsv"),
        write_table(tmp_path / "C.csv"),
    ]
    status, _out, _ = run(
        capsys, "maps", *tables, "--shape", *SHAPE, "--outdir", tmp_path / "out" / "maps"
    )
    assert status == 0
    assert sorted(os.listdir(tmp_path / "out" / "maps")) == [
        "A.offsets.fits",
        "B.offsets.fits",
        "C.offsets.fits",
    ]


def test_existing_maps_kept_unless_overwrite(capsys, sequence, tmp_path):
    existing = tmp_path / "DSC01.offsets.fits"
    existing.write_bytes(b"keep me")
    status, out, err = run(capsys, "maps", *sequence, "--shape", *SHAPE)
    assert status == 0
    assert out.strip().splitlines()[-1] == "maps: 2 written, 1 skipped, 0 failed"
    assert f"skipped {sequence[1]}: {existing} exists" in err
    assert existing.read_bytes() == b"keep me"
    status, out, _ = run(capsys, "maps", *sequence, "--shape", *SHAPE, "--overwrite")
    assert out.strip().splitlines()[-1] == "maps: 3 written, 0 skipped, 0 failed"
    assert OffsetMap.read(existing).shape == SHAPE


def test_maps_sip_writes_header_only_sip_files(capsys, sequence, tmp_path):
    status, out, err = run(capsys, "maps", *sequence[:2], "--shape", *SHAPE, "--sip")
    assert status == 0, err
    assert out.strip().splitlines()[-1] == "maps: 2 written, 0 skipped, 0 failed"
    for k in range(2):
        path = tmp_path / f"DSC0{k}.sip.fits"
        with fits.open(path) as hdul:
            assert len(hdul) == 1
            assert hdul[0].data is None
            header = hdul[0].header
        assert header["A_ORDER"] >= 2
        assert header["SRCTABLE"] == str(sequence[k])
        # A field SIP cannot follow to 0.01 px (12 stars, auto's choice) is a warning.
        missed = f"warning: {path}: the SIP polynomial of degree 9 is off the map" in err
        assert missed == (header["SIPERR"] > 0.01)
    # Without --sip, none.
    status, _, _ = run(capsys, "maps", sequence[2], "--shape", *SHAPE)
    assert status == 0
    assert not (tmp_path / "DSC02.sip.fits").exists()


def test_maps_compressed_unless_no_compress(capsys, sequence, tmp_path):
    for options, kind in (((), fits.CompImageHDU), (("--no-compress",), fits.ImageHDU)):
        status, _, _ = run(capsys, "maps", sequence[0], "--shape", *SHAPE, "--overwrite", *options)
        assert status == 0
        with fits.open(tmp_path / "DSC00.offsets.fits") as hdul:
            assert [type(hdul[name]) for name in ("XOFFSET", "YOFFSET")] == [kind, kind]
            assert ("MAXERR" in hdul[0].header) == (kind is fits.CompImageHDU)


def test_image_option_reads_raw_and_fits_sizes(capsys, sequence, tmp_path):
    raw = tmp_path / "DSC00.dng"
    write_dng(raw, np.full((34, 50), 600, dtype=np.uint16))
    status, _, _ = run(capsys, "maps", sequence[0], "--image", raw)
    assert status == 0
    assert OffsetMap.read(tmp_path / "DSC00.offsets.fits").shape == (34, 50)

    frame = tmp_path / "DSC01.fits"
    fits.PrimaryHDU(np.zeros((23, 41), dtype=np.float32)).writeto(frame)
    status, _, _ = run(capsys, "maps", sequence[1], "--image", frame)
    assert status == 0
    assert OffsetMap.read(tmp_path / "DSC01.offsets.fits").shape == (23, 41)


def bad_inputs(tmp_path):
    missing = tmp_path / "DSC10.offsets_table.fits"
    corrupt = tmp_path / "DSC11.offsets_table.fits"
    corrupt.write_bytes(b"SIMPLE  = this is not really FITS")
    no_columns = write_table(
        tmp_path / "DSC12.offsets_table.fits", names=("xcentroid", "ycentroid", "dx", "dy")
    )
    nan_table = tmp_path / "DSC13.offsets_table.fits"
    Table(
        {"x": [np.nan, 1.0], "y": [1.0, np.nan], "x_offset": [0.0, 0.0], "y_offset": [0.0, 0.0]}
    ).write(nan_table)
    text_column = tmp_path / "DSC14.offsets_table.ecsv"
    Table({"x": ["a"], "y": [1.0], "xoffset": [0.0], "yoffset": [0.0]}).write(text_column)
    return {
        missing: "no such file",
        corrupt: "cannot read as a table",
        no_columns: r"no offset columns (expected one of xoffset/yoffset, x_offset/y_offset); "
        "found columns: xcentroid, ycentroid, dx, dy",
        nan_table: "no usable star (2 rows, none with finite position and offset)",
        text_column: "column 'x' is not numeric",
    }


def test_bad_tables_reported_and_the_rest_processed(capsys, sequence, tmp_path):
    bad = bad_inputs(tmp_path)
    argv = [sequence[0], *bad, sequence[2]]
    status, out, err = run(capsys, "maps", *argv, "--shape", *SHAPE)
    assert status == 1
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == len(bad)
    for line, (path, message) in zip(errors, bad.items(), strict=True):
        assert line == f"astro-offsets: error: {path}: {message}" or (
            line.startswith(f"astro-offsets: error: {path}: ") and message in line
        ), line
    assert (
        out.strip().splitlines()[-1].startswith(f"maps: 2 written, 0 skipped, {len(bad)} failed (")
    )
    for path in bad:
        assert str(path) in out
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".offsets.fits")) == [
        "DSC00.offsets.fits",
        "DSC02.offsets.fits",
    ]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_dropped_rows_warned_in_one_line(capsys, tmp_path):
    table = tmp_path / "DSC20.offsets_table.fits"
    Table(
        {
            "x": [1.0, 5.0, np.nan],
            "y": [1.0, 9.0, 3.0],
            "x_offset": [0.1, 0.2, 0.3],
            "y_offset": [0.0, 0.0, 0.0],
        }
    ).write(table)
    status, _out, err = run(capsys, "maps", table, "--shape", *SHAPE)
    assert status == 0
    assert (
        f"astro-offsets: warning: {table}: dropped 1 of 3 stars with NaN or infinite "
        "position or offset (rows 2)"
    ) in err


def test_two_tables_for_one_map(capsys, tmp_path):
    first = write_table(tmp_path / "DSC30.offsets_table.fits")
    second = write_table(tmp_path / "DSC30.offsets_table_clean.fits", seed=5)
    status, _out, err = run(capsys, "maps", first, second, "--shape", *SHAPE)
    assert status == 1
    assert f"error: {second}: same output {tmp_path / 'DSC30.offsets.fits'} as {first}" in err
    expected = OffsetModel.read(first).to_map(SHAPE)
    np.testing.assert_allclose(
        OffsetMap.read(tmp_path / "DSC30.offsets.fits").x_offset,
        expected.x_offset,
        rtol=0,
        atol=2**-10,
    )


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.ARW", None, "no such file"),
        ("notraw.ARW", "hello", "not a readable raw file"),
        ("bad.fits", "hello", "not a readable FITS file"),
    ],
)
def test_bad_image_fails_before_any_map(capsys, sequence, tmp_path, name, content, message):
    image = tmp_path / name
    if content is not None:
        image.write_text(content)
    status, _out, err = run(capsys, "maps", *sequence, "--image", image)
    assert status == 2
    assert err.startswith(f"astro-offsets: error: {image}: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".offsets.fits")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["maps", "t.fits"], "one of the arguments --shape --image is required"),
        (["maps", "t.fits", "--shape", "0", "5"], "expected a positive integer, got '0'"),
        (["maps", "t.fits", "--shape", "5", "5", "--jobs", "0"], "0 jobs"),
        (["maps", "t.fits", "--shape", "5", "5", "--image", "x.fits"], "not allowed with"),
    ],
)
def test_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_outdir_that_is_a_file(capsys, sequence, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    status, _, err = run(capsys, "maps", *sequence, "--shape", *SHAPE, "--outdir", blocker)
    assert status == 2
    assert err.startswith(f"astro-offsets: error: {blocker}: ")


@pytest.mark.slow
def test_console_script_prints_no_traceback(tmp_path, sequence):
    bad = bad_inputs(tmp_path)
    result = subprocess.run(
        [SCRIPT, "maps", *map(str, [*bad, sequence[0]]), "--shape", *map(str, SHAPE)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "maps: 1 written, 0 skipped, 5 failed" in result.stdout


def test_the_outlier_line_keeps_two_figures():
    from types import SimpleNamespace

    from astro_offsets import StackResult
    from astro_offsets._cli import _stack_notes

    results = [
        StackResult(path=f"light{k}.fits", status="stacked", masked=masked)
        for k, masked in enumerate([0.0398, 0.0002, 0.00005])
    ]
    stack = SimpleNamespace(meta={"rejected": True})
    assert list(_stack_notes(stack, results)) == [
        "outliers: 1.3% of the pixels rejected on average, 4.0% at most (light0.fits)"
    ]


def star_frames(folder, names, shift=(6.3, -4.1)):
    """Small FITS frames of one star field, each moved by ``shift`` from the one before."""
    rng = np.random.default_rng(2)
    x, y, flux = rng.uniform(10, 190, 40), rng.uniform(10, 140, 40), rng.uniform(2e3, 2e4, 40)
    paths = []
    for k, name in enumerate(names):
        image = 100 + render_stars((150, 200), x + k * shift[0], y + k * shift[1], flux)
        paths.append(folder / name)
        fits.PrimaryHDU(image + rng.normal(0, 3, image.shape)).writeto(paths[-1])
    return [str(path) for path in paths]


def tables(capsys, *argv):
    return run(capsys, "tables", *argv, "--jobs", "1")


def test_tables_against_another_reference_are_remade(capsys, tmp_path, monkeypatch):
    first, second, third = star_frames(tmp_path, ["a.fits", "b.fits", "c.fits"])
    assert tables(capsys, first, second, third, "--reference", first)[0] == 0
    status, out, _ = tables(capsys, first, second, third, "--reference", second)
    assert status == 0
    lines = out.strip().splitlines()
    assert lines[-1] == "tables: 2 written, 0 skipped, 0 failed"
    # Said in the frame's line: the table it replaced was made against another frame.
    made_against = f"; replaced its table made against another reference ({first})"
    assert next(line for line in lines if line.startswith(third)).endswith(made_against)
    for frame in (first, third):
        meta = Table.read(frame.replace(".fits", ".offsets_table.fits")).meta
        assert (meta["REFFRAME"], meta["REFPATH"]) == ("b.fits", second)
        assert meta["XSHIFT"] == pytest.approx(-6.3 if frame == third else 6.3, abs=0.05)
    # The same reference, named another way: kept.
    monkeypatch.chdir(tmp_path)
    status, out, _ = tables(capsys, "a.fits", "c.fits", "--reference", "./b.fits")
    assert out.strip().splitlines()[-1] == "tables: 0 written, 2 skipped, 0 failed"


def test_table_of_an_earlier_version_compared_by_file_name(capsys, tmp_path):
    first, second = star_frames(tmp_path, ["a.fits", "b.fits"])
    table = tmp_path / "b.offsets_table.fits"
    assert tables(capsys, first, second, "--reference", first)[0] == 0
    with fits.open(table, mode="update") as hdul:
        del hdul[1].header["REFPATH"]
    _, out, _ = tables(capsys, second, "--reference", first)
    assert out.strip() == "tables: 0 written, 1 skipped, 0 failed"
    other = tmp_path / "other"
    other.mkdir()
    (moved,) = star_frames(other, ["a2.fits"])
    _, out, _ = tables(capsys, second, "--reference", moved)
    assert out.strip().splitlines()[-1] == "tables: 1 written, 0 skipped, 0 failed"
    assert "replaced its table made against another reference (a.fits)" in out


def test_missing_reference_is_an_error_even_with_every_table_made(capsys, tmp_path):
    first, second = star_frames(tmp_path, ["a.fits", "b.fits"])
    assert tables(capsys, first, second, "--reference", first)[0] == 0
    missing = str(tmp_path / "gone.fits")
    # b.fits has its table: no star is to be found, but the reference is still checked.
    status, out, err = tables(capsys, second, "--reference", missing)
    assert status == 2
    assert err == f"astro-offsets: error: --reference {missing}: no such file or folder\n"
    assert out == ""


def tables_of(frames):
    return [frame.replace(".fits", ".offsets_table.fits") for frame in frames]


def test_debug_shows_each_failures_traceback(capsys, tmp_path):
    frames = star_frames(tmp_path, ["a.fits", "b.fits", "c.fits"])
    bad = tmp_path / "d.fits"
    bad.write_text("not a FITS file")
    table = tmp_path / "e.offsets_table.fits"
    table.write_text("not a table")
    given = [*frames, str(bad)]
    commands = [
        # Made in worker processes: the traceback comes back with the result.
        ["tables", *given, "--reference", frames[0], "--jobs", "2", "--overwrite"],
        ["maps", *tables_of(frames[1:]), str(table), "--image", frames[0], "--overwrite"],
        ["stack", *given, "--out", str(tmp_path / "stack.fits"), "--overwrite"],
    ]
    # Where it failed, and the exception the reader raised, behind the one line.
    where = [
        ("in _frame_table", "OSError: No SIMPLE card found"),
        ("in read_table", "IORegistryError: Format could not be identified"),
        ("in _read_fits", "OSError: No SIMPLE card found"),
    ]
    for argv, (function, original) in zip(commands, where, strict=True):
        status, _, err = run(capsys, *argv)
        assert status == 1
        assert "Traceback" not in err  # one line a failure, as always
        assert len([line for line in err.splitlines() if "error:" in line]) == 1
        # --debug before the command, or among its options.
        for debug in (["--debug", *argv], [*argv, "--debug"]):
            status, _, err = run(capsys, *debug)
            assert status == 1
            trace, line = err.split("\nastro-offsets: error: ")
            assert trace.startswith("Traceback (most recent call last):"), err
            assert function in trace
            assert original in trace
            assert line.startswith(("d.fits", str(bad), str(table)))


def mapped_frames(capsys, folder):
    """Three frames, a.fits the reference, the others with their tables and maps."""
    frames = star_frames(folder, ["a.fits", "b.fits", "c.fits"])
    assert run(capsys, "tables", *frames, "--reference", frames[0], "--jobs", "1")[0] == 0
    assert run(capsys, "maps", *tables_of(frames[1:]), "--image", frames[0])[0] == 0
    return frames


def running_out_of_memory(function):
    """Return ``function`` raising MemoryError, as numpy does, unless called on a.fits."""

    def out_of_memory(*args, **kwargs):
        if args and str(args[0]).endswith("a.fits"):
            return function(*args, **kwargs)
        raise MemoryError("Unable to allocate 2.00 TiB for an array")

    return out_of_memory


@pytest.mark.parametrize(
    ("command", "module", "step"),
    [
        ("tables", "astro_offsets.stars._make_tables", "match_stars"),
        ("maps", "astro_offsets.field._write_maps", "_make"),
        ("stack", "astro_offsets.stack._reading", "read_frame"),
        ("run", "astro_offsets.stars._make_tables", "match_stars"),
    ],
)
def test_out_of_memory_stops_the_run_in_one_line(
    capsys, tmp_path, monkeypatch, command, module, step
):
    # No frame's problem, to be told among the frames that failed: the run stops.
    frames = mapped_frames(capsys, tmp_path)
    inputs = tables_of(frames[1:]) if command == "maps" else frames
    argv = [command, *inputs, "--jobs", "1", "--overwrite"]
    argv += {
        "tables": ["--reference", frames[0]],
        "maps": ["--image", frames[0]],
        "stack": ["--out", tmp_path / "stack.fits"],
        "run": ["--out", tmp_path / "stack.fits", "--tables", tmp_path / "tables"],
    }[command]
    monkeypatch.setattr(
        f"{module}.{step}", running_out_of_memory(getattr(import_module(module), step))
    )
    status, out, err = run(capsys, *argv)
    assert status == 1
    assert not re.search(f"^{command}: .* failed", out, re.M)  # no summary of the frames
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.startswith(
        "astro-offsets: error: out of memory (Unable to allocate 2.00 TiB for an array); "
        "try fewer --jobs"
    ), err
    assert "Traceback" not in err
    status, _, err = run(capsys, "--debug", *argv)
    assert status == 1
    trace, line = err.split("\nastro-offsets: error: ")
    assert trace[trace.index("Traceback") :].startswith("Traceback (most recent call last):")
    assert "\nMemoryError: Unable to allocate 2.00 TiB for an array" in trace
    assert line.startswith("out of memory")


def test_a_drizzle_that_fails_stops_the_stack_in_one_line(capsys, tmp_path, monkeypatch):
    frames = mapped_frames(capsys, tmp_path)

    def drizzle_band(job):
        raise RuntimeError("drizzle crashed")

    monkeypatch.setattr("astro_offsets.stack._stacker.drizzle_band", drizzle_band)
    argv = ["stack", *frames, "--out", tmp_path / "stack.fits", "--jobs", "1"]
    status, _, err = run(capsys, *argv)
    assert status == 1
    (line,) = [line for line in err.splitlines() if "error:" in line]
    checkpoint = tmp_path / "stack.checkpoint"
    assert line == (
        f"astro-offsets: error: drizzling {frames[0]} failed, the stack is incomplete: "
        f"drizzle crashed; its checkpoint is kept in {checkpoint} (--resume continues it)"
    )
    assert "Traceback" not in err
    status, _, err = run(capsys, "--debug", *argv, "--overwrite")
    assert status == 1
    assert "Traceback (most recent call last):" in err
    assert "\nRuntimeError: drizzle crashed\n" in err


@pytest.mark.parametrize("kind", ["bias", "dark", "flat"])
def test_a_calibration_path_that_is_not_there_names_its_option(capsys, tmp_path, kind):
    frames = star_frames(tmp_path, ["a.fits", "b.fits"])
    missing = str(tmp_path / "darks") + "/"
    argv = ["stack", *frames, "--out", str(tmp_path / "s.fits"), f"--{kind}", missing]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"astro-offsets: error: --{kind} {missing}: no such file or folder\n"
    )
    assert not (tmp_path / "s.fits").exists()


def test_maps_of_frames_rather_than_tables_is_a_usage_error(capsys, tmp_path):
    frames = star_frames(tmp_path, ["a.fits", "b.fits"])
    status, out, err = run(capsys, "maps", *frames, "--shape", "150", "200")
    assert status == 2
    assert err == (
        "astro-offsets: error: no star table among the 2 inputs: maps takes the star tables "
        "that tables writes (<frame>.offsets_table.fits)\n"
    )
    assert out == ""
    assert not list(tmp_path.glob("*.offsets.fits"))
