"""The version: from git by setuptools_scm, with a fallback for a tree never built."""

import importlib
import sys

from packaging.version import Version

import astro_offsets
import astro_offsets.version


def test_the_version_is_pep440():
    # The static "0.1.0.dev0" of before was the same for every build.
    assert str(Version(astro_offsets.__version__)) == astro_offsets.__version__
    assert astro_offsets.__version__ == astro_offsets.version.__version__


def test_a_tree_never_built_has_a_version_that_says_so(monkeypatch):
    # No _version.py (setuptools_scm writes it at build time): importing it fails.
    monkeypatch.setitem(sys.modules, "astro_offsets._version", None)
    try:
        module = importlib.reload(astro_offsets.version)
        assert module.__version__ == "0.0.0+unknown"
        assert Version(module.__version__).local == "unknown"
    finally:
        monkeypatch.undo()
        importlib.reload(astro_offsets.version)
