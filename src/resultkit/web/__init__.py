"""``resultkit serve``: a results browser, a JSON API and Prometheus metrics over any store.

The ASGI application is made by :func:`create_app` (Starlette); ``resultkit
serve`` runs it with uvicorn.  Every page and API answer is made by the
command functions (``find``, ``show``, ``failures``, ``stats``), so the web
sees exactly what the command line sees.  Needs the ``web`` extra::

    pip install 'celery-resultkit[web]'
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingDriver, UsageError

if TYPE_CHECKING:
    from celery import Celery
    from starlette.applications import Starlette

__all__ = [
    "DEFAULT_CACHE_S",
    "DEFAULT_PORT",
    "ServeAuth",
    "create_app",
    "is_loopback",
    "require_safe_bind",
]

#: How long a scan of the whole store (stats, /metrics, the health page) is reused.
DEFAULT_CACHE_S = 30.0
#: The port ``resultkit serve`` listens on unless told.
DEFAULT_PORT = 8000
#: Environment variables holding the credentials the server asks for.
TOKEN_ENV = "RESULTKIT_SERVE_TOKEN"
USER_ENV = "RESULTKIT_SERVE_USER"
PASSWORD_ENV = "RESULTKIT_SERVE_PASSWORD"


@dataclass(frozen=True)
class ServeAuth:
    """What a request must carry: a bearer token, or basic-auth user and password."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.token) or bool(self.user and self.password)

    @classmethod
    def from_env(cls, environ: Any = None) -> ServeAuth | None:
        """The credentials in ``RESULTKIT_SERVE_TOKEN`` or ``RESULTKIT_SERVE_USER`` and
        ``RESULTKIT_SERVE_PASSWORD``; None when neither is set."""
        env = os.environ if environ is None else environ
        auth = cls(
            token=env.get(TOKEN_ENV) or None,
            user=env.get(USER_ENV) or None,
            password=env.get(PASSWORD_ENV) or None,
        )
        if (auth.user is None) != (auth.password is None):
            raise UsageError(f"set both {USER_ENV} and {PASSWORD_ENV}, or neither")
        return auth if auth.configured else None


def is_loopback(host: str) -> bool:
    """True when *host* is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_safe_bind(host: str, auth: ServeAuth | None) -> None:
    """Refuse to listen beyond this machine without credentials (a usage error)."""
    if not is_loopback(host) and (auth is None or not auth.configured):
        raise UsageError(
            f"--host {host} listens beyond this machine: set {TOKEN_ENV} "
            f"(or {USER_ENV} and {PASSWORD_ENV}) first, or bind to 127.0.0.1"
        )


def create_app(
    store_url_or_app: Celery | str | None = None,
    *,
    allow_writes: bool = False,
    auth: ServeAuth | None = None,
    cache_seconds: float = DEFAULT_CACHE_S,
    audit_log: str | Path | None = None,
) -> Starlette:
    """The ASGI application over a store: a URL (``redis://...``), a Celery app or the
    ``-A`` string naming one, or None for the embedded SQLite default.

    *auth* set: every request must carry it.  *allow_writes* off: export, erase
    and retry answer 403; on, each write needs the CSRF token of the page's
    cookie (form field ``csrf`` or header ``X-CSRF-Token``) and appends a line
    to *audit_log* (default ``resultkit-audit.log`` in the current folder).
    Whole-store scans are reused for *cache_seconds*.
    """
    try:
        from .app import build_app
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDriver(exc.name or "starlette", "web", "resultkit serve") from None
    return build_app(
        store_url_or_app,
        allow_writes=allow_writes,
        auth=auth,
        cache_seconds=cache_seconds,
        audit_log=audit_log,
    )
