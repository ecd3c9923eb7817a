"""Export an offset map as a `gwcs.WCS`: frame pixels to reference pixels, with an inverse.

The forward transform interpolates the map's offsets bilinearly
(`astropy.modeling.models.Tabular2D`); the inverse is a second pair of
tables on the reference grid, solved once by Newton's method on that same
bilinear map. Both are plain astropy models, so the WCS serialises to ASDF
(gwcs, asdf and asdf-astropy are the optional extra ``gwcs``).
"""

import numpy as np

__all__ = ["offsets_to_gwcs"]

_MISSING = "to_gwcs needs gwcs: pip install 'astro_offsets[gwcs]'"

#: Frame pixels (beyond the pixel edges) whose image on the reference grid
#: the inverse tables still hold, extrapolated: a reference cell around a
#: frame pixel at the edge then has no NaN node. A reference cell's nodes
#: lie within sqrt(2) px of any point in it, so 2 px suffices while the map
#: shrinks no length by more than a quarter.
_MARGIN = 2.0
#: Newton's method stops where the map misses its target by less than
#: this (px); a point not there after _MAX_STEPS steps is NaN.
_RESIDUAL = 1e-9
_MAX_STEPS = 50
#: Points solved at a time: some 40 temporaries of this many floats
#: (85 MB), whatever the frame's size.
_POINTS = 2**18
#: Rows of the map scanned at a time for the extent of its image.
_ROWS = 128


def offsets_to_gwcs(x_offset, y_offset):
    """Return a `gwcs.WCS` from frame pixels to reference pixels; see `OffsetMap.to_gwcs`.

    ``x_offset``, ``y_offset`` are the map's validated float32 arrays.
    """
    try:
        import gwcs
        from gwcs import coordinate_frames as cf
    except ModuleNotFoundError as exc:
        raise ImportError(_MISSING) from exc
    from astropy import units as u

    ny, nx = x_offset.shape
    if ny < 2 or nx < 2:
        raise ValueError(
            f"to_gwcs needs a map of at least 2 x 2 pixels to interpolate, got {ny} x {nx}"
        )
    if not (np.isfinite(x_offset) & np.isfinite(y_offset)).any():
        raise ValueError("to_gwcs needs a map with finite offsets; this one is all NaN")
    # Copies: a map's arrays may be reused for the next frame (OffsetMap.read(out=...)).
    x_table = np.array(x_offset, dtype=np.float32, order="C")
    y_table = np.array(y_offset, dtype=np.float32, order="C")
    # Extrapolated beyond the outer pixels' centres, up to their edges (the
    # bounding box); the inverse is NaN beyond its tables.
    forward = _shifted(x_table, y_table, (0.0, 0.0), sign=-1, fill_value=None)
    origin, x_back, y_back = _inverse_tables(x_table, y_table)
    forward.inverse = _shifted(x_back, y_back, origin, sign=+1, fill_value=np.nan)

    frame = cf.Frame2D(name="frame", axes_names=("x", "y"), unit=(u.pix, u.pix))
    reference = cf.Frame2D(name="reference", axes_names=("x", "y"), unit=(u.pix, u.pix))
    # Steps, not (forward, frame, reference): gwcs deep-copies a lone
    # transform, which would hold the tables twice until collected.
    wcs = gwcs.WCS([(frame, forward), (reference, None)])
    wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    wcs.pixel_shape = (nx, ny)
    return wcs


def _shifted(x_table, y_table, origin, *, sign, fill_value):
    """Return the model ``(x, y) -> (x + sign * x_table(x, y), y + sign * y_table(x, y))``.

    The tables are bilinear, their node ``[j, i]`` at the point
    ``(x0 + i, y0 + j)`` for ``origin`` ``(x0, y0)``: a shift takes the
    point to the table's indices, given rows first (``[y, x]``), hence the
    swap of the inputs. The shift's parameter also makes the model one of
    plain numbers (astropy's parameterless models take quantities, which its
    bounding boxes drop from arrays), so gwcs gives it floats.
    """
    from astropy.modeling.models import Mapping, Shift, Tabular2D

    x0, y0 = origin
    to_index = (Shift(0.0 - x0) & Shift(0.0 - y0)) | Mapping((1, 0))  # not -0.0
    coordinate = []
    for axis, table in enumerate((x_table, y_table)):
        lookup = to_index | Tabular2D(
            lookup_table=table, method="linear", bounds_error=False, fill_value=fill_value
        )
        own = Mapping((axis,), n_inputs=2)
        coordinate.append(own - lookup if sign < 0 else own + lookup)
    model = Mapping((0, 1, 0, 1)) | (coordinate[0] & coordinate[1])
    model.inputs = model.outputs = ("x", "y")
    return model


def _bilinear(x_table, y_table, x, y):
    """Return both tables, bilinear at ``(x, y)``, and their derivatives.

    The same interpolation as the forward transform's (scipy's ``interpn``):
    a point's cell is ``[i, i + 1) x [j, j + 1)`` with ``i = floor(x)`` held
    within the table, extrapolated linearly beyond its edges; a NaN node
    makes its cells NaN.
    """
    ny, nx = x_table.shape
    # A NaN point (a lost Newton iterate) takes any cell, and stays NaN.
    i = np.clip(np.floor(np.nan_to_num(x)), 0, nx - 2).astype(np.intp)
    j = np.clip(np.floor(np.nan_to_num(y)), 0, ny - 2).astype(np.intp)
    tx, ty = x - i, y - j
    k = j * nx + i
    out = []
    for table in (x_table, y_table):
        flat = table.reshape(-1)
        v00, v10 = flat[k].astype(np.float64), flat[k + 1].astype(np.float64)
        v01, v11 = flat[k + nx].astype(np.float64), flat[k + nx + 1].astype(np.float64)
        ax, ay, axy = v10 - v00, v01 - v00, v11 - v10 - v01 + v00
        out.append((v00 + tx * ax + ty * (ay + tx * axy), ax + ty * axy, ay + tx * axy))
    return out


def _affine_guess(x_table, y_table):
    """Return the affine map closest to the pixmap, ``(matrix, shift)``, from some of its pixels.

    A grid of pixels, or all finite ones if it holds fewer than three; the
    shift alone if they are collinear.
    """
    ny, nx = x_table.shape
    rows = np.unique(np.linspace(0, ny - 1, min(ny, 64)).astype(np.intp))
    cols = np.unique(np.linspace(0, nx - 1, min(nx, 64)).astype(np.intp))
    y, x = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    good = np.isfinite(x_table[y, x]) & np.isfinite(y_table[y, x])
    if good.sum() < 3:
        y, x = np.nonzero(np.isfinite(x_table) & np.isfinite(y_table))
    else:
        y, x = y[good], x[good]
    x_ref = x - x_table[y, x].astype(np.float64)
    y_ref = y - y_table[y, x].astype(np.float64)
    design = np.column_stack([x, y, np.ones(len(x))]).astype(np.float64)
    coef, _, rank, _ = np.linalg.lstsq(design, np.column_stack([x_ref, y_ref]), rcond=None)
    if rank < 3:
        return np.eye(2), np.array([np.mean(x_ref - x), np.mean(y_ref - y)])
    return coef[:2].T, coef[2]


def _inverse_tables(x_table, y_table):
    """Return the inverse of the bilinear map as offset tables on the reference grid.

    Returns
    -------
    origin : tuple of float
        ``(x0, y0)``, the reference pixel of the tables' first node.
    x_back, y_back : `~numpy.ndarray`
        float64: at reference node ``(X, Y)``, the frame point ``(x, y)``
        that the bilinear map takes there, as ``x - X`` and ``y - Y`` (the
        offsets at that point); NaN where there is none within the frame
        and its margin.
    """
    ny, nx = x_table.shape
    lo = (-0.5 - _MARGIN, -0.5 - _MARGIN)
    hi = (nx - 0.5 + _MARGIN, ny - 0.5 + _MARGIN)
    (x_min, x_max), (y_min, y_max) = _image_range(x_table, y_table, lo, hi)
    x0, y0 = float(np.floor(x_min)), float(np.floor(y_min))
    shape = (int(np.ceil(y_max) - y0) + 1, int(np.ceil(x_max) - x0) + 1)
    x_back = np.empty(shape)
    y_back = np.empty(shape)
    matrix, shift = _affine_guess(x_table, y_table)
    undo = np.linalg.inv(matrix)
    x_ref = np.arange(shape[1], dtype=np.float64) + x0
    rows = max(1, _POINTS // shape[1])
    for start in range(0, shape[0], rows):
        y_ref = np.arange(start, min(start + rows, shape[0]), dtype=np.float64) + y0
        big_x, big_y = (a.ravel() for a in np.meshgrid(x_ref, y_ref))
        x, y = _solve(x_table, y_table, big_x, big_y, undo, shift)
        inside = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
        block = slice(start, start + len(y_ref))
        x_back[block] = np.where(inside, x - big_x, np.nan).reshape(len(y_ref), -1)
        y_back[block] = np.where(inside, y - big_y, np.nan).reshape(len(y_ref), -1)
    return (x0, y0), x_back, y_back


def _image_range(x_table, y_table, lo, hi):
    """Return the ranges ``(min, max)`` in x and y of the map's image of the box ``lo``..``hi``.

    The map is bilinear on the cells between the pixels and the box's edges,
    so its extremes lie at their corners: the pixels, and the points of the
    box's edges on the pixels' rows and columns. NaN cells are left out.
    """
    ny, nx = x_table.shape
    xs = np.concatenate([[lo[0]], np.arange(nx, dtype=np.float64), [hi[0]]])
    ys = np.concatenate([[lo[1]], np.arange(ny, dtype=np.float64), [hi[1]]])
    x_edge = np.concatenate([np.full(len(ys), lo[0]), np.full(len(ys), hi[0]), xs, xs])
    y_edge = np.concatenate([ys, ys, np.full(len(xs), lo[1]), np.full(len(xs), hi[1])])
    (fx, _, _), (fy, _, _) = _bilinear(x_table, y_table, x_edge, y_edge)
    ranges = [_range(x_edge - fx), _range(y_edge - fy)]
    columns = np.arange(nx, dtype=np.float64)
    for start in range(0, ny, _ROWS):
        rows = np.arange(start, min(start + _ROWS, ny), dtype=np.float64)[:, np.newaxis]
        for axis, ref in enumerate(
            (columns - x_table[start : start + _ROWS], rows - y_table[start : start + _ROWS])
        ):
            ranges[axis] = _range([*ranges[axis], *_range(ref)])
    return ranges


def _range(values):
    """``(min, max)`` of the values, NaN left out (NaN if all are; no warning)."""
    values = np.asarray(values).ravel()
    return np.fmin.reduce(values), np.fmax.reduce(values)


def _solve(x_table, y_table, big_x, big_y, undo, shift):
    """Return the frame points ``(x, y)`` the bilinear map takes to ``(X, Y)``: Newton's method.

    It starts from the affine guess ``undo @ ((X, Y) - shift)``; NaN where
    it finds no point within ``_RESIDUAL`` in ``_MAX_STEPS`` steps, or meets
    a NaN cell.
    """
    start_x = big_x - shift[0]
    start_y = big_y - shift[1]
    x = undo[0, 0] * start_x + undo[0, 1] * start_y
    y = undo[1, 0] * start_x + undo[1, 1] * start_y
    active = np.arange(len(x))
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(_MAX_STEPS):
            (u, ux, uy), (v, vx, vy) = _bilinear(x_table, y_table, x[active], y[active])
            # F(p) = p - offset(p), its Jacobian J = I - d offset / dp.
            rx = x[active] - u - big_x[active]
            ry = y[active] - v - big_y[active]
            residual = np.hypot(rx, ry)
            lost = np.isnan(residual)
            x[active[lost]] = np.nan
            moving = residual > _RESIDUAL
            active, rx, ry = active[moving], rx[moving], ry[moving]
            if not len(active):
                break
            a, b, c, d = 1 - ux[moving], -uy[moving], -vx[moving], 1 - vy[moving]
            det = a * d - b * c
            x[active] -= (d * rx - b * ry) / det
            y[active] -= (a * ry - c * rx) / det
    x[active] = np.nan
    y[np.isnan(x)] = np.nan
    return x, y
