"""The whole sequence in one run: from frames to stack, each frame read once.

The stages of the package, as one stream (`run_sequence`, the command
``astro-offsets run``): each frame is read and calibrated once; its stars
are found and matched to the reference's (`astro_offsets.stars`), its star
table is written, its field fitted and its map made in memory
(`astro_offsets.field`), and the frame goes to the stack
(`astro_offsets.stack`) with the same hot pixels. The stack is the one that
`make_tables`, `write_maps` and `stack_frames` give with the same options.
"""

from ._run_sequence import RunResult, run_sequence

__all__ = ["RunResult", "run_sequence"]
