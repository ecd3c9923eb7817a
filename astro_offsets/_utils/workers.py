"""Worker processes: started ahead of their work, or a dask cluster's; tasks sent to either."""

import _thread
import collections
import contextlib
import functools
import importlib
import os
import signal
import threading
import warnings

from joblib import Parallel, delayed, effective_n_jobs

__all__ = [
    "ClusterError",
    "Tasks",
    "connected",
    "interrupted_here",
    "on_every_worker",
    "start_workers",
    "takes_client",
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
    with contextlib.suppress(Exception):  # any, shown again by the work itself
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
    with contextlib.suppress(Exception):  # any, shown again by the work itself
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


@contextlib.contextmanager
def connected(client):
    """Yield the dask client that ``client`` names: none, a client, or a scheduler's address.

    A client given is used as it is (and left open); an address (a `str`,
    such as ``"tcp://10.0.0.1:8786"``) is connected to here, and the client
    closed at the end of the block.

    Raises
    ------
    ClusterError
        If the scheduler at the address cannot be reached.
    TypeError
        If ``client`` is neither.

    Examples
    --------
    >>> from astro_offsets._utils.workers import connected
    >>> with connected(None) as client:
    ...     print(client)
    None
    """
    if client is None or not isinstance(client, str):
        if client is not None and not callable(getattr(client, "submit", None)):
            raise TypeError(
                "client must be a distributed.Client or a dask scheduler's address, "
                f"got {type(client).__name__}"
            )
        yield client
        return
    from distributed import Client

    # The connection's timeout is dask's: distributed.comm.timeouts.connect.
    try:
        made = Client(client)
    except (OSError, ValueError) as exc:
        text = str(exc).strip()
        text = text.splitlines()[0] if text else type(exc).__name__
        raise ClusterError(f"{client}: {text.removeprefix(f'{client}: ')}") from None
    with made:
        yield made


def takes_client(function):
    """Have ``function``'s ``client=`` be a scheduler's address too (see `connected`).

    Examples
    --------
    >>> from astro_offsets._utils.workers import takes_client
    >>> @takes_client
    ... def work(*, client=None):
    ...     return client
    >>> work() is None
    True
    """

    @functools.wraps(function)
    def wrapper(*args, client=None, **kwargs):
        with connected(client) as made:
            return function(*args, client=made, **kwargs)

    return wrapper


class _Raised:
    """A task's exception of ``kinds``, as its result (see `Tasks`' ``errors``)."""

    def __init__(self, function, kinds=Exception):
        self.function = function
        self.kinds = kinds
        functools.update_wrapper(self, function)

    def __call__(self, *args):
        try:
            return self.function(*args)
        except self.kinds as exc:
            return exc


class Tasks:
    """Tasks sent to workers, their results taken back in the order sent.

    The workers are a dask cluster's, given its ``client``: each task goes
    to the scheduler when submitted. Or, without one, joblib's
    (`joblib.Parallel` with ``n_jobs``, local processes by default): the
    tasks go out once their results are asked for (`results`), a few ahead
    of the one the caller takes. Leaving the ``with`` block cancels every
    task whose result was not taken: on an error, on Ctrl-C, or when the
    caller stops early. No task is left running.

    Parameters
    ----------
    client : `distributed.Client` or `None`, optional
        The cluster's client; `None` (the default) runs the tasks with joblib.
    n_jobs : int or `None`, optional
        joblib's workers, with its meaning (`None` honours
        `joblib.parallel_config`); not used with a ``client``.
    errors : {"raise", "return"} or exception class, optional
        A task that raises an exception: ``"raise"`` (the default) raises it
        from `results`, and the tasks after it are cancelled; ``"return"``
        gives the exception in its place among the results, and the others
        go on (a dask worker lost too often, a task's own bug). An exception
        class (such as `~astro_offsets._utils.batch.FrameError`): the task's
        exceptions of that class are given in its place, the others raised.

    Examples
    --------
    >>> from astro_offsets._utils.workers import Tasks
    >>> with Tasks(n_jobs=1) as tasks:
    ...     for k in range(3):
    ...         tasks.submit(pow, k, 2)
    ...     print(list(tasks.results()))
    [0, 1, 4]
    """

    def __init__(self, client=None, n_jobs=None, errors="raise"):
        if errors not in ("raise", "return") and not (
            isinstance(errors, type) and issubclass(errors, Exception)
        ):
            raise ValueError(
                f'errors must be "raise" or "return", got {errors!r} (or an exception class)'
            )
        self.client = client
        self._n_jobs = n_jobs
        self._errors = errors
        self._parallel = None if client is not None else Parallel(n_jobs, return_as="generator")
        self._sent = collections.deque()  # futures on a cluster, else joblib's calls
        self._outputs = None  # joblib's results being taken

    @property
    def workers(self):
        """How many workers take the tasks at once: the cluster's, or joblib's."""
        if self.client is not None:
            return len(self.client.scheduler_info()["workers"])
        return effective_n_jobs(self._n_jobs)

    def start(self, module=None):
        """Have the workers start (and a cluster's import ``module``) now, ahead of their tasks.

        To call in a thread while the caller does its own first work (see
        `start_workers`, `warm_cluster`).
        """
        if self.client is not None:
            if module is not None:
                warm_cluster(self.client, module)
        elif self.workers > 1:
            start_workers(self._parallel, self.workers)

    def share(self, value):
        """Return what stands for ``value`` in the tasks: itself, or on every worker of a cluster.

        What many tasks take is sent once (`on_every_worker`), not with each.
        """
        return value if self.client is None else on_every_worker(self.client, value)

    def submit(self, function, *args):
        """Send the task ``function(*args)``; its result comes from `results`."""
        if self._errors == "return":
            function = _Raised(function)
        elif self._errors != "raise":
            function = _Raised(function, self._errors)
        if self.client is not None:
            self._sent.append(self.client.submit(function, *args, pure=False))
        else:
            self._sent.append(delayed(function)(*args))

    def results(self):
        """Yield the results of the tasks submitted, in the order they were.

        Each result is taken once: a second call yields those submitted since.
        """
        if self.client is not None:
            while self._sent:
                try:
                    result = self._sent[0].result()
                # The task's own exception, or the cluster's (a worker lost too often).
                except Exception as exc:
                    if self._errors != "return":
                        raise
                    result = exc  # given in its place: the caller fails its file (`describe`)
                # Its result is here: if its worker dies now, the scheduler is
                # not to run it again (a task that writes files would write
                # them a second time, for no one).
                self._sent.popleft().release()
                yield result
            return
        calls = list(self._sent)
        self._sent.clear()
        outputs = self._outputs = self._parallel(calls)
        try:
            # Not ``yield from``: this generator closed early (the caller's
            # loop left) closes joblib's here, its warning silenced.
            for result in outputs:
                yield result
            self._outputs = None  # all taken: nothing to stop
        finally:
            self._close_outputs()

    def _close_outputs(self):
        """Stop joblib's work whose results were not taken."""
        outputs, self._outputs = self._outputs, None
        if outputs is not None:
            # joblib warns of the work cancelled, which is meant here. (Only
            # then: the filters are the whole process's, not this thread's.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs.close()

    def cancel(self):
        """Cancel the tasks whose results were not taken."""
        sent, self._sent = list(self._sent), collections.deque()
        if self.client is not None and sent:
            self.client.cancel(sent)
        self._close_outputs()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cancel()


@contextlib.contextmanager
def interrupted_here():
    """Have Ctrl-C interrupt this process only, not the worker processes it starts.

    The terminal sends SIGINT to every process of its foreground group: a
    worker that got it would print a ``KeyboardInterrupt`` traceback of its
    own, also one still importing its modules. Within the ``with`` block
    SIGINT is blocked, a mask that the threads and processes started in it
    inherit, and a thread waits for it and raises `KeyboardInterrupt` in
    the main thread, which stops the workers on its way out. Nothing is done
    outside the main thread, or where there are no signal masks (Windows).

    Examples
    --------
    >>> from astro_offsets._utils.workers import interrupted_here
    >>> with interrupted_here():
    ...     pass
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    from multiprocessing import resource_tracker

    from joblib.externals.loky.backend import resource_tracker as loky_resource_tracker

    # Started first: starting a resource tracker unblocks SIGINT in the
    # thread that starts it (before Python 3.14), before that thread starts
    # the workers.
    resource_tracker.ensure_running()
    loky_resource_tracker.ensure_running()
    done = threading.Event()

    def wait():
        while signal.sigwait({signal.SIGINT}) and not done.is_set():
            _thread.interrupt_main()

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    waiter = threading.Thread(target=wait, name="Ctrl-C", daemon=True)
    waiter.start()
    try:
        yield
    finally:
        done.set()
        signal.pthread_kill(waiter.ident, signal.SIGINT)
        waiter.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
