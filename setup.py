"""Only the optional C extension lives here; everything else is in pyproject.toml.

Both are optional compiled twins: without a C compiler (or Python headers) the build warns and
the package installs without them, and the pure-Python reference runs instead.

- `sluice_collector._fastpath`: the receiver's hot path (sluice_collector/fastpath.py);
- `sluice.masking._plainmask`: masking's rewrite of strings that only the card, e-mail and IPv4
  detectors hit (sluice/masking/engine.py);
- `sluice.masking._re2scan` (C++): masking's RE2 pre-scans called from C++ (sluice/masking/
  _prescan.py). It also needs g++ and RE2's headers (Debian's libre2-dev, which `make` installs);
  without them it is skipped the same way.
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
        ),
        Extension(
            "sluice.masking._plainmask",
            ["sdk/sluice/masking/_plainmask.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        ),
        Extension(
            "sluice.masking._re2scan",
            ["sdk/sluice/masking/_re2scan.cc"],
            language="c++",
            libraries=["re2"],
            extra_compile_args=["-O2", "-std=c++17", "-Wall", "-Wextra"],
            optional=True,
        ),
    ]
)
