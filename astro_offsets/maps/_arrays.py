"""The two offset maps of a frame: checked and stored as float32 arrays of one shape."""

import numpy as np

__all__ = ["offset_maps"]


def offset_maps(x_offset, y_offset):
    """Return the two offset maps as float32 arrays of one non-empty 2-D shape.

    Raises a `ValueError` that names the map at fault and what was found.
    """
    maps = []
    for name, value in (("x_offset", x_offset), ("y_offset", y_offset)):
        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be a real numeric array, got dtype {array.dtype}")
        if array.ndim != 2:
            raise ValueError(f"{name} must be 2-D (ny, nx), got shape {array.shape}")
        if array.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {array.shape}")
        with np.errstate(over="ignore"):
            array = np.asarray(array, dtype=np.float32)
        # NaN may mark a hole (drizzle skips it); an infinite offset, or one
        # beyond float32's range, is never a measurement.
        if np.isinf(array).any():
            raise ValueError(f"{name} has infinite values or values beyond float32's range")
        maps.append(array)
    if maps[0].shape != maps[1].shape:
        raise ValueError(
            f"x_offset and y_offset differ in shape: {maps[0].shape} and {maps[1].shape}"
        )
    return tuple(maps)
