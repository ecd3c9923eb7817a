# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled kernel of the quadrant inverse-distance field.

The field at a point is defined in docs/field.rst, "Definition"
(:ref:`field-definition`), and in ``OffsetModel``'s notes.
Every point's value comes from the same two steps: the nearest star of each
quadrant, chosen by the order-independent key (squared distance, table row),
and `_combine`, which weights them. The point evaluator finds the nearest
stars by scanning every star. The grid kernel only narrows down which stars
it looks at, through blocks of pixels that each keep the stars that can win
a quadrant somewhere in the block; that narrowing is conservative, so a
pixel's value does not depend on the tile or block it was computed in, and
maps are bit-identical for any tiling.
"""

from libc.math cimport INFINITY, pow, sqrt
from libc.stdlib cimport free, malloc

__all__ = ["field_points", "field_grid"]

# Pixel blocks of three sizes (_BLOCK): a block of the first level keeps the
# stars that may win a quadrant somewhere in it, chosen from all stars; a block
# of the next level chooses from its parent's list, down to the cells. Each
# choice costs one pass over the parent's list, so the cost per pixel stays
# small and nearly flat in the star count. Cells are scanned row by row.
cdef enum:
    _CELL = 16
    _LEVELS = 3

cdef Py_ssize_t[_LEVELS] _BLOCK = [1024, 128, _CELL]


# Relative and absolute slack of the pruning bound. The bound holds exactly in
# real arithmetic; the slack absorbs the rounding of the distances (relative
# 1e-16) so that a star is dropped only when another one of its quadrant is
# nearer by far more than any rounding.
cdef double _REL_SLACK = 1e-9
cdef double _ABS_SLACK = 1e-9


cdef struct Stars:
    const double* x
    const double* y
    const double* u
    const double* v
    double power
    # The trend added to the field: ``t[0] + t[1] x + t[2] y`` in x and
    # ``t[3] + t[4] x + t[5] y`` in y, if ``trend``.
    bint trend
    double t[6]


cdef struct Coincident:
    # Stars on the point itself, or so close that their weight overflows.
    Py_ssize_t n
    double u
    double v


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


cdef inline void _consider(
    const Stars* s, Py_ssize_t k, double px, double py,
    double* best, Py_ssize_t* arg, Py_ssize_t stride, Coincident* on_point,
) noexcept nogil:
    """Let star ``k`` compete for its quadrant of the point ``(px, py)``.

    ``best[q * stride]`` and ``arg[q * stride]`` hold the quadrant's current
    winner. The key (squared distance, row) makes the outcome independent of
    the order in which stars are considered: on equal distance the lowest
    table row wins.
    """
    cdef double dx = px - s.x[k], dy = py - s.y[k], d2
    cdef int q = _quadrant(dx, dy)
    if q < 0:
        on_point.n += 1
        on_point.u += s.u[k]
        on_point.v += s.v[k]
        return
    d2 = dx * dx + dy * dy
    q *= stride
    if d2 < best[q] or (d2 == best[q] and k < arg[q]):
        best[q] = d2
        arg[q] = k


cdef inline void _combine(
    const Stars* s, const double* best, const Py_ssize_t* arg, Py_ssize_t stride,
    Coincident* on_point, double* fu, double* fv,
) noexcept nogil:
    """Field from the quadrant winners, or from stars on the point.

    Stars on the point are summed in row order by the caller, so their mean
    does not depend on the order either.
    """
    cdef double d, w, su = 0.0, sv = 0.0, wsum = 0.0
    cdef Py_ssize_t k
    cdef int q
    if on_point.n == 0:
        for q in range(4):
            k = arg[q * stride]
            if k < 0:
                continue
            d = sqrt(best[q * stride])
            if s.power == 1.0:
                w = 1.0 / d
            else:
                w = pow(d, -s.power)
            if w == INFINITY:
                # So close (below ~1e-308 px) that the weight overflows: the
                # limit of the field is the mean of such stars, as on the point.
                on_point.n += 1
                on_point.u += s.u[k]
                on_point.v += s.v[k]
            su += w * s.u[k]
            sv += w * s.v[k]
            wsum += w
    if on_point.n > 0:
        fu[0] = on_point.u / on_point.n
        fv[0] = on_point.v / on_point.n
    else:
        fu[0] = su / wsum
        fv[0] = sv / wsum


cdef inline void _add_trend(
    const Stars* s, double px, double py, double* fu, double* fv,
) noexcept nogil:
    """Add the trend at the point to the field: the same steps for points and grids."""
    fu[0] = (s.t[0] + s.t[1] * px + s.t[2] * py) + fu[0]
    fv[0] = (s.t[3] + s.t[4] * px + s.t[5] * py) + fv[0]


cdef Stars _stars(
    const double[::1] xs, const double[::1] ys, const double[::1] us, const double[::1] vs,
    double power, trend,
):
    """Return the kernel's view of the stars, with the trend's six coefficients if any."""
    cdef Stars s
    cdef int k
    s.x = &xs[0]
    s.y = &ys[0]
    s.u = &us[0]
    s.v = &vs[0]
    s.power = power
    s.trend = trend is not None
    for k in range(6):
        s.t[k] = float(trend[k]) if s.trend else 0.0
    return s


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


cdef inline int _everywhere(double x, double y, double bx0, double bx1, double by0,
                            double by1) noexcept nogil:
    """Quadrant the star is in for every pixel of the block, or -1.

    Membership regions are convex, so testing the block's corners decides it
    for every pixel, with the same subtractions the pixel scan does.
    """
    if bx0 - x > 0 and by0 - y >= 0:
        return 0
    if bx1 - x <= 0 and by0 - y > 0:
        return 1
    if bx1 - x < 0 and by1 - y <= 0:
        return 2
    if bx0 - x >= 0 and by1 - y < 0:
        return 3
    return -1


cdef Py_ssize_t _prune(
    const Stars* s, double bx0, double bx1, double by0, double by1,
    const Py_ssize_t* src, Py_ssize_t nsrc, Py_ssize_t* dst, signed char* where,
) noexcept nogil:
    """Keep the stars of ``src`` that can win a quadrant for a pixel of the block.

    The block holds the pixel centres ``bx0..bx1`` x ``by0..by1``. A star in
    quadrant q of *every* pixel is at most ``far`` from each, so the winner of
    q at any pixel is no farther than ``bound[q]``, the smallest such ``far``;
    a star that cannot come nearer than that cannot win q anywhere in the
    block. The kept stars go to ``dst`` in the order of ``src`` (row order);
    ``where[c]`` tells the quadrant the c-th kept star is in for the whole
    block, or -1, unless ``where`` is NULL. Returns the number kept.
    """
    cdef double bound[4]
    cdef Py_ssize_t c, k, ndst = 0
    cdef int q
    cdef double x, y, far, near
    for q in range(4):
        bound[q] = INFINITY
    for c in range(nsrc):
        k = src[c]
        q = _everywhere(s.x[k], s.y[k], bx0, bx1, by0, by1)
        if q >= 0:
            far = _far2(s.x[k], bx0, bx1) + _far2(s.y[k], by0, by1)
            if far < bound[q]:
                bound[q] = far
    for q in range(4):
        bound[q] = bound[q] * (1.0 + _REL_SLACK) + _ABS_SLACK
    for c in range(nsrc):
        k = src[c]
        x = s.x[k]
        y = s.y[k]
        near = _near2(x, bx0, bx1) + _near2(y, by0, by1)
        q = _everywhere(x, y, bx0, bx1, by0, by1)
        if q >= 0:
            if near > bound[q]:
                continue
        elif not (
            # A star inside the block may sit exactly on one of its pixels,
            # where it is in no quadrant but decides the value.
            near == 0.0
            or (bx1 - x > 0 and by1 - y >= 0 and near <= bound[0])
            or (bx0 - x <= 0 and by1 - y > 0 and near <= bound[1])
            or (bx0 - x < 0 and by0 - y <= 0 and near <= bound[2])
            or (bx1 - x >= 0 and by0 - y < 0 and near <= bound[3])
        ):
            continue
        dst[ndst] = k
        if where != NULL:
            where[ndst] = q
        ndst += 1
    return ndst


cdef void _scan_cell(
    const Stars* s, Py_ssize_t bx0, Py_ssize_t by0, Py_ssize_t nx, Py_ssize_t ny,
    const Py_ssize_t* cand, const signed char* where, Py_ssize_t ncand,
    Py_ssize_t* partial, float* out_u, float* out_v, Py_ssize_t stride_u, Py_ssize_t stride_v,
) noexcept nogil:
    """Evaluate a cell of at most ``_CELL`` x ``_CELL`` pixels, row by row.

    Stars in one quadrant for the whole cell compete in a tight loop over a
    row's pixels; the few others (near the cell's rows and columns, or in
    it) go through `_consider` pixel by pixel. The weights of a row are then
    combined in loops over its pixels, which the compiler vectorises; this
    is `_combine`'s arithmetic, operation for operation, with the empty
    quadrants contributing exact zeros (a distance of infinity weighs 0).
    """
    cdef double best[4][_CELL]
    cdef Py_ssize_t arg[4][_CELL]
    cdef double weight[4][_CELL]
    cdef double win_u[4][_CELL]
    cdef double win_v[4][_CELL]
    cdef Coincident on_point[_CELL]
    cdef Py_ssize_t c, i, j, k, npartial = 0
    cdef int q
    cdef bint special, take
    cdef double py, xk, dy2, dx, d2, su, sv, wsum, fu, fv
    for c in range(ncand):
        if where[c] < 0:
            partial[npartial] = cand[c]
            npartial += 1
    for j in range(ny):
        py = <double> (by0 + j)
        for q in range(4):
            for i in range(nx):
                best[q][i] = INFINITY
                arg[q][i] = -1
        # Stars in row order, each in one quadrant for every pixel: a strict
        # comparison keeps the lowest row on equal distance.
        for c in range(ncand):
            q = where[c]
            if q < 0:
                continue
            k = cand[c]
            xk = s.x[k]
            dy2 = py - s.y[k]
            dy2 = dy2 * dy2
            for i in range(nx):
                dx = <double> (bx0 + i) - xk
                d2 = dx * dx + dy2
                # Unconditional selects rather than a branch: the loop vectorises.
                take = d2 < best[q][i]
                best[q][i] = d2 if take else best[q][i]
                arg[q][i] = k if take else arg[q][i]
        for i in range(nx):
            on_point[i].n = 0
            on_point[i].u = 0.0
            on_point[i].v = 0.0
            for c in range(npartial):
                _consider(s, partial[c], <double> (bx0 + i), py, &best[0][i], &arg[0][i],
                          _CELL, &on_point[i])
        for q in range(4):
            for i in range(nx):
                k = arg[q][i]
                win_u[q][i] = s.u[k] if k >= 0 else 0.0
                win_v[q][i] = s.v[k] if k >= 0 else 0.0
            if s.power == 1.0:
                for i in range(nx):
                    weight[q][i] = 1.0 / sqrt(best[q][i])
            else:
                for i in range(nx):
                    weight[q][i] = pow(sqrt(best[q][i]), -s.power)
        for i in range(nx):
            su = 0.0
            sv = 0.0
            wsum = 0.0
            special = on_point[i].n > 0
            for q in range(4):
                su += weight[q][i] * win_u[q][i]
                sv += weight[q][i] * win_v[q][i]
                wsum += weight[q][i]
                special = special or weight[q][i] == INFINITY
            if special:
                _combine(s, &best[0][i], &arg[0][i], _CELL, &on_point[i], &fu, &fv)
            else:
                fu = su / wsum
                fv = sv / wsum
            if s.trend:
                _add_trend(s, <double> (bx0 + i), py, &fu, &fv)
            out_u[j * stride_u + i] = <float> fu
            out_v[j * stride_v + i] = <float> fv


cdef struct Tile:
    # The tile's origin in the frame, its float32 outputs (rows of a given
    # stride), and work lists: one star list per level, a cell's partial
    # stars, and the quadrant of each cell star.
    Py_ssize_t x0
    Py_ssize_t y0
    float* out_u
    float* out_v
    Py_ssize_t stride_u
    Py_ssize_t stride_v
    Py_ssize_t* lists[_LEVELS]
    Py_ssize_t* partial
    signed char* where


cdef void _descend(
    const Stars* s, Tile* t, int level, Py_ssize_t i0, Py_ssize_t j0, Py_ssize_t i1,
    Py_ssize_t j1, const Py_ssize_t* src, Py_ssize_t nsrc,
) noexcept nogil:
    """Evaluate tile pixels ``[j0:j1, i0:i1]`` from the stars ``src``.

    The area is cut into blocks of ``_BLOCK[level]`` pixels (clipped at its
    edges); each block keeps the stars of ``src`` that matter to it and
    hands them to the next level, the last level being the cells.
    """
    cdef Py_ssize_t size = _BLOCK[level], bi, bj, bi1, bj1, n
    cdef bint last = level == _LEVELS - 1
    bj = j0
    while bj < j1:
        bj1 = min(bj + size, j1)
        bi = i0
        while bi < i1:
            bi1 = min(bi + size, i1)
            n = _prune(s, t.x0 + bi, t.x0 + bi1 - 1, t.y0 + bj, t.y0 + bj1 - 1, src, nsrc,
                       t.lists[level], t.where if last else NULL)
            if last:
                _scan_cell(s, t.x0 + bi, t.y0 + bj, bi1 - bi, bj1 - bj, t.lists[level],
                           t.where, n, t.partial, t.out_u + bj * t.stride_u + bi,
                           t.out_v + bj * t.stride_v + bi, t.stride_u, t.stride_v)
            else:
                _descend(s, t, level + 1, bi, bj, bi1, bj1, t.lists[level], n)
            bi = bi1
        bj = bj1


def field_points(
    const double[::1] xs, const double[::1] ys,
    const double[::1] us, const double[::1] vs,
    double power,
    const double[::1] px, const double[::1] py,
    double[::1] out_u, double[::1] out_v,
    trend=None,
):
    """Evaluate the field at arbitrary points, scanning every star.

    All arrays are float64 and contiguous; ``xs, ys, us, vs`` have one entry
    per star (at least one), ``px, py, out_u, out_v`` one per point.
    ``trend``, six floats or `None`, is an affine field added to the stars'
    (see `field_grid`).
    """
    cdef Stars s = _stars(xs, ys, us, vs, power, trend)
    cdef Py_ssize_t n = xs.shape[0], m = px.shape[0], i, k
    cdef double best[4]
    cdef Py_ssize_t arg[4]
    cdef Coincident on_point
    cdef int q
    with nogil:
        for i in range(m):
            for q in range(4):
                best[q] = INFINITY
                arg[q] = -1
            on_point.n = 0
            on_point.u = 0.0
            on_point.v = 0.0
            for k in range(n):
                _consider(&s, k, px[i], py[i], best, arg, 1, &on_point)
            _combine(&s, best, arg, 1, &on_point, &out_u[i], &out_v[i])
            if s.trend:
                _add_trend(&s, px[i], py[i], &out_u[i], &out_v[i])


def field_grid(
    const double[::1] xs, const double[::1] ys,
    const double[::1] us, const double[::1] vs,
    double power,
    Py_ssize_t x0, Py_ssize_t y0,
    float[:, :] out_u, float[:, :] out_v,
    trend=None,
):
    """Evaluate the field on a tile of pixel centres into float32 arrays.

    Pixel ``[j, i]`` of the tile is the point ``(x0 + i, y0 + j)``. The value
    is computed in float64 and rounded once to float32. The outputs may be
    views into larger maps, but each row must be contiguous. ``trend``, six
    floats ``(a0, a1, a2, b0, b1, b2)`` or `None`, adds the affine field
    ``a0 + a1 x + a2 y`` (x), ``b0 + b1 x + b2 y`` (y) to the stars' field,
    in float64 before the rounding: one multiply-add per pixel.
    """
    cdef Stars s = _stars(xs, ys, us, vs, power, trend)
    cdef Py_ssize_t n = xs.shape[0], k
    cdef Py_ssize_t ny = out_u.shape[0], nx = out_u.shape[1]
    cdef Tile t
    cdef int level
    if (out_v.shape[0] != ny or out_v.shape[1] != nx
            or out_u.strides[1] != sizeof(float) or out_v.strides[1] != sizeof(float)
            or out_u.strides[0] % sizeof(float) or out_v.strides[0] % sizeof(float)):
        raise ValueError("outputs must be float32 arrays of one shape with contiguous rows")
    if ny == 0 or nx == 0:
        return
    # One block of memory for every index list: all stars, one list per
    # level, a cell's partial stars.
    cdef Py_ssize_t* buffer = <Py_ssize_t*> malloc((_LEVELS + 2) * n * sizeof(Py_ssize_t))
    t.where = <signed char*> malloc(n * sizeof(signed char))
    if buffer == NULL or t.where == NULL:
        free(buffer)
        free(t.where)
        raise MemoryError("cannot allocate the star index lists")
    t.x0 = x0
    t.y0 = y0
    t.out_u = &out_u[0, 0]
    t.out_v = &out_v[0, 0]
    t.stride_u = out_u.strides[0] // sizeof(float)
    t.stride_v = out_v.strides[0] // sizeof(float)
    for level in range(_LEVELS):
        t.lists[level] = buffer + (level + 1) * n
    t.partial = buffer + (_LEVELS + 1) * n
    try:
        with nogil:
            for k in range(n):
                buffer[k] = k
            _descend(&s, &t, 0, 0, 0, nx, ny, buffer, n)
    finally:
        free(buffer)
        free(t.where)
