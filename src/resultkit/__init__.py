"""celery-resultkit: configure, check, bound, migrate and speed up Celery result backends.

The command functions are importable and return result objects; the
``resultkit`` command line is a thin layer over them::

    from resultkit import doctor, migrate

    report = doctor("redis://localhost:6379/0", timeout=5)
    assert report.ok, [c for c in report.checks if c.status == "fail"]
    moved = migrate("redis://localhost:6379/0", "db+postgresql+psycopg://db/results", verify=True)
    assert moved.ok, moved.failures
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
    from .commands.bench import BenchReport, bench
    from .commands.cleanup import CleanupReport, cleanup
    from .commands.doctor import DoctorReport, doctor
    from .commands.migrate import MigrationReport, migrate
    from .commands.stats import StatsReport, stats
    from .serializers import register_type
    from .stores import Store, open_store

#: What the package root offers without importing it up front: kombu imports
#: resultkit.serializers and resultkit.encryption (entry points) in every Celery
#: process, so the commands and stores load only when they are used.
_LAZY = {
    "bench": "commands",
    "BenchReport": "commands",
    "cleanup": "commands",
    "CleanupReport": "commands",
    "doctor": "commands",
    "DoctorReport": "commands",
    "migrate": "commands",
    "MigrationReport": "commands",
    "stats": "commands",
    "StatsReport": "commands",
    "open_store": "stores",
    "Store": "stores",
    "register_type": "serializers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resultkit' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)


try:
    __version__ = version("celery-resultkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_RESULT_BACKEND",
    "AppNotFound",
    "BackendUnavailable",
    "BenchReport",
    "CheckResult",
    "CleanupReport",
    "ConfigurationError",
    "DoctorReport",
    "MigrationError",
    "MigrationReport",
    "MissingDriver",
    "ResultkitError",
    "SerializationError",
    "StatsReport",
    "Status",
    "Store",
    "UnknownBackend",
    "UsageError",
    "__version__",
    "bench",
    "cleanup",
    "doctor",
    "mask_url",
    "migrate",
    "open_store",
    "register_type",
    "stats",
]
