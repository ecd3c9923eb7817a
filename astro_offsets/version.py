"""The package's version, from git: setuptools_scm writes it into ``_version.py`` at build time.

A source tree that was never built (nor installed) has no ``_version.py``;
its version is then ``0.0.0+unknown``, so that nothing mistakes it for a
release.
"""

__all__ = ["__version__"]

try:
    from ._version import __version__
except ImportError:  # a source tree that was never built
    __version__ = "0.0.0+unknown"
