"""celery-resultkit: configure, check, bound, migrate and speed up Celery result backends.

The command functions are importable and return result objects; the
``resultkit`` command line is a thin layer over them::

    from resultkit import doctor

    report = doctor("redis://localhost:6379/0", timeout=5)
    assert report.ok, [c for c in report.checks if c.status == "fail"]
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import (
    AppNotFound,
    BackendUnavailable,
    ConfigurationError,
    MigrationError,
    MissingDriver,
    ResultkitError,
    SerializationError,
    UnknownBackend,
    UsageError,
)
from .report import CheckResult, Status
from .urls import DEFAULT_RESULT_BACKEND, mask_url

if TYPE_CHECKING:
    from .commands.doctor import DoctorReport, doctor


def __getattr__(name: str) -> Any:
    # kombu imports resultkit.serializers and resultkit.encryption (entry points)
    # in every Celery process: the commands load only when they are used.
    if name in ("doctor", "DoctorReport"):
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module 'resultkit' has no attribute {name!r}")


try:
    __version__ = version("celery-resultkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_RESULT_BACKEND",
    "AppNotFound",
    "BackendUnavailable",
    "CheckResult",
    "ConfigurationError",
    "DoctorReport",
    "MigrationError",
    "MissingDriver",
    "ResultkitError",
    "SerializationError",
    "Status",
    "UnknownBackend",
    "UsageError",
    "__version__",
    "doctor",
    "mask_url",
]
