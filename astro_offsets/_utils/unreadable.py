"""What reading a bad FITS file raises: one list, for every place that reads a user's file.

astropy raises many types for a file it cannot read. The places that read
one catch these, not every exception: a bug, or a `MemoryError`, is not
taken for a bad file.

Examples
--------
>>> from astropy.io import fits
>>> from astro_offsets._utils.unreadable import UNREADABLE_FITS
>>> try:
...     fits.getheader(__file__)
... except UNREADABLE_FITS as exc:
...     print(type(exc).__name__)
OSError
"""

import zlib

from astropy.io.fits.verify import VerifyError

__all__ = ["UNREADABLE_FITS"]

try:
    # Tile-compressed data that does not decompress: a private class of astropy's.
    from astropy.io.fits.hdu.compressed._compression import CfitsioException
except ImportError:  # pragma: no cover - moved by a later astropy
    CfitsioException = OSError

#: What astropy raises for a FITS file it cannot read, as found on bad files:
#: `OSError` (no FITS file, a header cut short, a bad gzip or bzip2 stream),
#: `TypeError` (data cut short), `ValueError` (a card it cannot take, table
#: data cut short), `KeyError` (a ``BITPIX`` of no data type), `IndexError`
#: (no such HDU), `EOFError` (a gzip tile cut short), `zlib.error` (a
#: corrupt gzip stream, or tile), `~astropy.io.fits.VerifyError` (a card
#: that does not parse, once its value is read) and ``CfitsioException``
#: (a Rice tile that does not decompress).
UNREADABLE_FITS = (
    OSError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
    zlib.error,
    VerifyError,
    CfitsioException,
)
