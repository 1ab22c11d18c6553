"""The exceptions raised by resultkit.

Every error derives from :class:`ResultkitError`, so one ``except`` clause
catches them all.  Driver and OS errors (redis-py, SQLAlchemy, psycopg,
PyMySQL, sqlite3, kombu, amqp, OSError, gzip/zlib) are translated at one
place per layer (:mod:`resultkit.boundary`) with ``raise ... from exc``;
every message says what failed, where (a masked URL or a path), why, and
what to do next::

    ResultkitError
    ├── UsageError               the user asked for something impossible
    ├── ConfigurationError       a setting or URL is wrong
    │   ├── UnknownBackend       no backend is registered for a URL scheme
    │   └── MissingDriver        the driver for a URL is not installed
    ├── AppNotFound              ``-A/--app`` names nothing importable, or its import fails
    ├── BackendError             a server or a file refused or failed an operation
    │   ├── BackendUnavailable   it cannot be reached: refused, unknown host, timeout, TLS
    │   ├── AccessDenied         wrong credentials, or the user may not do this
    │   ├── MissingDatabase      the database (or its user) named in the URL does not exist
    │   ├── StorageFull          no space left: a full disk, Redis at maxmemory
    │   └── DamagedArchive       an archive that cannot be appended to safely
    ├── SerializationError       a payload cannot be encoded or decoded
    ├── MigrationError           a migration cannot continue safely
    ├── CleanupError             a cleanup cannot continue safely
    ├── EraseError               an erasure cannot continue safely
    └── RetryError               a stored task cannot be sent again

The command line maps :class:`UsageError`, :class:`ConfigurationError` and
:class:`AppNotFound` to exit code 2 and everything else to exit code 1.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AppNotFound",
    "BackendError",
    "BackendUnavailable",
    "CleanupError",
    "ConfigurationError",
    "DamagedArchive",
    "EraseError",
    "MigrationError",
    "MissingDatabase",
    "MissingDriver",
    "ResultkitError",
    "RetryError",
    "SerializationError",
    "StorageFull",
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


class BackendError(ResultkitError):
    """A server or a file refused or failed an operation.

    ``message`` says what failed, where and why; ``fix`` what to do about it;
    ``reason`` is a short word for scripts (``refused``, ``dns``, ``auth``...).
    """

    def __init__(self, message: str, fix: str = "", reason: str = "error") -> None:
        super().__init__(message)
        self.fix = fix
        self.reason = reason

    def __str__(self) -> str:
        message = str(self.args[0]) if self.args else ""
        return f"{message}; {self.fix}" if self.fix else message


class BackendUnavailable(BackendError):
    """The server cannot be reached: nothing listens, the host is unknown, no answer in time."""


class AccessDenied(BackendError):
    """The credentials are wrong, or the user may not do what was asked."""


class MissingDatabase(BackendError):
    """The database (or the database user) named in the URL does not exist."""


class StorageFull(BackendError):
    """No space is left where results are written (a disk, Redis memory)."""


class DamagedArchive(BackendError):
    """An archive is damaged where it cannot be appended to without losing what follows."""


class SerializationError(ResultkitError):
    """A result payload cannot be encoded or decoded."""


class MigrationError(ResultkitError):
    """A migration cannot continue without risking data."""


class CleanupError(ResultkitError):
    """A cleanup cannot continue without deleting what it cannot archive."""


class EraseError(ResultkitError):
    """An erasure cannot continue without deleting what it cannot archive."""


class RetryError(ResultkitError):
    """A stored task cannot be sent again (not found, or stored without what sending needs)."""
