# Build configuration read by extension-helpers (see [tool.extension-helpers] in pyproject.toml).
import sys

from setuptools import Extension

# Floating-point contraction (fused multiply-add) would change the last bit of
# the field depending on the compiler and CPU; the maps must be bit-identical
# to the reference evaluator everywhere, so it is switched off. Not setting
# errno in sqrt() changes no value and lets the compiler vectorise it.
if sys.platform == "win32":
    COMPILE_ARGS = ["/O2", "/fp:precise"]
else:
    COMPILE_ARGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"]


def get_extensions():
    return [
        Extension(
            "astro_offsets._field",
            ["astro_offsets/_field.pyx"],
            extra_compile_args=COMPILE_ARGS,
        )
    ]
