"""pytest settings for the whole tree: examples in scratch directories, and an unbuilt tree.

The examples of the docstrings and of the pages (pytest-doctestplus) run
each in an empty directory of their own: they write files.

``pip install .`` or of the sdist builds the package's Cython kernels into
the installed copy only; the source tree beside the tests has none. Run from
that tree, the tests would import the package from it (Python puts the
working directory first on ``sys.path``, and so do pytest-xdist's workers) and
stop at the first compiled module. Here, when the tree holds no compiled
kernel, the installed package is tested instead: the tree leaves ``sys.path``
and the docstrings' examples are collected from the installed modules. An
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


def _installed_package():
    """Take the source tree off ``sys.path``, and return the installed package's folder."""
    root = os.path.realpath(ROOT)
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != root]
    spec = importlib.util.find_spec("astro_offsets")
    if spec is None or spec.origin is None:
        raise pytest.UsageError(
            f"astro_offsets is neither compiled in {ROOT} nor installed: "
            'run `pip install -e ".[test]"` there, or install the package'
        )
    return os.path.dirname(spec.origin)


@pytest.fixture(autouse=True)
def _examples_in_a_scratch_directory(request, monkeypatch):
    """Run the examples of a module or a page (not the tests) in an empty directory."""
    if not request.node.path.is_relative_to(os.path.join(ROOT, "tests")):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))


if not _compiled_in_tree():
    INSTALLED = _installed_package()

    def pytest_configure(config):
        """Collect the docstrings' examples (testpaths) from the installed modules."""
        config.args[:] = [
            INSTALLED if os.path.realpath(arg) == os.path.realpath(SOURCE) else arg
            for arg in config.args
        ]
