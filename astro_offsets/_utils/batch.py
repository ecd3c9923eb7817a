"""Running a command over the files of a sequence: one result per file, in order.

`make_tables`, `write_maps` and `stack_frames` all take a list of files and
give back one result per file, with one vocabulary of statuses (`STATUSES`);
`Batch` is their common loop: the progress bar, the files of ours left out,
outputs kept unless replaced, errors turned into one line naming the file,
and the callback that reports each result as soon as it is known.
"""

import os
import traceback
from dataclasses import dataclass
from types import MappingProxyType

from tqdm import tqdm

from .provenance import not_an_input
from .workers import workers_can_read

__all__ = ["STATUSES", "Batch", "Failure", "FrameError", "Result", "describe"]

STATUSES = MappingProxyType(
    {
        "written": "its output was written",
        "stacked": "it went into the stack",
        "left out": "the frame selection left it out of the stack; the message says why",
        "reference": "the reference frame: no output of its own",
        "skipped": "its output existed and was kept (overwrite replaces it)",
        "ignored": "a file astro_offsets wrote, not an input of this command",
        "failed": "it could not be used; the message says why",
    }
)


class Failure(str):
    """A file's problem in one line (a `str`), with the traceback behind it.

    `describe` makes it, in a worker process too: it goes back with the
    task's result (pickled with its `traceback`), and into the
    `Result.message` of the file, where ``astro-offsets --debug`` finds it.
    Text added to it (``+``) keeps the traceback.

    Examples
    --------
    >>> from astro_offsets._utils.batch import Failure
    >>> failure = Failure.of("a.fits: broken", "Traceback ...")
    >>> (failure + "; and more").traceback
    'Traceback ...'
    """

    traceback = ""
    """The formatted traceback of the exception, or ``""`` if there was none."""

    @classmethod
    def of(cls, text, traceback=""):
        """Return ``text`` with ``traceback``."""
        failure = cls(text)
        if traceback:
            failure.traceback = traceback
        return failure

    def __add__(self, other):
        return self.of(str(self) + other, self.traceback)


class FrameError(ValueError):
    """A frame that could not be used: its problem in one line naming it.

    Raised for one frame of a batch where the others go on: the caller
    records `message` (a `Failure`, which keeps the traceback of the
    problem behind it) as the frame's. It pickles, so a worker process's
    comes back as it was.

    Parameters
    ----------
    message : str
        The problem in one line naming the frame (`describe`).
    detected : int, optional
        Stars detected in the frame (0 if it could not be read).

    Examples
    --------
    >>> import pickle
    >>> from astro_offsets._utils.batch import FrameError
    >>> failed = pickle.loads(pickle.dumps(FrameError("a.fits: 2 stars detected", 2)))
    >>> str(failed), failed.detected
    ('a.fits: 2 stars detected', 2)
    """

    def __init__(self, message, detected=0):
        super().__init__(message, detected)
        self.message = message
        self.detected = detected

    def __str__(self):
        return str(self.message)


def describe(path, problem, name=None):
    """Return one line naming the file, without repeating a path the text starts with.

    ``problem`` is an exception or a text. Our own errors (`OSError`,
    `ValueError`, `ImportError`) carry a complete message; for anything else
    its type tells the user, or a bug report, more. The line is a `Failure`,
    with the exception's traceback (or the one ``problem`` carries). ``name``
    names the file in the line, where ``path`` is where it was read (its
    absolute path, say).

    Every file's failure is made here, so that the code that runs a file's
    work may catch any exception and fail that file alone, with the
    traceback kept for ``--debug``. An exception that is no file's problem
    but the run's, `MemoryError`, is raised again instead: the run stops,
    rather than fail its files one after the other, or stack fewer frames
    without saying why.

    Raises
    ------
    MemoryError
        If ``problem`` is one.

    Examples
    --------
    >>> from astro_offsets._utils.batch import describe
    >>> describe("a.fits", ValueError("a.fits: not a readable FITS file"))
    'a.fits: not a readable FITS file'
    >>> import os
    >>> describe("a.fits", ValueError(f"{os.path.abspath('a.fits')}: empty file (0 bytes)"))
    'a.fits: empty file (0 bytes)'
    >>> describe("a.fits", KeyError("x"))
    "a.fits: KeyError: 'x'"
    """
    if isinstance(problem, MemoryError):  # the run's, not the file's: it stops the run
        note = f"while on {path}"
        if note not in getattr(problem, "__notes__", ()):
            problem.add_note(note)
        raise problem
    text = str(problem).strip()
    text = text.splitlines()[0] if text else "unknown problem"
    # The path as given, or as read (the stack reads frames by their absolute path).
    for named in (f"{path}: ", f"{os.path.abspath(path)}: ", f"{name}: "):
        text = text.removeprefix(named)
    trace = getattr(problem, "traceback", "")
    if isinstance(problem, BaseException):
        if not isinstance(problem, (OSError, ValueError, ImportError)):
            text = f"{type(problem).__name__}: {text}"
        if problem.__traceback__ is not None:
            trace = "".join(traceback.format_exception(problem))
    return Failure.of(f"{path if name is None else name}: {text}", trace)


@dataclass(frozen=True, kw_only=True)
class Result:
    """What became of one input file of a command.

    Examples
    --------
    >>> from astro_offsets._utils.batch import Result
    >>> Result(path="a.fits", status="failed", message="a.fits: no such file").status
    'failed'
    """

    path: str
    """The input file."""
    status: str
    """``"written"`` (its output), ``"stacked"``, ``"left out"`` (by the
    stack's frame selection), ``"reference"`` (the reference frame),
    ``"skipped"`` (its output existed and was kept), ``"ignored"`` (a file
    astro_offsets wrote) or ``"failed"``."""
    message: str = ""
    """One line naming the file and the problem (failed), why it was left out
    (left out), the output kept (skipped) or what the file is (ignored);
    empty otherwise."""
    warnings: tuple = ()
    """One line per warning, such as rows dropped for NaN values."""


class Batch:
    """The loop of a command over its input files.

    Iterating gives ``(index, path)`` of each file to process; files that
    astro_offsets wrote and that are no input of this command are finished
    as ``"ignored"`` on the way. Every file is finished exactly once, by
    `finish`, `fail` or `skip_existing`, which advances the progress bar; `results`
    holds them in the order given.

    Parameters
    ----------
    paths : iterable of str or path-like
        The input files.
    result : type
        The result class of the command (`Result` or a subclass).
    what : str
        What the command takes, for messages: ``"frame"``, ``"star table"``.
    name : str
        The progress bar's label.
    keep : tuple of str, optional
        Kinds of our products that are inputs of this command.
    progress : bool, optional
        Show a progress bar on stderr (when it is a terminal).
    callback : callable or `None`, optional
        Called with each result as soon as it is known.
    """

    def __init__(self, paths, result, *, what, name, keep=(), progress=False, callback=None):
        self.paths = [os.fspath(path) for path in paths]
        self.progress = progress
        self.results = [None] * len(self.paths)
        self._result = result
        self._ignored = [not_an_input(path, what, keep=keep) for path in self.paths]
        self._bar = tqdm(
            total=len(self.paths),
            desc=name,
            unit=what.split()[-1],
            disable=None if progress else True,
        )
        self._callback = callback

    @property
    def inputs(self):
        """The paths to process, in order: those not left out as files of ours."""
        return [
            path for path, ignored in zip(self.paths, self._ignored, strict=True) if not ignored
        ]

    def __iter__(self):
        for index, (path, message) in enumerate(zip(self.paths, self._ignored, strict=True)):
            if message is not None:
                self.finish(index, "ignored", message)
            else:
                yield index, path

    def finish(self, index, status, message="", **fields):
        """Record the result of file ``index`` and report it."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        result = self._result(path=self.paths[index], status=status, message=message, **fields)
        self.results[index] = result
        self._bar.update()
        if self._bar.n == len(self.results):
            self._bar.close()
        if self._callback is not None:
            self._callback(result)

    def fail(self, index, problem, **fields):
        """Record that file ``index`` failed, with ``problem`` in one line naming it."""
        self.finish(index, "failed", describe(self.paths[index], problem), **fields)

    def skip_existing(self, index, output, overwrite, **fields):
        """Finish file ``index`` as skipped if ``output`` exists and is not to be replaced.

        Returns
        -------
        bool
            `True` if the file was finished so.
        """
        if overwrite or not os.path.lexists(output):
            return False
        message = f"{output} exists (use overwrite to replace it)"
        self.finish(index, "skipped", message, output=output, **fields)
        return True

    def check_workers(self, client, indices=None):
        """Check that the workers of a dask cluster can read the inputs ``indices``.

        Only the inputs this process can read are checked (`workers_can_read`).

        Parameters
        ----------
        client : `distributed.Client`
            The cluster's client.
        indices : iterable of int, optional
            The inputs' places in ``paths``; all those to process by default
            (see `inputs`).

        Raises
        ------
        ClusterError
            Naming the first worker and the first input it cannot read.
        """
        names = self.inputs if indices is None else [self.paths[i] for i in indices]
        workers_can_read(client, [os.path.abspath(name) for name in names], names)

    def count(self, status):
        """Return the number of results of a status."""
        return sum(result is not None and result.status == status for result in self.results)
