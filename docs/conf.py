# Licensed under a 3-clause BSD style license - see LICENSE
"""Sphinx configuration of the astro_offsets documentation.

Build (warnings are errors, every cross-reference checked)::

    sphinx-build -W --keep-going -n -b html . _build/html
    sphinx-build -W -b doctest . _build/doctest

Cross-references into other projects' documentation (intersphinx) need their
inventories from the network, so they are used only when the environment
variable ``ASTRO_OFFSETS_DOCS_ONLINE`` is set to a non-empty value other than
``0`` (where the network is reachable, e.g. on Read the Docs). Without it the
build is offline, and references into those projects are left as plain text
instead of failing the build.
"""

import datetime
import importlib.util
import os

from sphinx_astropy.conf.v2 import *  # noqa: F403
from sphinx_astropy.conf.v2 import extensions, intersphinx_mapping

import astro_offsets

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

# The doctest builder (``-b doctest``) runs the ``>>>`` examples of the pages
# and of the API docstrings. sphinx-astropy's pytest-doctestplus extension
# replaces Sphinx's ``doctest`` and ``testsetup`` directives with versions that
# only show or hide their code, so the examples are plain ``>>>`` blocks and
# their common setup lives here.
extensions.append("sphinx.ext.doctest")
doctest_global_setup = """
import os as _os
import tempfile as _tempfile

# Examples write files into the current directory: run them in a scratch one.
_docs_cwd = _os.getcwd()
_scratch = _tempfile.TemporaryDirectory(prefix="astro_offsets_docs_")
_os.chdir(_scratch.name)
"""
doctest_global_cleanup = """
_os.chdir(_docs_cwd)
_scratch.cleanup()
"""

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
# Docstrings of stack_frames and Stacker name objects that have no API page
# here (the subpackages' own names). They stay plain text until the API page
# lists the subpackages.
nitpick_ignore += [
    ("py:obj", name)
    for name in (
        "Layer",
        "Normalisation",
        "astro_offsets.frames.Calibration",
        "astro_offsets.stack",
    )
]

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
