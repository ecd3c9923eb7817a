"""A mono sequence with a known truth and known outliers, for the tests of stacks.

Eight frames of 300 x 420 with their true maps: drift and rotation, a
transparency change, a longer exposure, a sky gradient, changing seeing;
and cosmic rays in every frame, a satellite trail and an aircraft.
"""

import numpy as np
from astropy.io import fits

from astro_offsets import OffsetMap
from astro_offsets.datasets import (
    CameraMotion,
    aircraft_trail,
    cosmic_rays,
    render_stars,
    satellite_trail,
    sky_gradient,
    star_field,
)

SHAPE = (300, 420)
N_FRAMES = 8
SKY, READ, EXPTIME = 300.0, 6.0, 60.0
# Frame 2 through haze at a brighter sky, frame 6 twice as long, frame 4
# under a gradient; a satellite in frame 3, an aircraft in frame 5.
TRANSPARENCY = {2: 0.7}
SKY_FACTOR = {2: 1.5}
EXPOSURE = {6: 120.0}
SIGMA = np.sqrt(SKY + READ**2)
# The stars' Gaussian sigma in each frame: the seeing changes.
SEEING = (1.6, 1.45, 1.75, 1.55, 1.9, 1.5, 1.65, 1.7)
# The reference's header: plate-solved, which every way of stacking carries over.
REFERENCE_CARDS = {
    "OBJECT": "NGC 7000",
    "CTYPE1": "RA---TAN",
    "CTYPE2": "DEC--TAN",
    "CRVAL1": 314.7,
    "CRVAL2": 44.3,
    "CRPIX1": 210.5,
    "CRPIX2": 150.5,
    "CDELT1": -1.2e-3,
    "CDELT2": 1.2e-3,
}


def motion(k):
    rng = np.random.default_rng(100 + k)
    return CameraMotion(
        SHAPE,
        drift=tuple(rng.uniform(-5, 5, 2)),
        rotation_deg=rng.uniform(-0.2, 0.2),
        barrel=5e-8,
    )


def artefacts(k):
    """The outliers of frame ``k`` (in its counts)."""
    nx = SHAPE[1]
    image = cosmic_rays(np.random.default_rng(k), SHAPE, 40, amplitude=(30 * SIGMA, 1000 * SIGMA))
    if k == 3:
        image += satellite_trail(SHAPE, (-5, 20), (nx + 5, 260), amplitude=20 * SIGMA)
    if k == 5:
        image += aircraft_trail(SHAPE, (0, 250), (nx, 120), amplitude=60 * SIGMA)
    return image


def write_sequence(folder, stars, with_artefacts=True):
    """Write the frames and their true maps; return the frame paths."""
    x, y, flux = stars
    gy, gx = np.indices(SHAPE, dtype=float)
    paths = []
    for k in range(N_FRAMES):
        exptime = EXPOSURE.get(k, EXPTIME)
        counts = exptime / EXPTIME
        fx, fy = motion(k).to_frame(x, y) if k else (x, y)
        sky = SKY * SKY_FACTOR.get(k, 1.0) * counts
        if k == 4:
            sky = sky + sky_gradient(SHAPE, level=0.0, change=0.3 * SKY, angle_deg=30)
        seeing = SEEING[k % len(SEEING)]
        signal = sky + render_stars(SHAPE, fx, fy, TRANSPARENCY.get(k, 1.0) * counts * flux, seeing)
        noise = np.random.default_rng(1000 + k).standard_normal(SHAPE)
        data = signal + noise * np.sqrt(signal + READ**2)
        if with_artefacts:
            data += artefacts(k)
        path = str(folder / f"light{k}.fits")
        header = fits.Header({"EXPTIME": exptime, **(REFERENCE_CARDS if k == 0 else {})})
        fits.PrimaryHDU(data.astype(np.float32), header).writeto(path)
        paths.append(path)
        if k:
            scale = 1 / (TRANSPARENCY.get(k, 1.0) * counts)
            OffsetMap(
                *motion(k).offset(gx, gy), meta={"reference": "light0.fits", "flux_scale": scale}
            ).write(folder / f"light{k}.offsets.fits")
    return paths


def bright_field():
    """A field of faint and bright stars, and a grid of bright ones to measure."""
    rng = np.random.default_rng(7)
    x, y, flux = star_field(rng, 320, SHAPE, faintest=800.0)
    gy, gx = np.mgrid[30 : SHAPE[0] - 29 : 40, 30 : SHAPE[1] - 29 : 45].reshape(2, -1)
    gx, gy = gx + rng.uniform(-4, 4, gx.size), gy + rng.uniform(-4, 4, gy.size)
    return (
        np.concatenate([x, gx]),
        np.concatenate([y, gy]),
        np.concatenate([flux, rng.uniform(2e4, 8e4, gx.size)]),
    )
