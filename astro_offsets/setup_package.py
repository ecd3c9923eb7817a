"""Build configuration read by extension-helpers: the package's compiled kernels."""

import sys

from setuptools import Extension

# Floating-point contraction (fused multiply-add) would change the last bit of
# the field depending on the compiler and CPU; the maps must be bit-identical
# to the reference evaluator everywhere, so it is switched off. Not setting
# errno in sqrt() changes no value and lets the compiler vectorise it.
# MSVC: /fp:precise contracts nothing (Visual Studio 2022; earlier ones only
# with /arch:AVX2, which is not set) and keeps errno, which it has no switch
# to drop.
if sys.platform == "win32":
    COMPILE_ARGS = ["/O2", "/fp:precise"]
else:
    COMPILE_ARGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"]


# The Cython modules: the quadrant field's kernel and outlier rejection's median
# and masks. (Not the drizzle kernels, astro_offsets.stack.KERNELS.)
CYTHON_MODULES = ("field/_quadrant", "stack/_outliers")


def get_extensions():
    """Return the extensions of this package: one per Cython module."""
    return [
        Extension(
            f"astro_offsets.{module.replace('/', '.')}",
            [f"astro_offsets/{module}.pyx"],
            extra_compile_args=COMPILE_ARGS,
        )
        for module in CYTHON_MODULES
    ]
