"""File names of a sequence: frame stems, star tables, maps and their pictures, a stack's files."""

import os

__all__ = [
    "FITS_SUFFIXES",
    "MAP_SUFFIX",
    "TABLE_ENDINGS",
    "checkpoint_path",
    "fits_root",
    "is_fits_name",
    "map_path",
    "mask_path",
    "png_path",
    "product_root",
    "sip_path",
    "stem",
    "table_path",
    "weights_path",
]

# FITS files by name: .fits, .fit or .fts, plain or gzip- or bzip2-compressed, and
# tile-compressed (fpack's .fz, also without a FITS suffix before it). The one list of
# them: the reader of frames, the product kinds and the stems all take it.
_FITS_BASES = (".fits", ".fit", ".fts")
_FITS_PACKINGS = (".gz", ".bz2", ".fz")
FITS_SUFFIXES = (
    *(base + packing for base in _FITS_BASES for packing in ("", *_FITS_PACKINGS)),
    ".fz",
)
_COMPRESSION = (*_FITS_PACKINGS, ".xz")
MAP_SUFFIX = ".offsets.fits"
# Star tables: ours, and the original notebook's cleaned ones.
TABLE_ENDINGS = (".offsets_table_clean", ".offsets_table")


def _unpacked(name):
    """Return ``name`` without one compression suffix (any case)."""
    for suffix in _COMPRESSION:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_fits_name(path):
    """Return whether ``path`` is named as a FITS file (one of `FITS_SUFFIXES`, any case).

    Examples
    --------
    >>> from astro_offsets._utils.naming import is_fits_name
    >>> is_fits_name("light/M31_001.FIT.bz2"), is_fits_name("x.fits.fz"), is_fits_name("x.ARW")
    (True, True, False)
    """
    return os.fspath(path).lower().endswith(FITS_SUFFIXES)


def fits_root(path):
    """Return ``path`` without its FITS suffix, or `None` if it is not named as a FITS file.

    Examples
    --------
    >>> from astro_offsets._utils.naming import fits_root
    >>> fits_root("maps/DSC01.offsets.fits.fz"), fits_root("M31.FIT.BZ2"), fits_root("x.png")
    ('maps/DSC01.offsets', 'M31', None)
    """
    path = os.fspath(path)
    if not is_fits_name(path):
        return None
    name = _unpacked(path)
    for base in _FITS_BASES:
        if name.lower().endswith(base):
            return name[: -len(base)]
    return name


def product_root(path):
    """Return a product's path without its FITS suffix (any of them), or its last extension.

    The files that go with a product are named from it: its picture, its
    checkpoint, its weights, its frame report.

    Examples
    --------
    >>> from astro_offsets._utils.naming import product_root
    >>> product_root("out/stack.fits.gz"), product_root("out/stack.fit"), product_root("a.png")
    ('out/stack', 'out/stack', 'a')
    """
    path = os.fspath(path)
    root = fits_root(path)
    return os.path.splitext(path)[0] if root is None else root


def stem(path):
    """Return the frame stem of a frame or star table file name.

    The file name without its last extension (and a compression suffix:
    ``.gz``, ``.bz2``, ``.xz`` or a tile-compressed FITS file's ``.fz``), and
    for a star table without its ``.offsets_table`` or
    ``.offsets_table_clean`` ending.

    Examples
    --------
    >>> from astro_offsets._utils.naming import stem
    >>> stem("light/DSC03770.ARW"), stem("DSC03770.offsets_table_clean.fits.gz")
    ('DSC03770', 'DSC03770')
    """
    name = _unpacked(os.path.basename(os.fspath(path)))
    root, _ = os.path.splitext(name)
    name = root or name
    for ending in TABLE_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name.removesuffix(ending)
    return name


def _beside(path, outdir, suffix):
    directory = os.path.dirname(os.fspath(path)) if outdir is None else os.fspath(outdir)
    return os.path.join(directory, f"{stem(path)}{suffix}")


def map_path(table_path, outdir=None):
    """Return the path of the map made from a star table, ``<stem>.offsets.fits``.

    It goes into ``outdir``, or beside the table when ``outdir`` is `None`.

    Examples
    --------
    >>> from astro_offsets._utils.naming import map_path
    >>> map_path("light/DSC03770.offsets_table.fits")
    'light/DSC03770.offsets.fits'
    """
    return _beside(table_path, outdir, MAP_SUFFIX)


def mask_path(frame_path, outdir=None):
    """Return the path of a frame's outlier mask, ``<stem>.outliers.fits``.

    Examples
    --------
    >>> from astro_offsets._utils.naming import mask_path
    >>> mask_path("light/DSC03770.ARW", "masks")
    'masks/DSC03770.outliers.fits'
    """
    return _beside(frame_path, outdir, ".outliers.fits")


def table_path(frame_path, outdir=None):
    """Return the path of the star table of a frame, ``<stem>.offsets_table.fits``.

    It goes into ``outdir``, or beside the frame when ``outdir`` is `None`.

    Examples
    --------
    >>> from astro_offsets._utils.naming import table_path
    >>> table_path("light/DSC03770.ARW", "tables")
    'tables/DSC03770.offsets_table.fits'
    """
    return _beside(frame_path, outdir, f"{TABLE_ENDINGS[1]}.fits")


def png_path(fits_file):
    """Return the path of the picture of a FITS product: a map's plot, a stack's preview.

    Examples
    --------
    >>> from astro_offsets._utils.naming import png_path
    >>> png_path("maps/DSC03770.offsets.fits"), png_path("out/stack.fits")
    ('maps/DSC03770.offsets.png', 'out/stack.png')
    """
    return product_root(fits_file) + ".png"


def sip_path(map_file):
    """Return the path of a map's SIP polynomials, ``<stem>.sip.fits``, beside it.

    Examples
    --------
    >>> from astro_offsets._utils.naming import sip_path
    >>> sip_path("maps/DSC03770.offsets.fits")
    'maps/DSC03770.sip.fits'
    """
    root = product_root(map_file)
    return root.removesuffix(MAP_SUFFIX.removesuffix(".fits")) + ".sip.fits"


def checkpoint_path(fits_file):
    """Return the checkpoint directory of a stack being written: beside it, named for it.

    Examples
    --------
    >>> from astro_offsets._utils.naming import checkpoint_path
    >>> checkpoint_path("out/stack.fits")
    'out/stack.checkpoint'
    """
    return product_root(fits_file) + ".checkpoint"


def weights_path(fits_file):
    """Return the path of a stack's weights file, ``<stem>.weights.fits``, beside it.

    A stack written as one image (``layout="image"``) keeps its weights and
    contexts there.

    Examples
    --------
    >>> from astro_offsets._utils.naming import weights_path
    >>> weights_path("out/stack.fits")
    'out/stack.weights.fits'
    """
    return product_root(fits_file) + ".weights.fits"
