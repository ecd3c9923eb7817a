"""Tables, maps and stacks on a dask cluster: frames the unit of work, on every worker."""

import os
import shutil
import signal
import threading
import time

import dask
import numpy as np
import pytest
from astropy.io import fits
from rejection_sequence import bright_field, write_sequence

from astro_offsets import Calibration, make_tables, stack_frames, write_maps
from astro_offsets._cli import main
from astro_offsets.datasets import CameraMotion, observe, star_field

distributed = pytest.importorskip("distributed")

SHAPE = (240, 320)
N_FRAMES = 7  # the reference and six moved frames


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """A reference and frames that drift and rotate against it, as FITS files."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(3)
    x, y, flux = star_field(rng, 150, SHAPE)
    paths = []
    for k in range(N_FRAMES):
        motion = CameraMotion(SHAPE, drift=(2.0 * k, -1.5 * k), rotation_deg=0.1 * k)
        image = observe(rng, SHAPE, *motion.to_frame(x, y), flux)
        paths.append(str(folder / f"light_{k}.fits"))
        fits.PrimaryHDU(image.astype(np.float32)).writeto(paths[-1])
    return paths


@pytest.fixture(scope="module")
def local_tables(frames, tmp_path_factory):
    """The star tables of a local run, in one process."""
    outdir = tmp_path_factory.mktemp("local_tables")
    results = make_tables(frames, frames[0], outdir=outdir, n_jobs=1)
    assert [r.status for r in results] == ["reference"] + ["written"] * (N_FRAMES - 1)
    return [r.output for r in results[1:]]


def same_products(a, b):
    """Whether two FITS files hold the same HDUs, data and headers (but their dates)."""
    with fits.open(a) as one, fits.open(b) as other:
        assert len(one) == len(other)
        for x, y in zip(one, other, strict=True):
            cards = [{k: v for k, v in h.items() if k != "DATE"} for h in (x.header, y.header)]
            if cards[0] != cards[1]:
                return False
            if not x.is_image:  # (a tile-compressed image is a BinTableHDU in astropy 6)
                if x.columns.names != y.columns.names or not all(
                    np.array_equal(x.data[name], y.data[name]) for name in x.columns.names
                ):
                    return False
            elif not np.array_equal(x.data, y.data):
                return False
    return True


def tasks_of(stream, function):
    """The tasks of a task stream that ran ``function``."""
    return [task for task in stream.data if function in str(task["key"])]


def test_tables_on_the_cluster(client, frames, local_tables, tmp_path):
    # A flat of ones, which changes nothing, for the masters go to the cluster too.
    flat = Calibration(flat=np.ones(SHAPE))
    with distributed.get_task_stream(client) as stream:
        results = make_tables(frames, frames[0], outdir=tmp_path, calibration=flat, client=client)
    tasks = tasks_of(stream, "_frame_table")
    assert len(tasks) == N_FRAMES - 1  # one per frame but the reference
    assert len({task["worker"] for task in tasks}) == 2
    assert [r.status for r in results] == ["reference"] + ["written"] * (N_FRAMES - 1)
    for result, local in zip(results[1:], local_tables, strict=True):
        assert os.path.basename(result.output) == os.path.basename(local)
        assert same_products(result.output, local)


def test_maps_on_the_cluster(client, local_tables, tmp_path, monkeypatch):
    # Named relative to this process's directory, which is no worker's; a
    # table missing, one that is no table, and one twice: each fails alone,
    # in the same words.
    monkeypatch.chdir(os.path.dirname(local_tables[0]))
    (tmp_path / "junk.offsets_table.fits").write_text("not a table")
    tables = [os.path.basename(t) for t in local_tables]
    tables += ["gone.offsets_table.fits", str(tmp_path / "junk.offsets_table.fits"), tables[0]]
    runs = {}
    for where in ("here", "cluster"):
        (tmp_path / where).mkdir()
    runs["here"] = write_maps(tables, SHAPE, outdir=tmp_path / "here", cv=True)
    with distributed.get_task_stream(client) as stream:
        runs["cluster"] = write_maps(
            tables, SHAPE, outdir=tmp_path / "cluster", cv=True, client=client
        )
    tasks = tasks_of(stream, "_make_map")
    assert len(tasks) == len(tables) - 1  # the table given twice is not sent again
    assert len({task["worker"] for task in tasks}) == 2
    assert [r.status for r in runs["cluster"]] == ["written"] * (N_FRAMES - 1) + ["failed"] * 3
    # Auto chose on the first table, here, and the workers' tables kept it.
    assert " (auto, sequence), " in runs["cluster"][1].field
    for here, there in zip(runs["here"], runs["cluster"], strict=True):
        message = there.message.replace(str(tmp_path / "cluster"), str(tmp_path / "here"))
        assert (message, there.warnings, there.field) == (here.message, here.warnings, here.field)
        if there.status == "written":
            assert same_products(there.output, here.output)  # SRCTABLE, CVRMS too
    assert sorted(os.listdir(tmp_path / "cluster")) == sorted(os.listdir(tmp_path / "here"))


@pytest.mark.slow
def test_the_command_line_on_the_cluster(cluster, frames, local_tables, tmp_path, capsys):
    address = ["--scheduler", cluster.scheduler_address]
    argv = ["tables", *frames, "--reference", frames[0], "--outdir", str(tmp_path)]
    assert main([*argv, *address]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"tables: {N_FRAMES - 1} written, 0 skipped, 0 failed"
    tables = sorted(str(tmp_path / os.path.basename(t)) for t in local_tables)
    assert all(same_products(t, local) for t, local in zip(tables, local_tables, strict=True))
    argv = ["maps", *tables[:3], "--shape", *map(str, SHAPE), "--plot", "--sip", "--outdir"]
    assert main([*argv, str(tmp_path / "cluster"), *address]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "maps: 3 written, 0 skipped, 0 failed"
    assert main([*argv, str(tmp_path / "here")]) == 0
    names = sorted(os.listdir(tmp_path / "here"))
    assert sorted(os.listdir(tmp_path / "cluster")) == names  # plots, SIPs, and nothing staged
    assert sum(name.endswith(".sip.fits") for name in names) == 3
    for name in names:
        if name.endswith(".fits"):
            assert same_products(tmp_path / "cluster" / name, tmp_path / "here" / name)


@pytest.mark.parametrize("command", ["tables", "maps"])
def test_a_scheduler_out_of_reach(command, frames, capsys):
    argv = {
        "tables": ["tables", frames[1], "--reference", frames[0]],
        "maps": ["maps", "a.offsets_table.fits", "--shape", "5", "5"],
    }[command]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*argv, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("astro-offsets: error: tcp://127.0.0.1:9: ")
    assert err.count("\n") == 1


def test_a_table_missing_for_everyone_fails_alone(cluster, local_tables, tmp_path, capsys):
    argv = ["maps", local_tables[0], str(tmp_path / "gone.offsets_table.fits")]
    argv += ["--shape", "20", "30", "--outdir", str(tmp_path), "--scheduler"]
    assert main([*argv, cluster.scheduler_address]) == 1
    assert capsys.readouterr().err == (
        f"astro-offsets: error: {tmp_path / 'gone.offsets_table.fits'}: no such file\n"
    )


# Run as a worker's preload: the worker's real user becomes nobody, who can
# read no file of this test (pytest's temporary folders are their owner's
# alone); a worker's check of what it can read answers for its real user.
AS_NOBODY = """
import os

def dask_setup(worker):
    os.setresuid(65534, os.geteuid(), os.geteuid())
"""


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="a worker that cannot read what this process reads needs another user: root only",
)
@pytest.mark.parametrize("command", ["tables", "maps"])
def test_workers_that_cannot_read_the_inputs(command, frames, local_tables, tmp_path, capsys):
    source = {"tables": frames[1], "maps": local_tables[0]}[command]
    given = tmp_path / os.path.basename(source)
    shutil.copy(source, given)
    argv = {
        "tables": ["tables", str(given), "--reference", frames[0]],
        "maps": ["maps", str(given), "--shape", "20", "30"],
    }[command]
    preload = tmp_path / "as_nobody.py"
    preload.write_text(AS_NOBODY)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, dashboard_address=":0", preload=[str(preload)]
    ) as nobody:
        (worker,) = (nanny.worker_address for nanny in nobody.workers.values())
        argv += ["--outdir", str(tmp_path / "out"), "--scheduler", nobody.scheduler_address]
        status = main(argv)
    assert status == 2
    assert capsys.readouterr().err == (
        f"astro-offsets: error: {given}: the dask worker {worker} cannot read it "
        f"(as {given}); the workers need the files on a filesystem they share with this "
        "machine, at the same paths\n"
    )
    assert not os.path.exists(tmp_path / "out")


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """Frames with their maps, trails and cosmic rays to reject; and their local stack."""
    frames = write_sequence(tmp_path_factory.mktemp("sequence"), bright_field())
    return frames, stack_frames(frames, n_jobs=2)


def same_stack(stack, local):
    """Whether a stack is the local one: exactly but for float32 rounding of the sums.

    Drizzle adds each frame into float32 means (a rounding or two a frame);
    the cluster adds the means of its shares: the two orders of the sums
    differ by up to about a rounding a frame.
    """
    n_frames = len(local.meta["frames"])
    for name in local.channels:
        image, expected = stack.images[name], local.images[name]
        assert np.array_equal(np.isnan(image), np.isnan(expected))
        scale = np.nanmax(np.abs(expected))
        assert np.nanmax(np.abs(image - expected)) <= n_frames * np.finfo(np.float32).eps * scale
        np.testing.assert_allclose(stack.weights[name], local.weights[name], rtol=1e-6)
        assert np.array_equal(stack.contexts[name], local.contexts[name])  # each frame once
    assert stack.meta["frames"] == local.meta["frames"]
    assert stack.meta["masked"] == local.meta["masked"]
    return True


def same_reference_meta(stack, local):
    """Whether a stack has the reference's WCS, cards and row order, as the local one."""
    assert stack.meta["wcs"] is not None
    assert stack.meta["wcs"].to_header() == local.meta["wcs"].to_header()
    assert stack.meta["observation"] == local.meta["observation"] != []
    assert stack.meta["roworder"] == local.meta["roworder"] == "BOTTOM-UP"
    return True


def test_a_stack_on_the_cluster(client, sequence):
    frames, (local, local_results) = sequence
    with distributed.get_task_stream(client) as stream:
        stack, results = stack_frames(frames, client=client)
    assert [(r.status, r.scale, r.masked, r.weight) for r in results] == [
        (r.status, r.scale, r.masked, r.weight) for r in local_results
    ]
    assert len({r.weight for r in results}) == len(frames)  # weighted by their noise
    assert same_stack(stack, local)
    assert same_reference_meta(stack, local)
    kept = tasks_of(stream, "store_task")
    assert len(kept) == len(frames) - 1  # the reference is kept here
    assert len({task["worker"] for task in kept}) == 2
    assert tasks_of(stream, "median_rows")
    shares = tasks_of(stream, "share_task")
    assert len(shares) == 2
    assert len({task["worker"] for task in shares}) == 2


@pytest.mark.slow
def test_the_stack_command_on_the_cluster(cluster, sequence, tmp_path):
    frames, (local, _) = sequence
    out = tmp_path / "stack.fits"
    argv = ["stack", *frames, "--out", str(out), "--context"]
    assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    with fits.open(out) as hdus:
        stack = local._replace(
            images={"SCI": hdus["SCI"].data},
            weights={"SCI": hdus["WHT"].data},
            contexts={"SCI": hdus["CTX"].data},
        )
    assert same_stack(stack, local)
    # No checkpoint left.
    assert sorted(os.listdir(tmp_path)) == [
        "stack.fits",
        "stack.frames.ecsv",
        "stack.frames.png",
        "stack.png",
    ]


@pytest.mark.slow
def test_a_stack_with_a_worker_killed(client, sequence):
    frames, (local, _) = sequence
    pids = client.run(os.getpid)
    killed = []
    stop = threading.Event()

    def kill_a_share():
        # Kill the first worker seen stacking its share of the frames.
        while not stop.is_set() and not killed:
            for worker, keys in client.processing().items():
                if any("share_task" in str(key) for key in keys):
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.append(worker)
                    break
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_a_share)
    watcher.start()
    try:
        stack, results = stack_frames(frames, client=client)
    finally:
        stop.set()
        watcher.join()
    assert killed  # a share was lost with its worker, and stacked again
    assert [r.status for r in results] == ["stacked"] * len(frames)
    assert same_stack(stack, local)


@pytest.mark.slow
def test_a_worker_killed_mid_run(client, local_tables, tmp_path):
    # Last in this module: the cluster's nanny starts a new worker.
    assert dask.config.get("distributed.scheduler.allowed-failures") >= 1  # dask retries
    pids = client.run(os.getpid)
    killed = []
    stop = threading.Event()

    def kill_once():
        # Kill the first worker seen making maps, with the maps it holds.
        while not stop.is_set() and not killed:
            for worker, keys in client.processing().items():
                held = [key for key in keys if "_make_map" in str(key)]
                if held:
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.append((worker, held))
                    break
            time.sleep(0.002)

    shape = (900, 1200)  # a few tenths of a second a map
    for where in ("cluster", "here"):
        (tmp_path / where).mkdir()
    watcher = threading.Thread(target=kill_once)
    watcher.start()
    try:
        with distributed.get_task_stream(client) as stream:
            results = write_maps(local_tables, shape, outdir=tmp_path / "cluster", client=client)
    finally:
        stop.set()
        watcher.join()
    ((victim, held),) = killed
    assert held  # the worker killed had work: it ran again on another
    done = tasks_of(stream, "_make_map")
    assert all(any(t["key"] == key and t["worker"] != victim for t in done) for key in held)
    assert [r.status for r in results] == ["written"] * len(local_tables)
    write_maps(local_tables, shape, outdir=tmp_path / "here")
    for result in results:
        assert same_products(result.output, tmp_path / "here" / os.path.basename(result.output))
    # Nothing staged is left, unless the worker died writing it.
    left = [n for n in os.listdir(tmp_path / "cluster") if n.startswith(".")]
    assert all(name.endswith(".tmp") for name in left)


@pytest.mark.slow
def test_a_run_on_the_cluster(client, cluster, frames, tmp_path):
    """``run_sequence`` with ``client=``: each frame read through by a task, the local stack."""
    from astro_offsets import run_sequence

    for folder in ("local", "cluster"):
        (tmp_path / folder).mkdir()
    local, local_results = run_sequence(frames, tables=tmp_path / "local", n_jobs=2)
    with distributed.get_task_stream(client) as stream:
        stack, results = run_sequence(frames, tables=tmp_path / "cluster", client=client)
    assert [(r.status, r.weight, r.field) for r in results] == [
        (r.status, r.weight, r.field) for r in local_results
    ]
    assert same_stack(stack, local)
    through = tasks_of(stream, "_through")
    # The reference is read here, and the first frame, whose field is the sequence's choice.
    assert len(through) == len(frames) - 2
    assert len({task["worker"] for task in through}) == 2
    assert len(tasks_of(stream, "share_task")) == 2
    # The command, with the scheduler's address: the same stack.
    out = tmp_path / "out" / "stack.fits"
    arguments = ["run", *frames, "--out", str(out), "--tables", str(tmp_path / "cluster")]
    assert main([*arguments, "--scheduler", cluster.scheduler_address]) == 0
    assert np.array_equal(fits.getdata(out, "SCI"), stack.images["SCI"], equal_nan=True)
