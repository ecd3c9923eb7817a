"""The examples in the docstrings run and print what they say."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import astro_offsets

MODULES = sorted(
    name
    for _, name, _ in pkgutil.iter_modules(astro_offsets.__path__, "astro_offsets.")
    if not name.endswith(("setup_package", "compiler_version"))
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
    assert result.failed == 0


def test_examples_exist_for_public_names():
    for name in astro_offsets.__all__:
        obj = getattr(astro_offsets, name)
        if callable(obj):
            assert "Examples" in (obj.__doc__ or ""), name
