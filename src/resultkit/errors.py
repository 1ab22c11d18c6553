"""The exceptions raised by resultkit.

Every error derives from :class:`ResultkitError`, so one ``except`` clause
catches them all.  Driver errors (redis-py, SQLAlchemy, kombu, amqp) are
translated at the boundary with ``raise ... from exc``; every message says
what to do next::

    ResultkitError
    ├── UsageError               the user asked for something impossible
    ├── ConfigurationError       a setting or URL is wrong
    │   ├── UnknownBackend       no backend is registered for a URL scheme
    │   └── MissingDriver        the driver for a URL is not installed
    ├── AppNotFound              ``-A/--app`` names nothing importable
    ├── BackendUnavailable       the server cannot be reached in time
    ├── SerializationError       a payload cannot be encoded or decoded
    ├── MigrationError           a migration cannot continue safely
    └── CleanupError             a cleanup cannot continue safely

The command line maps :class:`UsageError`, :class:`ConfigurationError` and
:class:`AppNotFound` to exit code 2 and everything else to exit code 1.
"""

from __future__ import annotations

__all__ = [
    "AppNotFound",
    "BackendUnavailable",
    "CleanupError",
    "ConfigurationError",
    "MigrationError",
    "MissingDriver",
    "ResultkitError",
    "SerializationError",
    "UnknownBackend",
    "UsageError",
]


class ResultkitError(Exception):
    """Base class of every error raised by resultkit."""


class UsageError(ResultkitError):
    """The arguments given cannot work together."""


class ConfigurationError(ResultkitError):
    """A setting or a backend URL is wrong."""


class UnknownBackend(ConfigurationError):
    """No result backend is registered for a URL scheme."""


class MissingDriver(ConfigurationError):
    """The Python driver for a backend URL is not installed."""

    def __init__(self, module: str, extra: str, purpose: str, *, use: str | None = None) -> None:
        self.module = module
        self.extra = extra
        self.fix = f"pip install 'celery-resultkit[{extra}]'"
        if use:
            self.fix += f" and write {use}"
        super().__init__(f"{purpose} needs the {module!r} module, which is not installed")

    def __str__(self) -> str:
        return f"{self.args[0]}: {self.fix}"


class AppNotFound(ResultkitError):
    """The Celery app named by ``-A/--app`` cannot be loaded."""


class BackendUnavailable(ResultkitError):
    """The result backend's server cannot be reached within the time allowed."""


class SerializationError(ResultkitError):
    """A result payload cannot be encoded or decoded."""


class MigrationError(ResultkitError):
    """A migration cannot continue without risking data."""


class CleanupError(ResultkitError):
    """A cleanup cannot continue without deleting what it cannot archive."""
