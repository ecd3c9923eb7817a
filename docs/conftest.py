"""pytest settings for the examples of the pages, which pytest-doctestplus runs (``pytest docs``).

Each page's examples run as one session, in order, in an empty directory of
their own: they write files (the Sphinx doctest builder's
``doctest_global_setup`` did the same).
"""

import pytest


@pytest.fixture(autouse=True)
def _examples_in_a_scratch_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


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
