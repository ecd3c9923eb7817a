"""The documentation: every public name in the API reference, examples for the top level's.

The examples themselves, of the docstrings and of the pages, are run by
pytest-doctestplus (the pytest configuration in pyproject.toml; the pages'
with ``pytest docs``).
"""

import importlib
import importlib.util
import pkgutil
import re
import zlib
from pathlib import Path

import pytest

import astro_offsets

DOCS = Path(__file__).parents[1] / "docs"
INVENTORY = DOCS / "_build" / "html" / "objects.inv"

# The top level and its public subpackages, each with a page in api.rst.
PACKAGES = [
    "astro_offsets",
    *(
        f"astro_offsets.{module.name}"
        for module in pkgutil.iter_modules(astro_offsets.__path__)
        if module.ispkg and not module.name.startswith("_")
    ),
]


def _automodapi():
    """Return the automodapi directives of api.rst: {module: (its options, the names skipped)}."""
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    directives = {}
    for module, options in re.findall(r"^\.\. automodapi:: (\S+)\n((?:[ ]+:.*\n)*)", text, re.M):
        skip = re.search(r":skip:(.*)", options)
        skipped = {name.strip() for name in skip.group(1).split(",")} if skip else set()
        directives[module] = (options, skipped)
    return directives


def _shared(package):
    """Return the names of a subpackage's ``__all__`` that the top level exports too."""
    module = importlib.import_module(package)
    return {
        name
        for name in module.__all__
        if package != "astro_offsets"
        and name in astro_offsets.__all__
        and getattr(astro_offsets, name) is getattr(module, name)
    }


def _documented_as(package, name):
    """Return the name under which the API reference documents ``package.name``."""
    return f"astro_offsets.{name}" if name in _shared(package) else f"{package}.{name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_package_has_its_api_page(package):
    directives = _automodapi()
    assert package in directives, f"docs/api.rst has no automodapi directive of {package}"
    options, skipped = directives[package]
    # Constants too, not only the functions and classes.
    assert ":include-all-objects:" in options, package
    # Each name once: a subpackage's page skips exactly the names that the
    # top level documents (documented twice, they would be duplicate objects).
    assert skipped == _shared(package), package


def _inventory():
    """Return the Python objects of the built docs' inventory (objects.inv, version 2)."""
    data = INVENTORY.read_bytes()
    header = b"".join(data.splitlines(keepends=True)[:4])
    lines = zlib.decompress(data[len(header) :]).decode().splitlines()
    return {line.split()[0] for line in lines if line.split()[1].startswith("py:")}


@pytest.mark.skipif(not INVENTORY.exists(), reason="the docs are not built (docs/_build/html)")
@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_in_the_built_docs(package):
    documented = _inventory()
    names = importlib.import_module(package).__all__
    missing = [name for name in names if _documented_as(package, name) not in documented]
    assert not missing, f"{package}: not in the built docs' inventory: {missing}"


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


def _cli_parser():
    """Return the command line's parser, as the docs' sphinx-argparse directives take it."""
    spec = importlib.util.spec_from_file_location("cli_parser", DOCS / "cli_parser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser()


def test_the_options_described_are_options_of_their_command():
    # sphinx-argparse lists every option of the parser; the pages' own text
    # replaces an option's help by name, and text under a name that is no
    # longer an option would be dropped without a word.
    (commands,) = (action.choices for action in _cli_parser()._actions if action.dest == "command")
    described = 0
    for page in DOCS.rglob("*.rst"):
        text = page.read_text(encoding="utf-8")
        for command, body in re.findall(r":path: (\w+)\n((?:(?:[ ]+.*)?\n)*)", text):
            names = {
                name
                for action in commands[command]._actions
                for name in (*action.option_strings, action.metavar)
                if name
            }
            for term in re.findall(r"^[ ]+(\S+) : @(?:replace|before|after)$", body, re.M):
                assert term in names, f"{page.name}: {command} has no option {term}"
                described += 1
    assert described > 50
