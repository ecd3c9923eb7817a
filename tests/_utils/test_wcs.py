"""A frame's celestial WCS, or why it has none: every header that wcslib refuses says why."""

import pytest
from astropy.io import fits

from astro_offsets._utils.wcs import celestial_wcs

TAN = "CTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\n"
SIP = "CTYPE1  = 'RA---TAN-SIP'\nCTYPE2  = 'DEC--TAN-SIP'\n"


@pytest.mark.parametrize(
    ("cards", "why"),
    [
        ("CUNIT1  = 'furlong'", "ERROR 6 in wcs_units"),  # wcslib's own: a ValueError
        ("A_ORDER = 2", "A_ORDER provided without corresponding B_ORDER"),  # astropy's ValueError
        ("A_ORDER = 'x'\nB_ORDER = 2", "'>' not supported"),  # astropy's TypeError
        ("WCSAXES = 1000000", "Memory allocation error"),  # wcslib allocates what it is asked
        ("CTYPE1  = 3\nCTYPE2  = 'DEC--TAN'", "'int' object has no attribute"),  # AttributeError
    ],
)
def test_a_wcs_that_does_not_read_says_why(cards, why):
    start = "" if cards.startswith("CTYPE") else SIP if "ORDER" in cards else TAN
    header = fits.Header.fromstring(start + cards, sep="\n")
    wcs, said = celestial_wcs(header)
    assert wcs is None
    assert said.startswith(f"it does not read ({why}")
