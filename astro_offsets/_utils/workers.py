"""Worker processes started ahead of their work."""

import contextlib
import os

from joblib import delayed

__all__ = ["start_workers"]


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
