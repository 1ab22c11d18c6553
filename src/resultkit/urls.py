"""Backend URLs: parse them, recognise their kind, and never leak a password.

:func:`mask_url` and :class:`Redactor` are the single place where secrets are
hidden.  Everything resultkit prints, logs, raises or serialises passes through
one of them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from .errors import ConfigurationError, UnknownBackend

__all__ = [
    "DEFAULT_RESULT_BACKEND",
    "BackendKind",
    "BackendURL",
    "Redactor",
    "mask_url",
    "parse_backend_url",
]

#: The embedded default: a SQLite database in the current folder.
DEFAULT_RESULT_BACKEND = "db+sqlite:///celery-results.sqlite3"

MASK = "***"

#: Query parameters whose values are secrets.
_SECRET_PARAMS = re.compile(r"(?i)\b([\w.-]*(?:password|passwd|secret|token)[\w.-]*=)([^&;\s]+)")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


class BackendKind(str, enum.Enum):
    """The storage family behind a result backend URL."""

    REDIS = "redis"
    SENTINEL = "sentinel"
    SQL = "sql"
    RPC = "rpc"
    FILE = "file"
    DUAL = "dual"
    OTHER = "other"


#: Celery (and resultkit) backend aliases, by the kind of store behind them.
_ALIAS_KINDS: dict[str, BackendKind] = {
    "redis": BackendKind.REDIS,
    "rediss": BackendKind.REDIS,
    "resultkit-redis": BackendKind.REDIS,
    "sentinel": BackendKind.SENTINEL,
    "db": BackendKind.SQL,
    "database": BackendKind.SQL,
    "resultkit-db": BackendKind.SQL,
    "rpc": BackendKind.RPC,
    "file": BackendKind.FILE,
    "resultkit-dual": BackendKind.DUAL,
}

#: Schemes users write by mistake, with what to write instead.
_MISTAKES: dict[str, str] = {
    "postgres": "a PostgreSQL result backend needs the db+ prefix: "
    "db+postgresql+psycopg://USER:PASSWORD@HOST/DB",
    "postgresql": "a PostgreSQL result backend needs the db+ prefix: "
    "db+postgresql+psycopg://USER:PASSWORD@HOST/DB",
    "mysql": "a MySQL result backend needs the db+ prefix: db+mysql+pymysql://USER:PASSWORD@HOST/DB",
    "mariadb": "a MariaDB result backend needs the db+ prefix: "
    "db+mysql+pymysql://USER:PASSWORD@HOST/DB",
    "sqlite": "a SQLite result backend needs the db+ prefix: db+sqlite:///PATH/results.sqlite3",
    "amqp": "the amqp:// result backend was removed in Celery 5: use rpc:// "
    "(results as messages) or a stored backend such as redis:// or db+postgresql+psycopg://",
    "pyamqp": "the amqp:// result backend was removed in Celery 5: use rpc:// "
    "(results as messages) or a stored backend such as redis:// or db+postgresql+psycopg://",
    "http": "an HTTP URL is not a result backend: use redis://, db+postgresql+psycopg://, "
    "rpc:// or file://",
    "https": "an HTTP URL is not a result backend: use redis://, db+postgresql+psycopg://, "
    "rpc:// or file://",
}


def _mask_authority(chunk: str) -> str:
    """Mask the password in one ``scheme://user:password@host`` chunk."""
    match = _SCHEME.search(chunk)
    if not match:
        return chunk
    start = match.end()
    end = len(chunk)
    for stop in ("?", "#"):
        pos = chunk.find(stop, start)
        if pos != -1:
            end = min(end, pos)
    at = chunk.rfind("@", start, end)
    if at == -1:
        return chunk
    userinfo = chunk[start:at]
    if ":" not in userinfo:
        return chunk
    user, _, password = userinfo.partition(":")
    if not password:
        return chunk
    return f"{chunk[:start]}{user}:{MASK}{chunk[at:]}"


def mask_url(url: str | None) -> str:
    """Return *url* with every password replaced by ``***``.

    Handles several URLs joined by ``;`` (Sentinel), ``db+`` prefixes and
    secret query parameters such as ``?password=...``.
    """
    if not url:
        return ""
    masked = ";".join(_mask_authority(chunk) for chunk in str(url).split(";"))
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}{MASK}", masked)


def _passwords_in(url: str) -> Iterable[str]:
    for chunk in url.split(";"):
        match = _SCHEME.search(chunk)
        if not match:
            continue
        rest = chunk[match.end() :]
        userinfo, sep, _ = rest.rpartition("@")
        if sep and ":" in userinfo.split("/")[0]:
            password = userinfo.split(":", 1)[1]
            if password:
                yield password
                yield unquote(password)
    for _, value in _SECRET_PARAMS.findall(url):
        yield value
        yield unquote(value)


@dataclass
class Redactor:
    """Replace known secrets in any text with ``***``.

    Driver error messages sometimes echo connection parameters; every message
    resultkit shows passes through :meth:`redact` before it leaves the process.
    """

    secrets: set[str] = field(default_factory=set)

    #: Shorter secrets are masked inside URLs only: replacing two letters
    #: everywhere would garble every message.
    MIN_SECRET_CHARS = 4

    def add_url(self, url: str | None) -> None:
        """Remember the passwords contained in *url*."""
        if url:
            self.secrets.update(p for p in _passwords_in(str(url)) if p)

    def redact(self, text: str) -> str:
        """Return *text* with URLs masked and every known secret replaced."""
        text = _SCHEME_URL.sub(lambda m: mask_url(m.group(0)), text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= self.MIN_SECRET_CHARS:
                text = text.replace(secret, MASK)
        return text


_SCHEME_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


@dataclass(frozen=True)
class BackendURL:
    """A result backend URL, split the way Celery splits it."""

    raw: str
    #: Everything before ``://``, e.g. ``db+postgresql+psycopg``.
    scheme: str
    #: The Celery backend alias, e.g. ``db``, ``redis``, ``resultkit-db``.
    alias: str
    kind: BackendKind
    #: For SQL backends: the SQLAlchemy URL (without the ``db+`` prefix).
    sqlalchemy_url: str | None = None

    @property
    def masked(self) -> str:
        """The URL with its password hidden."""
        return mask_url(self.raw)

    @property
    def query(self) -> dict[str, str]:
        """The query parameters of the (first) URL."""
        _, _, query = self.raw.split(";")[0].partition("?")
        return dict(parse_qsl(query))


def parse_backend_url(url: str) -> BackendURL:
    """Split a ``result_backend`` URL into alias, kind and driver URL.

    Raises :class:`UnknownBackend` for a scheme no backend is registered for,
    and :class:`ConfigurationError` for a malformed URL or a known mistake.
    """
    url = url.strip()
    if "://" not in url:
        raise ConfigurationError(
            f"{mask_url(url)!r} is not a URL: write scheme://..., "
            "for example redis://localhost:6379/0 or db+sqlite:///results.sqlite3"
        )
    scheme = url.partition("://")[0].lower()
    alias, plus, rest = scheme.partition("+")
    if alias in _MISTAKES:
        raise ConfigurationError(_MISTAKES[alias])
    kind = _ALIAS_KINDS.get(alias)
    if kind is None:
        kind = _other_alias_kind(alias)
    if kind is BackendKind.SQL:
        if not plus:
            raise ConfigurationError(
                f"{scheme}:// names no database: write {alias}+postgresql+psycopg://..., "
                f"{alias}+mysql+pymysql://... or {alias}+sqlite:///PATH"
            )
        dialect = rest.split("+")[0]
        if dialect == "postgres":
            raise ConfigurationError(
                "SQLAlchemy no longer accepts the 'postgres' dialect name: "
                f"write {alias}+postgresql+psycopg://..."
            )
        return BackendURL(url, scheme, alias, kind, sqlalchemy_url=url.split("+", 1)[1])
    return BackendURL(url, scheme, alias, kind)


def _other_alias_kind(alias: str) -> BackendKind:
    """Recognise the aliases of Celery's other backends and of installed plugins."""
    from celery.app.backends import BACKEND_ALIASES
    from celery.utils.imports import load_extension_class_names

    plugins = dict(load_extension_class_names("celery.result_backends"))
    if alias in BACKEND_ALIASES or alias in plugins:
        return BackendKind.OTHER
    raise UnknownBackend(
        f"no result backend is registered for the scheme {alias + '://'!r}: use one of "
        "redis://, rediss://, sentinel://, db+postgresql+psycopg://, db+mysql+pymysql://, "
        "db+sqlite:///, rpc://, file://"
    )
