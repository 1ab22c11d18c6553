"""The optional C extension ``resultkit._speedups``, or None.

None when it was not built (no C compiler at install time) or when the
environment variable ``RESULTKIT_PURE_PYTHON`` is set; each user then has
the pure-Python equivalent of what it takes from here.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("RESULTKIT_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(f"{__package__}._speedups")
    except ImportError:
        return None


#: The C extension module, or None.
speedups = _load()
