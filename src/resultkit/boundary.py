"""The error boundary: driver and OS errors become errors of :mod:`resultkit.errors`.

Each layer translates at one place: every store primitive (see
:class:`resultkit.stores.Store`), :func:`resultkit.stores.open_store`,
:func:`resultkit.apps.load_app` and each command's own file and network work
(:func:`translating`).  What comes out is one of the :class:`BackendError`
family, or a :class:`ConfigurationError` for a setting Celery refuses, with a
message saying what failed, where (a masked URL or a path), why and what to do
— the wording of :func:`resultkit.explain.explain`, which ``doctor``
uses too.  Anything else passes through untouched: it is a bug of ours, and
the command line says so.
"""

from __future__ import annotations

import contextlib
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    MissingDatabase,
    ResultkitError,
    StorageFull,
)
from .explain import explain
from .urls import Redactor

__all__ = ["driver_error", "from_outside", "translate", "translating", "what_failed"]

T = TypeVar("T")

#: Exception classes, by the module that defines them, that are a driver's or the OS's
#: way of saying an operation failed (modules not imported cannot have raised).
_DRIVER_ERRORS: tuple[tuple[str, str], ...] = (
    ("redis.exceptions", "RedisError"),
    ("sqlalchemy.exc", "SQLAlchemyError"),
    ("psycopg", "Error"),
    ("psycopg2", "Error"),
    ("pymysql.err", "MySQLError"),
    ("sqlite3", "Error"),
    ("kombu.exceptions", "KombuError"),
    ("amqp.exceptions", "AMQPError"),
)

#: Reasons from :func:`explain` and the error class each becomes.
_CLASSES: dict[str, type[BackendError]] = {
    "refused": BackendUnavailable,
    "dns": BackendUnavailable,
    "timeout": BackendUnavailable,
    "tls": BackendUnavailable,
    "sentinel": BackendUnavailable,
    "vhost": AccessDenied,
    "auth": AccessDenied,
    "permission": AccessDenied,
    "replica": AccessDenied,
    "database": MissingDatabase,
    "role": MissingDatabase,
    "full": StorageFull,
}


def driver_error(exc: BaseException) -> bool:
    """True when *exc* is a driver's or the operating system's error (not a bug of ours),
    or one of Celery's that wraps such an error (``BackendStoreError``...)."""
    if _raw_driver_error(exc) or _celery_configuration_error(exc):
        return True
    if type(exc).__module__.startswith("celery."):
        cause = exc.__cause__ or exc.__context__
        return cause is not None and driver_error(cause)
    return False


def _raw_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, EOFError, zlib.error)):
        return True
    for module, name in _DRIVER_ERRORS:
        loaded = sys.modules.get(module)
        cls = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def _celery_configuration_error(exc: BaseException) -> bool:
    exceptions = sys.modules.get("celery.exceptions")
    cls = getattr(exceptions, "ImproperlyConfigured", None) if exceptions is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


def translate(
    exc: BaseException, where: str, doing: str, redactor: Redactor | None = None
) -> ResultkitError | None:
    """The resultkit error for *exc*, raised while *doing* something at *where*
    (a masked URL or a path); None when *exc* is not a driver or OS error.

    The message reads ``cannot <doing>: <why, naming where>; <what to do>`` and
    passes through *redactor*, which should know the URL's secrets.
    """
    if isinstance(exc, ResultkitError) or not driver_error(exc):
        return None
    redact = redactor.redact if redactor is not None else Redactor().redact
    if _celery_configuration_error(exc):
        return ConfigurationError(redact(f"Celery refuses the configuration of {where}: {exc}"))
    why = explain(exc, where)
    cls = _CLASSES.get(why.reason, BackendError)
    return cls(redact(f"cannot {doing}: {why.message}"), redact(why.fix), why.reason)


@contextlib.contextmanager
def translating(where: str, doing: str, redactor: Redactor | None = None) -> Iterator[None]:
    """Raise driver and OS errors of the block as resultkit errors (see :func:`translate`)."""
    try:
        yield
    except Exception as exc:
        translated = translate(exc, where, doing, redactor)
        if translated is None:
            raise
        raise translated from exc


def guarded(doing: str, method: Callable[..., T]) -> Callable[..., T]:
    """*method* of a store, with driver and OS errors translated for that store's URL."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            translated = translate(exc, self.masked_url, doing, self.redactor)
            if translated is None:
                raise
            raise translated from exc

    wrapper.__resultkit_guarded__ = True  # type: ignore[attr-defined]
    return wrapper


# ------------------------------------------- long operations stopped part-way

#: Top-level modules whose exceptions come from a server or a driver.
_DRIVERS = frozenset(
    {
        "redis",
        "sqlalchemy",
        "psycopg",
        "psycopg2",
        "pymysql",
        "MySQLdb",
        "sqlite3",
        "kombu",
        "amqp",
        "botocore",
        "celery",
    }
)


def from_outside(exc: BaseException) -> bool:
    """True for the errors of a server, a driver or the operating system (raw, or
    translated into a :class:`BackendError`); False
    for what would be a bug of resultkit's, and for resultkit's own errors
    (which say what to do already)."""
    if isinstance(exc, (OSError, BackendError)):
        return True
    if isinstance(exc, ResultkitError):
        return False
    return driver_error(exc) or any(
        (cls.__module__ or "").split(".")[0] in _DRIVERS for cls in type(exc).__mro__
    )


def what_failed(exc: BaseException, where: str | None = None) -> str:
    """One line saying what *exc* is, raised talking to *where* (a masked URL)."""
    if isinstance(exc, ResultkitError):
        return str(exc).strip().splitlines()[0].rstrip(".")
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename}"
    return explain(exc, where or "a server").message.rstrip(".")
