"""Calibration frames: master bias, dark and flat, built once and applied to every frame.

A master is the sigma-clipped mean of its frames, combined by ccdproc in
bounded memory, and kept as a FITS file beside the frames it was made from,
so that the next run reads it instead of combining again. A frame is
calibrated as ``(frame - bias - dark) / flat``: the dark's current (the
darks corrected by the bias) scaled by the frame's exposure time, the flat divided
by its median, per colour filter for raw frames so that it keeps their
colour balance.
"""

import contextlib
import hashlib
import logging
import os
import threading
import warnings

import numpy as np
from astropy import log
from astropy.io import fits
from astropy.stats import mad_std

from .._utils.provenance import not_an_input, product_kind, provenance_header, write_product
from .._utils.scratch import ScratchDirectory
from ._read import Frame, read_frame

__all__ = ["KINDS", "Calibration", "calibration_frames", "make_master"]

#: The kinds of calibration frames, in the order they correct a frame.
KINDS = ("bias", "dark", "flat")
# Sigma-clipping of the masters: robust centre and spread, so that a cosmic
# ray or a satellite in one of a few frames is rejected.
_CLIP = 3.0
_MEM_LIMIT = 2e9  # bytes ccdproc may use while combining
_CACHE = "astro_offsets_master_{kind}_{key}.fits"


def calibration_frames(source):
    """Return the frame files of ``source``: a file, a folder of them, or a list.

    Files that astro_offsets wrote (masters among them) are left out of a
    folder.

    Examples
    --------
    >>> from astro_offsets.frames import calibration_frames
    >>> calibration_frames(["dark_1.fits", "dark_2.fits"])
    ['dark_1.fits', 'dark_2.fits']
    """
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            names = sorted(os.listdir(source))
            paths = [os.path.join(source, name) for name in names]
            return [
                path
                for path in paths
                if os.path.isfile(path)
                and not os.path.basename(path).startswith(".")  # a write under way
                and not not_an_input(path, "frame")
            ]
        return [source]
    return [os.fspath(path) for path in source]


def _key(paths, calibration):
    """Return a short key of the frames and of the masters that corrected them."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    if calibration is not None:
        for kind in ("bias", "dark"):
            master = getattr(calibration, kind)
            digest.update(kind.encode() + (b"-" if master is None else master.tobytes()))
    return digest.hexdigest()[:12]


def make_master(kind, source, *, calibration=None, cache=True, mem_limit=_MEM_LIMIT):
    """Build (or read back) the master bias, dark or flat of a set of frames.

    The frames (FITS images or camera raw files, all of one size) are
    corrected (a dark by the bias; a flat by the bias and the dark scaled to
    its exposure), then combined by ccdproc's `~ccdproc.combine`: the mean of
    each pixel after clipping values beyond 3 robust standard deviations
    (median and MAD), in chunks of at most ``mem_limit`` bytes. A flat is
    divided by its median, per colour filter for raw frames. With ``cache``,
    the master is written beside the frames (``astro_offsets_master_<kind>_
    <key>.fits``, the key telling which frames and which corrections) and
    read from there next time.

    Parameters
    ----------
    kind : {"bias", "dark", "flat"}
        Which master.
    source : str, path-like or list
        A master file or one frame, a folder of frames, or a list of frames.
    calibration : `Calibration` or `None`, optional
        The masters that correct these frames first (its bias and dark).
    cache : bool, optional
        Keep the master beside the frames. The default is `True`.
    mem_limit : float, optional
        Bytes the combination may use. The default is 2e9.

    Returns
    -------
    data : `~numpy.ndarray`
        The master, float32.
    colors : `~numpy.ndarray` or `None`
        The colour filter of each pixel, for raw frames.
    exptime : float or `None`
        The frames' exposure time (their median).

    Raises
    ------
    ValueError
        If there are no frames, or they differ in size or in kind (raw and
        FITS), or one cannot be read; the message names the file.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(source, (str, os.PathLike)) and product_kind(source) == "calibration master":
        return _read_master(source)
    paths = calibration_frames(source)
    if not paths:
        raise ValueError(f"{source}: no {kind} frames")
    folder = os.path.dirname(os.path.abspath(paths[0]))
    cached = os.path.join(folder, _CACHE.format(kind=kind, key=_key(paths, calibration)))
    if cache and os.path.exists(cached):
        return _read_master(cached)
    frames_read = []
    with ScratchDirectory(f"astro_offsets-{kind}-") as directory:
        scratch = directory.path
        for index, path in enumerate(paths):
            frame = read_frame(path)
            if frames_read and (frame.data.shape, frame.colors is None) != frames_read[0][:2]:
                raise ValueError(
                    f"{path}: a {frame.data.shape} {'mono' if frame.colors is None else 'mosaic'} "
                    f"frame among {kind} frames of {frames_read[0][0]}"
                )
            data = frame.data
            if calibration is not None:
                data = calibration.subtract(data, frame, path)
            frames_read.append(
                (frame.data.shape, frame.colors is None, frame.exptime, frame.colors)
            )
            # A colour cube's planes are combined one by one.
            for plane, image in enumerate(data if data.ndim == 3 else [data]):
                fits.PrimaryHDU(image.astype(np.float32)).writeto(
                    os.path.join(scratch, f"{index}.{plane}.fits")
                )
        shape = frames_read[0][0]
        planes = [
            _combine(
                [os.path.join(scratch, f"{i}.{plane}.fits") for i in range(len(paths))], mem_limit
            )
            for plane in range(shape[0] if len(shape) == 3 else 1)
        ]
        master = np.stack(planes) if len(shape) == 3 else planes[0]
    colors = frames_read[0][3]
    times = [t for _, _, t, _ in frames_read if t is not None]
    exptime = float(np.median(times)) if times else None
    if kind == "flat":
        master = _normalised(master, colors, paths)
    if cache:
        _write_master(cached, kind, master, colors, exptime, paths)
    return master, colors, exptime


def _read_master(path):
    """Return ``(data, colors, exptime)`` of a master file of ours."""
    with fits.open(path) as hdul:
        colors = hdul["COLORS"].data.astype(np.uint8) if "COLORS" in hdul else None
        exptime = hdul[0].header.get("EXPTIME")
        return np.array(hdul["MASTER"].data, dtype=np.float32), colors, exptime


def _combine(files, mem_limit):
    import ccdproc

    # ccdproc tells how it splits the frames at INFO level: not for our users.
    # Its records are filtered out, those of this thread only; astropy's log
    # level, the process's, stays as the user set it.
    quiet = _QuietCcdproc()
    log.addFilter(quiet)
    try:
        combined = ccdproc.combine(
            files,
            method="average",
            sigma_clip=True,
            sigma_clip_low_thresh=_CLIP,
            sigma_clip_high_thresh=_CLIP,
            sigma_clip_func=np.ma.median,
            sigma_clip_dev_func=mad_std,
            mem_limit=mem_limit,
            unit="adu",
            dtype=np.float32,
        )
    finally:
        log.removeFilter(quiet)
    return np.asarray(combined.data, dtype=np.float32)


class _QuietCcdproc(logging.Filter):
    """Drop ccdproc's records below WARNING logged by the thread that made the filter."""

    def __init__(self):
        super().__init__()
        self._thread = threading.get_ident()

    def filter(self, record):
        return not (
            record.levelno < logging.WARNING
            and record.thread == self._thread
            and getattr(record, "origin", "").startswith("ccdproc")
        )


def _normalised(flat, colors, paths):
    """Divide a flat by its median, per colour filter for a mosaic, per plane for a cube."""
    flat = flat.copy()
    if flat.ndim == 3:
        groups = range(len(flat))  # the planes
    elif colors is None:
        groups = [np.ones(flat.shape, bool)]
    else:
        groups = [colors == c for c in np.unique(colors)]
    for group in groups:
        level = float(np.median(flat[group]))
        if not level > 0:
            raise ValueError(f"{paths[0]}: the flat frames' median is {level}, not above 0")
        flat[group] /= level
    return flat


def _write_master(path, kind, master, colors, exptime, paths):
    cards = [
        ("MASTER", kind, "calibration master"),
        ("NCOMBINE", len(paths), "frames combined"),
        ("EXPTIME", exptime, "exposure time of the frames (s)"),
        ("CLIPSIG", _CLIP, "sigma-clipping (median and MAD)"),
    ]
    hdus = [fits.PrimaryHDU(header=provenance_header("calibration master", cards))]
    hdus.append(fits.ImageHDU(master, name="MASTER"))
    if colors is not None:
        hdus.append(fits.ImageHDU(colors, name="COLORS"))
    # A master that cannot be kept is made again next time: not an error.
    with contextlib.suppress(OSError):
        write_product(path, hdus, overwrite=True)


class Calibration:
    """Master bias, dark and flat of a camera, and their correction of frames.

    Parameters
    ----------
    bias, dark, flat : array-like or `None`, optional
        The masters, each the size of the frames; `None` for none. The dark
        is the bias-subtracted dark (its current, as ``make_master`` makes it
        when a bias is given); without a bias it holds the offset too, and is
        then scaled with it. A flat is used as given: divide it by its median
        first (``make_master`` does).
    dark_exptime : float or `None`, optional
        The dark's exposure time, to scale its current to each frame's.
    colors : array-like or `None`, optional
        The colour filters of raw masters (rawpy's ``raw_colors_visible``):
        frames must have the same.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets.frames import Calibration, Frame
    >>> calibration = Calibration(bias=np.full((2, 3), 10.0), dark=np.full((2, 3), 4.0),
    ...                           flat=np.full((2, 3), 0.5), dark_exptime=60.0)
    >>> frame = Frame(np.full((2, 3), 110.0, np.float32), None, 30.0)
    >>> calibration.apply(frame).data[0, 0]  # (110 - 10 - 4 * 30 / 60) / 0.5
    np.float32(196.0)
    """

    def __init__(self, *, bias=None, dark=None, flat=None, dark_exptime=None, colors=None):
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        self.dark = None if dark is None else np.asarray(dark, dtype=np.float32)
        self.flat = None if flat is None else np.asarray(flat, dtype=np.float32)
        self.dark_exptime = dark_exptime
        self.colors = None if colors is None else np.asarray(colors)
        shapes = {m.shape for m in (self.bias, self.dark, self.flat) if m is not None}
        if len(shapes) > 1:
            raise ValueError(f"the masters differ in shape: {sorted(shapes)}")

    @classmethod
    def from_files(cls, *, bias=None, dark=None, flat=None, cache=True, mem_limit=_MEM_LIMIT):
        """Build the masters of calibration frames (files, folders or lists of files).

        The bias first, then the dark corrected by it, then the flat
        corrected by both; see ``make_master``.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from astropy.io import fits
        >>> from astro_offsets.frames import Calibration
        >>> folder = tempfile.mkdtemp()
        >>> for k in range(3):
        ...     fits.PrimaryHDU(np.full((4, 5), 100.0 + k, np.float32)).writeto(
        ...         os.path.join(folder, f"bias_{k}.fits"))
        >>> calibration = Calibration.from_files(bias=folder)
        >>> float(calibration.bias.mean())
        101.0
        >>> [name[:26] for name in os.listdir(folder) if "master" in name]
        ['astro_offsets_master_bias_']
        """
        masters, colors = {}, None
        for kind, source in (("bias", bias), ("dark", dark), ("flat", flat)):
            if source is None:
                continue
            before = cls(**masters, colors=colors) if masters else None
            master, found_colors, exptime = make_master(
                kind, source, calibration=before, cache=cache, mem_limit=mem_limit
            )
            masters[kind] = master
            if kind == "dark":
                masters["dark_exptime"] = exptime
            colors = found_colors if colors is None else colors
        return cls(**masters, colors=colors)

    def __repr__(self):
        have = [kind for kind in KINDS if getattr(self, kind) is not None]
        return f"<{type(self).__name__}: {', '.join(have) or 'nothing'}>"

    def _check(self, frame, path):
        name = path or "frame"
        for kind in KINDS:
            master = getattr(self, kind)
            if master is not None and master.shape != frame.data.shape:
                raise ValueError(
                    f"{name}: shape {frame.data.shape} differs from the master {kind}'s "
                    f"{master.shape}"
                )
        if (self.colors is None) != (frame.colors is None) and any(
            getattr(self, kind) is not None for kind in KINDS
        ):
            raise ValueError(
                f"{name}: a {'mosaic' if frame.colors is not None else 'mono'} frame, but the "
                f"masters were made of {'mosaic' if self.colors is not None else 'mono'} frames"
            )
        if self.colors is not None and not np.array_equal(self.colors, frame.colors):
            raise ValueError(f"{name}: its colour filters differ from the masters'")

    def subtract(self, data, frame, path=None):
        """Return ``data`` minus the bias and the dark current scaled to ``frame``'s exposure."""
        self._check(frame, path)
        data = np.asarray(data, dtype=np.float32)
        if self.bias is not None:
            data = data - self.bias
        if self.dark is not None:
            data = data - self.dark * self._dark_scale(frame, path)
        return data

    def _dark_scale(self, frame, path):
        """Return the dark's scale to a frame: the ratio of their exposure times, or 1."""
        if self.dark_exptime is None or frame.exptime is None:
            return np.float32(1.0)
        if self.bias is None and abs(frame.exptime - self.dark_exptime) > 1e-6 * self.dark_exptime:
            warnings.warn(
                f"{path or 'frame'}: the dark ({self.dark_exptime:g} s) is scaled to "
                f"{frame.exptime:g} s without a bias: its offset is scaled too",
                stacklevel=3,
            )
        return np.float32(frame.exptime / self.dark_exptime)

    def apply(self, frame, path=None):
        """Return ``frame`` calibrated: ``(frame - bias - dark) / flat``.

        Pixels where the flat is 0 or not finite become NaN (no weight in a
        stack).

        Parameters
        ----------
        frame : `Frame`
            As `read_frame` gives it.
        path : str or `None`, optional
            The frame's file, for messages.

        Raises
        ------
        ValueError
            If the frame's size or colour filters differ from the masters'.
        """
        data = self.subtract(frame.data, frame, path)
        if self.flat is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                data = np.where(np.isfinite(self.flat) & (self.flat > 0), data / self.flat, np.nan)
            data = data.astype(np.float32)
        return Frame(data, frame.colors, frame.exptime)

    def read(self, path):
        """Read a frame file and calibrate it (`read_frame`, then `apply`)."""
        return self.apply(read_frame(path), path)
