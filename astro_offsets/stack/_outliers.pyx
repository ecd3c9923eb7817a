# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled kernels of outlier rejection: the median of a stack of images, the masks.

Both run without the GIL, so that threads share the work of a frame's rows.
Each output value depends only on the inputs at its own pixel (the median)
or its 3 x 3 neighbourhood (the masks): the results are the same for any
split into row chunks.

They run without bounds checks: each checks its arrays' shapes, and the
rows and layer it is given, against each other before it starts, and
raises `ValueError` naming the argument at fault.
"""

from libc.math cimport NAN, fabs, isfinite, sqrt
from libc.stdlib cimport free, malloc

__all__ = ["blot", "grow", "nanmedian", "outliers", "scatter"]


cdef int _expect_shape(
    str name, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t want_rows, Py_ssize_t want_cols, str what
) except -1:
    """Raise unless array ``name`` is ``rows x cols`` as ``what`` has it."""
    if rows != want_rows or cols != want_cols:
        raise ValueError(
            f"{name} has shape {(rows, cols)}, expected {(want_rows, want_cols)} {what}"
        )
    return 0


cdef int _expect_rows(Py_ssize_t first, Py_ssize_t last, Py_ssize_t rows, str name) except -1:
    """Raise unless rows ``first:last`` are rows of ``name`` (``rows`` of them), in order."""
    if not 0 <= first <= last <= rows:
        raise ValueError(
            f"rows first:last are {first}:{last}, expected within the {rows} rows of {name}"
            f" (0 <= first <= last <= {rows})"
        )
    return 0


cdef int _expect_layer(Py_ssize_t origin_y, Py_ssize_t origin_x, Py_ssize_t step) except -1:
    """Raise unless a layer's origin is on the frame's side of 0 and its spacing positive."""
    if step < 1:
        raise ValueError(f"step is {step}, expected 1 or more")
    for name, origin in (("origin_y", origin_y), ("origin_x", origin_x)):
        if origin < 0:
            raise ValueError(f"{name} is {origin}, expected 0 or more")
    return 0


cdef inline Py_ssize_t _layer_size(Py_ssize_t n, Py_ssize_t origin, Py_ssize_t step) noexcept:
    """The pixels of a layer along an axis of ``n``: every ``step``-th from ``origin``."""
    return max((n - origin + step - 1) // step, 0)


cdef float _select(float* values, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Return the k-th smallest of ``values[:n]``, reordering them (Hoare's select)."""
    cdef Py_ssize_t low = 0, high = n - 1, i, j
    cdef float pivot, swap
    while low < high:
        pivot = values[(low + high) // 2]
        i = low
        j = high
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                swap = values[i]
                values[i] = values[j]
                values[j] = swap
                i += 1
                j -= 1
        if k <= j:
            high = j
        elif k >= i:
            low = i
        else:
            break
    return values[k]


def nanmedian(const float[:, :, ::1] cube, float[:, ::1] out, Py_ssize_t least=1):
    """Write the median over axis 0 of ``cube``, NaNs left out, into ``out``.

    A pixel with fewer than ``least`` finite values is NaN. An even count
    takes the mean of the two middle values, as `numpy.nanmedian` does.
    """
    cdef Py_ssize_t n = cube.shape[0], rows = cube.shape[1], cols = cube.shape[2]
    cdef Py_ssize_t r, c, k, m
    cdef float value, upper, lower
    cdef float* buffer
    _expect_shape("out", out.shape[0], out.shape[1], rows, cols, "as one image of cube")
    buffer = <float*> malloc(max(n, 1) * sizeof(float))
    if buffer == NULL:
        raise MemoryError()
    try:
        with nogil:
            for r in range(rows):
                for c in range(cols):
                    m = 0
                    for k in range(n):
                        value = cube[k, r, c]
                        if isfinite(value):
                            buffer[m] = value
                            m += 1
                    if m == 0 or m < least:
                        out[r, c] = NAN
                    elif m % 2:
                        out[r, c] = _select(buffer, m, m // 2)
                    else:
                        upper = _select(buffer, m, m // 2)
                        # The lower middle is the largest of the values below.
                        lower = buffer[0]
                        for k in range(1, m // 2):
                            if buffer[k] > lower:
                                lower = buffer[k]
                        out[r, c] = <float> (0.5 * (<double> lower + <double> upper))
    finally:
        free(buffer)


cdef struct Noise:
    # The noise model of a frame's layer (see `outliers`).
    double sky
    double variance
    double gain
    # Its smooth residual: block medians, ``block`` pixels apart.
    const float* coarse
    Py_ssize_t coarse_rows
    Py_ssize_t coarse_cols
    double block


cdef inline float _step(const float[:, ::1] blot, Py_ssize_t r, Py_ssize_t c) noexcept nogil:
    """The blot's largest step from pixel (r, c) to one of its four neighbours."""
    cdef float here = blot[r, c], step = 0.0, d
    if r > 0:
        d = fabs(here - blot[r - 1, c])
        step = d if d > step else step
    if r + 1 < blot.shape[0]:
        d = fabs(here - blot[r + 1, c])
        step = d if d > step else step
    if c > 0:
        d = fabs(here - blot[r, c - 1])
        step = d if d > step else step
    if c + 1 < blot.shape[1]:
        d = fabs(here - blot[r, c + 1])
        step = d if d > step else step
    return step


cdef inline void _cell(double t, Py_ssize_t n, Py_ssize_t* index, double* weight) noexcept nogil:
    """The grid point ``index`` before position ``t`` (clamped to 0..n-1) and the weight of the next."""
    t = 0.0 if t < 0 else (n - 1.0 if t > n - 1 else t)
    index[0] = <Py_ssize_t> t
    if index[0] > n - 2:
        index[0] = n - 2 if n > 1 else 0
    weight[0] = t - index[0] if n > 1 else 0.0


cdef inline double _coarse_at(const Noise* noise, double r, double c) noexcept nogil:
    """The smooth residual at pixel (r, c): bilinear between the blocks' centres."""
    cdef Py_ssize_t i, j, i1, j1, nx = noise.coarse_cols, ny = noise.coarse_rows
    cdef double fy, fx
    cdef const float* g = noise.coarse
    _cell((r + 0.5) / noise.block - 0.5, ny, &i, &fy)
    _cell((c + 0.5) / noise.block - 0.5, nx, &j, &fx)
    i1 = i + 1 if ny > 1 else i
    j1 = j + 1 if nx > 1 else j
    # In the order of `outliers`' rows: along y first, then x.
    return ((1 - fx) * ((1 - fy) * g[i * nx + j] + fy * g[i1 * nx + j])
            + fx * ((1 - fy) * g[i * nx + j1] + fy * g[i1 * nx + j1]))


cdef inline bint _deviates(
    const float[:, ::1] data,
    const float[:, ::1] blot,
    const Noise* noise,
    Py_ssize_t r,
    Py_ssize_t c,
    double snr,
    double scale,
) noexcept nogil:
    """Whether pixel (r, c) deviates from its blot beyond ``snr`` sigmas plus ``scale`` steps."""
    cdef double level = blot[r, c], value = data[r, c], variance, excess, bound
    if not isfinite(level) or not isfinite(value):
        return False
    variance = noise.variance
    if level > noise.sky:
        variance += (level - noise.sky) / noise.gain
    excess = fabs(value - _coarse_at(noise, r, c) - level)
    bound = snr * sqrt(variance)
    # The step costs four reads: only pixels beyond the noise need it.
    return excess > bound and excess > bound + scale * _step(blot, r, c)


def outliers(
    const float[:, ::1] data,
    const float[:, ::1] blot,
    const float[:, ::1] coarse,
    double block,
    double sky,
    double variance,
    double gain,
    double snr,
    double scale,
    double snr_near,
    double scale_near,
    Py_ssize_t first,
    Py_ssize_t last,
    unsigned char[:, ::1] mask,
    bint near,
):
    """Mark the outliers of rows ``first:last``: 1 where they deviate, 2 next to one that does.

    A pixel deviates where ``|data - smooth - blot|`` exceeds ``snr * noise
    + scale * step``: ``smooth`` is the frame's smooth residual (``coarse``,
    the medians of blocks ``block`` pixels apart, bilinear between their
    centres), ``noise`` the square root of ``variance + max(blot - sky, 0) /
    gain`` (the sky's noise plus the source's photon noise) and ``step`` the
    blot's largest step to a neighbour, so that a slightly misregistered
    star core does not deviate. Called with ``near`` false, it marks the
    pixels that deviate (1); called again, once every row is marked, with
    ``near`` true, it marks (2) the unmarked neighbours of those that
    deviate by ``snr_near`` and ``scale_near`` (drizzlepac's second, looser
    test). NaN blots and data never deviate. Only rows ``first:last`` of
    ``mask`` are written. ``blot`` and ``mask`` have the shape of ``data``;
    ``coarse`` has a block at least, ``block`` is positive.
    """
    cdef Py_ssize_t rows = data.shape[0], cols = data.shape[1]
    cdef Py_ssize_t r, c, rr, cc
    cdef Noise noise
    _expect_shape("blot", blot.shape[0], blot.shape[1], rows, cols, "as data")
    _expect_shape("mask", mask.shape[0], mask.shape[1], rows, cols, "as data")
    if coarse.shape[0] < 1 or coarse.shape[1] < 1:
        raise ValueError(
            f"coarse has shape {(coarse.shape[0], coarse.shape[1])}, expected a block at least"
        )
    if not block > 0:
        raise ValueError(f"block is {block}, expected a positive number of pixels")
    _expect_rows(first, last, rows, "data")
    noise.sky = sky
    noise.variance = variance
    noise.gain = gain
    noise.coarse = &coarse[0, 0]
    noise.coarse_rows = coarse.shape[0]
    noise.coarse_cols = coarse.shape[1]
    noise.block = block
    cdef double bound = snr * sqrt(variance), level, excess, y, fy
    cdef Py_ssize_t i, i1, j, gy = coarse.shape[0], gx = coarse.shape[1]
    cdef double* smooth
    cdef double* along
    cdef double* weight
    cdef Py_ssize_t* left
    if not near:
        # The smooth residual a row at a time: each column's two block
        # centres and weight once, each row's values at the centres.
        smooth = <double*> malloc(max(cols, 1) * sizeof(double))
        weight = <double*> malloc(max(cols, 1) * sizeof(double))
        left = <Py_ssize_t*> malloc(max(cols, 1) * sizeof(Py_ssize_t))
        along = <double*> malloc(gx * sizeof(double))
        if smooth == NULL or weight == NULL or left == NULL or along == NULL:
            free(smooth)
            free(weight)
            free(left)
            free(along)
            raise MemoryError()
        try:
            with nogil:
                for c in range(cols):
                    _cell((c + 0.5) / block - 0.5, gx, &left[c], &weight[c])
                for r in range(first, last):
                    _cell((r + 0.5) / block - 0.5, gy, &i, &fy)
                    i1 = i + 1 if gy > 1 else i
                    for j in range(gx):
                        along[j] = (1 - fy) * coarse[i, j] + fy * coarse[i1, j]
                    for c in range(cols):
                        j = left[c]
                        smooth[c] = (1 - weight[c]) * along[j] + weight[c] * along[
                            j + 1 if gx > 1 else j
                        ]
                    for c in range(cols):
                        level = blot[r, c]
                        excess = fabs(data[r, c] - smooth[c] - level)
                        # Most pixels are within the sky's noise (a NaN is not).
                        if excess <= bound:
                            mask[r, c] = 0
                        else:
                            mask[r, c] = _deviates(data, blot, &noise, r, c, snr, scale)
        finally:
            free(smooth)
            free(weight)
            free(left)
            free(along)
        return
    with nogil:
        if True:
            # Each row's pixels next to a core, from the cores of the row and
            # the rows beside it.
            for r in range(first, last):
                for rr in range(max(r - 1, 0), min(r + 2, rows)):
                    for c in range(cols):
                        if mask[rr, c] != 1:
                            continue
                        for cc in range(max(c - 1, 0), min(c + 2, cols)):
                            if mask[r, cc] == 0 and _deviates(
                                data, blot, &noise, r, cc, snr_near, scale_near
                            ):
                                mask[r, cc] = 2


def grow(
    const unsigned char[:, ::1] mask, Py_ssize_t first, Py_ssize_t last, unsigned char[:, ::1] out
):
    """Set rows ``first:last`` of ``out`` (zeros) to 1 where ``mask`` is set within one pixel.

    ``out`` has the shape of ``mask``.
    """
    cdef Py_ssize_t rows = mask.shape[0], cols = mask.shape[1]
    cdef Py_ssize_t r, c, rr, cc
    _expect_shape("out", out.shape[0], out.shape[1], rows, cols, "as mask")
    _expect_rows(first, last, rows, "mask")
    with nogil:
        for r in range(first, last):
            for rr in range(max(r - 1, 0), min(r + 2, rows)):
                for c in range(cols):
                    if mask[rr, c]:
                        for cc in range(max(c - 1, 0), min(c + 2, cols)):
                            out[r, cc] = 1


def scatter(
    const float[:, ::1] data,
    const float[:, ::1] x_offset,
    const float[:, ::1] y_offset,
    Py_ssize_t origin_y,
    Py_ssize_t origin_x,
    Py_ssize_t step,
    double[:, ::1] total,
    float[:, ::1] count,
):
    """Add a frame's layer to a grid by drizzle's point kernel: each pixel to the one its centre maps into.

    The layer is every ``step``-th pixel of every ``step``-th row of
    ``data`` from ``(origin_y, origin_x)``; pixel ``(y, x)`` maps to ``(x -
    x_offset, y - y_offset)`` on the reference frame, which is ``(X + 0.5)
    / step - 0.5`` on a grid ``step`` times coarser. NaN pixels are left
    out. ``total`` sums the values, ``count`` the pixels. The offsets have
    the shape of ``data``, ``count`` that of ``total``.
    """
    cdef Py_ssize_t ny = data.shape[0], nx = data.shape[1]
    cdef Py_ssize_t gy = total.shape[0], gx = total.shape[1]
    cdef Py_ssize_t rows, cols
    cdef Py_ssize_t r, c, y, x, i, j
    cdef double gx_f, gy_f, inv
    cdef float value
    _expect_shape("x_offset", x_offset.shape[0], x_offset.shape[1], ny, nx, "as data")
    _expect_shape("y_offset", y_offset.shape[0], y_offset.shape[1], ny, nx, "as data")
    _expect_shape("count", count.shape[0], count.shape[1], gy, gx, "as total")
    _expect_layer(origin_y, origin_x, step)
    rows = _layer_size(ny, origin_y, step)
    cols = _layer_size(nx, origin_x, step)
    inv = 1.0 / step
    with nogil:
        for r in range(rows):
            y = origin_y + r * step
            for c in range(cols):
                x = origin_x + c * step
                value = data[y, x]
                if not isfinite(value):
                    continue
                gx_f = (x - x_offset[y, x] + 0.5) * inv - 0.5
                gy_f = (y - y_offset[y, x] + 0.5) * inv - 0.5
                if not (gx_f > -0.5 and gx_f < gx - 0.5 and gy_f > -0.5 and gy_f < gy - 0.5):
                    continue
                i = <Py_ssize_t> (gy_f + 0.5)
                j = <Py_ssize_t> (gx_f + 0.5)
                total[i, j] += value
                count[i, j] += 1.0


def blot(
    const float[:, ::1] image,
    const float[:, ::1] x_offset,
    const float[:, ::1] y_offset,
    Py_ssize_t origin_y,
    Py_ssize_t origin_x,
    Py_ssize_t step,
    Py_ssize_t first,
    Py_ssize_t last,
    float[:, ::1] out,
):
    """Sample ``image`` at the mapped centres of a layer's rows ``first:last`` (bilinear).

    The layer and its mapping are those of `scatter`, the offsets of the
    frame's shape; ``out`` has the layer's shape. A centre outside the image
    (by more than half a pixel), or next to a NaN, gives NaN.
    """
    cdef Py_ssize_t gy = image.shape[0], gx = image.shape[1]
    cdef Py_ssize_t ny = x_offset.shape[0], nx = x_offset.shape[1]
    cdef Py_ssize_t r, c, y, x, i, j
    cdef double px, py, fx, fy, inv
    cdef float a, b, d, e
    _expect_shape("y_offset", y_offset.shape[0], y_offset.shape[1], ny, nx, "as x_offset")
    _expect_layer(origin_y, origin_x, step)
    _expect_shape(
        "out",
        out.shape[0],
        out.shape[1],
        _layer_size(ny, origin_y, step),
        _layer_size(nx, origin_x, step),
        f"as the layer of x_offset {(ny, nx)} from {(origin_y, origin_x)} every {step} pixels",
    )
    _expect_rows(first, last, out.shape[0], "out")
    inv = 1.0 / step
    with nogil:
        for r in range(first, last):
            y = origin_y + r * step
            for c in range(out.shape[1]):
                x = origin_x + c * step
                px = (x - x_offset[y, x] + 0.5) * inv - 0.5
                py = (y - y_offset[y, x] + 0.5) * inv - 0.5
                # A centre in the image's outer half pixel takes its edge.
                if not (px > -0.5 and px < gx - 0.5 and py > -0.5 and py < gy - 0.5):
                    out[r, c] = NAN
                    continue
                px = 0.0 if px < 0 else (gx - 1.0 if px > gx - 1 else px)
                py = 0.0 if py < 0 else (gy - 1.0 if py > gy - 1 else py)
                j = <Py_ssize_t> px
                i = <Py_ssize_t> py
                if j > gx - 2:
                    j = gx - 2 if gx > 1 else 0
                if i > gy - 2:
                    i = gy - 2 if gy > 1 else 0
                fx = px - j
                fy = py - i
                a = image[i, j]
                b = image[i, j + 1] if gx > 1 else a
                d = image[i + 1, j] if gy > 1 else a
                e = image[i + 1, j + 1] if gx > 1 and gy > 1 else d
                out[r, c] = <float> ((1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * d + fx * e))
