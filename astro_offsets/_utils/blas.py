"""BLAS threads for the small linear algebra of fits."""

from threadpoolctl import threadpool_limits

__all__ = ["one_blas_thread"]


def one_blas_thread():
    """Return a context in which BLAS and LAPACK run on one thread.

    The fits of offset fields solve systems of tens to hundreds of unknowns,
    hundreds of times: a thread pool costs more to wake than it saves, and
    against a busy machine far more (a QR decomposition of 1900 x 36 took
    1.7 ms on one thread, 14 ms on two when the other core was busy).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets._utils.blas import one_blas_thread
    >>> with one_blas_thread():
    ...     q, r = np.linalg.qr(np.eye(3))
    """
    return threadpool_limits(limits=1, user_api="blas")
