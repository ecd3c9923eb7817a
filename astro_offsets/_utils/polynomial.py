"""Least-squares 2-D polynomials: the matching of stars and the polynomial field use them.

A polynomial of degree ``d`` in ``(u, v)`` has the terms ``u**i v**j`` with
``i + j <= d``. It is fitted by a QR decomposition of its (weighted) design
matrix, whose orthonormal basis gives each point's leverage too (for
held-out residuals), and
evaluated by a nested Horner scheme: in ``v`` for each power of ``u``, then
in ``u``. The scheme is the same for any shape of ``u`` and ``v``, so
evaluating at points and on a grid gives the same bits.
"""

import numpy as np
from scipy.linalg import solve_triangular

__all__ = ["Polynomial", "n_terms"]


def n_terms(degree):
    """Return the number of coefficients of a 2-D polynomial of ``degree``.

    Examples
    --------
    >>> from astro_offsets._utils.polynomial import n_terms
    >>> n_terms(3)
    10
    """
    return (degree + 1) * (degree + 2) // 2


def _design(u, v, degree):
    """Return the design matrix: one column ``u**i v**j`` per term, ``i`` major."""
    return np.column_stack([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)])


def _horner(coefficients, t):
    """Evaluate ``sum_k coefficients[k] * t**k`` (coefficients along axis 0)."""
    result = np.zeros(np.broadcast_shapes(coefficients[0].shape, np.shape(t)))
    for c in coefficients[::-1]:
        result = result * t + c
    return result


class Polynomial:
    """Polynomials of ``(u, v)``, one per output value, sharing a degree.

    Parameters
    ----------
    coefficients : `~numpy.ndarray`
        ``(n_out, degree + 1, degree + 1)``: ``[k, i, j]`` multiplies
        ``u**i v**j`` in output ``k`` (zero where ``i + j > degree``).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets._utils.polynomial import Polynomial
    >>> u, v = np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 3))
    >>> u, v = u.ravel(), v.ravel()
    >>> values = np.column_stack([1 + 2 * u - v, 3 * u * v])
    >>> fitted, _ = Polynomial.fit(u, v, values, 2)
    >>> [round(float(a), 12) for a in fitted(0.25, 0.75)]
    [0.75, 0.5625]
    """

    def __init__(self, coefficients):
        self.coefficients = coefficients

    @property
    def degree(self):
        """The degree."""
        return self.coefficients.shape[1] - 1

    @classmethod
    def fit(cls, u, v, values, degree, *, weights=None):
        """Least-squares fit to points; return the polynomial and the fit's orthonormal basis.

        Parameters
        ----------
        u, v : `~numpy.ndarray`
            1-D point coordinates (normalised, for a well-conditioned fit).
        values : `~numpy.ndarray`
            ``(n, n_out)`` values at the points.
        degree : int
            The degree; the points must determine every coefficient.
        weights : `~numpy.ndarray` or `None`, optional
            Each point's weight (the inverse of its variance); `None` weighs
            all alike.

        Returns
        -------
        polynomial : `Polynomial`
        basis : `~numpy.ndarray`
            ``Q`` of the QR decomposition of the (weighted) design matrix,
            ``(n, n_terms)``: the hat matrix is ``Q Q^T``, a point's leverage
            the sum of squares of its row, and leave-one-out residuals the
            residuals divided by one minus the leverage.

        Raises
        ------
        ValueError
            If the points do not determine every coefficient (too few, on a
            line, ...): the message, "determine only r of its n
            coefficients", follows what the caller says of the points.
        """
        design = _design(u, v, degree)
        if weights is not None:
            root = np.sqrt(weights)[:, None]
            design, values = design * root, values * root
        q, r = np.linalg.qr(design)
        # A zero on R's diagonal is a coefficient the points do not determine;
        # the rank is computed only then, for the message.
        diagonal = np.abs(np.diagonal(r))
        if diagonal.min() <= max(design.shape) * np.finfo(float).eps * diagonal.max():
            rank = np.linalg.matrix_rank(design)
            if rank < design.shape[1]:
                raise ValueError(f"determine only {rank} of its {design.shape[1]} coefficients")
        solution = solve_triangular(r, q.T @ values, check_finite=False)
        coefficients = np.zeros((values.shape[1], degree + 1, degree + 1))
        rows, columns = zip(
            *((i, j) for i in range(degree + 1) for j in range(degree + 1 - i)), strict=True
        )
        coefficients[:, rows, columns] = solution.T
        return cls(coefficients), q

    def __call__(self, u, v):
        """Return the values at ``(u, v)`` (broadcast), one array per output."""
        return tuple(
            _horner([_horner(c[i], v) for i in range(c.shape[0])], u) for c in self.coefficients
        )

    def grid(self, u, v, out):
        """Write the values on the grid of ``u`` (a row) and ``v`` (a column) into ``out``.

        The same steps as calling the polynomial at the grid's points, so the
        same bits, done in place in one float64 buffer: a map's tile takes no
        temporary arrays beyond it.

        Parameters
        ----------
        u : `~numpy.ndarray`
            ``(1, nx)`` coordinates of the columns.
        v : `~numpy.ndarray`
            ``(ny, 1)`` coordinates of the rows.
        out : sequence of `~numpy.ndarray`
            One ``(ny, nx)`` array per output, written in place.
        """
        buffer = np.empty(np.broadcast_shapes(u.shape, v.shape))
        for c, target in zip(self.coefficients, out, strict=True):
            # Each power of u's coefficient along the rows, then Horner in u.
            rows = [_horner(c[i], v) for i in range(c.shape[0])]
            buffer[...] = rows[-1]
            for row in rows[-2::-1]:
                np.multiply(buffer, u, out=buffer)
                np.add(buffer, row, out=buffer)
            target[...] = buffer
