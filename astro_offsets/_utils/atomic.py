"""Atomic file writes: a crash never leaves a partial file, nothing is overwritten unasked."""

import contextlib
import os
import uuid

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path, *, overwrite=False):
    """Give a temporary path to write; on success move it to ``path`` atomically.

    The temporary file sits in the destination's directory (so the final
    rename never crosses file systems) and is removed if the block raises.

    Parameters
    ----------
    path : str or path-like
        Final destination.
    overwrite : bool, optional
        Replace an existing file. The default is `False`: an existing file is
        kept and `FileExistsError` raised, also if it appeared while writing.

    Yields
    ------
    str
        The temporary path to write to.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is `False`.
    FileNotFoundError
        If the destination directory does not exist.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path}: already exists (use overwrite to replace it)")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if overwrite:
            _replace(tmp, path)
        else:
            # A hard link fails if the destination appeared meanwhile, where a
            # rename would silently replace it.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(
                    f"{path}: already exists (use overwrite to replace it)"
                ) from None
            except OSError:
                # File systems without hard links: check, then rename.
                if os.path.lexists(path):
                    raise FileExistsError(
                        f"{path}: already exists (use overwrite to replace it)"
                    ) from None
                _replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _replace(tmp, path):
    """Move the written file into place; an error names the destination, not the temporary."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise type(exc)(f"{path}: cannot be replaced ({exc.strerror})") from None
