"""Only the optional C extension lives here; everything else is in pyproject.toml."""

import os
from pathlib import Path

from setuptools import Extension, setup

setup(
    ext_modules=[
        # resultkit._speedups, one module from the files of csrc/ (see csrc/module.c).
        # Optional: without a C compiler the package installs and uses the
        # equivalent pure-Python code.
        Extension(
            "resultkit._speedups",
            sources=sorted(str(path) for path in Path("csrc").glob("*.c")),
            depends=["csrc/speedups.h"],
            include_dirs=["csrc"],
            optional=True,
            extra_compile_args=["-O2", *os.environ.get("RESULTKIT_CFLAGS", "").split()],
            extra_link_args=os.environ.get("RESULTKIT_LDFLAGS", "").split(),
        )
    ]
)
