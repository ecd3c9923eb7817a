"""The provenance of the files astro_offsets writes, and how they are recognised.

Every product (a star table, an offset map, a stack) is a FITS file whose
header starts with the same cards: ``CREATOR`` (the software and its
version), ``DATE`` and ``PRODUCT`` (what it is), then the product's own.
Reading them back tells our products from the frames beside them, so that a
user's ``light_*.fits`` can pick up ``light_001.offsets.fits`` without harm.
"""

import datetime
import os
import textwrap
import urllib.parse

from astropy.io import fits

from ..version import __version__
from .atomic import atomic_path
from .naming import MAP_SUFFIX, TABLE_ENDINGS, fits_root, is_fits_name
from .unreadable import UNREADABLE_FITS

__all__ = [
    "card_text",
    "text_of_card",
    "PRODUCTS",
    "named_raw",
    "not_an_input",
    "png_metadata",
    "product_kind",
    "provenance_cards",
    "provenance_header",
    "write_product",
]

# The kinds of file we write: the PRODUCT card of the FITS files, the
# description of the PNG pictures.
PRODUCTS = (
    "star table",
    "offset map",
    "SIP distortion",
    "stack",
    "stack weights",
    "map plot",
    "stack preview",
    "calibration master",
    "outlier mask",
    "frame report",
    "frame plot",
)
_PNG = b"\x89PNG\r\n\x1a\n"
# The names of camera raw files (LibRaw reads them all).
_RAW = frozenset(
    ".dng .arw .srf .sr2 .cr2 .cr3 .crw .nef .nrw .raf .orf .rw2 .rwl .pef .ptx .srw .3fr "  # noqa: SIM905
    ".fff .iiq .mos .erf .kdc .dcr .mrw .x3f .raw".split()
)
_CREATOR = "astro_offsets"


def provenance_cards(product):
    """Return the first cards of a product's header: ``(keyword, value, comment)``.

    Examples
    --------
    >>> from astro_offsets._utils.provenance import provenance_cards
    >>> [card[0] for card in provenance_cards("stack")]
    ['CREATOR', 'DATE', 'PRODUCT']
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; expected one of {PRODUCTS}")
    return [
        ("CREATOR", f"{_CREATOR} {__version__}", "software and version"),
        ("DATE", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "UTC"),
        ("PRODUCT", product, "what this file is"),
    ]


def provenance_header(product, cards=(), comments=()):
    """Return the header of a product: the provenance cards, then ``cards`` and ``comments``.

    Parameters
    ----------
    product : str
        One of `PRODUCTS`.
    cards : iterable of tuple, optional
        ``(keyword, value, comment)``; a `None` value is left out, and a long
        value (a path, a development version) goes without its comment, which
        would not fit on the card.
    comments : iterable of str, optional
        ``COMMENT`` lines.

    Examples
    --------
    >>> from astro_offsets._utils.provenance import provenance_header
    >>> header = provenance_header("stack", [("KERNEL", "square", "drizzle kernel")])
    >>> header["PRODUCT"], header["KERNEL"]
    ('stack', 'square')
    """
    header = fits.Header()
    for keyword, value, comment in (*provenance_cards(product), *cards):
        if value is not None:
            value = card_text(value) if isinstance(value, str) else value
            header[keyword] = (value, "" if len(str(value)) > 35 else comment)
    for line in comments:
        # Whole words on each card where they fit: astropy would cut a long
        # line every 72 characters, and readers drop a card's trailing space.
        for piece in textwrap.wrap(card_text(line), 72, break_on_hyphens=False) or [""]:
            header["COMMENT"] = piece
    return header


# FITS cards hold printable ASCII: other text (a path of "Nächte/", "Orión/")
# is written percent-encoded as UTF-8 behind this mark, as URLs are (RFC
# 3986), and `text_of_card` reads it back. No quote in the mark: a long
# value is continued over cards (CONTINUE), which astropy reassembles wrong
# around doubled quotes.
_ENCODED = "utf8:"


def card_text(text):
    """Return ``text`` as a FITS card can hold it: as it is if printable ASCII, else encoded.

    Examples
    --------
    >>> from astro_offsets._utils.provenance import card_text, text_of_card
    >>> card_text("light/DSC0001.fits"), card_text("Nächte/DSC0001.fits")
    ('light/DSC0001.fits', 'utf8:N%C3%A4chte/DSC0001.fits')
    >>> text_of_card(card_text("Nächte/DSC0001.fits"))
    'Nächte/DSC0001.fits'
    """
    if text.isascii() and text.isprintable() and not text.startswith(_ENCODED):
        return text
    return _ENCODED + urllib.parse.quote(text, safe="/:\\ ._-+,=@()[]{}~!$&*;")


def text_of_card(value):
    """Return the text a card's value holds (`card_text` undone); other values as they are."""
    if isinstance(value, str) and value.startswith(_ENCODED):
        return urllib.parse.unquote(value[len(_ENCODED) :])
    return value


def write_product(path, hdus, *, overwrite=False):
    """Write a product's HDUs as a FITS file, atomically (see `atomic_path`)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def png_metadata(product):
    """Return the text a PNG picture of ours carries: software and kind (see `product_kind`).

    Examples
    --------
    >>> from astro_offsets._utils.provenance import png_metadata
    >>> sorted(png_metadata("map plot"))
    ['Description', 'Software']
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; expected one of {PRODUCTS}")
    return {"Software": f"{_CREATOR} {__version__}", "Description": product}


def _png_text(path):
    """Return the text chunks of a PNG file's header (before its pixels), or `None`."""
    text = {}
    with open(path, "rb") as file:
        if file.read(8) != _PNG:
            return None
        while True:
            head = file.read(8)
            if len(head) < 8:
                return text
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"IDAT" or length > 1 << 20:
                return text
            data = file.read(length + 4)[:length]
            if kind == b"tEXt" and b"\0" in data:
                key, value = data.split(b"\0", 1)
                text[key.decode("latin-1")] = value.decode("latin-1")


def _kind_from_header(header):
    creator = str(header.get("CREATOR", ""))
    if not creator.startswith(_CREATOR):
        return None
    product = header.get("PRODUCT")
    return product if product in PRODUCTS else "file"


def _kind_from_name(name):
    name = name.lower()
    if name.endswith(".offsets.png"):
        return "map plot"
    if name.endswith(".frames.ecsv"):
        return "frame report"
    root = fits_root(name)
    if root is None:
        return None
    if root.endswith(MAP_SUFFIX.removesuffix(".fits")):
        return "offset map"
    if root.endswith(TABLE_ENDINGS):
        return "star table"
    return None


def product_kind(path):
    """Return what astro_offsets product ``path`` is, or `None` for any other file.

    A FITS file is ours when its primary header (or, for star tables, its
    first extension's) has a ``CREATOR`` card naming astro_offsets; its
    ``PRODUCT`` card says what it is. A PNG picture is ours when its
    ``Software`` text names astro_offsets; its ``Description`` says what it
    is. The names we give our products (``<stem>.offsets.fits``,
    ``<stem>.offsets_table.fits``, ``<stem>.offsets_table_clean.fits``,
    ``<stem>.offsets.png``, a stack's ``<stem>.frames.ecsv``) mark them
    too, also those written by the original notebooks. Files that do not
    exist, or that cannot be read, are not products: the reader of frames
    reports them.

    Returns
    -------
    str or `None`
        One of `PRODUCTS`, ``"file"`` (ours, of an unknown kind), or `None`.

    Examples
    --------
    >>> from astro_offsets._utils.provenance import product_kind
    >>> product_kind("light/DSC0002.offsets_table.fits"), product_kind("light/DSC0002.ARW")
    ('star table', None)
    """
    path = os.fspath(path)
    by_name = _kind_from_name(os.path.basename(path))
    if by_name is not None or not os.path.isfile(path):
        return by_name
    if path.lower().endswith(".png"):
        try:
            text = _png_text(path) or {}
        except OSError:
            return None
        if not text.get("Software", "").startswith(_CREATOR):
            return None
        return text["Description"] if text.get("Description") in PRODUCTS else "file"
    if not is_fits_name(path):
        return None
    try:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            kind = _kind_from_header(hdul[0].header)
            if kind is None and len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU):
                kind = _kind_from_header(hdul[1].header)
            return kind
    except UNREADABLE_FITS:  # a file astropy cannot read is no product of ours
        return None


def named_raw(path):
    """Return whether ``path`` is named as a camera raw file (one of LibRaw's suffixes).

    Examples
    --------
    >>> from astro_offsets._utils.provenance import named_raw
    >>> named_raw("light/DSC03770.ARW"), named_raw("light_001.fits")
    (True, False)
    """
    return os.path.splitext(os.fspath(path).lower())[1] in _RAW


def _frame_kind(path):
    """Return ``"FITS image"`` or ``"raw file"`` if ``path`` is a frame, else `None`.

    A FITS file with an image in its primary HDU (or, tile-compressed, in
    its first extension), or a file named as camera raw files are: no star
    table.
    """
    name = path.lower()
    if named_raw(name):
        return "raw file"
    if not is_fits_name(name):
        return None
    try:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            image = hdul[0]
            if image.header.get("NAXIS", 0) == 0 and len(hdul) > 1:
                image = hdul[1]
            if not isinstance(image, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                return None
            return "FITS image" if image.header.get("NAXIS", 0) >= 2 else None
    except UNREADABLE_FITS:  # not readable: the reader of tables reports it
        return None


def not_an_input(path, what, keep=()):
    """Return why ``path`` is left out of a run, or `None` if it is an input.

    Files that astro_offsets wrote are left out (those of the kinds in
    ``keep`` excepted), and, where star tables are wanted, FITS images: a
    user's ``light_*.fits`` holds the frames beside the tables.

    Parameters
    ----------
    path : str
        An input file, such as one of a user's ``light_*.fits``.
    what : str
        What the run takes, for the message: ``"frame"``, ``"star table"``.
    keep : tuple of str, optional
        Kinds of product that are inputs of this run (``"star table"`` for
        maps).

    Examples
    --------
    >>> from astro_offsets._utils.provenance import not_an_input
    >>> not_an_input("light/DSC0002.offsets.fits", "frame")
    'light/DSC0002.offsets.fits: an offset map written by astro_offsets, not a frame'
    """
    kind = product_kind(path)
    if kind is None:
        frame = _frame_kind(path) if what == "star table" else None
        if frame is not None:
            return f"{path}: a {frame} (a frame?), not a star table"
        return None
    if kind in keep:
        return None
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{path}: {article} {kind} written by astro_offsets, not a {what}"
