"""The stack: drizzled images, weights and contexts by channel; its FITS file and preview."""

import math
import warnings
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from scipy.ndimage import maximum_filter, uniform_filter

from .._utils.atomic import atomic_path
from .._utils.provenance import png_metadata, provenance_header, write_product
from ._header import flipped_wcs

__all__ = ["Stack"]

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
    """Provenance: frames, kernel, pixfrac, scale, exposure time, ...; from the
    reference frame's file (`stack_frames`): ``wcs``, ``observation``, ``roworder``."""

    def write(self, path, *, overwrite=False, context=False):
        """Write the stack as FITS, atomically.

        HDU 0 holds the provenance; then one image extension per channel
        (``SCI``, or ``RED``, ``GREEN``, ``BLUE``) followed by their weights
        (``WHT``, or ``RED_WHT``, ...), and with ``context=True`` their
        contexts (``CTX``, or ``RED_CTX``, ...).

        What ``meta`` tells of the reference frame goes with them: its
        observation's cards (``meta["observation"]``) in HDU 0, the WCS of
        the grid (``meta["wcs"]``) on every image. The images are written
        bottom-up, as the FITS convention, DS9 and Siril have them
        (``ROWORDER = 'BOTTOM-UP'``): a stack of top-down frames
        (``meta["roworder"]``, raw files) upside down, and its WCS with it.

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
        hdus = [fits.PrimaryHDU(header=provenance_header("stack", _cards(self.meta)))]
        # Bottom-up, as FITS, DS9 and Siril have it: a stack of top-down
        # frames (raw files) is written upside down, as Siril converts them.
        rows = slice(None, None, -1) if self.meta.get("roworder") == "TOP-DOWN" else slice(None)
        grid = fits.Header(list(_grid_cards(self.meta, self.images[self.channels[0]].shape)))
        for name in self.channels:
            hdu = fits.ImageHDU(self.images[name][rows], header=grid, name=name)
            if self.meta["unit"]:
                hdu.header["BUNIT"] = (self.meta["unit"], "drizzled intensity")
            hdu.header["COMMENT"] = "Frame units per second of exposure; NaN where WHT is 0."
            hdus.append(hdu)
        for name in self.channels:
            weight = self.weights[name][rows]
            hdus.append(fits.ImageHDU(weight, header=grid, name=_suffixed(name, "WHT")))
        if context:
            for name in self.channels:
                bits = self.contexts[name][..., rows, :]
                hdus.append(fits.ImageHDU(bits, header=grid, name=_suffixed(name, "CTX")))
        write_product(path, hdus, overwrite=overwrite)

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


def _suffixed(name, suffix):
    return suffix if name == "SCI" else f"{name}_{suffix}"


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


def _cards(meta):
    """Yield the stack's provenance cards: the observation's, its rows' order, then its own."""
    yield from meta.get("observation") or ()
    yield from _roworder_card(meta)
    kernels = meta.get("kernels") or []
    used = ", ".join(f"{kernels.count(k)} {k}" for k in dict.fromkeys(kernels))
    auto = meta["kernel"] == "auto" and used
    yield "KERNEL", meta["kernel"], f"drizzle kernel; frames: {used}" if auto else "drizzle kernel"
    yield "PIXFRAC", meta["pixfrac"], "drop size, fraction of an input pixel"
    yield "SCALE", meta["scale"], "output pixels per input pixel, per axis"
    yield "EXPWGHT", meta["exposure_weighting"], "frames weighted by exposure time"
    yield "TEXPTIME", meta["total_exptime"], "total exposure time of the frames (s)"
    yield "NFRAMES", len(meta["frames"]), "frames stacked"
    if "normalized" in meta:
        yield "NORMLZD", meta["normalized"], "frames normalised to the reference"
    if "rejected" in meta:
        yield "REJECT", meta["rejected"], "outliers rejected"
    if "weighting" in meta:
        yield "WEIGHTS", meta["weighting"], "frame weights: noise or none (exposure)"
    norms = meta.get("normalisation") or [None] * len(meta["frames"])
    masked = meta.get("masked") or [None] * len(meta["frames"])
    weights = meta.get("weights") or [None] * len(meta["frames"])
    # FRMnnnnn and MAPnnnnn fit FITS's 8-character keywords up to 99999 frames.
    for index, (frame, omap) in enumerate(zip(meta["frames"], meta["maps"], strict=True)):
        number = f"{index + 1:05d}"
        yield f"FRM{number}", frame, ""
        yield f"MAP{number}", omap or "(reference)", ""
        norm = norms[index]
        if norm is not None and meta.get("normalized"):
            yield f"FSC{number}", round(norm.scale, 6), f"flux scale ({norm.source})"
            offsets = " ".join(f"{offset:.6g}" for offset in norm.offsets)
            # Short: three offsets of 12 characters leave 27 for the comment.
            yield f"SKO{number}", offsets, "sky offset per channel"
        if masked[index] is not None:
            yield f"REJ{number}", round(masked[index], 6), "fraction of pixels rejected"
        if weights[index] is not None:
            yield f"WGT{number}", float(f"{weights[index]:.6g}"), "weight, the reference's 1"
