# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled kernels of outlier rejection: the median of a stack of images, the masks.

Both run without the GIL, so that threads share the work of a frame's rows.
Each output value depends only on the inputs at its own pixel (the median)
or its 3 x 3 neighbourhood (the masks): the results are the same for any
split into row chunks.
"""

from libc.math cimport NAN, fabs, isfinite, sqrt
from libc.stdlib cimport free, malloc

__all__ = ["grow", "nanmedian", "outlier_mask"]


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


def nanmedian(const float[:, :, ::1] cube, float[:, ::1] out):
    """Write the median over axis 0 of ``cube``, NaNs left out, into ``out``.

    A pixel with no finite value is NaN. An even count takes the mean of the
    two middle values, as `numpy.nanmedian` does.
    """
    cdef Py_ssize_t n = cube.shape[0], rows = cube.shape[1], cols = cube.shape[2]
    cdef Py_ssize_t r, c, k, m
    cdef float value, upper, lower
    cdef float* buffer
    if out.shape[0] != rows or out.shape[1] != cols:
        raise ValueError("out must have the shape of one image of the cube")
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
                    if m == 0:
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


cdef inline bint _deviates(
    const float[:, ::1] data,
    const float[:, ::1] blot,
    const float[:, ::1] background,
    Py_ssize_t r,
    Py_ssize_t c,
    double sky,
    double variance,
    double gain,
    double snr,
    double scale,
) noexcept nogil:
    cdef double level = blot[r, c], value = data[r, c], noise
    if not isfinite(level) or not isfinite(value):
        return False
    noise = variance + (level - sky) / gain if level > sky else variance
    return fabs(value - background[r, c] - level) > snr * sqrt(noise) + scale * _step(blot, r, c)


def outlier_mask(
    const float[:, ::1] data,
    const float[:, ::1] blot,
    const float[:, ::1] background,
    double sky,
    double variance,
    double gain,
    double snr,
    double scale,
    Py_ssize_t first,
    Py_ssize_t last,
    unsigned char[:, ::1] mask,
    unsigned char mark,
    unsigned char near,
):
    """Mark with ``mark`` the deviating pixels of rows ``first:last`` of ``mask``.

    A pixel deviates where ``|data - background - blot|`` exceeds ``snr *
    noise + scale * step``: ``noise`` is the square root of ``variance +
    max(blot - sky, 0) / gain`` (the sky's noise plus the source's photon
    noise) and ``step`` the blot's largest step to a neighbour (so that a
    slightly misregistered star core does not deviate). With ``near`` not 0,
    only unmarked pixels next to one marked ``near`` are tested (the second,
    looser test of drizzlepac); with 0, every unmarked pixel is. NaN blots
    and data never deviate. Rows outside ``first:last`` are read, not written.
    """
    cdef Py_ssize_t rows = data.shape[0], cols = data.shape[1]
    cdef Py_ssize_t r, c, rr, cc
    cdef bint close
    with nogil:
        for r in range(first, last):
            for c in range(cols):
                if mask[r, c]:
                    continue
                if near:
                    close = False
                    for rr in range(max(r - 1, 0), min(r + 2, rows)):
                        for cc in range(max(c - 1, 0), min(c + 2, cols)):
                            if mask[rr, cc] == near:
                                close = True
                    if not close:
                        continue
                if _deviates(data, blot, background, r, c, sky, variance, gain, snr, scale):
                    mask[r, c] = mark


def grow(
    const unsigned char[:, ::1] mask, Py_ssize_t first, Py_ssize_t last, unsigned char[:, ::1] out
):
    """Set rows ``first:last`` of ``out`` to 1 where ``mask`` is set within one pixel, else 0."""
    cdef Py_ssize_t rows = mask.shape[0], cols = mask.shape[1]
    cdef Py_ssize_t r, c, rr, cc
    cdef unsigned char hit
    with nogil:
        for r in range(first, last):
            for c in range(cols):
                hit = 0
                for rr in range(max(r - 1, 0), min(r + 2, rows)):
                    for cc in range(max(c - 1, 0), min(c + 2, cols)):
                        if mask[rr, cc]:
                            hit = 1
                out[r, c] = hit
