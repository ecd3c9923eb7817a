"""Scratch directories that a killed run does not leave behind for good."""

import contextlib
import os
import shutil
import socket
import stat
import tempfile
import weakref

try:
    import fcntl
except ImportError:  # Windows: no locks to tell a killed owner by
    fcntl = None

__all__ = ["ScratchDirectory", "check_room", "gigabytes", "sweep"]

# The file in a scratch directory that its process holds locked while it
# lives, naming the host it runs on.
_OWNER = ".owner"


class ScratchDirectory:
    """A temporary directory, removed by `remove` or at exit; if its process is killed, by the next.

    A process killed outright (``SIGKILL``, the machine out of memory)
    runs no cleanup, and its scratch (gigabytes, for a stack of large
    frames) would stay. So the directory holds a lock file while its
    process lives (the system releases the lock when the process ends,
    however it ends), and each new scratch directory first removes those
    beside it whose lock is free and which were made on this host
    (`sweep`). Without ``fcntl`` (Windows) nothing is swept.

    Parameters
    ----------
    prefix : str
        The start of the directory's name, which `sweep` looks for.
    directory : str or `None`, optional
        Where to make it; the system's temporary directory by default.

    Examples
    --------
    >>> import os
    >>> from astro_offsets._utils.scratch import ScratchDirectory
    >>> scratch = ScratchDirectory("astro_offsets-example-")
    >>> os.path.isdir(scratch.path)
    True
    >>> scratch.remove()
    >>> os.path.exists(scratch.path)
    False

    Or removed at the end of a ``with`` block:

    >>> with ScratchDirectory("astro_offsets-example-") as scratch:
    ...     path = scratch.path
    >>> os.path.exists(path)
    False
    """

    def __init__(self, prefix, directory=None):
        parent = os.path.abspath(directory if directory is not None else tempfile.gettempdir())
        sweep(parent, prefix)
        self.path = tempfile.mkdtemp(prefix=prefix, dir=parent)
        try:
            owner = _own(self.path)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _remove, self.path, owner, os.getpid())

    def remove(self):
        """Remove the directory and everything in it (once; later calls do nothing)."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


def _own(path):
    """Lock the owner file of ``path``; return its descriptor (`None` without locks)."""
    if fcntl is None:
        return None
    fd, partial = tempfile.mkstemp(prefix=f"{_OWNER}.", dir=path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # A filesystem without locks (Lustre's noflock, some FUSE and
            # CIFS mounts): unlocked and never swept, as on Windows.
            os.close(fd)
            os.remove(partial)
            return None
        os.write(fd, socket.gethostname().encode())
        # Named only once locked: `sweep` never sees it free while its owner lives.
        os.rename(partial, os.path.join(path, _OWNER))
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd


def _remove(path, owner, pid):
    if os.getpid() != pid:
        return  # a forked child at its exit: the directory is its parent's
    shutil.rmtree(path, ignore_errors=True)
    if owner is not None:
        os.close(owner)  # the lock is held until the directory is gone
        # On NFS the open owner file was only renamed (.nfs*): gone now.
        shutil.rmtree(path, ignore_errors=True)


def sweep(parent, prefix):
    """Remove the scratch directories ``prefix*`` in ``parent`` whose processes were killed.

    Only those made on this host (a shared filesystem's other hosts'
    locks may not be seen here) whose owner file is not locked; a
    directory without one (being made, or made by an earlier version) is
    left alone.
    """
    if fcntl is None:
        return
    try:
        entries = [entry.path for entry in os.scandir(parent) if entry.name.startswith(prefix)]
    except OSError:
        return
    host = socket.gethostname()
    # Anyone may write in a temporary directory: only a regular file of this
    # user's is an owner file, and nothing found there may block or fail us.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    for path in entries:
        try:
            fd = os.open(os.path.join(path, _OWNER), flags)
        except OSError:
            continue
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_uid != os.getuid():
                continue
            if os.read(fd, 1024).decode(errors="replace") != host:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its process lives (the lock is taken), or not an owner file
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


def gigabytes(size):
    """Return bytes as gigabytes in words: two figures, whole ones from 10 GB.

    Examples
    --------
    >>> from astro_offsets._utils.scratch import gigabytes
    >>> [gigabytes(n) for n in (8.6e6, 2.4e8, 33.6e9, 150e9, 65.4e9, 1000)]
    ['0.0086', '0.24', '34', '150', '65', 'less than 0.001']
    """
    if size < 1e6:
        return "less than 0.001"
    return f"{size / 1e9:.2g}" if size < 10e9 else f"{size / 1e9:.0f}"


def check_room(directory, need, what, where, ways):
    """Check that ``directory``'s filesystem has ``need`` bytes free; return the bytes free.

    Parameters
    ----------
    directory : str
        A directory on the filesystem.
    need : int
        The bytes needed.
    what : str
        What needs them, for the message (``"outlier rejection"``).
    where : str
        How to name the place in the message.
    ways : str
        What the user can do instead, for the message.

    Raises
    ------
    ValueError
        If there is not the room, in one line naming the place, the figures
        and ``ways``.

    Examples
    --------
    >>> import tempfile
    >>> from astro_offsets._utils.scratch import check_room
    >>> folder = tempfile.gettempdir()
    >>> check_room(folder, 1000, "a test", folder, "free some") > 1000
    True
    >>> check_room(folder, 10**30, "a test", "here", "free some")
    Traceback (most recent call last):
    ...
    ValueError: a test needs 1000000000000000000000 GB of scratch space in here, ...
    """
    free = shutil.disk_usage(directory).free
    if need > free:
        raise ValueError(
            f"{what} needs {gigabytes(need)} GB of scratch space in {where}, "
            f"{gigabytes(free)} GB are free: {ways}"
        )
    return free
