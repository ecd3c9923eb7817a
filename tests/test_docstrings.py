"""The examples in the docstrings run and print what they say."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import astro_offsets

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(astro_offsets.__path__, "astro_offsets.")
    if not name.endswith(("setup_package", "compiler_version"))
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
    assert result.failed == 0


@pytest.mark.parametrize(
    ("package", "name"),
    [
        (package, name)
        for package in (astro_offsets, astro_offsets.datasets)
        for name in package.__all__
        if name not in ("__version__", "datasets")
    ],
)
def test_examples_exist_for_public_names(package, name):
    obj = getattr(package, name)
    if callable(obj):
        assert "Examples" in (obj.__doc__ or ""), name
