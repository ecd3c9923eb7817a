"""Synthetic data with a known truth: star fields, their images, motions, raw files.

Like `photutils.datasets`, for trying the pipeline, testing it and
documenting it: stars with a power-law brightness distribution
(`star_field`), their images with sky and noise (`render_stars`,
`observe`), known motions between the reference and a frame (drift, field
rotation, lens distortion: `CameraMotion`; a polynomial field; a local
bump), star tables measured from such a motion (`star_offsets`), and Bayer
mosaics written as DNG raw files that rawpy reads (`write_dng`) or as FITS
files with the Bayer cards of capture software (`write_fits_cfa`), and colour
FITS cubes (`write_fits_rgb`). And what
real sequences have besides stars, for testing outlier rejection and
calibration: satellite and aircraft trails, cosmic rays, sky gradients and
vignetting. And a whole night as it comes (`night_sequence`): field rotation,
a meridian flip, frames spoilt by wind, cloud, dew or a capped lens.
"""

from ._artefacts import aircraft_trail, cosmic_rays, satellite_trail, sky_gradient, vignetting
from ._dng import write_dng
from ._fits import write_fits_cfa, write_fits_rgb
from ._motions import CameraMotion, LocalDistortion, PolynomialMotion
from ._night import CONDITIONS, Night, night_sequence
from ._stars import observe, render_stars, star_field, star_offsets

__all__ = [
    "CONDITIONS",
    "CameraMotion",
    "LocalDistortion",
    "Night",
    "PolynomialMotion",
    "aircraft_trail",
    "cosmic_rays",
    "night_sequence",
    "observe",
    "render_stars",
    "satellite_trail",
    "sky_gradient",
    "star_field",
    "star_offsets",
    "vignetting",
    "write_dng",
    "write_fits_cfa",
    "write_fits_rgb",
]
