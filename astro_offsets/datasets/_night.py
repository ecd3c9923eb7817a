"""A night as it comes: field rotation, a meridian flip, wind, cloud, dew, a capped lens."""

import os
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .._utils.provenance import write_product
from ._artefacts import satellite_trail
from ._motions import CameraMotion
from ._stars import render_stars, star_field

__all__ = ["CONDITIONS", "Night", "night_sequence"]

CONDITIONS = MappingProxyType(
    {
        "good": "a clear frame",
        "shaken": "wind shake: stars stretched 2.5 times along one direction",
        "clouded": "thin cloud: stars at 30 %, sky 40 % brighter",
        "dewed": "dew on the lens: stars blurred 2.6 times",
        "capped": "the lens cap on: stars and sky at 1 %",
    }
)
"""The conditions a frame of `night_sequence` can be taken in, and what each does."""

_DEFAULT_BAD = MappingProxyType({3: "shaken", 9: "clouded", 11: "dewed", 12: "capped"})
# The seeing's Gaussian sigma (px) and its spread from frame to frame.
_SEEING, _SEEING_SPREAD = 1.6, 0.04
_SKY, _READ_NOISE = 300.0, 6.0


class Night(NamedTuple):
    """What `night_sequence` wrote, and the truth behind it.

    Examples
    --------
    >>> import tempfile
    >>> from astro_offsets.datasets import night_sequence
    >>> night = night_sequence(tempfile.mkdtemp(), shape=(100, 150), n_frames=3, n_stars=40,
    ...                        bad={1: "capped"}, flip_after=None, trail_frame=None)
    >>> night.reference == night.frames[0], len(night.stars) == 40
    (True, True)
    >>> night.good() == [night.frames[0], night.frames[2]]
    True
    """

    frames: list
    """The frames' paths, in order; the first is the reference."""
    stars: Table
    """The stars in the reference frame: ``x``, ``y`` (0-based px) and ``flux``."""
    conditions: Table
    """One row per frame: ``frame``, ``condition`` (a key of ``CONDITIONS``),
    ``rotation_deg`` (the sky's turn against the reference), ``flipped``
    (after the meridian flip), ``trail`` (a satellite crosses it)."""
    motions: list
    """Each frame's `CameraMotion` against the reference; `None` for the reference."""

    @property
    def reference(self):
        """The reference frame's path."""
        return self.frames[0]

    def good(self):
        """Return the paths of the frames taken in clear conditions (the reference first)."""
        return [
            path
            for path, condition in zip(self.frames, self.conditions["condition"], strict=True)
            if condition == "good"
        ]


def _check_bad(bad, n_frames):
    bad = dict(_DEFAULT_BAD if bad is None else bad)
    for index, condition in bad.items():
        if condition not in CONDITIONS:
            raise ValueError(
                f"bad frame {index}: condition must be one of {', '.join(map(repr, CONDITIONS))}, "
                f"got {condition!r}"
            )
        if not isinstance(index, int | np.integer) or not 0 < index < n_frames:
            raise ValueError(
                f"bad frame {index!r}: must be a frame index from 1 to {n_frames - 1} "
                "(frame 0 is the reference)"
            )
    return bad


def _motion(shape, k, rng, *, rotation_per_frame, flip_after, barrel):
    """Return frame ``k``'s motion: a tracking walk, the field's turn, the flip."""
    ny, nx = shape
    drift = tuple(rng.normal(0.0, 1.5 * np.sqrt(k), 2))
    rotation = rotation_per_frame * k
    # Before the flip the field turns about a pole off the frame (polar
    # misalignment); the flip turns the camera half a turn about the
    # optical axis and the mount re-points, off by tens of pixels.
    pole = (-0.8 * nx, 2.6 * ny)
    flipped = flip_after is not None and k > flip_after
    if flipped:
        rotation += 180.0
        pole = ((nx - 1) / 2, (ny - 1) / 2)
        drift = (drift[0] + 23.0, drift[1] - 17.0)
    motion = CameraMotion(shape, drift=drift, rotation_deg=rotation, pole=pole, barrel=barrel)
    return motion, rotation, flipped


def _image(shape, x, y, flux, condition, sigma):
    """Return frame's star light under ``condition`` (before the sky and noise)."""
    if condition == "dewed":
        return render_stars(shape, x, y, flux, 2.6 * sigma)
    if condition == "shaken":
        return render_stars(shape, x, y, flux, sigma, elongation=2.5, angle=35.0)
    return render_stars(shape, x, y, flux, sigma)


def night_sequence(
    directory,
    *,
    shape=(600, 900),
    n_frames=14,
    n_stars=700,
    rotation_per_frame=0.08,
    flip_after=6,
    bad=None,
    trail_frame=5,
    barrel=4e-8,
    seed=0,
    prefix="light_",
    overwrite=False,
):
    """Write a night's mono FITS frames, as a camera on an equatorial mount takes them.

    A camera with a barrel lens follows the sky. The field turns a little
    every frame (polar misalignment); after ``flip_after`` the mount flips
    over the meridian, which turns the sky half a turn on the sensor, and
    re-points some tens of pixels off. Some frames are spoilt (``bad``), one
    has a satellite trail. Each frame is float32 FITS (``EXPTIME``,
    ``OBJECT``) with sky, photon noise (gain 1) and read noise.

    Parameters
    ----------
    directory : str or path-like
        Where to write ``<prefix>000.fits``, ``<prefix>001.fits``, ...
        (created if needed).
    shape : tuple of int, optional
        Frame shape ``(ny, nx)``. The default is ``(600, 900)``.
    n_frames : int, optional
        Number of frames, at least 2; frame 0 is the reference. The default
        is 14.
    n_stars : int, optional
        Stars in the field (and a margin around it). The default is 700.
    rotation_per_frame : float, optional
        The field's turn per frame, in degrees. The default is 0.08.
    flip_after : int or `None`, optional
        The last frame before the meridian flip; `None` for no flip. The
        default is 6.
    bad : dict or `None`, optional
        ``{frame index: condition}`` of the spoilt frames, conditions as in
        ``CONDITIONS``. The default is frame 3 shaken, 9 clouded, 11 dewed and
        12 capped.
    trail_frame : int or `None`, optional
        The frame a satellite crosses. The default is 5.
    barrel : float, optional
        The lens's barrel distortion, as in `CameraMotion`. The default is
        4e-8 (about 1 % at the corners of the default frame).
    seed : int, optional
        Seed of every random choice. The default is 0.
    prefix : str, optional
        The frames' file names before their number. The default is
        ``"light_"``.
    overwrite : bool, optional
        Replace frames of the same names. The default is `False`.

    Returns
    -------
    `Night`
        The paths, the stars in the reference frame, each frame's
        conditions and motion.

    Raises
    ------
    ValueError
        If ``bad`` names an unknown condition or a frame out of range.
    FileExistsError
        If a frame of the same name exists and ``overwrite`` is `False`
        (nothing is written then).

    Examples
    --------
    >>> import tempfile
    >>> from astro_offsets.datasets import night_sequence
    >>> night = night_sequence(tempfile.mkdtemp(), shape=(120, 160), n_frames=4, n_stars=60,
    ...                        flip_after=1, bad={2: "dewed"}, trail_frame=None)
    >>> [str(c) for c in night.conditions["condition"]]
    ['good', 'good', 'dewed', 'good']
    >>> [bool(f) for f in night.conditions["flipped"]]
    [False, False, True, True]
    >>> len(night.good())
    3
    """
    if n_frames < 2:
        raise ValueError(f"n_frames must be at least 2, got {n_frames}")
    bad = _check_bad(bad, n_frames)
    directory = Path(directory)
    paths = [os.fspath(directory / f"{prefix}{k:03d}.fits") for k in range(n_frames)]
    existing = [path for path in paths if os.path.exists(path)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (overwrite=True replaces the frames)")
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x, y, flux = star_field(rng, n_stars, shape, margin=60.0, faintest=1200.0)
    rows, frames, motions = [], [], []
    for k in range(n_frames):
        frame_rng = np.random.default_rng([seed, k])
        condition = bad.get(k, "good")
        if k:
            motion, rotation, flipped = _motion(
                shape,
                k,
                frame_rng,
                rotation_per_frame=rotation_per_frame,
                flip_after=flip_after,
                barrel=barrel,
            )
            fx, fy = motion.to_frame(x, y)
        else:
            motion, rotation, flipped = None, 0.0, False
            fx, fy = x, y
        light = {"clouded": 0.3, "capped": 0.01}.get(condition, 1.0)
        sky = _SKY * {"clouded": 1.4, "capped": 0.01}.get(condition, 1.0)
        sigma = _SEEING * (1 + _SEEING_SPREAD * frame_rng.standard_normal())
        signal = sky + _image(shape, fx, fy, light * flux, condition, sigma)
        data = signal + frame_rng.standard_normal(shape) * np.sqrt(signal + _READ_NOISE**2)
        trail = k == trail_frame
        if trail:
            noise = np.sqrt(sky + _READ_NOISE**2)
            ny, nx = shape
            data += satellite_trail(shape, (-5, 0.2 * ny), (nx + 5, 0.7 * ny), amplitude=15 * noise)
        path = paths[k]
        header = fits.Header([("EXPTIME", 60.0, "exposure time (s)"), ("OBJECT", "night_sequence")])
        write_product(path, [fits.PrimaryHDU(data.astype(np.float32), header)], overwrite=True)
        frames.append(path)
        motions.append(motion)
        rows.append((path, condition, rotation, flipped, trail))
    conditions = Table(rows=rows, names=("frame", "condition", "rotation_deg", "flipped", "trail"))
    stars = Table({"x": x, "y": y, "flux": flux})
    return Night(frames, stars, conditions, motions)
