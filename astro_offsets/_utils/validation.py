"""Checks of user input that every stage shares, each with one wording.

A stage's own checks (star arrays, offset maps, drizzle options) live with the
stage; they use these for the numbers and shapes in them.
"""

import math
import numbers
import os

__all__ = ["input_file", "integer", "positive_pair", "real"]


def input_file(path, kind):
    """Return ``path`` as a `str` if it names a file that can be read, else say why.

    One wording for every command's inputs: a file missing (or a shell
    pattern that matched nothing, which the shell passes on as it is), a
    directory, an empty file, a file this user may not read.

    Parameters
    ----------
    path : str or path-like
        The input file.
    kind : str
        What it should be, for the directory's message: ``"frame file"``.

    Raises
    ------
    FileNotFoundError
        If there is no such file, or no file matches the pattern ``path``.
    ValueError
        If it is a directory or an empty file.
    PermissionError
        If this user may not read it.

    Examples
    --------
    >>> from astro_offsets._utils.validation import input_file
    >>> input_file("light_*.fits", "frame file")
    Traceback (most recent call last):
    ...
    FileNotFoundError: light_*.fits: no file matches this pattern
    """
    path = os.fsdecode(path)
    if not os.path.exists(path):
        if any(c in os.path.basename(path) for c in "*?["):
            raise FileNotFoundError(f"{path}: no file matches this pattern")
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a {kind}")
    try:
        with open(path, "rb") as file:
            empty = not file.read(1)
    except PermissionError:
        raise PermissionError(f"{path}: not readable (permission denied)") from None
    if empty:
        raise ValueError(f"{path}: empty file (0 bytes)")
    return path


def _interval(low, high, low_open, high_open):
    if math.isinf(high):
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def real(value, name, *, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """Return ``value`` as a float if it is a finite real number within the bounds.

    Raises
    ------
    ValueError
        Naming ``name``, the bounds and what was found.

    Examples
    --------
    >>> from astro_offsets._utils.validation import real
    >>> real(0.5, "pixfrac", low=0, high=1, low_open=True)
    0.5
    >>> real(1.5, "pixfrac", low=0, high=1, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: pixfrac must be a number in (0, 1], got 1.5
    """
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low < value if low_open else low <= value)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        bounds = _interval(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a number {bounds}, got {value!r}")
    return float(value)


def integer(value, name, *, low=-math.inf, high=math.inf):
    """Return ``value`` as an int if it is an integer within ``[low, high]``.

    A `ValueError` otherwise names ``name``, the bounds and what was found.

    Examples
    --------
    >>> from astro_offsets._utils.validation import integer
    >>> integer(17, "bits", low=1, high=16)
    Traceback (most recent call last):
    ...
    ValueError: bits must be an integer in [1, 16], got 17
    """
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or not low <= value <= high
    ):
        bounds = _interval(low, high, False, False)
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def positive_pair(value, name, *, alternative=""):
    """Return ``value`` as two positive ints ``(ny, nx)``, or raise a `ValueError` naming it.

    ``alternative`` names other accepted values in the message (``"'auto' or "``).
    """
    message = f"{name} must be {alternative}two positive integers (ny, nx), got {value!r}"
    try:
        first, second = value
    except (TypeError, ValueError):
        raise ValueError(message) from None
    for item in (first, second):
        if not isinstance(item, numbers.Integral) or isinstance(item, bool) or item < 1:
            raise ValueError(message)
    return int(first), int(second)
