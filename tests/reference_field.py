"""A small, obviously-correct evaluator of the quadrant field, to check the kernel against.

It follows the definition in docs/field.rst, "Definition" (the label
``field-definition``) literally, one point at a time, with
numpy over the stars: no pruning, no tiling, nothing shared with the kernel.
"""

import numpy as np

__all__ = ["reference_field"]


def _field_at(px, py, x, y, u, v, power):
    dx = px - x
    dy = py - y
    on_point = (dx == 0) & (dy == 0)
    if on_point.any():
        return _mean(np.flatnonzero(on_point), u, v)
    quadrants = (
        (dx > 0) & (dy >= 0),
        (dx <= 0) & (dy > 0),
        (dx < 0) & (dy <= 0),
        (dx >= 0) & (dy < 0),
    )
    d2 = dx * dx + dy * dy
    winners = []
    for members in quadrants:
        if members.any():
            rows = np.flatnonzero(members)
            # argmin returns the first minimum: the lowest row on equal distance.
            winners.append(rows[np.argmin(d2[rows])])
    with np.errstate(divide="ignore", over="ignore"):
        weights = [
            1.0 / np.sqrt(d2[k]) if power == 1.0 else np.sqrt(d2[k]) ** -power for k in winners
        ]
    infinite = [k for k, w in zip(winners, weights, strict=True) if np.isinf(w)]
    if infinite:
        # Stars so close that the weight overflows count as on the point.
        return _mean(infinite, u, v)
    num_u = 0.0
    num_v = 0.0
    den = 0.0
    for k, w in zip(winners, weights, strict=True):
        num_u += w * u[k]
        num_v += w * v[k]
        den += w
    return num_u / den, num_v / den


def _mean(rows, u, v):
    # Summed in row order, as the definition's "mean" is evaluated.
    su = 0.0
    sv = 0.0
    for k in rows:
        su += u[k]
        sv += v[k]
    return su / len(rows), sv / len(rows)


def reference_field(px, py, x, y, u, v, power=1.0):
    """Field at each point ``(px[i], py[i])``; float64 arrays ``(dx, dy)``."""
    x, y, u, v = (np.asarray(a, dtype=np.float64) for a in (x, y, u, v))
    px = np.atleast_1d(np.asarray(px, dtype=np.float64))
    py = np.atleast_1d(np.asarray(py, dtype=np.float64))
    out = np.array([_field_at(a, b, x, y, u, v, power) for a, b in zip(px, py, strict=True)])
    return out[:, 0], out[:, 1]
