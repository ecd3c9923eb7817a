# Licensed under a 3-clause BSD style license - see LICENSE
"""Sphinx configuration of the astro_offsets documentation.

Build (warnings are errors, every cross-reference checked), then run the
pages' examples::

    sphinx-build -W --keep-going -n -b html . _build/html
    pytest .

Cross-references into other projects' documentation (intersphinx) need their
inventories from the network, so they are used only when the environment
variable ``ASTRO_OFFSETS_DOCS_ONLINE`` is set to a non-empty value other than
``0`` (where the network is reachable, e.g. on Read the Docs). Without it the
build is offline, and references into those projects are left as plain text
instead of failing the build.
"""

import datetime
import importlib
import importlib.util
import os
import pkgutil
import sys

from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx_astropy.conf.v2 import *  # noqa: F403
from sphinx_astropy.conf.v2 import extensions, intersphinx_mapping

import astro_offsets

logger = logging.getLogger(__name__)

# -- Project information -----------------------------------------------------

project = "astro_offsets"
author = "The astro_offsets developers"
copyright = f"{datetime.datetime.now(datetime.UTC).year}, {author}"

# The full version, including alpha/beta/rc/dev tags, and the short X.Y one.
release = astro_offsets.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------

# sphinx-astropy's v2 configuration lists sphinx-copybutton, which only its
# "confv2" extra installs: leave it out when it is missing rather than fail.
if importlib.util.find_spec("sphinx_copybutton") is None:
    extensions.remove("sphinx_copybutton")

# pytest-doctestplus runs the ``>>>`` examples of the pages (``pytest docs``,
# docs/conftest.py) and of the docstrings (with the tests). sphinx-astropy
# loads its Sphinx extension, whose ``doctest-skip`` directive shows examples
# that it does not run (those that read files that console commands wrote).

# The commands' usage and options, generated from the parser (cli_parser.py,
# beside this file).
sys.path.insert(0, os.path.dirname(__file__))
extensions.append("sphinxarg.ext")

# Every cross-reference must resolve, also without sphinx-build's -n.
nitpicky = True

# -- Cross-references to other projects (intersphinx) ------------------------

_ONLINE = os.environ.get("ASTRO_OFFSETS_DOCS_ONLINE", "") not in ("", "0")

# Projects whose objects the docs and docstrings refer to. The python, numpy,
# scipy and matplotlib entries keep sphinx-astropy's mirrors as fallbacks.
_INTERSPHINX = {
    "python": intersphinx_mapping["python"],
    "numpy": intersphinx_mapping["numpy"],
    "scipy": intersphinx_mapping["scipy"],
    "matplotlib": intersphinx_mapping["matplotlib"],
    "astropy": ("https://docs.astropy.org/en/stable/", None),
    "joblib": ("https://joblib.readthedocs.io/en/stable/", None),
    "distributed": ("https://distributed.dask.org/en/stable/", None),
    "drizzle": ("https://spacetelescope-drizzle.readthedocs.io/en/latest/", None),
    "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
    "ccdproc": ("https://ccdproc.readthedocs.io/en/stable/", None),
}

if _ONLINE:
    intersphinx_mapping = _INTERSPHINX
else:
    # Offline, an unreachable inventory is a plain warning (it has no type
    # that suppress_warnings could name), fatal under -W: fetch nothing.
    intersphinx_mapping = {}
    # ... and let the references into those projects, and to Python's own
    # builtins and standard library, stay unresolved without a nitpick
    # warning. References to astro_offsets itself are still checked; the
    # online build checks the external ones too.
    nitpick_ignore_regex = [
        (r"py:.*", rf"(?:{'|'.join(_INTERSPHINX)})(?:\..+)?"),
        (
            r"py:.*",
            r"None|True|False|bool|int|float|complex|str|bytes|tuple|list|dict|set"
            r"|object|type|callable|[A-Za-z]*(?:Error|Exception|Warning)"
            r"|(?:os|sys|io|pathlib|contextlib|collections|argparse)(?:\..+)?",
        ),
    ]

# -- API pages (sphinx-automodapi) ---------------------------------------------

# The result classes of the batch functions share a private base class, which
# autodoc names among their bases.
nitpick_ignore = [("py:class", "astro_offsets._utils.batch.Result")]


_SUBPACKAGES = [
    module.name
    for module in pkgutil.iter_modules(astro_offsets.__path__)
    if module.ispkg and not module.name.startswith("_")
]


def _resolve_at_top_level(app, env, node, contnode):
    """Resolve a bare name of a docstring where the API reference documents it.

    A docstring names `OffsetMap` or `make_tables` as the top level exports
    them; on a subpackage's page (``astro_offsets.field``) the name is looked
    up in that subpackage, which documents only the names the top level does
    not (api.rst), so look it up again as ``astro_offsets.<name>``, and a
    subpackage's own name (`Normalisation`) on the top level's page as
    ``astro_offsets.<subpackage>.<name>``.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target or target.startswith("astro_offsets"):
        return None
    # The top level first, then the one subpackage that has the name.
    packages = ["astro_offsets", *(f"astro_offsets.{name}" for name in _SUBPACKAGES)]
    for package in packages:
        found = env.get_domain("py").resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], f"{package}.{target}", node, contnode
        )
        if found is not None:
            return found
    return None


def _constant_doc(app, what, name, obj, options, lines):
    """Give a public constant the doc-comment (``#:``) of its definition.

    autodoc looks for it in the subpackage's ``__init__.py``, which only
    imports the constant, and else shows the docstring of its type (tuple's,
    ndarray's). A constant without one is a warning, which fails the build.
    """
    if what != "data" or not name.startswith("astro_offsets."):
        return
    if name == "astro_offsets.__version__":
        lines[:] = ["The version of astro_offsets."]
        return
    package, _, attr = name.rpartition(".")
    modules = pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}.")
    for _, module, _ in modules:
        try:
            docs = ModuleAnalyzer.for_module(module).find_attr_docs()
        except PycodeError:  # compiled
            continue
        if ("", attr) in docs and getattr(importlib.import_module(module), attr, None) is obj:
            lines[:] = list(docs["", attr])
            return
    logger.warning("%s: a public constant without a doc-comment (#:) where it is defined", name)
    lines[:] = []


def setup(app):
    app.connect("missing-reference", _resolve_at_top_level)
    app.connect("autodoc-process-docstring", _constant_doc)


# Inheritance diagrams need Graphviz's ``dot`` program, which pip does not
# install (nor is it on the build machine): api.rst uses
# ``:no-inheritance-diagram:``.
automodapi_toctreedirnm = "api"

# -- Figures (matplotlib's plot directive) -------------------------------------

# Figures are computed at build time from the package's own code. One PNG per
# figure, no links to the script or other formats, nothing fetched.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"savefig.bbox": "tight"}
plot_apply_rcparams = True

# -- HTML output -------------------------------------------------------------

html_title = f"{project} v{release}"
html_static_path = []
htmlhelp_basename = f"{project}doc"
