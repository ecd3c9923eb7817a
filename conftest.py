"""pytest settings for the whole tree: examples in scratch directories, and an unbuilt tree.

The examples of the docstrings and of the pages (pytest-doctestplus) run
each in an empty directory of their own: they write files.

``pip install .`` or of the sdist builds the package's Cython kernels into
the installed copy only; the source tree beside the tests has none. Run from
that tree, the tests would import the package from it (Python puts the
working directory first on ``sys.path``, and so do pytest-xdist's workers) and
stop at the first compiled module. Here, when the tree holds no compiled
kernel and is an unpacked sdist (its ``PKG-INFO``), the installed package of
that version is tested instead: the tree leaves ``sys.path`` and the
docstrings' examples are collected from the installed modules. An
editable install (``pip install -e .``, the README's test command) compiles
the kernels in the tree, and nothing changes.
"""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(ROOT, "astro_offsets")


def _compiled_in_tree():
    """Whether the source tree holds its compiled quadrant kernel."""
    folder = os.path.join(SOURCE, "field")
    return any(
        name.startswith("_quadrant.") and name.endswith((".so", ".pyd"))
        for name in os.listdir(folder)
    )


def _sdist_version():
    """Return the version of the unpacked sdist this tree is (its ``PKG-INFO``), or `None`."""
    try:
        with open(os.path.join(ROOT, "PKG-INFO"), encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return None
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("Version:")), None
    )


def _installed_package(version):
    """Take the source tree off ``sys.path``, and return the installed package's folder.

    The installed package must be this sdist's version: another would be
    tested in its place without a word.
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    root = os.path.realpath(ROOT)
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != root]
    spec = importlib.util.find_spec("astro_offsets")
    try:
        installed = installed_version("astro_offsets")
    except PackageNotFoundError:
        installed = None
    if spec is None or spec.origin is None or installed != version:
        found = "none" if installed is None else installed
        raise pytest.UsageError(
            f"this unpacked sdist of astro_offsets {version} has no compiled kernels, and the "
            f"installed astro_offsets is {found}: install this sdist, or run "
            '`pip install -e ".[test]"` here'
        )
    return os.path.dirname(spec.origin)


@pytest.fixture(autouse=True)
def _examples_in_a_scratch_directory(request, monkeypatch):
    """Run the examples of a module or a page (not the tests) in an empty directory."""
    if not request.node.path.is_relative_to(os.path.join(ROOT, "tests")):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))


if not _compiled_in_tree() and _sdist_version() is not None:
    INSTALLED = _installed_package(_sdist_version())

    def pytest_report_header(config):
        """Say which package is tested: the installed one, not this tree."""
        return f"astro_offsets: the installed package, {INSTALLED} (this sdist is not built)"

    def pytest_configure(config):
        """Collect the docstrings' examples (testpaths) from the installed modules."""
        config.args[:] = [
            INSTALLED if os.path.realpath(arg) == os.path.realpath(SOURCE) else arg
            for arg in config.args
        ]
