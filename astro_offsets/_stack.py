"""Drizzle frames onto the reference grid with their offset maps: mono and Bayer."""

import math
import numbers
import os
import warnings
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.nddata import block_reduce
from astropy.stats import sigma_clipped_stats
from drizzle.resample import SUPPORTED_DRIZZLE_KERNELS, Drizzle
from scipy.ndimage import uniform_filter
from tqdm import tqdm

from ._atomic import atomic_path
from ._cosmetic import hot_pixels
from ._frames import read_frame
from ._naming import map_path
from ._offset_map import OffsetMap
from ._provenance import not_an_input, provenance_cards
from ._sequence import describe
from ._validate import positive_pair

__all__ = ["Stack", "Stacker", "StackResult", "stack_frames", "check_stack_options", "KERNELS"]

KERNELS = tuple(SUPPORTED_DRIZZLE_KERNELS)

_MONO = ("SCI",)
_RGB = ("RED", "GREEN", "BLUE")
# rawpy's raw_colors_visible (0 red, 1 green, 2 blue, 3 the other green) to
# the channel of the stack.
_CFA_CHANNEL = np.array([0, 1, 2, 1], dtype=np.uint8)
# The sky of a colour preview, in noise sigmas of its noisiest channel above
# black: a dark grey in which under 1 % of the sky pixels are clipped.
_SKY_LEVEL = 2.5


class Stack(NamedTuple):
    """A drizzled stack: images, weights and contexts by channel.

    Mono stacks have the one channel ``"SCI"``; colour stacks of raw frames
    ``"RED"``, ``"GREEN"`` and ``"BLUE"``. Pixels that no input pixel reached
    are NaN in the image and 0 in the weight.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import Stacker
    >>> stacker = Stacker((20, 30))
    >>> stacker.add(np.ones((20, 30), dtype=np.float32))
    >>> stack = stacker.stack()
    >>> stack.channels, float(stack.images["SCI"][10, 10])
    (('SCI',), 1.0)
    """

    channels: tuple
    """Channel names, ``("SCI",)`` or ``("RED", "GREEN", "BLUE")``."""
    images: dict
    """float32 image of each channel, in frame units per second of exposure."""
    weights: dict
    """float32 weight of each channel."""
    contexts: dict
    """int32 context (bit k set: frame k contributed) of each channel, or `None`."""
    meta: dict
    """Provenance: frames, kernel, pixfrac, scale, exposure time, ..."""

    def write(self, path, *, overwrite=False, context=False):
        """Write the stack as FITS, atomically.

        HDU 0 holds the provenance; then one image extension per channel
        (``SCI``, or ``RED``, ``GREEN``, ``BLUE``) followed by their weights
        (``WHT``, or ``RED_WHT``, ...), and with ``context=True`` their
        contexts (``CTX``, or ``RED_CTX``, ...).

        Parameters
        ----------
        path : str or path-like
            Output FITS file.
        overwrite : bool, optional
            Replace an existing file. The default is `False`.
        context : bool, optional
            Also write the context arrays. The default is `False`.

        Raises
        ------
        FileExistsError
            If the file exists and ``overwrite`` is `False`.
        ValueError
            If ``context`` is asked for and the stack has none.
        """
        if context and self.contexts is None:
            raise ValueError("this stack was made without context arrays")
        primary = fits.PrimaryHDU()
        for keyword, value, comment in _provenance_cards(self.meta):
            primary.header[keyword] = (value, comment)
        hdus = [primary]
        for name in self.channels:
            hdu = fits.ImageHDU(self.images[name], name=name)
            if self.meta["unit"]:
                hdu.header["BUNIT"] = (self.meta["unit"], "drizzled intensity")
            hdu.header["COMMENT"] = "Frame units per second of exposure; NaN where WHT is 0."
            hdus.append(hdu)
        for name in self.channels:
            hdus.append(fits.ImageHDU(self.weights[name], name=_suffixed(name, "WHT")))
        if context:
            for name in self.channels:
                hdus.append(fits.ImageHDU(self.contexts[name], name=_suffixed(name, "CTX")))
        with atomic_path(path, overwrite=overwrite) as tmp:
            fits.HDUList(hdus).writeto(tmp)

    def preview(self, *, max_pixels=4_000_000):
        """Return a display image: asinh-stretched grey, or Lupton RGB for colour.

        Large stacks are binned (block means) to at most ``max_pixels``: a
        preview is for looking, and binning keeps its memory small. A pixel
        that one colour's drops missed (Bayer stacks leave such holes at the
        edges, where a colour's pixels alternate) takes that colour from its
        neighbours; pixels no frame reached are black. Colour previews show
        the sky as a dark neutral grey: each channel's sky level is taken out
        and one common level, 2.5 times the noisiest channel's noise, put
        back, so that the sky's noise is not clipped into a colour cast.

        Parameters
        ----------
        max_pixels : int, optional
            Largest preview, in pixels. The default is 4 million.

        Returns
        -------
        `~numpy.ndarray`
            uint8, ``(ny, nx)`` for mono, ``(ny, nx, 3)`` for colour, row 0
            first (as a photo is shown).
        """
        from astropy.visualization import AsinhStretch, PercentileInterval, make_lupton_rgb

        ny, nx = self.images[self.channels[0]].shape
        factor = max(1, math.ceil(math.sqrt(ny * nx / max_pixels)))
        images = [_fill_holes(_binned(self.images[name], factor)) for name in self.channels]
        covered = np.logical_and.reduce([np.isfinite(image) for image in images])
        if not covered.any():
            return np.zeros(
                (*covered.shape, len(images)) if len(images) > 1 else covered.shape, np.uint8
            )
        if len(images) == 1:
            interval = PercentileInterval(99.5)
            stretch = AsinhStretch(0.05)
            scaled = stretch(interval(images[0][covered], clip=True))
            out = np.zeros(covered.shape, np.uint8)
            out[covered] = np.round(scaled * 255)
            return out
        # Each channel's sky out, then one level for all, so that the sky is
        # grey and its noise above black; one stretch for all channels so
        # colours stay true.
        skies = [sigma_clipped_stats(image[covered], sigma=3.0)[1:] for image in images]
        level = _SKY_LEVEL * max(noise for _, noise in skies)
        images = [
            np.where(covered, image - sky + level, 0.0)
            for image, (sky, _) in zip(images, skies, strict=True)
        ]
        bright = max(float(np.percentile(image[covered], 99.9)) for image in images)
        # Lupton's stretch divides by the mean intensity, 0 where nothing fell.
        with np.errstate(invalid="ignore", divide="ignore"):
            return make_lupton_rgb(*images, minimum=0.0, stretch=max(bright, 1e-30), Q=8)

    def write_preview(self, path, *, overwrite=False):
        """Write `preview` as a PNG file, atomically (needs matplotlib).

        Parameters
        ----------
        path : str or path-like
            Output PNG file.
        overwrite : bool, optional
            Replace an existing file. The default is `False`.
        """
        import matplotlib.image

        image = self.preview()
        with atomic_path(path, overwrite=overwrite) as tmp:
            matplotlib.image.imsave(
                tmp, image, cmap="gray" if image.ndim == 2 else None, format="png"
            )


def _binned(image, factor):
    """Block means of ``factor`` x ``factor`` pixels (edges cropped), NaN left out of them."""
    if factor == 1:
        return image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a block with no value: NaN
        return block_reduce(image, factor, func=np.nanmean).astype(np.float32)


def _fill_holes(image):
    """Fill NaN pixels beside values with the mean of their neighbours' values."""
    holes = ~np.isfinite(image)
    if not holes.any():
        return image
    values = np.where(holes, 0.0, image)
    counts = uniform_filter((~holes).astype(np.float32), 3, mode="constant")
    sums = uniform_filter(values.astype(np.float32), 3, mode="constant")
    filled = image.copy()
    reached = holes & (counts > 0)
    filled[reached] = sums[reached] / counts[reached]
    return filled


def _suffixed(name, suffix):
    return suffix if name == "SCI" else f"{name}_{suffix}"


def _provenance_cards(meta):
    yield from provenance_cards("stack")
    yield "KERNEL", meta["kernel"], "drizzle kernel"
    yield "PIXFRAC", meta["pixfrac"], "drop size, fraction of an input pixel"
    yield "SCALE", meta["scale"], "output pixels per input pixel, per axis"
    yield "EXPWGHT", meta["exposure_weighting"], "frames weighted by exposure time"
    yield "TEXPTIME", meta["total_exptime"], "total exposure time of the frames (s)"
    yield "NFRAMES", len(meta["frames"]), "frames stacked"
    # FRMnnnnn and MAPnnnnn fit FITS's 8-character keywords up to 99999 frames.
    for index, (frame, omap) in enumerate(zip(meta["frames"], meta["maps"], strict=True)):
        yield f"FRM{index + 1:05d}", frame, ""
        yield f"MAP{index + 1:05d}", omap or "(reference)", ""


def _check_option(name, value, low, high):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not low < value <= high
    ):
        raise ValueError(f"{name} must be a number in ({low:g}, {high:g}], got {value!r}")
    return float(value)


def check_stack_options(
    *, kernel="square", pixfrac=1.0, scale=1.0, exposure_weighting=True, context=True
):
    """Check the drizzle options of `Stacker` before any frame is read.

    Returns
    -------
    dict
        The options, as the stacker uses them.

    Raises
    ------
    ValueError
        If an option is out of range.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    checked = _check_option("pixfrac", pixfrac, 0, 1)
    if kernel.startswith("lanczos") and checked != 1.0:
        raise ValueError(
            f"the {kernel} kernel takes no pixfrac (drizzle uses 1); got pixfrac={pixfrac!r}"
        )
    return {
        "kernel": kernel,
        "pixfrac": checked,
        "scale": _check_option("scale", scale, 0, 8),
        "exposure_weighting": bool(exposure_weighting),
        "context": bool(context),
    }


class Stacker:
    """Drizzle frames one at a time onto the reference frame's grid.

    Each frame is mapped onto the reference grid by its `OffsetMap` (the
    reference frame itself has none) and added with drizzle
    (`drizzle.resample.Drizzle`). Colour raw frames are drizzled once per
    colour, with the Bayer mosaic's pixels of that colour as the weight map
    (Bayer drizzle), so the colours are never interpolated.

    Parameters
    ----------
    shape : tuple of int
        The frames' (and reference frame's) shape ``(ny, nx)``.
    bayer : bool, optional
        Stack colour raw frames into ``RED``, ``GREEN`` and ``BLUE``; each
        frame then needs its ``colors`` (rawpy's ``raw_colors_visible``). The
        default is `False`: mono frames into ``SCI``.
    kernel : str, optional
        Drizzle kernel: ``"square"``, ``"point"``, ``"turbo"``,
        ``"gaussian"``, ``"lanczos2"`` or ``"lanczos3"`` (``KERNELS``). The
        lanczos kernels take no ``pixfrac`` and do not conserve flux. The
        default is ``"square"``.
    pixfrac : float, optional
        Size of the drop, as a fraction of an input pixel's side, in (0, 1].
        Smaller drops sharpen but need more, well-dithered frames to fill
        every output pixel. The default is 1.
    scale : float, optional
        Output pixels per input pixel along each axis, in (0, 8]: 2 gives a
        grid twice as fine (super-resolution), with the pixmap scaled to
        match. The default is 1.
    exposure_weighting : bool, optional
        Weight each frame by its exposure time. The default is `True`.
    context : bool, optional
        Keep context arrays (which frames reached each output pixel; 4 bytes
        per output pixel per 32 frames and channel). The default is `True`.

    Raises
    ------
    ValueError
        If an option is out of range.

    See Also
    --------
    stack_frames : stack frame files with their map files.

    Notes
    -----
    Images are in input units per second: each frame is divided by its
    exposure time (1 when unknown). With ``scale`` s, each input pixel's
    counts are spread over s**2 smaller output pixels (drizzle's ``iscale =
    1 / s**2``), so the total flux is conserved (except with the lanczos
    kernels). Memory: per channel, the output image and weight take 8 bytes
    per output pixel, the context 4 bytes per 32 frames; a frame in flight
    takes about 24 bytes per input pixel for mono frames and 34 for Bayer
    frames (data, colours, float64 pixmap, weights).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import OffsetMap, Stacker
    >>> frame = np.zeros((40, 50), dtype=np.float32)
    >>> frame[20, 31] = 100.0
    >>> shifted = OffsetMap(np.full((40, 50), 1.0), np.zeros((40, 50)))  # 1 px to the right
    >>> stacker = Stacker((40, 50), kernel="point")
    >>> stacker.add(frame, shifted)
    >>> stack = stacker.stack()
    >>> float(np.nansum(stack.images["SCI"])), np.unravel_index(
    ...     np.nanargmax(stack.images["SCI"]), (40, 50))
    (100.0, (np.int64(20), np.int64(30)))
    """

    def __init__(
        self,
        shape,
        *,
        bayer=False,
        kernel="square",
        pixfrac=1.0,
        scale=1.0,
        exposure_weighting=True,
        context=True,
    ):
        self.shape = positive_pair(shape, "shape")
        options = check_stack_options(
            kernel=kernel,
            pixfrac=pixfrac,
            scale=scale,
            exposure_weighting=exposure_weighting,
            context=context,
        )
        self.kernel = options["kernel"]
        self.pixfrac = options["pixfrac"]
        self.scale = options["scale"]
        self.bayer = bool(bayer)
        self.exposure_weighting = options["exposure_weighting"]
        self.channels = _RGB if self.bayer else _MONO
        ny, nx = self.shape
        self.out_shape = (max(1, round(ny * self.scale)), max(1, round(nx * self.scale)))
        self._drizzles = {
            name: Drizzle(kernel=kernel, out_shape=self.out_shape, disable_ctx=not context)
            for name in self.channels
        }
        self._context = bool(context)
        self._frames = []
        self._maps = []
        self._total_exptime = 0.0

    def _pixmap(self, offset_map):
        ny, nx = self.shape
        if offset_map is None:
            pixmap = np.empty((ny, nx, 2))
            pixmap[..., 0] = np.arange(nx)[np.newaxis, :]
            pixmap[..., 1] = np.arange(ny)[:, np.newaxis]
        else:
            if offset_map.shape != self.shape:
                raise ValueError(
                    f"map shape {offset_map.shape} differs from the frame shape {self.shape}"
                )
            pixmap = offset_map.pixmap()
        if self.scale != 1.0:
            # Pixel centres of the finer grid: reference x maps to
            # scale * (x + 0.5) - 0.5, so the grids share their outer edges.
            pixmap += 0.5
            pixmap *= self.scale
            pixmap -= 0.5
        return pixmap

    def add(
        self,
        data,
        offset_map=None,
        *,
        colors=None,
        exptime=None,
        weight=None,
        mask=None,
        name=None,
        map_name=None,
    ):
        """Drizzle one frame onto the stack.

        Parameters
        ----------
        data : array-like
            The frame, ``(ny, nx)``; for Bayer stacks the raw mosaic (black
            level subtracted).
        offset_map : `OffsetMap` or `None`, optional
            The frame's map onto the reference grid; `None` for the reference
            frame itself.
        colors : array-like or `None`, optional
            For Bayer stacks, rawpy's ``raw_colors_visible`` (0 R, 1 and 3 G,
            2 B); required then, refused for mono stacks.
        exptime : float or `None`, optional
            Exposure time in seconds; `None` counts as 1.
        weight : array-like or `None`, optional
            Per-pixel weight of this frame, ``(ny, nx)``, non-negative.
        mask : array-like or `None`, optional
            Bad pixels (`True` = bad), ``(ny, nx)``; they get no weight.
            Non-finite pixels of ``data`` are masked too.
        name, map_name : str or `None`, optional
            The frame's and map's names for the provenance.

        Raises
        ------
        ValueError
            If shapes differ from the stack's, ``colors`` does not fit the
            stack, ``exptime`` is not positive, or ``weight`` is negative.
        """
        data = np.asarray(data, dtype=np.float32)
        if data.shape != self.shape:
            raise ValueError(f"frame shape {data.shape} differs from the stack's {self.shape}")
        if exptime is None:
            exptime = 1.0
        exptime = _check_option("exptime", exptime, 0, math.inf)
        if self.bayer and colors is None:
            raise ValueError("a Bayer stack needs each frame's colors (raw_colors_visible)")
        if not self.bayer and colors is not None:
            raise ValueError("colors given for a mono stack: make it with bayer=True")
        base = np.isfinite(data).astype(np.float32)
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float32)
            if weight.shape != self.shape:
                raise ValueError(f"weight shape {weight.shape} differs from {self.shape}")
            if not np.all(np.isfinite(weight) & (weight >= 0)):
                raise ValueError("weight must be non-negative and finite everywhere")
            base *= weight
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.shape:
                raise ValueError(f"mask shape {mask.shape} differs from {self.shape}")
            base[mask] = 0.0
        data = np.where(base > 0, data, np.float32(0.0))
        pixmap = self._pixmap(offset_map)

        if self.bayer:
            colors = np.asarray(colors)
            if colors.dtype.kind not in "iu":
                raise ValueError(f"colors must be integer colour indices, got dtype {colors.dtype}")
            if colors.shape != self.shape:
                raise ValueError(f"colors shape {colors.shape} differs from {self.shape}")
            if colors.size and (colors.min() < 0 or colors.max() > 3):
                raise ValueError("colors must be rawpy colour indices 0..3")
            channel = _CFA_CHANNEL[colors]
        for index, name_ in enumerate(self.channels):
            # One colour's weight map at a time: a frame in flight stays small.
            weight_map = np.where(channel == index, base, 0.0) if self.bayer else base
            self._drizzles[name_].add_image(
                data,
                exptime=exptime,
                pixmap=pixmap,
                weight_map=weight_map,
                pixfrac=self.pixfrac,
                iscale=1.0 / self.scale**2,
                pixel_scale_ratio=1.0 / self.scale,
                in_units="counts",
                wht_scale=exptime if self.exposure_weighting else 1.0,
            )
        self._frames.append(name or f"frame {len(self._frames) + 1}")
        if offset_map is not None and map_name is None:
            map_name = "(an OffsetMap in memory)"
        self._maps.append(map_name)
        self._total_exptime += exptime

    def stack(self):
        """Return the stack so far (arrays shared with the stacker, not copied).

        Returns
        -------
        `Stack`
        """
        meta = {
            "kernel": self.kernel,
            "pixfrac": self.pixfrac,
            "scale": self.scale,
            "exposure_weighting": self.exposure_weighting,
            "total_exptime": self._total_exptime,
            "frames": list(self._frames),
            "maps": list(self._maps),
            # Raw frames are in sensor units (ADU); FITS frames in whatever
            # their own units are, per second.
            "unit": "adu / s" if self.bayer else None,
        }
        contexts = (
            {name: d.out_ctx for name, d in self._drizzles.items()} if self._context else None
        )
        return Stack(
            self.channels,
            {name: d.out_img for name, d in self._drizzles.items()},
            {name: d.out_wht for name, d in self._drizzles.items()},
            contexts,
            meta,
        )


class StackResult(NamedTuple):
    """What became of one frame in `stack_frames`.

    Examples
    --------
    >>> from astro_offsets import StackResult
    >>> StackResult("DSC0001.ARW", "DSC0001.offsets.fits", "stacked", "").status
    'stacked'
    """

    frame: str
    """The frame file."""
    map: str | None
    """Its map file, or `None` for the reference frame."""
    status: str
    """``"stacked"``, ``"failed"``, or ``"ignored"`` (a file astro_offsets wrote, not a frame)."""
    message: str
    """One line naming the file and the problem; empty if stacked."""


_MAKE_MAPS = (
    "make the maps first: astro-offsets tables FRAME... --reference FRAME, "
    "then astro-offsets maps TABLE... --image FRAME"
)


def _plan(frames, maps, reference):
    """Return ``[(frame, map path or None, problem or None)]``.

    The reference frame is ``reference``, or else the one frame without a
    map; several frames without a map and no ``reference`` is an error, as
    stacking a frame unmoved that is not the reference doubles every star.
    So is a plan in which no frame has a map: it would stack the reference
    alone.
    """
    expected = [map_path(frame, maps) for frame in frames]
    found = [path if os.path.exists(path) else None for path in expected]
    if frames and not any(found):
        where = "beside the frames" if maps is None else f"in {maps}"
        raise ValueError(
            f"none of the {len(frames)} frames has a map {where} (such as {expected[0]}): "
            + _MAKE_MAPS
        )
    if reference is not None:
        reference = os.path.abspath(reference)
        if reference not in {os.path.abspath(f) for f in frames}:
            raise ValueError(f"{reference}: the reference frame is not among the frames")
    else:
        missing = [frame for frame, path in zip(frames, found, strict=True) if path is None]
        if len(missing) > 1:
            shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
            raise ValueError(
                f"{len(missing)} frames have no map ({shown}), and only the reference frame "
                f"may have none: {_MAKE_MAPS}; or, if the others' tables or maps failed, "
                "name the reference (--reference) to stack the frames that have maps"
            )
        reference = os.path.abspath(missing[0]) if missing else None
    plan = []
    for frame, path, wanted in zip(frames, found, expected, strict=True):
        is_reference = os.path.abspath(frame) == reference
        problem = None
        if path is None and not is_reference:
            problem = f"no map {wanted}, and it is not the reference frame"
        plan.append((frame, path, problem))
    return plan


def stack_frames(
    frames,
    *,
    maps=None,
    reference=None,
    kernel="square",
    pixfrac=1.0,
    scale=1.0,
    exposure_weighting=True,
    context=True,
    mask_hot_pixels=True,
    progress=False,
    callback=None,
):
    """Drizzle frame files onto the reference frame's grid with their map files.

    Each frame ``<stem>.<ext>`` is moved by its map ``<stem>.offsets.fits``
    (beside it, or in ``maps``); the reference frame has no map and stacks
    unmoved. Raw files give a colour (Bayer drizzle) stack, FITS files a mono
    one. Frames are read one at a time. A frame that cannot be stacked is
    reported and the others are still stacked.

    Parameters
    ----------
    frames : iterable of str or path-like
        Frame files: camera raw files (rawpy) or FITS images, all of one size.
    maps : str, path-like or `None`, optional
        Directory of the maps; `None` looks beside each frame.
    reference : str, path-like or `None`, optional
        The reference frame, which may have no map; by default the one frame
        without a map.
    kernel, pixfrac, scale, exposure_weighting, context
        Drizzle options; see `Stacker`.
    mask_hot_pixels : bool, optional
        Give no weight to each frame's hot pixels (isolated spikes far above
        their neighbours): fixed to the sensor, they would otherwise draw
        trails of dots across the stack as the frames move. The default is
        `True`.
    progress : bool, optional
        Show a progress bar on stderr (when it is a terminal).
    callback : callable or `None`, optional
        Called with each `StackResult` as soon as it is known.

    Returns
    -------
    stack : `Stack`
        The stack of the frames that could be stacked.
    results : list of `StackResult`
        One per frame, in the order given. Files that astro_offsets wrote
        (maps, star tables, stacks, recognised by their header or name) are
        left out, as ``"ignored"``.

    Raises
    ------
    ValueError
        If no frame could be stacked, an option is out of range,
        ``reference`` is not one of ``frames``, or it is not given and
        several frames have no map.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_offsets import OffsetMap, stack_frames
    >>> folder = tempfile.mkdtemp()
    >>> frames = [os.path.join(folder, f"light{k}.fits") for k in range(2)]
    >>> for frame in frames:
    ...     fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(frame)
    >>> OffsetMap(np.full((20, 30), 0.5), np.zeros((20, 30))).write(
    ...     os.path.join(folder, "light1.offsets.fits"))
    >>> stack, results = stack_frames(frames)
    >>> [(os.path.basename(r.frame), r.status) for r in results]
    [('light0.fits', 'stacked'), ('light1.fits', 'stacked')]
    >>> stack.channels
    ('SCI',)
    """
    frames = [os.fspath(frame) for frame in frames]
    ignored = {frame: not_an_input(frame, "frame") for frame in frames}
    plan = _plan([f for f in frames if ignored[f] is None], maps, reference)
    options = {
        "kernel": kernel,
        "pixfrac": pixfrac,
        "scale": scale,
        "exposure_weighting": exposure_weighting,
        "context": context,
    }
    # Options are checked before any frame is read.
    check_stack_options(**options)
    stacker = None
    results = []

    def finish(*fields):
        results.append(StackResult(*fields))
        if callback is not None:
            callback(results[-1])

    # The plan in the order given, with the files left out in their places.
    steps = iter(plan)
    order = [(f, None, ignored[f]) if ignored[f] else next(steps) for f in frames]
    bar = tqdm(order, desc="stack", unit="frame", disable=None if progress else True)
    for frame, omap_path, problem in bar:
        if ignored[frame] is not None:
            finish(frame, None, "ignored", ignored[frame])
            continue
        if problem is not None:
            finish(frame, omap_path, "failed", describe(frame, problem))
            continue
        try:
            data = read_frame(frame)
            omap = OffsetMap.read(omap_path) if omap_path is not None else None
            if omap is not None and omap.shape != data.data.shape:
                raise ValueError(
                    f"frame shape {data.data.shape} differs from its map's "
                    f"{omap.shape} ({omap_path})"
                )
            if stacker is None:
                stacker = Stacker(data.data.shape, bayer=data.colors is not None, **options)
            elif (data.colors is not None) != stacker.bayer:
                kind = "a colour raw frame" if data.colors is not None else "a mono frame"
                raise ValueError(
                    f"{kind}, but the stack is {'colour' if stacker.bayer else 'mono'}"
                )
            stacker.add(
                data.data,
                omap,
                mask=hot_pixels(data.data, data.colors) if mask_hot_pixels else None,
                colors=data.colors,
                exptime=data.exptime,
                name=frame,
                map_name=omap_path,
            )
        except Exception as exc:
            finish(frame, omap_path, "failed", describe(frame, exc))
            continue
        finish(frame, omap_path, "stacked", "")
    if stacker is None:
        raise ValueError("no frame could be stacked")
    return stacker.stack(), results
