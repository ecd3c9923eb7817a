"""Stacking: drizzle the frames onto the reference grid with their offset maps.

The last stage of the pipeline: frames (`astro_offsets.frames`) and their
maps (`astro_offsets.maps`) go into a `Stacker`, mono or by Bayer drizzle,
which gives a `Stack`; `stack_frames` does so for a sequence of files.
"""

from ._product import Stack
from ._stack_frames import StackResult, stack_frames
from ._stacker import KERNELS, Stacker, check_stack_options

__all__ = ["KERNELS", "Stack", "StackResult", "Stacker", "check_stack_options", "stack_frames"]
