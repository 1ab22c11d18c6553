"""Only the optional C extension lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # The C walks of resultkit.serializers. Optional: without a C compiler the
        # package installs and uses the equivalent pure-Python walks.
        Extension(
            "resultkit._speedups",
            sources=["src/resultkit/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
