"""Tasks sent to workers (joblib's or a dask cluster's): results in order, the rest cancelled."""

import os
import time

import dask
import joblib
import pytest

from astro_offsets import make_tables, stack_frames, write_maps
from astro_offsets._utils.workers import ClusterError, Tasks, connected

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


def late(k, delay):
    """Return ``k`` after ``delay`` seconds."""
    time.sleep(delay)
    return k


def marked(folder, k, delay):
    """Write the file ``k`` in ``folder`` after ``delay`` seconds: the task ran."""
    time.sleep(delay)
    with open(os.path.join(folder, str(k)), "w"):
        pass
    return k


def broken(k):
    raise ValueError(f"task {k} is broken")


def run(tasks, *calls):
    """Submit the ``calls`` (a function and its arguments each); return their results."""
    for function, *arguments in calls:
        tasks.submit(function, *arguments)
    return list(tasks.results())


@pytest.fixture
def threads():
    # Here, joblib's threads: the same calls as its processes, without
    # their start (a second or more).
    with joblib.parallel_config(backend="threading"):
        yield


def ran(folder, wait):
    """The tasks that wrote their file in ``folder`` within ``wait`` seconds from now."""
    time.sleep(wait)
    return len(os.listdir(folder))


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("where", ["here", "cluster"])
def test_results_come_in_the_order_sent(where, request):
    client = request.getfixturevalue("client") if where == "cluster" else None
    with Tasks(client, n_jobs=2) as tasks:
        # The first tasks take longest: done last, taken first.
        for k in range(6):
            tasks.submit(late, k, 0.05 * (6 - k))
        assert list(tasks.results()) == list(range(6))
        tasks.submit(late, "again", 0)
        assert list(tasks.results()) == ["again"]  # each result taken once


def test_processes_here():
    # joblib's processes (loky), as the commands run them; a builtin, which
    # a worker unpickles without importing this module.
    with Tasks(n_jobs=2) as tasks:
        assert run(tasks, *[(pow, k, 2) for k in range(8)]) == [k * k for k in range(8)]


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("where", ["here", "cluster"])
def test_shared_values_reach_the_tasks(where, request):
    client = request.getfixturevalue("client") if where == "cluster" else None
    with Tasks(client, n_jobs=2) as tasks:
        shared = tasks.share([1, 2, 3])
        tasks.submit(sum, shared)
        assert list(tasks.results()) == [6]


def test_an_error_cancels_the_tasks_left_on_a_cluster(client, tmp_path):
    # One worker thread: the broken task first, the others queued behind it.
    calls = [(broken, 0)] + [(marked, str(tmp_path), k, 0.3) for k in range(1, 6)]
    with Tasks(client) as tasks, pytest.raises(ValueError, match="task 0 is broken"):
        run(tasks, *calls)
    # Not cancelled, all five would have run by then.
    assert ran(tmp_path, 2.0) <= 1


@pytest.mark.usefixtures("threads")
def test_leaving_early_cancels_the_tasks_left_here(tmp_path):
    # A loop left early (an error of the caller's, Ctrl-C): joblib's workers
    # would go on with every task sent, in the background.
    with Tasks(n_jobs=2) as tasks:
        for k in range(20):
            tasks.submit(marked, str(tmp_path), k, 0.05)
        assert next(iter(tasks.results())) == 0
    assert ran(tmp_path, 1.5) < 20


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("where", ["here", "cluster"])
def test_an_error_raised_here(where, request):
    client = request.getfixturevalue("client") if where == "cluster" else None
    calls = [(late, 0, 0), (broken, 1), (late, 2, 0)]
    with Tasks(client, n_jobs=2) as tasks, pytest.raises(ValueError, match="task 1 is broken"):
        run(tasks, *calls)


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("where", ["here", "cluster"])
def test_errors_returned_in_their_place(where, request):
    client = request.getfixturevalue("client") if where == "cluster" else None
    with Tasks(client, n_jobs=2, errors="return") as tasks:
        first, error, last = run(tasks, (late, 0, 0), (broken, 1), (late, 2, 0))
    assert (first, last) == (0, 2)
    assert isinstance(error, ValueError)
    assert str(error) == "task 1 is broken"


class _ExpectedError(ValueError):
    pass


def failing(k):
    raise _ExpectedError(f"task {k} failed")


@pytest.mark.usefixtures("threads")
@pytest.mark.parametrize("where", ["here", "cluster"])
def test_errors_of_a_class_returned_in_their_place(where, request):
    client = request.getfixturevalue("client") if where == "cluster" else None
    with Tasks(client, n_jobs=2, errors=_ExpectedError) as tasks:
        first, error, last = run(tasks, (late, 0, 0), (failing, 1), (late, 2, 0))
    assert (first, last) == (0, 2)
    assert isinstance(error, _ExpectedError)
    assert str(error) == "task 1 failed"
    # Others are raised.
    tasks = Tasks(client, n_jobs=2, errors=_ExpectedError)
    with tasks, pytest.raises(ValueError, match="task 1 is broken"):
        run(tasks, (late, 0, 0), (broken, 1), (late, 2, 0))


def test_bad_errors():
    with pytest.raises(ValueError, match='errors must be "raise" or "return", got \'ignore\''):
        Tasks(errors="ignore")


def test_a_scheduler_address_connects(cluster):
    with connected(cluster.scheduler_address) as client:
        assert len(client.scheduler_info()["workers"]) == 1
    assert client.status == "closed"  # connected for the block alone


@pytest.mark.parametrize("function", [make_tables, write_maps, stack_frames])
def test_client_out_of_reach_or_wrong(function):
    arguments = {
        make_tables: (["a.fits"], "a.fits"),
        write_maps: (["a.offsets_table.fits"], (5, 5)),
        stack_frames: (["a.fits"],),
    }[function]
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(ClusterError, match=r"^tcp://127\.0\.0\.1:9: "),
    ):
        function(*arguments, client="tcp://127.0.0.1:9")
    with pytest.raises(
        TypeError,
        match=r"client must be a distributed\.Client or a dask scheduler's address, got int",
    ):
        function(*arguments, client=8786)
