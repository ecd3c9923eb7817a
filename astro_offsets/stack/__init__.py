"""Stacking: drizzle the frames onto the reference grid with their offset maps.

The last stage of the pipeline: frames (`astro_offsets.frames`) and their
maps (`astro_offsets.maps`) go into a `Stacker`, mono or by Bayer drizzle,
which gives a `Stack`; `stack_frames` does so for a sequence of files,
each frame normalised to the reference (`Normalisation`) and, with three
frames or more, without its outliers.

Outlier rejection follows drizzlepac's AstroDrizzle. Every frame, calibrated
and normalised, is drizzled alone onto the reference grid (each pixel to the
output pixel its centre maps into: drizzle's point kernel, at the frame's own
resolution, a Bayer colour plane's at half); the median of those single
drizzles, pixel by pixel, is the sky without any one frame's trails and
cosmic rays. Resampled back through each frame's map (blotted, bilinearly),
it predicts the frame's pixels; a pixel deviates where it differs from the
prediction, less the frame's smooth residual (a sky gradient of its own),
by more than 5 times its noise (the sky's, measured from the differences of
neighbouring pixels, plus photon noise above the sky) plus 2.5 times the
prediction's largest step to a neighbour (so that the cores of stars, steep,
sampled differently in every frame and sharper in some, never deviate); its
neighbours deviate at 3 times the noise plus 1.2 times the step. The
deviating pixels, grown by one pixel, get no weight in the final drizzle.
"""

from types import MappingProxyType

from .._utils.lazy import lazy_exports

# Imported when first used: the workers that drizzle bands import
# ``_bands`` alone (numpy and drizzle), not the frames and maps stages.
_WHERE = MappingProxyType(
    {
        "KERNELS": "._stacker",
        "LAYOUTS": "._product",
        "TURBO_TURN": "._stacker",
        "Normalisation": "._normalisation",
        "RejectionStats": "._rejection",
        "Stack": "._product",
        "StackResult": "._stack_frames",
        "Stacker": "._stacker",
        "check_frames": "._stack_frames",
        "check_stack_options": "._stacker",
        "frame_kernel": "._stacker",
        "map_turn": "._stacker",
        "stack_frames": "._stack_frames",
    }
)

__all__ = [
    "KERNELS",
    "LAYOUTS",
    "TURBO_TURN",
    "Normalisation",
    "RejectionStats",
    "Stack",
    "StackResult",
    "Stacker",
    "check_frames",
    "check_stack_options",
    "frame_kernel",
    "map_turn",
    "stack_frames",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
