"""One frame's way through a run: read once, its stars, its table, its field, its map."""

import copy
import os
from typing import NamedTuple

import numpy as np
from astropy.io import fits

from .._utils.batch import describe
from .._utils.naming import map_path, table_path
from .._utils.unreadable import UNREADABLE_FITS
from ..field import make_map
from ..field._write_maps import choice_of, read_model, write_map
from ..frames import hot_pixels
from ..stack._quality import map_measures
from ..stack._run import Frames
from ..stars._make_tables import (
    frame_table,
    reference_stars,
    stars_image,
    table_header,
    write_table,
)

__all__ = ["Made", "StreamFrames"]


class Made(NamedTuple):
    """What a run made of a frame besides the frame stacked: its table, field and map's record."""

    model: object
    """The `OffsetModel` of its map (made again for the second pass)."""
    table: str
    """Its star table's file, as named in messages."""
    counts: dict
    """Stars ``detected``, ``matched`` and ``outside`` the reference (`make_tables`)."""
    field: str
    """Its map's field in words (`OffsetMap.field_summary`)."""
    notes: tuple
    """The warnings of making its field and map, one line each."""
    measures: tuple
    """Its map's measures, the frame's and the reference's (`map_measures`)."""


class StreamFrames(Frames):
    """How a run reads its frames: each once, its stars and map made on the way.

    The `Frames` of a stack, whose frames have no map files: reading a
    frame (`read`) finds its stars, matches them to the reference's,
    writes its star table, fits its field and makes its map in memory,
    then prepares the frame for the stack with the same hot pixels. The
    reference frame, read first, gives the reference's stars. What each
    frame made (`Made`) is kept in ``made``, by the frame's index; a frame
    whose field is known (``made``) is read without its stars again, its
    map made from its model. Picklable: worker processes read frames with
    a copy made once the reference is read, and send back what they made.

    Parameters
    ----------
    calibration, mask_hot_pixels, normalize, weighting
        As for `Frames`.
    reference : str
        The reference frame's absolute path (the tables' ``REFPATH``, and
        ``REFFRAME`` its name).
    stars : dict
        The options of `frame_table`: ``fwhm``, ``threshold``, ``min_snr``,
        ``flagged``.
    field : dict
        The options of `OffsetModel` (``method``, ``trend``, ...).
    choose : {"sequence", "frame"}
        With ``method="auto"``: choose the field on the first frame whose
        stars can cross-validate it, and re-check that choice on each other
        frame (``choice``, a `SequenceChoice`, once made), as `write_maps`
        does; or on every frame.
    tables, maps : str or `None`
        Where the tables go (`None`: beside each frame), and the maps, which
        are written only if ``maps`` is given (`True`: beside each frame);
        absolute, as the workers may run in another directory.
    sip : bool, optional
        Write each map's SIP polynomials beside it too (``write_map``'s ``sip``).
    compress_maps : bool, optional
        Whether the maps are as `write_maps` writes them by default,
        tile-compressed (see `write_map`): rounded to 2**-9 px
        (`OffsetMap.quantised`) for the stack too, written or not.
    made : dict or `None`, optional
        Where to keep what the frames made (``made``), shared with the
        caller; a new dict by default.
    """

    def __init__(
        self,
        calibration,
        mask_hot_pixels,
        normalize,
        weighting,
        *,
        reference,
        stars,
        field,
        choose="sequence",
        tables=None,
        maps=None,
        sip=False,
        compress_maps=True,
        made=None,
    ):
        super().__init__(calibration, mask_hot_pixels, normalize, weighting)
        self.choose = choose == "sequence" and field.get("method") == "auto"
        self.choice = None
        self.reference_name = reference
        self.stars = dict(stars)
        self.field = dict(field)
        self.tables = tables
        self.maps = maps
        self.sip = sip
        self.compress_maps = compress_maps
        self.reference_stars = None
        self.made = {} if made is None else made

    def read(self, item):
        """Read a frame; make its stars, table and map on the way if not known; prepare it."""
        raw = self.read_raw(item.frame_file)
        made = self.made.get(item.index)
        if item.map_file is None or made is not None:
            omap = None if item.map_file is None else self.offset_map(item)
            if item.map_file is None and self.reference_stars is None:
                return self._reference(item, raw)
            return self.prepare(raw, omap, item.omap_path)
        # A frame that cannot be stacked (its size, its colours) has no table.
        self._check(np.asarray(raw.data), raw.colors)
        raw, image, hot = _image(raw)
        # A frame without a table raises FrameError (a ValueError), its problem in one line.
        found = frame_table(item.frame, image, self.reference_stars, self.stars, item.frame_file)
        del image
        output = table_path(item.frame_file, self.tables)
        _ours(output, "star table", 1)
        header = table_header(item.frame, self.reference_name, found, self.stars)
        try:
            write_table(output, found[0], header, overwrite=True)
        except OSError as exc:
            raise OSError(describe(output, exc)) from exc
        omap = self._field(item, output, found[2], raw.data.shape[-2:])
        return self.prepare(raw, omap, item.omap_path, hot)

    def _reference(self, item, raw):
        """Read the reference frame: its stars, then the frame prepared for the stack."""
        raw, image, hot = _image(raw)
        stars = self.stars
        self.reference_stars = reference_stars(item.frame, image, stars["fwhm"], stars["threshold"])
        return self.prepare(raw, None, None, hot)

    def _field(self, item, table, counts, shape):
        """Fit a frame's field to its star table and make its map; keep what it made."""
        model, notes = read_model(table, self.field, choice=self.choice)
        if self.choosing:
            self.choice = choice_of(model)
        omap, more, model = make_map(model, shape, n_jobs=1)
        self._as_written(omap)
        if self.maps is not None:
            output = map_path(item.frame_file, None if self.maps is True else self.maps)
            _ours(output, "offset map", 0)
            more += write_map(omap, output, True, False, sip=self.sip, compress=self.compress_maps)
        summary, measures = omap.field_summary, map_measures(omap)
        self.made[item.index] = Made(model, table, counts, summary, notes + more, measures)
        return omap

    def field_from_table(self, item):
        """Make a frame's field again from the star table this run wrote; return what it made.

        For the frames that an interrupted run kept (its checkpoint): their
        stars were found then.
        """
        table = table_path(item.frame_file, self.tables)
        try:
            header = fits.getheader(table, 1)
            counts = {"detected": header.get("NDETECT"), "matched": header.get("NMATCH")}
            self._field(item, table, counts, self.shape)
        except Exception as exc:  # any, the frame's own (describe raises MemoryError again)
            raise ValueError(
                f"{describe(table, exc)}: the interrupted run's star table of the frame, which "
                "resuming needs; delete the checkpoint to start again"
            ) from exc
        return self.made[item.index]

    @property
    def choosing(self):
        """Whether the next frame's field makes the sequence's choice (not made yet)."""
        return self.choose and self.choice is None

    def offset_map(self, item, out=None):
        """Return a frame's map, made again from its model (into ``out``); `None`: the reference."""
        made = self.made.get(item.index)
        if made is None:
            if item.map_file is None:
                return None
            raise ValueError(f"{item.frame}: no field made for it in this run")
        return self._as_written(made.model.to_map(self.shape, n_jobs=1, out=out))

    def _as_written(self, omap):
        """Round a map in place as its compressed file would hold it (``compress_maps``).

        So the stack is the three commands' from the maps `write_maps` writes,
        bit for bit, whether this run writes them or not.
        """
        return omap.quantised(copy=False) if self.compress_maps else omap

    def for_workers(self):
        """Return the copy that worker processes read frames with: as this one, nothing made."""
        copied = copy.copy(self)
        copied.made = {}
        return copied

    def made_by(self, index, made):
        """Take what a worker made of frame ``index`` (its copy's ``made``)."""
        self.made[index] = made


def _image(raw):
    """Return a frame read as float32, the image to find its stars in, and its hot pixels.

    The frame's float32 array (one conversion) is what the stack prepares,
    in place. Mono frames and mosaics: one search for hot pixels, for the
    stars and for the stack. A colour cube's stars are in the mean of its
    planes, whose hot pixels are not the planes': the stack finds its own
    (`None`).
    """
    raw = raw._replace(data=np.asarray(raw.data, np.float32))
    if raw.data.ndim == 3:
        return raw, stars_image(raw)[0], None
    return raw, *stars_image(raw, hot_pixels(raw.data, raw.colors))


def _ours(path, product, hdu):
    """Raise `ValueError` if a file is at ``path`` that is no ``product`` of ours to replace."""
    if not os.path.lexists(path):
        return
    try:
        ours = fits.getheader(path, hdu).get("PRODUCT") == product
    except UNREADABLE_FITS:  # not FITS, or not of this shape: not ours
        ours = False
    if not ours:
        raise ValueError(
            f"{path}: exists and is no {product} of astro-offsets; move it, or write the "
            f"{product}s elsewhere"
        )
