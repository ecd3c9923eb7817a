"""Worker processes: started ahead of their work, or a dask cluster's."""

import contextlib
import importlib
import os

from joblib import delayed

__all__ = [
    "ClusterError",
    "cancelled_on_error",
    "cluster_client",
    "on_every_worker",
    "start_workers",
    "warm_cluster",
    "workers_can_read",
    "workers_share",
]


class ClusterError(OSError):
    """A dask cluster cannot do a command's work: out of reach, or its workers cannot read.

    Examples
    --------
    >>> from astro_offsets._utils.workers import ClusterError
    >>> isinstance(ClusterError("tcp://10.0.0.1:8786: cannot connect"), OSError)
    True
    """


def _ready():
    """Return the process id: a task that only has a worker start and import the package."""
    return os.getpid()


def start_workers(parallel, n_workers):
    """Have ``n_workers`` workers of a `joblib.Parallel` start and import the package.

    A worker process takes about a second to start and import what it
    runs; called in a thread while the caller reads its first frame, that
    second is spent in parallel with it. A problem here is left to show
    again when the work itself runs.

    Parameters
    ----------
    parallel : `joblib.Parallel`
        The workers' pool, made in the caller's thread (joblib's
        configuration is the caller's).
    n_workers : int
        How many to start.

    Examples
    --------
    >>> from joblib import Parallel
    >>> from astro_offsets._utils.workers import start_workers
    >>> start_workers(Parallel(n_jobs=1), 1)
    """
    with contextlib.suppress(Exception):
        list(parallel(delayed(_ready)() for _ in range(n_workers)))


def _import(module):
    importlib.import_module(module)


def warm_cluster(client, module):
    """Have every worker of a dask cluster import ``module`` now, ahead of its tasks.

    Called in a thread while the caller does its own first work (the
    reference's stars): a fresh worker takes about a second to import what
    the tasks run. A problem here is left to show again when they run.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from astro_offsets._utils.workers import warm_cluster
    >>> with (
    ...     LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
    ...     Client(cluster) as client,
    ... ):
    ...     warm_cluster(client, "json")
    """
    with contextlib.suppress(Exception):
        client.run(_import, module)


def _as_is(value):
    """Return ``value``: a task that puts it on a cluster."""
    return value


def on_every_worker(client, value):
    """Put ``value`` on every worker of a dask cluster once; return its future.

    For what many tasks take (a frame's colours, calibration masters, the
    reference's stars): sent once, not with every task. A task's result,
    not scattered data, which a lost worker would take with it for good:
    the scheduler computes it again. On every worker: the scheduler would
    otherwise run the tasks where the one copy is.

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> from astro_offsets._utils.workers import on_every_worker
    >>> with (
    ...     LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
    ...     Client(cluster) as client,
    ... ):
    ...     on_every_worker(client, [1, 2]).result()
    [1, 2]
    """
    future = client.submit(_as_is, value, pure=False)
    client.replicate([future])
    return future


def cluster_client():
    """Return the dask client of ``joblib.parallel_config(backend="dask")``; `None` outside it.

    Inside it, the commands make frames their unit of work: one task per
    frame (tables, maps) or per share of the frames (stacks).

    Examples
    --------
    >>> from astro_offsets._utils.workers import cluster_client
    >>> cluster_client() is None
    True
    """
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return getattr(backend, "client", None) if type(backend).__name__.startswith("Dask") else None


def _unreadable(paths):
    """Return the first of ``paths`` this process cannot read, or `None`."""
    for path in paths:
        if not os.access(path, os.R_OK):
            return path
    return None


def workers_can_read(client, paths, names=None):
    """Check that every worker of a dask cluster can read ``paths``; raise `OSError` if not.

    Files move between the client and the workers as paths on a shared
    filesystem; this finds the setups where they do not (a worker on a
    machine without the filesystem, or where it is mounted elsewhere) before
    any work is sent. Only the paths this process can read are checked: one
    that it cannot read either fails on its own, as it would without a
    cluster.

    Parameters
    ----------
    client : `distributed.Client`
        The cluster's client.
    paths : list of str
        Absolute paths.
    names : list of str, optional
        How the user named them, for the message (``paths`` by default).

    Raises
    ------
    ClusterError
        Naming the first worker and the first file it cannot read.

    Examples
    --------
    >>> import sys
    >>> from distributed import Client, LocalCluster
    >>> from astro_offsets._utils.workers import workers_can_read
    >>> with (
    ...     LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
    ...     Client(cluster) as client,
    ... ):
    ...     workers_can_read(client, [sys.executable])
    """
    names = dict(zip(paths, names or paths, strict=True))
    paths = [path for path in paths if os.access(path, os.R_OK)]
    if not paths:
        return
    for worker, path in sorted(client.run(_unreadable, list(paths)).items()):
        if path is not None:
            raise ClusterError(
                f"{names[path]}: the dask worker {worker} cannot read it (as {path}); "
                "the workers need the files on a filesystem they share with this machine, "
                "at the same paths"
            )


@contextlib.contextmanager
def cancelled_on_error(client, futures):
    """Cancel a cluster's ``futures`` if the block raises (an error, Ctrl-C): no task left."""
    try:
        yield
    except BaseException:
        client.cancel(futures)
        raise


def workers_share(client, directory, name=None):
    """Check that every worker of a dask cluster can read the files written to ``directory``.

    A file is written there and every worker reads it (`workers_can_read`):
    the directory where the caller and the workers exchange files must be
    on a filesystem they share. ``name`` names the directory in the message
    (``directory`` by default).

    Raises
    ------
    ClusterError
        Naming the first worker that cannot.

    Examples
    --------
    >>> import tempfile
    >>> from distributed import Client, LocalCluster
    >>> from astro_offsets._utils.workers import workers_share
    >>> with (
    ...     LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
    ...     Client(cluster) as client,
    ... ):
    ...     workers_share(client, tempfile.mkdtemp())
    """
    probe = os.path.join(directory, "readable")
    with open(probe, "w"):
        pass
    name = directory if name is None else name
    workers_can_read(client, [probe], [f"{name} (the directory of the shared files)"])
