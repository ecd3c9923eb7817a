"""Test-session settings."""

import os

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread_per_xdist_worker():
    # pytest-xdist runs a worker per core; each worker's BLAS would start a
    # thread per core as well, and the oversubscribed threads spin against
    # each other (the cross-validation tests ran 2.5x slower).
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
