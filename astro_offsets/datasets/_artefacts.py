"""What real sequences have besides stars: trails, cosmic rays, sky gradients, vignetting."""

import numpy as np

__all__ = ["aircraft_trail", "cosmic_rays", "satellite_trail", "sky_gradient", "vignetting"]


def _line_distance(shape, start, end):
    """Distance of every pixel centre from the segment ``start``-``end``, and the position along it.

    Returns
    -------
    distance : `~numpy.ndarray`
        Pixels from the segment (from its end points beyond them).
    along : `~numpy.ndarray`
        Position of the foot of the perpendicular along the segment, in
        pixels from ``start`` (clipped to the segment).
    """
    y, x = np.indices(shape, dtype=np.float64)
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    length = np.hypot(dx, dy)
    if length == 0:
        raise ValueError("a trail needs two different end points")
    along = np.clip(((x - x0) * dx + (y - y0) * dy) / length, 0.0, length)
    distance = np.hypot(x - (x0 + along * dx / length), y - (y0 + along * dy / length))
    return distance, along


def satellite_trail(shape, start, end, *, amplitude, width=1.2):
    """Return the image of a satellite (or meteor) trail: a straight streak.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    start, end : tuple of float
        End points ``(x, y)`` in pixels; they may lie outside the image.
    amplitude : float
        Surface brightness on the trail's axis, in the image's units.
    width : float, optional
        Gaussian sigma of its cross-section, in pixels. The default is 1.2.

    Returns
    -------
    `~numpy.ndarray`
        float64 image, to add to a frame.

    Examples
    --------
    >>> from astro_offsets.datasets import satellite_trail
    >>> trail = satellite_trail((50, 80), (-5, 10), (90, 40), amplitude=300.0)
    >>> round(float(trail.max()))
    300
    """
    distance, _ = _line_distance(shape, start, end)
    return _cross_section(distance, amplitude, width)


def _cross_section(distance, amplitude, width):
    """Return a streak's brightness at ``distance`` from its axis: a Gaussian."""
    return amplitude * np.exp(-0.5 * (distance / width) ** 2)


def aircraft_trail(shape, start, end, *, amplitude, separation=6.0, period=24.0, width=1.0):
    """Return the image of an aircraft: two parallel dotted trails (its blinking lights).

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    start, end : tuple of float
        End points ``(x, y)`` of the path between the two lights, in pixels.
    amplitude : float
        Surface brightness on the dots' axis.
    separation : float, optional
        Distance between the two trails, in pixels. The default is 6.
    period : float, optional
        Length of a dash and the gap after it, in pixels along the path;
        half of it is lit. The default is 24.
    width : float, optional
        Gaussian sigma of the trails' cross-section. The default is 1.

    Returns
    -------
    `~numpy.ndarray`
        float64 image, to add to a frame.

    Examples
    --------
    >>> from astro_offsets.datasets import aircraft_trail
    >>> plane = aircraft_trail((60, 100), (0, 20), (99, 40), amplitude=500.0)
    >>> bool(plane.max() > 450), bool((plane > 250).mean() < 0.1)
    (True, True)
    """
    (x0, y0), (x1, y1) = start, end
    length = np.hypot(x1 - x0, y1 - y0)
    if length == 0:
        raise ValueError("a trail needs two different end points")
    nx, ny = -(y1 - y0) / length * separation / 2, (x1 - x0) / length * separation / 2
    image = np.zeros(shape)
    for sign in (1, -1):
        side = ((x0 + sign * nx, y0 + sign * ny), (x1 + sign * nx, y1 + sign * ny))
        distance, along = _line_distance(shape, *side)
        lit = (along % period) < period / 2
        image += lit * _cross_section(distance, amplitude, width)
    return image


def cosmic_rays(rng, shape, n, *, amplitude=(500.0, 20000.0)):
    """Return the image of ``n`` cosmic-ray hits: sharp spikes of one to three pixels.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Source of the positions, amplitudes and shapes.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    n : int
        Number of hits.
    amplitude : tuple of float, optional
        Range of the brightest pixel of a hit, drawn uniformly.

    Returns
    -------
    `~numpy.ndarray`
        float64 image, to add to a frame.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.datasets import cosmic_rays
    >>> hits = cosmic_rays(np.random.default_rng(1), (64, 64), 10)
    >>> 10 <= int(np.count_nonzero(hits)) <= 30
    True
    """
    ny, nx = shape
    image = np.zeros(shape)
    y = rng.integers(0, ny, n)
    x = rng.integers(0, nx, n)
    peak = rng.uniform(*amplitude, n)
    np.add.at(image, (y, x), peak)
    # Most hits graze the sensor and touch a neighbour or two.
    for dy, dx, share in ((0, 1, 0.5), (1, 0, 0.3)):
        touched = rng.random(n) < 0.5
        np.add.at(
            image,
            (np.minimum(y[touched] + dy, ny - 1), np.minimum(x[touched] + dx, nx - 1)),
            share * peak[touched],
        )
    return image


def sky_gradient(shape, *, level, change, angle_deg=0.0):
    """Return a sky whose level changes linearly across the image (moon, light pollution).

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    level : float
        Sky level at the image's centre.
    change : float
        Difference between the two opposite edges along the gradient.
    angle_deg : float, optional
        Direction of increase, counter-clockwise from +x. The default is 0.

    Examples
    --------
    >>> from astro_offsets.datasets import sky_gradient
    >>> sky = sky_gradient((10, 101), level=100.0, change=20.0)
    >>> float(sky[0, 0]), float(sky[0, 50]), float(sky[0, 100])
    (90.0, 100.0, 110.0)
    """
    ny, nx = shape
    y, x = np.indices(shape, dtype=np.float64)
    angle = np.deg2rad(angle_deg)
    u = (x - (nx - 1) / 2) * np.cos(angle) + (y - (ny - 1) / 2) * np.sin(angle)
    span = abs((nx - 1) * np.cos(angle)) + abs((ny - 1) * np.sin(angle))
    return level + change * u / span


def vignetting(shape, *, corner=0.85):
    """Return a lens's vignetting: the fraction of light reaching each pixel.

    A cos**4-like fall-off from 1 at the optical axis (the image's centre)
    to ``corner`` in the corners.

    Examples
    --------
    >>> from astro_offsets.datasets import vignetting
    >>> v = vignetting((101, 151), corner=0.85)
    >>> float(v[50, 75]), round(float(v[0, 0]), 6)
    (1.0, 0.85)
    """
    ny, nx = shape
    y, x = np.indices(shape, dtype=np.float64)
    r2 = ((x - (nx - 1) / 2) ** 2 + (y - (ny - 1) / 2) ** 2) / (
        ((nx - 1) / 2) ** 2 + ((ny - 1) / 2) ** 2
    )
    # (1 + a r^2)^-2 is the cos^4 law; a puts the corners at ``corner``.
    a = corner**-0.5 - 1
    return (1 + a * r2) ** -2
