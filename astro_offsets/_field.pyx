# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled kernel of the quadrant inverse-distance field.

The field at a point is defined in DESIGN.md and in ``OffsetModel``'s notes.
Every point is evaluated by the same exact scan (`_field_at`); the grid
kernel only chooses, per small cell of pixels, which stars the scan needs to
look at. That choice is conservative, so it never changes which star wins a
quadrant, and the value of a pixel does not depend on the tile or cell it was
computed in: maps are bit-identical for any tiling.
"""

from libc.math cimport INFINITY, pow, sqrt
from libc.stdlib cimport free, malloc

__all__ = ["field_points", "field_grid", "CELL"]

# Side of the square cells of pixels that share one candidate list. Small
# cells give short candidate lists; the selection itself costs one pass over
# the stars per cell, so the cell must stay large enough to amortise it.
cdef enum:
    _CELL = 16

CELL = _CELL

# Relative and absolute slack of the pruning bound. The bound holds exactly in
# real arithmetic; the slack absorbs the rounding of the distances (relative
# 1e-16) so that a star is dropped only when it is farther than another one
# of its quadrant by far more than any rounding.
cdef double _REL_SLACK = 1e-9
cdef double _ABS_SLACK = 1e-9


cdef inline int _quadrant(double dx, double dy) noexcept nogil:
    """Quadrant 0..3 of a star seen from the point, or -1 if it is on the point.

    ``dx, dy`` are point minus star. Q1: dx > 0, dy >= 0; Q2: dx <= 0, dy > 0;
    Q3: dx < 0, dy <= 0; Q4: dx >= 0, dy < 0 (half-open, so each star other
    than one on the point is in exactly one).
    """
    if dy > 0:
        return 0 if dx > 0 else 1
    if dy < 0:
        return 3 if dx >= 0 else 2
    if dx > 0:
        return 0
    if dx < 0:
        return 2
    return -1


cdef inline void _field_at(
    double px, double py,
    const Py_ssize_t* cand, Py_ssize_t ncand,
    const double* xs, const double* ys, const double* us, const double* vs,
    double power, double* fu, double* fv,
) noexcept nogil:
    """Field at one point from the candidate stars (which must be in row order)."""
    cdef double best[4]
    cdef Py_ssize_t arg[4]
    cdef Py_ssize_t c, k, ncoinc = 0
    cdef int q
    cdef double dx, dy, d2, d, w, su = 0.0, sv = 0.0, wsum = 0.0, cu = 0.0, cv = 0.0

    for q in range(4):
        best[q] = INFINITY
        arg[q] = -1

    for c in range(ncand):
        k = cand[c]
        dx = px - xs[k]
        dy = py - ys[k]
        q = _quadrant(dx, dy)
        if q < 0:
            # Stars exactly on the point: their mean, summed in row order.
            ncoinc += 1
            su += us[k]
            sv += vs[k]
            continue
        d2 = dx * dx + dy * dy
        # Strict comparison over candidates in row order: on equal distance
        # the lowest table row wins.
        if d2 < best[q]:
            best[q] = d2
            arg[q] = k

    if ncoinc > 0:
        fu[0] = su / ncoinc
        fv[0] = sv / ncoinc
        return

    for q in range(4):
        k = arg[q]
        if k >= 0:
            d = sqrt(best[q])
            if power == 1.0:
                w = 1.0 / d
            else:
                w = pow(d, -power)
            if w == INFINITY:
                # So close (below ~1e-308 px) that the weight overflows: the
                # limit of the field is the mean of such stars, as on the point.
                ncoinc += 1
                cu += us[k]
                cv += vs[k]
            su += w * us[k]
            sv += w * vs[k]
            wsum += w
    if ncoinc > 0:
        fu[0] = cu / ncoinc
        fv[0] = cv / ncoinc
    else:
        fu[0] = su / wsum
        fv[0] = sv / wsum


cdef inline double _far2(double a, double lo, double hi) noexcept nogil:
    """Largest squared distance along one axis from ``a`` to ``[lo, hi]``."""
    cdef double d0 = a - lo, d1 = a - hi
    d0 = d0 * d0
    d1 = d1 * d1
    return d0 if d0 > d1 else d1


cdef inline double _near2(double a, double lo, double hi) noexcept nogil:
    """Smallest squared distance along one axis from ``a`` to ``[lo, hi]``."""
    cdef double d
    if a < lo:
        d = lo - a
    elif a > hi:
        d = a - hi
    else:
        return 0.0
    return d * d


cdef Py_ssize_t _select_candidates(
    double bx0, double bx1, double by0, double by1,
    const double* xs, const double* ys, Py_ssize_t n, Py_ssize_t* cand,
) noexcept nogil:
    """Stars that can be a quadrant's nearest for some pixel of a cell.

    The cell holds the pixel centres ``bx0..bx1`` x ``by0..by1``. A star that
    is in quadrant q of *every* pixel of the cell is at most ``far`` away from
    each of them, so the nearest star of quadrant q of any pixel is no farther
    than ``bound[q]``, the smallest such ``far``; a star whose nearest possible
    distance exceeds that cannot win quadrant q anywhere in the cell.
    Quadrant membership is tested at the cell's corners with the same
    floating-point subtractions the pixel scan does, and membership regions
    are convex, so "at all corners" means "at every pixel" exactly.
    Candidates are written to ``cand`` in row order; their count is returned.
    """
    cdef double bound[4]
    cdef Py_ssize_t k, ncand = 0
    cdef int q
    cdef double x, y, far, near, lim
    cdef bint inside

    for q in range(4):
        bound[q] = INFINITY

    for k in range(n):
        x = xs[k]
        y = ys[k]
        far = _far2(x, bx0, bx1) + _far2(y, by0, by1)
        if bx0 - x > 0 and by0 - y >= 0 and far < bound[0]:
            bound[0] = far
        if bx1 - x <= 0 and by0 - y > 0 and far < bound[1]:
            bound[1] = far
        if bx1 - x < 0 and by1 - y <= 0 and far < bound[2]:
            bound[2] = far
        if bx0 - x >= 0 and by1 - y < 0 and far < bound[3]:
            bound[3] = far

    for q in range(4):
        bound[q] = bound[q] * (1.0 + _REL_SLACK) + _ABS_SLACK

    for k in range(n):
        x = xs[k]
        y = ys[k]
        near = _near2(x, bx0, bx1) + _near2(y, by0, by1)
        # A star inside the cell may sit exactly on one of its pixels, where
        # it is in no quadrant but decides the value.
        inside = near == 0.0
        if (
            inside
            or (bx1 - x > 0 and by1 - y >= 0 and near <= bound[0])
            or (bx0 - x <= 0 and by1 - y > 0 and near <= bound[1])
            or (bx0 - x < 0 and by0 - y <= 0 and near <= bound[2])
            or (bx1 - x >= 0 and by0 - y < 0 and near <= bound[3])
        ):
            cand[ncand] = k
            ncand += 1
    return ncand


def field_points(
    const double[::1] xs, const double[::1] ys,
    const double[::1] us, const double[::1] vs,
    double power,
    const double[::1] px, const double[::1] py,
    double[::1] out_u, double[::1] out_v,
):
    """Evaluate the field at arbitrary points, scanning every star.

    All arrays are float64 and contiguous; ``xs, ys, us, vs`` have one entry
    per star (at least one), ``px, py, out_u, out_v`` one per point.
    """
    cdef Py_ssize_t n = xs.shape[0], m = px.shape[0], i
    cdef Py_ssize_t* cand = <Py_ssize_t*> malloc(n * sizeof(Py_ssize_t))
    if cand == NULL:
        raise MemoryError("cannot allocate the star index list")
    try:
        with nogil:
            for i in range(n):
                cand[i] = i
            for i in range(m):
                _field_at(px[i], py[i], cand, n, &xs[0], &ys[0], &us[0], &vs[0],
                          power, &out_u[i], &out_v[i])
    finally:
        free(cand)


def field_grid(
    const double[::1] xs, const double[::1] ys,
    const double[::1] us, const double[::1] vs,
    double power,
    Py_ssize_t x0, Py_ssize_t y0,
    float[:, ::1] out_u, float[:, ::1] out_v,
):
    """Evaluate the field on a tile of pixel centres into float32 arrays.

    Pixel ``[j, i]`` of the tile is the point ``(x0 + i, y0 + j)``. The value
    is computed in float64 and rounded once to float32.
    """
    cdef Py_ssize_t n = xs.shape[0]
    cdef Py_ssize_t ny = out_u.shape[0], nx = out_u.shape[1]
    cdef Py_ssize_t cell_i, cell_j, cx, cy, cx1, cy1, i, j, ncand
    cdef double fu, fv
    cdef Py_ssize_t* cand = <Py_ssize_t*> malloc(n * sizeof(Py_ssize_t))
    if cand == NULL:
        raise MemoryError("cannot allocate the star index list")
    try:
        with nogil:
            for cell_j in range((ny + _CELL - 1) // _CELL):
                cy = cell_j * _CELL
                cy1 = min(cy + _CELL, ny)
                for cell_i in range((nx + _CELL - 1) // _CELL):
                    cx = cell_i * _CELL
                    cx1 = min(cx + _CELL, nx)
                    ncand = _select_candidates(
                        <double> (x0 + cx), <double> (x0 + cx1 - 1),
                        <double> (y0 + cy), <double> (y0 + cy1 - 1),
                        &xs[0], &ys[0], n, cand)
                    for j in range(cy, cy1):
                        for i in range(cx, cx1):
                            _field_at(<double> (x0 + i), <double> (y0 + j), cand, ncand,
                                      &xs[0], &ys[0], &us[0], &vs[0], power, &fu, &fv)
                            out_u[j, i] = <float> fu
                            out_v[j, i] = <float> fv
    finally:
        free(cand)
