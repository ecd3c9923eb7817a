"""Match the stars of a frame to the reference: triangles, a vote, nearest neighbours.

No frame-to-frame chaining: every frame is matched to the reference directly,
so a large drift, a field rotation or a gap in the sequence does not matter.
"""

from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

from .._utils.blas import one_blas_thread
from .._utils.polynomial import Polynomial

__all__ = ["match_stars", "MatchError"]

_BRIGHT = 40  # stars per frame used to find the transform
_NEIGHBOURS = 5  # triangles from each star and two of its nearest neighbours
_INVARIANT_TOLERANCE = 0.02
# A match needs this many stars on each side: the vote asks this many bright
# stars to agree on a transform.
MIN_STARS = 5
_VOTE_RADIUS = 3.0  # pixels, for a similarity before distortion is fitted
_MAX_RADIUS = 3.0
_MIN_RADIUS = 0.5


class MatchError(ValueError):
    """A frame's stars could not be matched to the reference.

    Examples
    --------
    >>> from astro_offsets import MatchError, match_stars
    >>> try:
    ...     match_stars([[1.0, 2.0]], [[1.0, 2.0], [5.0, 6.0]])
    ... except MatchError as error:
    ...     print(error)
    too few stars in the frame to match (1; need at least 5)
    """


def _triangles(xy):
    """Triangles of each star with two of its neighbours: vertices (canonical order), invariants.

    Vertices are ordered by the length of the opposite side, shortest first,
    so matching triangles list matching stars in the same order. The
    invariants (longest / middle side, middle / shortest side) do not change
    under shifts, rotations and scaling.
    """
    n = len(xy)
    k = min(_NEIGHBOURS + 1, n)
    _, neighbours = cKDTree(xy).query(xy, k=k)
    triangles = set()
    for i in range(n):
        for a, b in combinations(neighbours[i][1:], 2):
            triangles.add(tuple(sorted((i, int(a), int(b)))))
    if not triangles:
        return np.zeros((0, 3), int), np.zeros((0, 2))
    vertices = np.array(sorted(triangles))
    p = xy[vertices]  # (t, 3, 2)
    sides = np.stack(
        [
            np.hypot(*(p[:, 1] - p[:, 2]).T),
            np.hypot(*(p[:, 2] - p[:, 0]).T),
            np.hypot(*(p[:, 0] - p[:, 1]).T),
        ],
        axis=1,
    )  # side opposite each vertex
    order = np.argsort(sides, axis=1)
    sides = np.take_along_axis(sides, order, axis=1)
    vertices = np.take_along_axis(vertices, order, axis=1)
    # Near-degenerate triangles have unstable invariants.
    good = sides[:, 0] > 1e-3 * sides[:, 2]
    invariants = np.stack(
        [sides[good, 2] / sides[good, 1], sides[good, 1] / sides[good, 0]], axis=1
    )
    return vertices[good], invariants


def _similarity(src, dst):
    """Least-squares similarity (rotation, scale, shift) taking ``src`` to ``dst``."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - src_mean, dst - dst_mean
    # Complex numbers: dst = z * src + t with z = scale * exp(i angle).
    za = a[:, 0] + 1j * a[:, 1]
    zb = b[:, 0] + 1j * b[:, 1]
    norm = np.vdot(za, za).real
    z = np.vdot(za, zb) / norm if norm > 0 else 1.0 + 0j
    matrix = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return matrix, dst_mean - matrix @ src_mean


def _apply(transform, xy):
    matrix, shift = transform
    return xy @ matrix.T + shift


def _polynomial(src, dst, centre, scale):
    """Least-squares polynomial map ``src`` -> ``dst``, cubic when the pairs allow.

    A cubic follows radial lens distortion (which grows as the cube of the
    distance from the axis) and field rotation; with few pairs a quadratic
    is safer.
    """
    degree = 3 if len(src) >= 40 else 2

    def normalised(xy):
        return (xy[:, 0] - centre[0]) / scale, (xy[:, 1] - centre[1]) / scale

    with one_blas_thread():
        polynomial, _ = Polynomial.fit(*normalised(src), dst, degree)
    return lambda xy: np.column_stack(polynomial(*normalised(xy)))


def _mutual_matches(moved, ref, radius):
    """One-to-one pairs (i, j): ref j is the nearest to moved i and the reverse, unambiguously."""
    if len(moved) == 0 or len(ref) == 0:
        return np.zeros((0, 2), int)
    ref_tree = cKDTree(ref)
    k = min(2, len(ref))
    distance, nearest = ref_tree.query(moved, k=k)
    if k == 2:
        # Ambiguous when a second reference star is nearly as close.
        clear = distance[:, 1] > 2 * radius
        distance, nearest = distance[:, 0], nearest[:, 0]
    else:
        clear = np.ones(len(moved), bool)
    _back_distance, back = cKDTree(moved).query(ref[nearest], k=1)
    mutual = back == np.arange(len(moved))
    keep = (distance <= radius) & clear & mutual
    return np.column_stack([np.flatnonzero(keep), nearest[keep]])


def _voted_similarity(frame_xy, ref_xy):
    """Best similarity frame -> reference from matching triangles of bright stars.

    Every pair of triangles with matching shapes proposes the similarity
    that takes one onto the other, and the one that brings the most bright
    stars onto a reference star wins: an exhaustive vote over the few
    hundred candidate pairs, which finds the transform whatever the drift
    and rotation.
    """
    f_vertices, f_inv = _triangles(frame_xy)
    r_vertices, r_inv = _triangles(ref_xy)
    if len(f_inv) == 0 or len(r_inv) == 0:
        return None, 0
    pairs = cKDTree(r_inv).query_ball_point(f_inv, r=_INVARIANT_TOLERANCE)
    ref_tree = cKDTree(ref_xy)
    best, best_count = None, 0
    for fi, candidates in enumerate(pairs):
        for ri in candidates:
            transform = _similarity(frame_xy[f_vertices[fi]], ref_xy[r_vertices[ri]])
            scale = np.sqrt(abs(np.linalg.det(transform[0])))
            if not 0.8 < scale < 1.25:  # one camera: the pixel scale barely changes
                continue
            distance, _ = ref_tree.query(_apply(transform, frame_xy), k=1)
            count = int(np.count_nonzero(distance < _VOTE_RADIUS))
            if count > best_count:
                best, best_count = transform, count
    return best, best_count


def match_stars(frame_xy, ref_xy, *, frame_flux=None, ref_flux=None):
    """Match stars of a frame to stars of the reference frame.

    A similarity transform (shift, rotation, scale) is found from matching
    triangles of the brightest stars by a vote, refined, extended by a
    cubic polynomial for lens distortion, and every star is then paired
    with its mutual nearest neighbour within a radius set by the residuals.

    Parameters
    ----------
    frame_xy, ref_xy : array-like
        ``(n, 2)`` star positions ``(x, y)`` in the frame and the reference.
    frame_flux, ref_flux : array-like or `None`, optional
        Fluxes, to pick the brightest stars for the transform; the first
        rows are taken as the brightest when `None`.

    Returns
    -------
    pairs : `~numpy.ndarray`
        ``(m, 2)`` int array of (frame row, reference row).
    info : dict
        ``transform`` (2 x 2 matrix and shift of the similarity frame ->
        reference), ``radius`` (final match radius, px), ``rms`` (residual
        of the polynomial fit, px), ``mapped`` (``(n, 2)``: every frame
        star's position on the reference, by the fitted mapping).

    Raises
    ------
    MatchError
        If either side has too few stars, or no transform explains enough of
        the bright stars.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import match_stars
    >>> rng = np.random.default_rng(1)
    >>> ref = rng.uniform(0, 500, (60, 2))
    >>> angle = np.deg2rad(0.8)
    >>> rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    >>> frame = ref[::-1] @ rotation.T + [35.2, -18.7]  # shuffled, rotated, moved
    >>> pairs, info = match_stars(frame, ref)
    >>> len(pairs), bool(np.all(pairs[:, 1] == 59 - pairs[:, 0]))
    (60, True)
    """
    frame_xy = np.asarray(frame_xy, float).reshape(-1, 2)
    ref_xy = np.asarray(ref_xy, float).reshape(-1, 2)
    for name, xy in (("frame", frame_xy), ("reference", ref_xy)):
        if len(xy) < MIN_STARS:
            raise MatchError(
                f"too few stars in the {name} to match ({len(xy)}; need at least {MIN_STARS})"
            )

    def brightest(xy, flux):
        order = np.arange(len(xy)) if flux is None else np.argsort(-np.asarray(flux, float))
        return order[:_BRIGHT]

    f_bright = brightest(frame_xy, frame_flux)
    r_bright = brightest(ref_xy, ref_flux)
    transform, count = _voted_similarity(frame_xy[f_bright], ref_xy[r_bright])
    needed = max(MIN_STARS, int(0.2 * min(len(f_bright), len(r_bright))))
    if transform is None or count < needed:
        raise MatchError(
            f"no consistent match with the reference: the best transform of triangles of "
            f"bright stars explains {count} of {len(f_bright)} (need {needed})"
        )
    # Refine on all stars: similarity, then quadratic, shrinking the radius
    # to what the residuals allow.
    radius = _VOTE_RADIUS
    pairs = _mutual_matches(_apply(transform, frame_xy), ref_xy, radius)
    if len(pairs) >= 3:
        transform = _similarity(frame_xy[pairs[:, 0]], ref_xy[pairs[:, 1]])
    centre = ref_xy.mean(axis=0)
    extent = max(float(np.ptp(ref_xy)), 1.0)
    mapping = lambda xy: _apply(transform, xy)  # noqa: E731 - replaced by the polynomial below
    rms = np.nan
    for _ in range(3):
        pairs = _mutual_matches(mapping(frame_xy), ref_xy, radius)
        if len(pairs) < 12:
            break
        try:
            mapping = _polynomial(frame_xy[pairs[:, 0]], ref_xy[pairs[:, 1]], centre, extent)
        except ValueError as error:  # matched stars on a line
            raise MatchError(
                f"the matched stars cannot fit the distortion: their positions {error}"
            ) from None
        residual = np.hypot(*(mapping(frame_xy[pairs[:, 0]]) - ref_xy[pairs[:, 1]]).T)
        rms = float(np.sqrt(np.mean(residual**2)))
        radius = float(np.clip(5 * rms, _MIN_RADIUS, _MAX_RADIUS))
    mapped = mapping(frame_xy)
    pairs = _mutual_matches(mapped, ref_xy, radius)
    return pairs, {"transform": transform, "radius": radius, "rms": rms, "mapped": mapped}
