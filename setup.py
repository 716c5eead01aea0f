"""Only the optional C extension lives here; everything else is in pyproject.toml.

`sluice_collector._fastpath` is the compiled twin of the receiver's hot path. It is optional:
without a C compiler (or Python headers) the build warns and the package installs without it,
and the receiver runs its pure-Python reference (sluice_collector/fastpath.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sluice_collector._fastpath",
            ["collector_ext/sluice_collector/_fastpath.c"],
            # Warnings on: the code compiles clean with both (tests/collector/test_fastpath.py).
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
