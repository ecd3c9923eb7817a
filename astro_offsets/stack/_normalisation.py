"""Normalisation: each frame brought to the reference's transparency, exposure and sky."""

from typing import NamedTuple

import numpy as np

from ..frames import sky_levels

__all__ = ["Normalisation", "normalisation"]


class Normalisation(NamedTuple):
    """How a frame was brought to the reference: ``data * scale + offsets[channel]``.

    Examples
    --------
    >>> from astro_offsets.stack import Normalisation
    >>> Normalisation(1.25, (-12.5,), "stars", (130.0,)).scale
    1.25
    """

    scale: float
    """The multiplicative scale: the reference's star fluxes over this frame's."""
    offsets: tuple
    """The additive offset of each channel, after scaling."""
    source: str
    """Where the scale comes from: ``"stars"`` (the map's ``FLUXSCL``),
    ``"exposure"`` (the exposure times alone), ``"reference"`` or ``"none"``."""
    sky: tuple
    """The frame's sky level of each channel, before normalisation."""


def normalisation(data, colors, offset_map, exptime, reference):
    """Return the `Normalisation` of a frame against the reference's.

    The scale is the median ratio of the stars' fluxes in the reference and
    in this frame, as its star table measured it (the map's
    ``flux_scale``): it corrects for exposure time and transparency alike.
    A map without it gives the ratio of the exposure times, or 1. The
    offsets then bring each channel's sky level, measured on the frame
    (`~astro_offsets.frames.sky_levels`), to the reference's.

    Parameters
    ----------
    data : `~numpy.ndarray`
        The frame, calibrated; NaN where it has no weight.
    colors : `~numpy.ndarray` or `None`
        Its colour filter indices (raw frames).
    offset_map : `OffsetMap` or `None`
        Its map; `None` for the reference frame itself.
    exptime : float or `None`
        Its exposure time.
    reference : `Normalisation` and float, or `None`
        The reference's normalisation and exposure time; `None` when this
        frame is the reference.
    """
    sky = tuple(float(level) for level in sky_levels(data, colors))
    if reference is None:
        return Normalisation(1.0, tuple(0.0 for _ in sky), "reference", sky)
    (ref, ref_exptime) = reference
    scale = None if offset_map is None else offset_map.meta.get("flux_scale")
    if scale is not None and np.isfinite(scale) and scale > 0:
        source = "stars"
    elif exptime and ref_exptime:
        scale, source = ref_exptime / exptime, "exposure"
    else:
        scale, source = 1.0, "none"
    scale = float(scale)
    offsets = tuple(
        0.0 if not np.isfinite(r - scale * s) else float(r - scale * s)
        for r, s in zip(ref.sky, sky, strict=True)
    )
    return Normalisation(scale, offsets, source, sky)


def apply(data, layers, norm, factor=1.0):
    """Normalise ``data`` in place: ``(data * scale + offset) * factor`` per layer's channel."""
    for layer in layers:
        part = data[layer.part]
        offset = norm.offsets[layer.channel]
        if layer.select is None:
            part *= np.float32(norm.scale * factor)
            part += np.float32(offset * factor)
        else:
            selected = layer.select[layer.part]
            part[selected] = part[selected] * np.float32(norm.scale * factor) + np.float32(
                offset * factor
            )
    return data
