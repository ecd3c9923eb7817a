"""The field methods: each module here defines one, as ``METHOD``.

A new method is a new module (and its tests): the registry below finds it,
and `OffsetModel`, ``method="auto"``, the map headers and the command line
take it from the registry.
"""

import importlib
import pkgutil
from types import MappingProxyType

from ._base import CoordinateScaling, FieldMethod, Fit, Stars, evaluate, residuals

__all__ = [
    "METHODS",
    "FieldMethod",
    "Fit",
    "CoordinateScaling",
    "Stars",
    "evaluate",
    "method",
    "residuals",
]


def _discover():
    found = [
        importlib.import_module(f"{__name__}.{module.name}").METHOD
        for module in pkgutil.iter_modules(__path__)
        if not module.name.startswith("_")
    ]
    return MappingProxyType({m.name: m for m in sorted(found, key=lambda m: m.order)})


METHODS = _discover()
"""The methods by name, in their order: ``quadrant``, ``polynomial``, ``thin-plate``."""


def method(name):
    """Return the method called ``name``; raise `ValueError` naming the choices otherwise."""
    if name not in METHODS:
        choices = ", ".join(repr(m) for m in METHODS)
        raise ValueError(f"method must be one of {choices}, got {name!r}")
    return METHODS[name]
