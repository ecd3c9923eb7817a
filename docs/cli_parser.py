"""The parser of the command line, for sphinx-argparse (``.. argparse::`` in getting_started.rst).

The commands' usage and options in the docs are generated from it, so that
they cannot differ from ``astro-offsets COMMAND --help``.
"""

from astro_offsets._cli import _parser


def parser():
    """Return the ``astro-offsets`` parser, its commands as subparsers."""
    return _parser()[0]
