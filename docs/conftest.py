"""pytest settings for the examples of the pages, which pytest-doctestplus runs (``pytest docs``).

Each page's examples run as one session, in order, in an empty directory of
their own (the root ``conftest.py``): they write files.
"""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name == "interoperability.rst":
            # It reads a SIP file, a header without data, and says that astropy
            # warns about it (the suite makes warnings errors).
            item.add_marker(
                pytest.mark.filterwarnings(
                    "ignore:The WCS transformation has more axes:astropy.wcs.FITSFixedWarning"
                )
            )
