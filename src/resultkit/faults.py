"""Failures from outside resultkit that stop a long operation part-way.

A server that goes away, a connection terminated, a full disk: a migration or
a cleanup stopped by one of these says what happened, what it had done, and
how to finish.  :func:`from_outside` tells those apart from a bug of
resultkit's (which stays an "internal error").
"""

from __future__ import annotations

from .errors import BackendUnavailable, ResultkitError

__all__ = ["from_outside", "what_failed"]

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
    """True for the errors of a server, a driver or the operating system; False
    for what would be a bug of resultkit's, and for resultkit's own errors
    (which say what to do already)."""
    if isinstance(exc, (OSError, BackendUnavailable)):
        return True
    if isinstance(exc, ResultkitError):
        return False
    return any((cls.__module__ or "").split(".")[0] in _DRIVERS for cls in type(exc).__mro__)


def what_failed(exc: BaseException, where: str | None = None) -> str:
    """One line saying what *exc* is, raised talking to *where* (a masked URL)."""
    from .checks.explain import explain

    if isinstance(exc, ResultkitError):
        return str(exc).strip().splitlines()[0].rstrip(".")
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename}"
    return explain(exc, where or "a server").message.rstrip(".")
