"""How a stack reads its frames: calibrated, checked, hot pixels out, normalised; read ahead."""

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from ..frames import hot_pixels, read_frame
from ..frames._cfa import colour_planes
from ..maps import OffsetMap
from ._checkpoint import record
from ._normalisation import Normalisation, apply, normalisation
from ._quality import frame_noise, frame_weight
from ._stacker import DrizzleError

__all__ = ["Frames", "Item", "Reader", "record_of"]


class _Prepared(NamedTuple):
    data: np.ndarray
    """Calibrated and normalised; NaN at hot pixels and wherever else no weight."""
    offset_map: object
    colors: object
    exptime: float | None
    norm: Normalisation
    noise: float
    """Its pixel noise before normalisation (`frame_noise`)."""
    weight: float | None
    """Its weight relative to the reference's (`frame_weight`); `None` unweighted."""


class Item(NamedTuple):
    """A frame to stack: its place in the inputs, its names and the files read."""

    index: int
    """Its place among the inputs (the batch's)."""
    frame: str
    """As the user gave it (messages, provenance)."""
    omap_path: str | None
    """Its map as found (messages, provenance); `None` for the reference."""
    frame_file: str
    """Absolute: a worker may run in another directory."""
    map_file: str | None


class Frames:
    """How a stack reads its frames: calibrated, checked, hot pixels out, normalised.

    The first frame read (the reference) fixes the shape, the colours and
    the normalisation of all. Picklable: a cluster's workers read their
    frames through a copy made once the reference is read.
    """

    def __init__(self, calibration, mask_hot_pixels, normalize, weighting="none"):
        self.calibration = calibration
        self.mask_hot_pixels = mask_hot_pixels
        self.normalize = normalize
        self.weighting = weighting
        self.shape = None
        self.colors = None
        self.kind = None  # a mono frame, a colour mosaic or a colour cube
        self.layers = None
        self.reference = None  # its normalisation and exposure time
        self.reference_noise = None

    def read(self, item):
        """Read a frame and its map from their files; prepare the frame (`prepare`)."""
        raw = self.read_raw(item.frame_file)
        return self.prepare(raw, self.offset_map(item), item.omap_path)

    def offset_map(self, item, out=None):
        """Return a frame's map (`None` for the reference), into the arrays of ``out`` if they fit.

        From its file; a reader of frames whose maps are elsewhere (a
        streaming run's, made in memory) has its own.
        """
        if item.map_file is None:
            return None
        if out is None:
            return OffsetMap.read(item.map_file)
        try:
            return OffsetMap.read(item.map_file, out=out)
        except ValueError:
            # Not into the frame's arrays (a map changed since the first
            # pass, say): what is wrong with the file itself, or its
            # shape, which `Rejection.mask` refuses.
            return OffsetMap.read(item.map_file)

    def read_raw(self, path):
        """Read a frame file, calibrated (`read_frame`, `Calibration.read`)."""
        return read_frame(path) if self.calibration is None else self.calibration.read(path)

    def prepare(self, raw, omap, omap_path=None, hot=None):
        """Prepare a frame read (`read_raw`) and its map: checked, hot pixels out, normalised.

        ``raw.data`` is changed in place when it is float32 already.
        ``omap_path`` names the map in messages. ``hot``: the frame's hot
        pixels (`hot_pixels`), if found already.
        """
        # The frame's own array, fresh from the file (changed in place below).
        data = np.asarray(raw.data, dtype=np.float32)
        if omap is not None and omap.shape != data.shape[-2:]:
            raise ValueError(
                f"frame shape {data.shape} differs from its map's {omap.shape} ({omap_path})"
            )
        self._check(data, raw.colors)
        if self.mask_hot_pixels:
            data[hot_pixels(data, raw.colors) if hot is None else hot] = np.nan
        norm = normalisation(data, raw.colors, omap, raw.exptime, self.reference)
        noise = frame_noise(data, raw.colors)
        if self.reference is None:
            self.reference = (norm, raw.exptime)
            self.reference_noise = noise
        weight = None
        if self.weighting == "noise":
            # The noise of the frame as it is stacked: normalised, or per second
            # of its exposure as the stacker takes it (against the reference's).
            if self.normalize:
                scale = norm.scale
            else:
                reference_exptime = self.reference[1]
                scale = reference_exptime / raw.exptime if reference_exptime else 1.0
            weight = frame_weight(noise, scale, self.reference_noise)
        if self.normalize:
            apply(data, self.layers, norm)
        return _Prepared(data, omap, raw.colors, raw.exptime, norm, noise, weight)

    def _check(self, data, colors):
        """Fix the shape and colours with the first frame; check the others fit them."""
        kind = (
            "a colour mosaic"
            if colors is not None
            else ("a colour cube", "a mono frame")[data.ndim == 2]
        )
        if self.shape is None:
            self.shape = data.shape[-2:]
            self.colors = colors
            self.kind = kind
            self.layers = colour_planes(data.shape, colors)
            return
        if kind != self.kind:
            stack = "mono" if self.kind == "a mono frame" else "colour"
            raise ValueError(f"{kind}, but the stack is {stack} ({self.kind[2:]}s)")
        if data.shape[-2:] != self.shape:
            raise ValueError(f"frame shape {data.shape} differs from the stack's {self.shape}")
        if colors is not None and not np.array_equal(colors, self.colors):
            raise ValueError("its colour filter pattern differs from the first frame's")

    @property
    def n_channels(self):
        """The stack's channels: 1 (mono) or 3 (red, green, blue)."""
        return 1 + max(layer.channel for layer in self.layers)

    def zeros(self, norm):
        """Return the value of no light in a frame, per channel (rejection's noise model)."""
        return norm.offsets if self.normalize else None


def record_of(prepared, zeros=None, masked=None):
    """Return the checkpoint's record of a prepared frame (`record`)."""
    return record(prepared.norm, prepared.exptime, zeros, masked, prepared.noise, prepared.weight)


class Reader:
    """How a run reads its frames in turn: the reference first and alone, the others ahead.

    A frame that cannot be read is failed in ``batch``, and the others are
    still read; but a `DrizzleError` (an earlier frame's drizzle crashed)
    stops the run.

    Parameters
    ----------
    frames : `Frames`
        How each frame is read.
    batch : `Batch`
        Where a frame that cannot be read is failed.
    checkpoint : `Checkpoint` or `None`
        The run's: a resumed run reads the reference it recorded.
    """

    def __init__(self, frames, batch, checkpoint=None):
        self.frames = frames
        self.batch = batch
        self.checkpoint = checkpoint

    def read(self, item):
        """Read a frame (`Frames.read`); `None` (and the frame failed) if it cannot."""
        try:
            return self.frames.read(item)
        except DrizzleError:
            raise  # an earlier frame's: the stack cannot be finished
        except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
            self.batch.fail(item.index, exc, map=item.omap_path)
            return None

    def reference(self, todo):
        """Read the reference frame; return it, ``(item, prepared)``, and the indices tried.

        It is the first frame of ``todo`` that can be read (the frames that
        cannot are failed), and every other frame is normalised to it. A
        resumed stack reads the one its checkpoint recorded, or stops: the
        frames stacked before were normalised to that one. `None` if no
        frame can be read.
        """
        recorded = None if self.checkpoint is None else self.checkpoint.reference()
        tried = set()
        for item in todo:
            if recorded is not None and item.index != recorded:
                continue
            tried.add(item.index)
            prepared = self.read(item)
            if prepared is not None:
                if self.checkpoint is not None and recorded is None:
                    self.checkpoint.mark_reference(item.index)
                return (item, prepared), tried
            if recorded is not None:
                raise ValueError(
                    f"{item.frame}: the reference frame of the interrupted stack cannot be "
                    "read now, and the frames in its checkpoint were normalised to it"
                )
        return None, tried

    def ahead(self, todo, found, tried, skip=()):
        """Yield ``(item, prepared)`` in order, of the frames not in ``skip``; `None` if failed.

        ``found`` and ``tried`` are what `reference` returned: the reference
        is yielded first unless in ``skip``. The others are read two at a
        time, on two threads, while the caller takes them in order.
        """
        if found[0].index not in skip:
            yield found
        del found
        pending = collections.deque()
        with ThreadPoolExecutor(2, thread_name_prefix="astro_offsets-read") as pool:
            for item in todo:
                if item.index in skip or item.index in tried:
                    continue
                pending.append((item, pool.submit(self.frames.read, item)))
                if len(pending) == 2:
                    yield self._collect(*pending.popleft())
            while pending:
                yield self._collect(*pending.popleft())

    def _collect(self, item, future):
        try:
            return item, future.result()
        except DrizzleError:
            raise
        except Exception as exc:  # as in `read`
            self.batch.fail(item.index, exc, map=item.omap_path)
            return item, None
