"""Frame quality: each frame's measures, the frames left out of a stack, and their weights.

The measures of the stars (FWHM, elongation, how many were detected) and
of the registration come from the maps' headers, which carry what the star
tables measured; the sky, the noise and the flux scale from the stack
itself, which reads every frame it stacks. A frame far outside the bulk of
its sequence (blurred, shaken, clouded over to a handful of stars) is left
out; the others are weighted by the inverse variance of their noise after
normalisation.
"""

import math

import numpy as np
from astropy.io import fits

from .._utils.unreadable import UNREADABLE_FITS
from ..frames._cfa import mosaic_period
from ..maps import OffsetMap
from ..maps._offset_map import _read_provenance

__all__ = [
    "FILTER_FWHM",
    "FILTER_ROUND",
    "FILTER_STARS",
    "FLOOR",
    "MEASURES",
    "check_selection",
    "frame_noise",
    "frame_weight",
    "map_measures",
    "median_frames",
    "reference_measures",
    "select_frames",
]

MEASURES = ("fwhm", "elongation", "n_stars", "sky", "noise", "flux_scale", "residual")
"""The measures of a frame in its `StackResult` and in the report, in order."""

# The least margin beyond the median, as a fraction of it: the seeing of a
# night changes its FWHM by 10 to 20 % from frame to frame (and the MAD of a
# uniform sequence can be tiny), a frame blurred by dew or shaken by wind is
# 1.5 to 3 times the median. A quarter leaves nothing of a night's seeing out.
FLOOR = 0.25
# The defaults: margins of 3 robust sigmas (beyond the floor), and a star
# count collapsed below a quarter of the median's (a lens cap, thick cloud;
# thin cloud that dims the stars to 30 % keeps more, and is weighted down).
FILTER_FWHM = FILTER_ROUND = 3.0
FILTER_STARS = 0.25
WEIGHTINGS = ("noise", "none")
# A frame whose weight is below this fraction of the median weight is no
# voter of rejection's median (where at least 3 others are): its noise,
# normalised, would be that of an outlier.
_FAINT = 0.1
# Differences of pixels the noise is measured from, about this many at most
# (every row of a small frame; the noise to 0.1 %, in 0.05 s for 24 Mpix).
_NOISE_SAMPLES = 1_000_000


def check_selection(
    select=True,
    filter_fwhm=FILTER_FWHM,
    filter_round=FILTER_ROUND,
    filter_stars=FILTER_STARS,
    keep_best=None,
    weighting="noise",
):
    """Check the selection and weighting options of `stack_frames`; return them as used.

    Raises
    ------
    ValueError
        If an option is out of range.
    """

    def margin(value, name, high=None):
        if value is None:
            return None
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or None (off), got {value!r}") from None
        if not (value > 0 and math.isfinite(value)) or (high is not None and value > high):
            bound = f"in (0, {high:g}]" if high is not None else "positive"
            raise ValueError(f"{name} must be {bound} or None (off), got {value!r}")
        return value

    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
    return {
        "select": bool(select),
        "filter_fwhm": margin(filter_fwhm, "filter_fwhm"),
        "filter_round": margin(filter_round, "filter_round"),
        "filter_stars": margin(filter_stars, "filter_stars", 1),
        "keep_best": margin(keep_best, "keep_best", 100),
        "weighting": weighting,
    }


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def map_measures(path):
    """Return the measures a map's header records: its frame's and the reference's.

    ``path`` is the map's file, or the map (`OffsetMap`) whose file's
    header it would be.

    Returns
    -------
    frame, reference : dict
        ``fwhm``, ``elongation``, ``n_stars`` (stars detected), ``sky``,
        ``noise``, ``flux_scale`` and ``residual`` (the RMS of the stars
        about the frame's global transform, ``TRENDRMS``, or else about the
        map, ``STARRMS``, or else its cross-validated RMS, ``CVRMS``), NaN
        where the header has none (maps of earlier versions); the
        reference's, from the ``REF*`` cards, the same (its flux scale 1,
        its residual 0). Both NaN if the header cannot be read.
    """
    if isinstance(path, OffsetMap):
        header = path.header()
    else:
        try:
            header = fits.getheader(path)
        except UNREADABLE_FITS:  # an unreadable map fails its frame when it is read
            header = fits.Header()
    meta = _read_provenance(header)
    residual = next(
        (meta[key] for key in ("trend_rms", "star_rms", "cv_rms") if meta.get(key) is not None),
        header.get("TRENDRMS"),
    )
    frame = {
        "fwhm": meta.get("fwhm"),
        "elongation": meta.get("elongation"),
        "n_stars": meta.get("n_detected"),
        "sky": meta.get("sky"),
        "noise": meta.get("noise"),
        "flux_scale": meta.get("flux_scale"),
        "residual": residual,
    }
    reference = {
        "fwhm": meta.get("ref_fwhm"),
        "elongation": meta.get("ref_elongation"),
        "n_stars": meta.get("ref_n_detected"),
        "sky": meta.get("ref_sky"),
        "noise": meta.get("ref_noise"),
        "flux_scale": 1.0,
        "residual": 0.0,
    }
    return (
        {key: _number(value) for key, value in frame.items()},
        {key: _number(value) for key, value in reference.items()},
    )


def select_frames(measures, reference=None, options=None):
    """Return the frames to leave out of a stack, with why: ``{key: reason}``.

    Parameters
    ----------
    measures : dict
        ``{key: {"fwhm": ..., "elongation": ..., "n_stars": ...}}`` of every
        frame to stack (NaN where unmeasured: that measure does not select
        it), in the order given.
    reference : hashable or `None`, optional
        The key of the reference frame, which is never left out: every
        other frame is registered and normalised to it.
    options : dict or `None`, optional
        As `check_selection` returns them; its defaults if `None`.

    Returns
    -------
    dict
        ``{key: reason}`` of the frames left out, in one line each.

    Notes
    -----
    A frame is left out when its FWHM or elongation is beyond the median of
    the frames that have it by more than ``k`` times their robust sigma
    (1.4826 times the median absolute deviation), ``k`` being
    ``filter_fwhm`` or ``filter_round``, and by more than `FLOOR` times the
    median; or when it detected fewer stars than ``filter_stars`` times
    their median. ``keep_best`` (a percentage) then keeps that many of all
    the frames (rounded up), those of the least FWHM, the reference among
    them. Nothing is left out of fewer than 3 frames.

    Examples
    --------
    >>> from astro_offsets.stack._quality import select_frames
    >>> frames = {k: {"fwhm": 3.0 + 0.1 * (k % 3), "elongation": 1.1, "n_stars": 300}
    ...           for k in range(8)}
    >>> frames[5]["fwhm"] = 8.0
    >>> select_frames(frames, reference=0)
    {5: 'FWHM 8 px, beyond 3.88 px (the median 3.1 px + the margin)'}
    """
    options = check_selection() if options is None else options
    if not options["select"] or len(measures) < 3:
        return {}
    out = {}
    for key, name, what, unit in (
        ("fwhm", "filter_fwhm", "FWHM", " px"),
        ("elongation", "filter_round", "elongation", ""),
    ):
        k = options[name]
        values = {f: m[key] for f, m in measures.items() if math.isfinite(m[key])}
        if k is None or len(values) < 3:
            continue
        array = np.array(list(values.values()))
        median = float(np.median(array))
        sigma = 1.4826 * float(np.median(np.abs(array - median)))
        limit = median + max(k * sigma, FLOOR * median)
        for frame, value in values.items():
            if value > limit and frame != reference and frame not in out:
                out[frame] = (
                    f"{what} {value:.3g}{unit}, beyond {limit:.3g}{unit} "
                    f"(the median {median:.3g}{unit} + the margin)"
                )
    fraction = options["filter_stars"]
    counts = {f: m["n_stars"] for f, m in measures.items() if math.isfinite(m["n_stars"])}
    if fraction is not None and len(counts) >= 3:
        median = float(np.median(list(counts.values())))
        for frame, count in counts.items():
            if count < fraction * median and frame != reference and frame not in out:
                out[frame] = (
                    f"{count:.0f} stars detected, fewer than {fraction:g} times the "
                    f"median {median:.0f}"
                )
    percent = options["keep_best"]
    if percent is not None:
        wanted = math.ceil(percent / 100 * len(measures))
        ranked = sorted(
            (f for f in measures if f not in out and f != reference),
            key=lambda f: (not math.isfinite(measures[f]["fwhm"]), measures[f]["fwhm"]),
        )
        kept = 1 if reference in measures and reference not in out else 0
        for frame in ranked:
            if kept < wanted:
                kept += 1
            else:
                fwhm = measures[frame]["fwhm"]
                shown = f"FWHM {fwhm:.3g} px" if math.isfinite(fwhm) else "no FWHM measured"
                out[frame] = f"not among the best {percent:g} % of the frames ({shown})"
    return {frame: out[frame] for frame in measures if frame in out}


def frame_noise(data, colors=None):
    """Return a frame's pixel noise: from the differences of neighbouring pixels of one colour.

    The median absolute deviation of the differences, over every row of a
    frame of a million pixels or less, and over enough rows of a larger one
    for a million differences (an odd stride), as a sigma, over the square
    root of 2: the sky's
    noise, which neither the stars nor a gradient of the sky change. Pixels
    of one colour of a mosaic are compared, a period of the mosaic apart
    (``frames._cfa.mosaic_period``: 2 in a Bayer mosaic, 6 in X-Trans); a
    colour cube's noise is the quadratic mean of its planes'.
    NaN without enough finite pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.stack._quality import frame_noise
    >>> rng = np.random.default_rng(1)
    >>> frame = rng.normal(100.0, 5.0, (400, 300)) + np.arange(300)  # a gradient
    >>> round(frame_noise(frame), 1)
    5.0
    """
    data = np.asarray(data)
    if data.ndim == 3:  # a colour cube: the planes' noise, as a quadratic mean
        return float(np.sqrt(np.mean([frame_noise(plane) ** 2 for plane in data])))
    step = 1 if colors is None else mosaic_period(colors)
    # An odd stride: the rows of every colour of a mosaic are sampled.
    rows = data[:: -(-data.size // _NOISE_SAMPLES) | 1]
    differences = (rows[:, step:] - rows[:, :-step]).ravel()
    differences = differences[np.isfinite(differences)]
    if differences.size < 100:
        return math.nan
    deviation = np.median(np.abs(differences - np.median(differences)))
    return float(1.4826 * deviation / math.sqrt(2))


def frame_weight(noise, scale, reference_noise):
    """Return a frame's weight relative to the reference's: its noise after normalisation.

    The inverse variance, ``(reference_noise / (scale * noise))**2``: the
    frame's data are multiplied by ``scale`` to bring its stars to the
    reference's, and its noise with them. `None` where it cannot be told
    (a noise of 0 or NaN, in this frame or the reference): the frame is then
    weighted by its exposure time, as without noise weighting.

    Examples
    --------
    >>> from astro_offsets.stack._quality import frame_weight
    >>> frame_weight(10.0, 100.0, 10.0)  # stars at 1 %: a capped lens
    0.0001
    """
    normalised = scale * noise
    if not (normalised > 0 and reference_noise > 0):
        return None
    weight = (reference_noise / normalised) ** 2
    return float(weight) if math.isfinite(weight) and weight > 0 else None


def median_frames(weights):
    """Return the frames whose single drizzles make rejection's median, sorted.

    ``weights`` is ``{frame: weight or None}``. A frame whose weight is
    below a tenth of the median weight is left out of the median (as the
    stack all but leaves it out), as long as 3 others make it.
    """
    frames = sorted(weights)
    known = [w for w in weights.values() if w is not None]
    if not known:
        return frames
    bar = _FAINT * float(np.median(known))
    voters = [f for f in frames if weights[f] is None or weights[f] >= bar]
    return voters if len(voters) >= 3 else frames


def reference_measures(recorded):
    """Return the reference's measures: the median of those the maps record (``recorded``).

    ``recorded`` are the reference's measures of each map (`map_measures`);
    NaN for a measure that none records.
    """
    measures = {}
    for key in MEASURES:
        values = [m[key] for m in recorded if math.isfinite(m[key])]
        measures[key] = float(np.median(values)) if values else math.nan
    return measures
