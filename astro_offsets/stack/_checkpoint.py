"""A stack's checkpoint: what an interrupted `stack_frames` keeps on disk to resume.

One directory holds, as the run goes:

* ``run.json``: what the stack is (its frames, maps and options); a resumed
  run must be the same stack;
* with rejection, each frame kept and drizzled alone (``frame.N.f32``,
  ``single.N.K.f32``), with ``kept.N.json`` once both are complete (its
  normalisation), and the medians of the single drizzles
  (``median.C.npy``, renamed into place once whole);
* per share of the frames (one, or one per cluster worker), its partial
  stack every few frames (``share.S.G/``, written by `Stacker.save`) and
  ``share.S.json``, replaced atomically, which names the latest partial
  and the frames it holds.

A file is used only once its state file says it is complete (the state
files are written whole and renamed into place): a run killed at any point
(``SIGKILL``) resumes from what is there, and no frame goes into the stack
twice. Once the medians are made, the frames stacked are those they were
made of.
"""

import glob
import hashlib
import json
import os
import shutil
import uuid

import numpy as np

from .._utils.atomic import atomic_path
from ._normalisation import Normalisation

__all__ = ["Checkpoint", "digest", "normalisation_of", "record"]


def _write_json(path, value):
    """Write ``value`` to ``path`` atomically, on disk before it is renamed into place."""
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "w", encoding="utf-8") as file:
        json.dump(value, file)
        file.flush()
        os.fsync(file.fileno())


def _read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def record(norm, exptime=None, zeros=None, masked=None, noise=None, weight=None):
    """Return a frame's JSON record: normalisation, exposure, zeros, masked, noise, weight."""
    return {
        "norm": None if norm is None else list(norm),
        "exptime": exptime,
        "zeros": None if zeros is None else list(zeros),
        "masked": masked,
        "noise": noise,
        "weight": weight,
    }


def normalisation_of(entry):
    """Return the `Normalisation` of a record (`None` if it has none)."""
    norm = entry["norm"]
    if norm is None:
        return None
    scale, offsets, source, sky = norm
    return Normalisation(scale, tuple(offsets), source, tuple(sky))


class Checkpoint:
    """The directory where a stack keeps what it needs to resume.

    Parameters
    ----------
    path : str
        The directory; made if it does not exist.
    identity : dict
        What the stack is (JSON): a checkpoint of another stack is refused.
    every : int
        Frames between two partial stacks of a share.
    resume : bool
        Continue from the checkpoint in ``path``. Without it, a checkpoint
        already there is an error: it is not overwritten unasked.
    shares : int
        How many shares the frames are stacked in (one per worker of a
        cluster; one here). A resumed run takes the checkpoint's (``shares``),
        as each share's partial stacks hold the frames of that share only.

    Raises
    ------
    ValueError
        If a checkpoint is there and ``resume`` is `False`, or it is of
        another stack.
    """

    @staticmethod
    def found(path):
        """Return whether ``path`` holds the checkpoint of an interrupted stack.

        Examples
        --------
        >>> from astro_offsets.stack._checkpoint import Checkpoint
        >>> Checkpoint.found("no-such.checkpoint")
        False
        """
        return os.path.isfile(os.path.join(path, "run.json"))

    @classmethod
    def discard(cls, path):
        """Remove the checkpoint of an interrupted stack in ``path``; return whether there was one.

        A folder that holds none is left as it is: it is the user's.

        Examples
        --------
        >>> from astro_offsets.stack._checkpoint import Checkpoint
        >>> Checkpoint.discard("no-such.checkpoint")
        False
        """
        if not cls.found(path):
            return False
        shutil.rmtree(path)
        return True

    def __init__(self, path, identity, *, every, resume, shares=1):
        self.name = os.fspath(path)
        """As given, for messages."""
        self.path = os.path.abspath(self.name)
        self.every = int(every)
        run = os.path.join(self.path, "run.json")
        self.resumed = self.found(self.path)
        if self.resumed:
            if not resume:
                raise ValueError(
                    f"{path}: the checkpoint of an interrupted stack is there: continue it "
                    "(resume=True, --resume), or delete it to start over"
                )
            saved = _read_json(run)
            shares = saved.pop("shares", 1)
            changed = sorted(key for key in identity if saved.get(key) != identity[key])
            if changed:
                raise ValueError(
                    f"{path}: the checkpoint is of another stack (its {', '.join(changed)} "
                    "differ): delete it to start over, or resume with the same frames and options"
                )
        else:
            if os.path.isdir(self.path) and os.listdir(self.path):
                # Removed once the stack is complete: never a folder of the user's.
                raise ValueError(
                    f"{path}: a folder with files in it, and no checkpoint: give a new "
                    "directory for the checkpoint"
                )
            os.makedirs(self.path, exist_ok=True)
            _write_json(run, {**identity, "shares": shares})
        self.shares = shares
        """Shares of the frames, as the checkpoint's first run made them."""
        # What was being written when the run stopped: partial stacks and
        # medians not complete, state files not renamed into place.
        for pattern in ("share.*.part", "median.*.part.npy", ".*.tmp"):
            for stray in glob.glob(os.path.join(self.path, pattern)):
                if os.path.isdir(stray):
                    shutil.rmtree(stray, ignore_errors=True)
                else:
                    os.remove(stray)

    def _get(self, name):
        path = os.path.join(self.path, f"{name}.json")
        return _read_json(path) if os.path.exists(path) else None

    def _put(self, name, value):
        _write_json(os.path.join(self.path, f"{name}.json"), value)

    def reference(self):
        """Return the index of the reference frame, as the first run read it; `None` before."""
        return self._get("reference")

    def mark_reference(self, index):
        """Record the reference frame: a resumed run normalises to the same."""
        self._put("reference", int(index))

    def size(self):
        """Return the bytes of the files in the checkpoint (a resumed run needs less room)."""
        return sum(entry.stat().st_size for entry in os.scandir(self.path) if entry.is_file())

    def medians(self):
        """Return the frame indices whose single drizzles made the medians; `None` before."""
        return self._get("medians")

    def mark_medians(self, indices):
        """Record that the medians are whole, and of which frames: the frames stacked after."""
        self._put("medians", sorted(indices))

    def stored(self):
        """Return ``{frame index: record}`` of the frames stored by rejection's first pass."""
        found = {}
        for path in glob.glob(os.path.join(self.path, "kept.*.json")):
            found[int(path.rsplit(".", 2)[-2])] = _read_json(path)
        return found

    def mark_stored(self, index, entry):
        """Record that frame ``index`` is stored and drizzled alone (its files complete)."""
        self._put(f"kept.{index}", entry)

    def share(self, share):
        """Return ``(partial stack directory, {frame index: record})`` of a share, or `None`."""
        state = self._get(f"share.{share}")
        if state is None:
            return None
        done = {int(index): entry for index, entry in state["frames"]}
        return os.path.join(self.path, state["stack"]), done

    def save_share(self, share, stacker, done):
        """Write a share's partial stack and the records of the frames it holds.

        ``done`` is a list of ``(frame index, record)`` in the order stacked.
        The new partial is complete before the share's state names it; the
        one before is removed after.
        """
        before = self.share(share)
        name = f"share.{share}.{uuid.uuid4().hex[:12]}"
        stacker.save(os.path.join(self.path, name))
        self._put(f"share.{share}", {"stack": name, "frames": done})
        if before is not None:
            shutil.rmtree(before[0], ignore_errors=True)

    def empty(self):
        """Whether the checkpoint holds no work: no frame kept, no medians, no partial stack."""
        names = {entry.name for entry in os.scandir(self.path)}
        return not any(name.startswith(("kept.", "share.", "median.")) for name in names)

    def summary(self):
        """Say what the checkpoint holds: frames kept by rejection, frames stacked."""
        stacked = 0
        for path in glob.glob(os.path.join(self.path, "share.*.json")):
            stacked += len(_read_json(path)["frames"])
        kept = len(glob.glob(os.path.join(self.path, "kept.*.json")))
        parts = [f"{kept} frames kept by rejection's first pass"] if kept else []
        medians = glob.glob(os.path.join(self.path, "median.*.npy"))
        if medians:
            parts.append("their medians")
        parts.append(f"{stacked} frames stacked")
        return ", ".join(parts)

    def remove(self):
        """Remove the checkpoint (the stack is complete)."""
        shutil.rmtree(self.path, ignore_errors=True)


def digest(calibration):
    """Return a digest of the calibration's masters (`None` without): a checkpoint's identity."""
    if calibration is None:
        return None
    digest = hashlib.sha256()
    for kind in ("bias", "dark", "flat", "colors"):
        master = getattr(calibration, kind)
        digest.update(kind.encode())
        if master is not None:
            digest.update(np.ascontiguousarray(master).tobytes())
    digest.update(repr(calibration.dark_exptime).encode())
    return digest.hexdigest()
