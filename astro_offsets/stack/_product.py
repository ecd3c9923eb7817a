"""The stack: drizzled images, weights and contexts by channel; its FITS file and preview."""

import math
import os
import re
import warnings
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy.ndimage import maximum_filter, uniform_filter

from .._utils.atomic import atomic_path
from .._utils.naming import weights_path
from .._utils.provenance import png_metadata, provenance_header
from .._utils.wcs import celestial_wcs
from ._header import flipped_wcs, observation_cards
from ._normalisation import Normalisation

__all__ = ["FRAME_COLUMNS", "ARRAY_KINDS", "LAYOUTS", "MONO", "RGB", "Stack"]

MONO = ("SCI",)
"""The channel of a mono stack."""
RGB = ("RED", "GREEN", "BLUE")
"""The channels of a colour stack, in the order of a cube's planes."""
LAYOUTS = ("image", "extensions")
"""How a stack's file holds it: the file's one image (a 3-plane cube for colour), its
weights in ``<stem>.weights.fits``; or image extensions, weights and all, in one file."""
ARRAY_KINDS = ("image", "weight", "context")
"""The arrays of a stack, in the order its file holds them."""
# The extension of each kind: SCI, WHT, CTX (mono), RED, RED_WHT, RED_CTX
# (colour), in the extensions layout; in the image layout, the primary
# image, and WHT and CTX in the weights file.
_SUFFIXES = MappingProxyType({"image": None, "weight": "WHT", "context": "CTX"})
_CHUNK = 1 << 20  # pixels written at a time
_DTYPES = MappingProxyType({"image": np.float32, "weight": np.float32, "context": np.int32})
FRAME_COLUMNS = MappingProxyType(
    {
        "frame": "the frame, as given",
        "map": "its offset map; empty for the reference",
        "kernel": "the drizzle kernel it was stacked with",
        "used": "whether it went into the stack",
        "weight": "its weight, the reference's 1",
        "flux_scale": "the normalisation's flux scale",
        "scale_source": "where the flux scale comes from",
        "sky": "its sky level per channel, before norm.",
        "sky_offset": "its sky offset per channel, after scaling",
        "rejected": "fraction of its pixels rejected",
    }
)
"""The columns of a stack file's ``FRAMES`` table, and what each holds."""
# The stack-wide cards of the primary header, by their key in ``meta``
# (the last three only a stack of files, `stack_frames`, has).
_CARDS = MappingProxyType(
    {
        "kernel": ("KERNEL", "drizzle kernel"),
        "pixfrac": ("PIXFRAC", "drop size, fraction of an input pixel"),
        "scale": ("SCALE", "output pixels per input pixel, per axis"),
        "exposure_weighting": ("EXPWGHT", "frames weighted by exposure time"),
        "total_exptime": ("TEXPTIME", "total exposure time of the frames (s)"),
        "normalised": ("NORMLZD", "frames normalised to the reference"),
        "rejected": ("REJECT", "outliers rejected"),
        "weighting": ("WEIGHTS", "frame weights: noise or none (exposure)"),
    }
)

# The sky of a colour preview, in noise sigmas of its noisiest channel above
# black (under 1 % of the sky pixels are clipped), and where it is shown: a
# dark grey, about 30 of 255.
_SKY_LEVEL = 2.5
_SKY_DISPLAY = 0.12
_Q = 8.0  # Lupton's softening: bright stars keep their colour
# The colours are balanced on the stars: local peaks of green this many
# sky sigmas high, and at least this many of them.
_STAR_PEAK = 20.0
_STARS = 3
_PLATEAU = 5  # pixels at a channel's top that make a saturated plateau


class Stack(NamedTuple):
    """A drizzled stack: images, weights and contexts by channel.

    Mono stacks have the one channel ``"SCI"``; colour stacks of raw frames
    ``"RED"``, ``"GREEN"`` and ``"BLUE"``. Pixels that no input pixel reached
    are NaN in the image and 0 in the weight. `write` writes it as FITS (as
    the file's one image, a colour stack as one 3-plane cube, its weights
    beside it; or as image extensions), `read` reads it back.

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
    """Provenance: frames, kernel, pixfrac, scale, exposure time, ...; from the
    reference frame's file (`stack_frames`): ``wcs``, ``observation``, ``roworder``."""

    def write(self, path, *, overwrite=False, context=False, layout=None):
        """Write the stack as FITS, atomically.

        Two layouts:

        * ``"image"``: the stack is the file's one image, in the primary
          HDU: for colour one float32 ``(3, ny, nx)`` cube, its planes red,
          green and blue (``NAXIS3 = 3``), which Siril and PixInsight open
          as a colour image; for mono the 2-D image. The weights go to a
          file beside it, ``<stem>.weights.fits`` (`weights_file`): an empty
          primary HDU, then ``WHT`` (a cube of the same shape for colour)
          and, with ``context=True``, ``CTX`` (int32 ``(3, n, ny, nx)`` for
          colour, ``(n, ny, nx)`` for mono). Siril 1.4 takes a FITS file of
          more than one image for a sequence, and cannot open it;
        * ``"extensions"``: an empty primary HDU, then one image extension
          per channel (``SCI``, or ``RED``, ``GREEN`` and ``BLUE``), their
          weights (``WHT``, or ``RED_WHT``, ...) and their contexts
          (``CTX``, or ``RED_CTX``, ...), all in one file.

        The default is ``"image"`` for a colour stack, as Siril and
        PixInsight users expect, and ``"extensions"`` for a mono one. The
        stack's provenance (kernel, pixfrac, scale, exposure, ``NFRAMES``,
        ...) is in the primary header; the frames, one row each, in the
        binary table ``FRAMES``, last: ``frame``, ``map``, ``kernel``,
        ``used``, ``weight``, ``flux_scale``, ``scale_source``, ``sky``,
        ``sky_offset`` (per channel in a colour stack) and ``rejected``.
        `read` reads every layout back.

        What ``meta`` tells of the reference frame goes with them: its
        observation's cards (``meta["observation"]``) in HDU 0, the WCS of
        the grid (``meta["wcs"]``) on every image, weight and context. The
        images are written bottom-up, as the FITS convention, DS9 and Siril
        have them (``ROWORDER = 'BOTTOM-UP'``): a stack of top-down frames
        (``meta["roworder"]``, raw files) upside down, and its WCS with it.

        Parameters
        ----------
        path : str or path-like
            Output FITS file.
        overwrite : bool, optional
            Replace existing files (the stack, and its weights file in the
            image layout). The default is `False`.
        context : bool, optional
            Also write the context arrays. The default is `False`.
        layout : {"image", "extensions"} or `None`, optional
            How the stack is written (see above). The default, `None`, is
            ``"image"`` for colour and ``"extensions"`` for mono.

        Raises
        ------
        FileExistsError
            If a file to write exists and ``overwrite`` is `False`; then
            nothing is written.
        ValueError
            If ``context`` is asked for and the stack has none, or
            ``layout`` is unknown.

        Examples
        --------
        >>> import numpy as np
        >>> from astropy.io import fits
        >>> from astro_offsets import Stacker
        >>> with Stacker((20, 30), bayer=True) as stacker:
        ...     stacker.add(np.ones((3, 20, 30), dtype=np.float32))
        ...     stack = stacker.stack()
        ...     stack.write("colour.fits")
        >>> with fits.open("colour.fits") as hdul:
        ...     [hdu.name for hdu in hdul], hdul[0].shape
        (['PRIMARY', 'FRAMES'], (3, 20, 30))
        >>> with fits.open("colour.weights.fits") as hdul:
        ...     [hdu.name for hdu in hdul], hdul["WHT"].shape
        (['PRIMARY', 'WHT'], (3, 20, 30))
        """
        layout = self._layout(layout)
        if context and self.contexts is None:
            raise ValueError("this stack was made without context arrays")
        header = provenance_header("stack", _cards(self.meta))
        kinds = ["image", "weight", "context"] if context else ["image", "weight"]
        frames = _frames_hdu(self.meta, len(self.channels))
        if layout == "extensions":
            parts = [(fits.PrimaryHDU(header=header), [])]
            parts += [
                (
                    _image_hdu(array.shape, kind, self.meta, _extname(name, kind)),
                    [_as_written(array, self.meta)],
                )
                for kind in kinds
                for name, array in self._arrays(kind).items()
            ]
            with atomic_path(path, overwrite=overwrite) as tmp:
                _write_planes(tmp, parts, frames)
            return
        # One image per kind, a colour stack's a cube of its channels: the
        # stack's in the primary HDU, where programs of photographs look for
        # a picture, and alone in its file.
        cards = [("STACK", os.path.basename(os.fspath(path)), "the stack these are the weights of")]
        weights = [(fits.PrimaryHDU(header=provenance_header("stack weights", cards)), [])]
        weights += [self._one_image(kind, _SUFFIXES[kind]) for kind in kinds[1:]]
        # Both files checked before either is written; the weights land
        # first (the inner block ends first), so that no stack is without.
        with (
            atomic_path(path, overwrite=overwrite) as tmp,
            atomic_path(weights_path(path), overwrite=overwrite) as tmp_weights,
        ):
            _write_planes(tmp_weights, weights)
            _write_planes(tmp, [self._one_image("image", header=header)], frames)

    def weights_file(self, path, layout=None):
        """Return the file of the weights that `write` writes beside ``path``, or `None`.

        ``<stem>.weights.fits`` in the image layout (``layout``, or the
        stack's default: the image layout for colour); `None` in the
        extensions layout, which keeps them in the stack's file.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import Stacker
        >>> with Stacker((20, 30)) as stacker:
        ...     stacker.add(np.ones((20, 30), dtype=np.float32))
        ...     mono = stacker.stack()
        >>> mono.weights_file("stack.fits"), mono.weights_file("stack.fits", layout="image")
        (None, 'stack.weights.fits')
        """
        return weights_path(path) if self._layout(layout) == "image" else None

    def _layout(self, layout):
        """Return ``layout``, or, for `None`, the default of the stack's channels."""
        if layout is None:
            return "extensions" if self.channels == MONO else "image"
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
        return layout

    def _arrays(self, kind):
        return {"image": self.images, "weight": self.weights, "context": self.contexts}[kind]

    def _one_image(self, kind, name=None, header=None):
        """Return ``(hdu, planes)`` of a ``kind`` as one image: mono's array, colour's cube."""
        arrays = self._arrays(kind)
        planes = [_as_written(arrays[channel], self.meta) for channel in self.channels]
        shape = (len(planes), *planes[0].shape) if len(planes) > 1 else planes[0].shape
        return _image_hdu(shape, kind, self.meta, name, header), planes

    @classmethod
    def read(cls, path):
        """Read a stack that `write` wrote, in either layout.

        The image layout (the stack in the primary HDU: a 3-plane cube, or
        a mono image) takes its weights and contexts from its weights file
        beside it (`weights_file`), or from its own ``WHT`` and ``CTX``
        where it has them, as the cubes of earlier versions did; the
        extensions layout from its extensions (``SCI``, or ``RED``,
        ``GREEN`` and ``BLUE``, their ``WHT`` and ``CTX``). ``meta`` is
        restored from the primary header and the ``FRAMES`` table (or, in
        files written before that table, the frame and map cards
        ``FRMnnnnn`` and ``MAPnnnnn``).

        Parameters
        ----------
        path : str or path-like
            A stack's FITS file.

        Returns
        -------
        `Stack`
            Its arrays in memory, native float32 (int32 contexts).

        Raises
        ------
        ValueError
            If the file holds no stack, or its weights are missing (such as
            the weights file of the image layout).

        Examples
        --------
        >>> import numpy as np
        >>> from astro_offsets import Stack, Stacker
        >>> with Stacker((20, 30), bayer=True) as stacker:
        ...     stacker.add(np.ones((3, 20, 30), dtype=np.float32), name="light1.fits")
        ...     stacker.stack().write("stack.fits", layout="extensions")
        >>> stack = Stack.read("stack.fits")
        >>> stack.channels, stack.images["RED"].shape, stack.meta["frames"]
        (('RED', 'GREEN', 'BLUE'), (20, 30), ['light1.fits'])
        """
        with fits.open(path) as hdul:
            layout, channels = _layout_of(hdul, path)
            arrays = _read_arrays(hdul, layout, channels)
            if layout == "image" and "weight" not in arrays:
                arrays.update(_read_weights_file(path, channels, hdul[0].shape))
            if "weight" not in arrays:
                weights = _extname(channels[0], "weight")
                raise ValueError(f"{path}: a stack without its weights ({weights})")
            image = hdul["PRIMARY" if layout == "image" else _extname(channels[0], "image")]
            table = Table.read(hdul["FRAMES"], mask_invalid=False) if "FRAMES" in hdul else None
            meta = _meta(hdul[0].header, table, image.header)
        # Back in the rows' order of the frames (written bottom-up).
        arrays = {
            kind: {name: _as_written(array, meta) for name, array in by_channel.items()}
            for kind, by_channel in arrays.items()
        }
        return cls(channels, arrays["image"], arrays["weight"], arrays.get("context"), meta)

    def preview(self, *, max_pixels=4_000_000):
        """Return a display image: asinh-stretched grey, or Lupton RGB for colour.

        Large stacks are binned (block means) to at most ``max_pixels``: a
        preview is for looking, and binning keeps its memory small. A pixel
        that one colour's drops missed (Bayer stacks leave such holes at the
        edges, where a colour's pixels alternate) takes that colour from its
        neighbours; pixels no frame reached are black. Colour previews show
        the sky as a dark neutral grey, about 30 of 255: each channel's sky
        level is taken out and one common level, 2.5 times the noisiest
        channel's noise, put back, so that the sky's noise is not clipped
        into a colour cast. The channels are balanced on the stars, as a
        camera's raw colours are not: each is scaled so that the median star
        (at the peaks of green) is white.

        Parameters
        ----------
        max_pixels : int, optional
            Largest preview, in pixels. The default is 4 million.

        Returns
        -------
        `~numpy.ndarray`
            uint8, ``(ny, nx)`` for mono, ``(ny, nx, 3)`` for colour, the
            picture's top row first, as DS9 and Siril show the stack's FITS
            file: the stack's row 0 unless its ``meta["roworder"]`` is
            ``"BOTTOM-UP"`` (a stack of FITS frames), whose row 0 is the
            bottom.
        """
        from astropy.visualization import AsinhStretch, PercentileInterval, make_lupton_rgb

        ny, nx = self.images[self.channels[0]].shape
        factor = max(1, math.ceil(math.sqrt(ny * nx / max_pixels)))
        images = [_fill_holes(_binned(self.images[name], factor)) for name in self.channels]
        if self.meta.get("roworder") == "BOTTOM-UP":
            images = [image[::-1] for image in images]  # the top row first, as DS9 shows it
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
        # Each channel's sky out; the channels balanced on the stars (their
        # bright end matched to green's); one level for all put back, so that
        # the sky is grey and its noise above black; one stretch for all
        # channels, so that colours stay true, which puts the sky at the same
        # display level whatever the stars.
        skies = [sigma_clipped_stats(image[covered], sigma=3.0)[1:] for image in images]
        above = [image - sky for image, (sky, _) in zip(images, skies, strict=True)]
        gains = _star_balance(above, skies[1][1], covered)
        level = _SKY_LEVEL * max(g * noise for g, (_, noise) in zip(gains, skies, strict=True))
        # Saturated star cores stay white: no balanced channel goes above
        # where the first of them tops out.
        ceiling = min(g * float(a[covered].max()) for g, a in zip(gains, above, strict=True))
        images = [
            np.where(covered, np.minimum(g * image, ceiling) + level, 0.0)
            for g, image in zip(gains, above, strict=True)
        ]
        stretch = _Q * max(level, 1e-30) / math.sinh(_Q * _SKY_DISPLAY)
        # Lupton's stretch divides by the mean intensity, 0 where nothing fell.
        with np.errstate(invalid="ignore", divide="ignore"):
            return make_lupton_rgb(*images, minimum=0.0, stretch=stretch, Q=_Q)

    def write_preview(self, path, *, overwrite=False):
        """Write `preview` as a PNG file, atomically.

        Parameters
        ----------
        path : str or path-like
            Output PNG file.
        overwrite : bool, optional
            Replace an existing file. The default is `False`.
        """
        from PIL import Image, PngImagePlugin

        image = self.preview()
        text = PngImagePlugin.PngInfo()
        for key, value in png_metadata("stack preview").items():
            text.add_text(key, value)
        with atomic_path(path, overwrite=overwrite) as tmp:
            # Pillow writes the grey or RGB bytes as they are: through
            # matplotlib, a grey 10-Mpix stack became RGBA, twice the file,
            # and took 1.2 s to write instead of 0.1 s.
            Image.fromarray(image).save(tmp, format="PNG", pnginfo=text, compress_level=1)


def _star_balance(above, noise, covered):
    """Return each channel's gain that makes the median star white, green's being 1.

    ``above`` are the channels above their sky, ``noise`` green's sky noise.
    The stars are green's local peaks well above the sky and below every
    channel's saturation; with fewer than three, the channels are left as
    they are.
    """
    green = np.where(covered, above[1], 0.0)
    peaks = (green == maximum_filter(green, size=5)) & (green > _STAR_PEAK * noise)
    # Saturated cores, flat tops at a channel's maximum, tell the sensor's
    # limit, not the star's colour: a channel with such a plateau has no say
    # near its top.
    for channel in above:
        top = 0.98 * float(channel[covered].max())
        if np.count_nonzero(channel[covered] >= top) >= _PLATEAU:
            peaks &= channel < top
    if np.count_nonzero(peaks) < _STARS:
        return [1.0] * len(above)
    gains = []
    for channel in above:
        values = channel[peaks]
        ratio = green[peaks][values > 0] / values[values > 0]
        gains.append(float(np.median(ratio)) if ratio.size >= _STARS else 1.0)
    return gains


def _binned(image, factor):
    """Block means of ``factor`` x ``factor`` pixels (edges cropped), NaN left out of them."""
    if factor == 1:
        return image
    from astropy.nddata import block_reduce  # as in frames.superpixels

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


def _extname(channel, kind):
    """Return the extension name of a channel's image, weight or context: ``RED_WHT``, ``WHT``."""
    suffix = _SUFFIXES[kind]
    if channel == "SCI":
        return suffix or "SCI"
    return f"{channel}_{suffix}" if suffix else channel


def _image_hdu(shape, kind, meta, name=None, header=None):
    """Return an image HDU of a stack file, its header alone: `_write_planes` writes the data.

    The primary HDU (with ``header``) if ``name`` is `None`, else an image
    extension, for an array of ``shape`` of the ``kind``'s type. Every
    image, weight and context HDU of a stack file, in every layout, is made
    here: cards that belong on each of them go here.
    """
    # A view of one zero: the header of the whole shape, no array allocated.
    data = np.broadcast_to(np.zeros((), _DTYPES[kind]), shape)
    hdu = fits.PrimaryHDU(data, header=header) if name is None else fits.ImageHDU(data, name=name)
    hdu.header.extend(_grid_cards(meta, shape[-2:]), update=True)
    if kind == "image":
        if meta.get("unit"):
            hdu.header["BUNIT"] = (meta["unit"], "drizzled intensity")
        if len(shape) == 3:
            hdu.header["COMMENT"] = "Planes 1, 2, 3: red, green, blue."
        hdu.header["COMMENT"] = "Frame units per second of exposure; NaN where WHT is 0."
    return hdu


def _write_planes(tmp, parts, table=None):
    """Write a stack's file to ``tmp``: each HDU's header then its planes, one at a time; a table.

    ``parts`` are ``(hdu, planes)``: a cube is written plane by plane, a
    few rows at a time, never whole in memory (`numpy.stack` of a 24-Mpix
    colour stack's images and weights would take 0.6 GB more, and seconds).
    """
    for hdu, planes in parts:
        stream = fits.StreamingHDU(tmp, hdu.header)
        try:
            for plane in planes:
                rows = np.asarray(plane).reshape(-1, plane.shape[-1])
                step = max(1, _CHUNK // rows.shape[1])
                for start in range(0, len(rows), step):
                    # Big-endian, as FITS is, a few rows at a time.
                    stream.write(rows[start : start + step].astype(hdu.data.dtype, copy=False))
        finally:
            stream.close()
    if table is not None:
        with fits.open(tmp, mode="append") as hdul:
            hdul.append(table)


def _frames_hdu(meta, n_channels):
    """Return the ``FRAMES`` table of a stack file: one row per frame stacked."""
    n = len(meta["frames"])
    norms = meta.get("normalisation") or [None] * n
    none = Normalisation(math.nan, (math.nan,) * n_channels, "", (math.nan,) * n_channels)
    norms = [none if norm is None else norm for norm in norms]
    by_channel = (n, n_channels) if n_channels > 1 else (n,)
    columns = {
        # UTF-8: a path of "Nächte/" too (FITS tables' strings are bytes).
        "frame": _utf8(meta["frames"]),
        "map": _utf8([name or "" for name in meta["maps"]]),
        "kernel": np.array(meta.get("kernels") or [""] * n, dtype=str),
        "used": np.ones(n, bool),
        "weight": _floats(meta.get("weights"), n),
        "flux_scale": np.array([norm.scale for norm in norms], float),
        "scale_source": np.array([norm.source for norm in norms], dtype=str),
        "sky": np.array([norm.sky for norm in norms], float).reshape(by_channel),
        "sky_offset": np.array([norm.offsets for norm in norms], float).reshape(by_channel),
        "rejected": _floats(meta.get("masked"), n),
    }
    hdu = fits.table_to_hdu(Table(columns))
    hdu.name = "FRAMES"
    for number, name in enumerate(columns, start=1):
        hdu.header.comments[f"TTYPE{number}"] = FRAME_COLUMNS[name]
    return hdu


def _utf8(texts):
    return np.char.encode(np.array(texts, dtype=str), "utf-8")


def _floats(values, n):
    """Return per-frame values as floats, NaN where `None` (all NaN if ``values`` is `None`)."""
    values = values or [None] * n
    return np.array([math.nan if value is None else value for value in values], float)


def _layout_of(hdul, path):
    """Return the layout of a stack's file and its channels: ``("extensions", MONO)``, ...

    The image layout is a 3-plane cube in the primary HDU, or a 2-D image
    there that says it is a stack (``PRODUCT = 'stack'``).
    """
    header = hdul[0].header
    if "SCI" in hdul:
        return "extensions", MONO
    if "RED" in hdul:
        return "extensions", RGB
    if header.get("NAXIS") == 3 and header.get("NAXIS3") == 3:
        return "image", RGB
    if header.get("NAXIS") == 2 and header.get("PRODUCT") == "stack":
        return "image", MONO
    raise ValueError(
        f"{path}: not a stack: no SCI or RED extension, nor a stack's image in the primary "
        "HDU (a 3-plane cube, or PRODUCT = 'stack')"
    )


def _read_arrays(hdul, layout, channels, kinds=ARRAY_KINDS):
    """Return the arrays of the ``kinds`` that ``hdul`` holds: ``{kind: {channel: array}}``.

    In the image layout, the image is the primary HDU and the others are
    ``WHT`` and ``CTX`` (in the weights file, or, as written before it, in
    the stack's own file); a colour stack's are cubes of its channels.
    """
    arrays = {}
    for kind in kinds:
        dtype = _DTYPES[kind]
        if layout == "image":
            name = _SUFFIXES[kind] or "PRIMARY"
            if name in hdul:
                data = hdul[name].data.astype(dtype)
                planes = data if len(channels) > 1 else [data]
                arrays[kind] = dict(zip(channels, planes, strict=True))
        elif _extname(channels[0], kind) in hdul:
            arrays[kind] = {
                name: hdul[_extname(name, kind)].data.astype(dtype) for name in channels
            }
    return arrays


def _read_weights_file(path, channels, shape):
    """Return the weights and contexts of a stack written as one image (of ``shape``), beside it."""
    sidecar = weights_path(path)
    if not os.path.isfile(sidecar):
        raise ValueError(
            f"{path}: its weights file {sidecar} is missing (a stack written as one image "
            "keeps its weights there)"
        )
    with fits.open(sidecar) as hdul:
        found = hdul["WHT"].shape if "WHT" in hdul else None
        if found != shape:
            what = "no WHT image" if found is None else f"WHT of shape {found}"
            raise ValueError(f"{sidecar}: {what}: not the weights of {path}, an image of {shape}")
        return _read_arrays(hdul, "image", channels, ("weight", "context"))


def _meta(header, table, image_header):
    """Return a stack's ``meta``: from its primary header, ``FRAMES`` table (or `None`), image."""
    meta = {key: header[card] for key, (card, _) in _CARDS.items() if card in header}
    meta["unit"] = image_header.get("BUNIT")
    meta["roworder"] = header.get(_REFERENCE_ROWS)
    meta["observation"] = observation_cards(header)
    meta["wcs"] = _read_wcs(image_header, meta["roworder"])
    if table is None:
        # Written before the FRAMES table: the frames and maps in cards of their own.
        frames = sorted(key for key in header if re.fullmatch(r"FRM\d{5}", key))
        maps = [header.get(f"MAP{key[3:]}") for key in frames]
        meta["frames"] = [header[key] for key in frames]
        meta["maps"] = [None if name == "(reference)" else name for name in maps]
        meta["kernels"] = []
        return meta
    meta["frames"] = [_text(frame) for frame in table["frame"]]
    meta["maps"] = [_text(name) or None for name in table["map"]]
    meta["kernels"] = [str(kernel) for kernel in table["kernel"]]
    if "normalised" in meta:
        meta["normalisation"] = [
            Normalisation(
                float(row["flux_scale"]),
                _channel_values(row["sky_offset"]),
                str(row["scale_source"]),
                _channel_values(row["sky"]),
            )
            if row["scale_source"]
            else None
            for row in table
        ]
    if "rejected" in meta:
        meta["masked"] = [_value(value) for value in table["rejected"]]
    if "weighting" in meta:
        meta["weights"] = [_value(value) for value in table["weight"]]
    return meta


def _text(value):
    """Return a FRAMES table's string (UTF-8 bytes, or text as astropy decoded it)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _channel_values(value):
    return tuple(float(v) for v in np.atleast_1d(value))


def _value(value):
    """Return a table's float as a float, or `None` where NaN."""
    return None if math.isnan(value) else float(value)


def _grid_cards(meta, shape):
    """Yield the cards of the stack's images of ``shape`` as written: their rows' order, WCS.

    Not for an HDU without data, where astropy reads a WCS with a warning.
    """
    yield from _roworder_card(meta)
    wcs = meta.get("wcs")
    if wcs is not None:
        if meta.get("roworder") == "TOP-DOWN":
            wcs = flipped_wcs(wcs, shape)  # as the rows are written
        for card in wcs.to_header(relax=True).cards:
            yield card.keyword, card.value, card.comment


def _roworder_card(meta):
    if meta.get("roworder"):
        yield "ROWORDER", "BOTTOM-UP", "the first row is the bottom of the picture"


# The reference frame's rows' order, in the primary header: TOP-DOWN says
# that the file is upside down against the frames' (and `Stack`'s) arrays.
_REFERENCE_ROWS = "REFROWS"


def _as_written(array, meta):
    """Return a stack's ``array`` (image, weight or context) in its file's rows' order, or back."""
    return array[..., ::-1, :] if meta.get("roworder") == "TOP-DOWN" else array


def _read_wcs(header, roworder):
    """Return the celestial WCS of a stack's arrays from its image's ``header``, or `None`."""
    wcs, _ = celestial_wcs(header)  # a cube's: its third axis, the colours, dropped
    if wcs is None:
        return None
    shape = (header["NAXIS2"], header["NAXIS1"])
    return flipped_wcs(wcs, shape) if roworder == "TOP-DOWN" else wcs


def _cards(meta):
    """Yield the stack's provenance cards: the observation's, its rows' order, then its own.

    Its frames are in the ``FRAMES`` table.
    """
    yield from meta.get("observation") or ()
    yield from _roworder_card(meta)
    if meta.get("roworder"):
        yield _REFERENCE_ROWS, meta["roworder"], "reference's rows; TOP-DOWN: file upside down"
    kernels = meta.get("kernels") or []
    used = ", ".join(f"{kernels.count(k)} {k}" for k in dict.fromkeys(kernels))
    for key, (card, comment) in _CARDS.items():
        if key == "kernel" and meta.get(key) == "auto" and used:
            comment = f"{comment}; frames: {used}"
        if key in meta:
            yield card, meta[key], comment
        if key == "total_exptime":
            yield "NFRAMES", len(meta["frames"]), "frames stacked (see the FRAMES table)"
