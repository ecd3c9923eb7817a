"""Drizzle frames onto the reference grid with their offset maps: mono and Bayer."""

from types import MappingProxyType

import numpy as np
from drizzle import resample

from .._utils.validation import positive_pair, real
from ..frames import CFA_CHANNEL
from ._product import Stack

__all__ = ["KERNELS", "Stacker", "check_stack_options"]

KERNELS = tuple(resample.SUPPORTED_DRIZZLE_KERNELS)

_DEFAULTS = MappingProxyType(
    {"kernel": "square", "pixfrac": 1.0, "scale": 1.0, "exposure_weighting": True, "context": True}
)
_MONO = ("SCI",)
_RGB = ("RED", "GREEN", "BLUE")


def check_stack_options(**options):
    """Check the drizzle options of `Stacker` before any frame is read.

    Parameters
    ----------
    **options
        ``kernel``, ``pixfrac``, ``scale``, ``exposure_weighting``,
        ``context``; those not given take `Stacker`'s defaults.

    Returns
    -------
    dict
        Every option, as the stacker uses it.

    Raises
    ------
    ValueError
        If an option is unknown or out of range.
    """
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        known = ", ".join(_DEFAULTS)
        raise ValueError(
            f"unknown drizzle option(s) {', '.join(unknown)} (the options are {known})"
        )
    options = {**_DEFAULTS, **options}
    kernel = options["kernel"]
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    pixfrac = real(options["pixfrac"], "pixfrac", low=0, high=1, low_open=True)
    if kernel.startswith("lanczos") and pixfrac != 1.0:
        raise ValueError(
            f"the {kernel} kernel takes no pixfrac (drizzle uses 1); got pixfrac={pixfrac!r}"
        )
    return {
        "kernel": kernel,
        "pixfrac": pixfrac,
        "scale": real(options["scale"], "scale", low=0, high=8, low_open=True),
        "exposure_weighting": bool(options["exposure_weighting"]),
        "context": bool(options["context"]),
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
            name: resample.Drizzle(kernel=kernel, out_shape=self.out_shape, disable_ctx=not context)
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
        exptime = real(exptime, "exptime", low=0, low_open=True)
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
            channel = CFA_CHANNEL[colors]
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
