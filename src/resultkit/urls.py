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
from urllib.parse import parse_qsl, quote, quote_plus, unquote

from .errors import ConfigurationError, UnknownBackend

__all__ = [
    "DEFAULT_RESULT_BACKEND",
    "BackendKind",
    "BackendURL",
    "Redactor",
    "credential_problem",
    "mask_url",
    "parse_backend_url",
    "parse_store_url",
    "unencoded_characters",
]

#: The embedded default: a SQLite database in the current folder.
DEFAULT_RESULT_BACKEND = "db+sqlite:///celery-results.sqlite3"

MASK = "***"

#: Query parameters whose values are secrets.
_SECRET_PARAMS = re.compile(r"(?i)\b([\w.-]*(?:password|passwd|secret|token)[\w.-]*=)([^&;\s]+)")
#: A URL's scheme, as loosely as SQLAlchemy reads one (any letters, digits, "_",
#: "+"; RFC 3986 adds "." and "-"): a scheme the mask did not see as one kept its
#: password shown.
_SCHEME = r"[^\W\d_][\w+.\-]*://"


class BackendKind(str, enum.Enum):
    """The storage family behind a result backend URL."""

    REDIS = "redis"
    REDIS_CLUSTER = "rediscluster"
    SENTINEL = "sentinel"
    SQL = "sql"
    RPC = "rpc"
    FILE = "file"
    DUAL = "dual"
    #: resultkit's own: a gzip'd JSON-lines archive (``jsonl://PATH``).
    ARCHIVE = "archive"
    #: resultkit's own: django-celery-results' tables (``django+<SQLAlchemy URL>``).
    DJANGO = "django"
    OTHER = "other"


#: Celery (and resultkit) backend aliases, by the kind of store behind them.
_ALIAS_KINDS: dict[str, BackendKind] = {
    "redis": BackendKind.REDIS,
    "rediss": BackendKind.REDIS,
    "resultkit-redis": BackendKind.REDIS,
    "rediscluster": BackendKind.REDIS_CLUSTER,
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


#: Where one URL of several (Sentinel's ``;``-joined list) ends and the next begins.
#: What urllib removes from a URL before parsing it (urllib.parse._UNSAFE_URL_BYTES_TO_REMOVE).
_URL_BLANKS = re.compile(r"[\t\r\n]")
_NEXT_URL = re.compile(f";(?={_SCHEME})")


def _chunks(url: str) -> list[str]:
    return _NEXT_URL.split(url)


def _password_span(chunk: str) -> tuple[int, int] | None:
    """Where the password of one ``scheme://user:password@host`` URL is, if it has one.

    The one rule every mask follows: the password runs from the first ``:``
    after ``scheme://`` to the *last* ``@`` of the URL.  For a URL whose
    password is percent-encoded that is exactly what redis-py, kombu, Celery
    and SQLAlchemy take as the password; for one written raw it covers what
    each of them takes (redis-py and kombu stop at ``#``, ``/`` or ``?``,
    SQLAlchemy at the first ``@``) and what the user meant, so no part of it
    is ever shown.  A URL with ``@`` in its path or query has more hidden
    than its password: shown too little would be a leak, too much is not.
    """
    # From the first "://", as parse_backend_url splits the scheme off.
    at = chunk.find("://")
    if at == -1:
        return None
    start = at + 3
    if chunk[start : start + 1] == "/":
        return None  # no authority: db+sqlite:///PATH, file:///PATH
    at = chunk.rfind("@", start)
    if at == -1:
        return None
    colon = chunk.find(":", start, at)
    if colon == -1 or colon + 1 == at:
        return None  # a user name only, or an empty password: nothing to hide
    return colon + 1, at


def _mask_authority(chunk: str) -> str:
    """Mask the password in one ``scheme://user:password@host`` chunk."""
    span = _password_span(chunk)
    if span is None:
        return chunk
    return f"{chunk[: span[0]]}{MASK}{chunk[span[1] :]}"


def mask_url(url: str | None) -> str:
    """Return *url* with every password replaced by ``***``.

    Handles several URLs joined by ``;`` (Sentinel), ``db+`` prefixes and
    secret query parameters such as ``?password=...``; see
    :func:`_password_span` for what counts as the password.
    """
    if not url:
        return ""
    # urllib (so redis-py and kombu) drops tabs and line breaks anywhere in a URL
    # before reading it: so does the mask, or "redis\r://:pw@host" would keep pw.
    text = _URL_BLANKS.sub("", str(url))
    masked = ";".join(_mask_authority(chunk) for chunk in _chunks(text))
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}{MASK}", masked)


def _passwords_in(url: str) -> Iterable[str]:
    for chunk in _chunks(_URL_BLANKS.sub("", url)):
        span = _password_span(chunk)
        if span is not None:
            yield chunk[span[0] : span[1]]
            yield from _driver_passwords(chunk)
    for _, value in _SECRET_PARAMS.findall(url):
        yield value


def _driver_passwords(chunk: str) -> Iterable[str]:
    """The passwords the drivers take from *chunk*, which may be only part of what
    :func:`_password_span` covers (a raw ``@`` or ``/`` in a URL): an error a
    driver raises may name that part alone."""
    from urllib.parse import urlsplit

    scheme, _, rest = chunk.partition("://")
    try:
        password = urlsplit("http://" + rest).password  # redis-py, kombu, Celery
    except ValueError:
        password = None
    if password:
        yield password
    if scheme.lower().startswith(("db+", "resultkit-db+")):  # as parse_backend_url reads it
        import sqlalchemy as sa

        try:
            read = sa.make_url(f"{scheme.split('+', 1)[1]}://{rest}").password
        except (sa.exc.ArgumentError, ValueError):
            read = None
        if read:
            yield str(read)


def _forms(secret: str) -> set[str]:
    """The ways a driver or Python may print *secret*: as written, decoded,
    percent-encoded (urllib's and SQLAlchemy's way) and inside a repr()."""
    plain = unquote(secret)
    forms = {secret, plain}
    for value in (secret, plain):
        forms.update(
            {quote(value, safe=""), quote(value, safe=" +"), quote_plus(value), repr(value)[1:-1]}
        )
    return {form for form in forms if form}


@dataclass
class Redactor:
    """Replace known secrets in any text with ``***``.

    Driver error messages sometimes echo connection parameters; every message
    resultkit shows passes through :meth:`redact` before it leaves the process.
    """

    secrets: set[str] = field(default_factory=set)
    #: The URLs given to :meth:`add_url`, replaced whole by their masked form.
    urls: set[str] = field(default_factory=set)

    #: Shorter secrets are masked inside URLs only: replacing two letters
    #: everywhere would garble every message.
    MIN_SECRET_CHARS = 4

    def add_url(self, url: str | None) -> None:
        """Remember *url* and the passwords it contains, in every form they may be printed."""
        if not url:
            return
        text = str(url)
        for chunk in _chunks(text):
            if _password_span(chunk) is not None:
                self.urls.add(chunk)
        for password in _passwords_in(text):
            self.secrets.update(_forms(password))

    def redact(self, text: str) -> str:
        """Return *text* with URLs masked and every known secret replaced."""
        for url in sorted(self.urls, key=len, reverse=True):
            if url in text:
                text = text.replace(url, mask_url(url))
        text = _SCHEME_URL.sub(lambda m: mask_url(m.group(0)), text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= self.MIN_SECRET_CHARS:
                text = text.replace(secret, MASK)
            else:
                text = text.replace(f":{secret}@", f":{MASK}@")
        return text


_SCHEME_URL = re.compile(_SCHEME + r"[^\s'\"<>]+")


#: What each driver family takes as the end of an unencoded password.  redis-py,
#: kombu and Celery split URLs with urllib (the authority ends at ``/?#``, and
#: ``[`` starts an IPv6 host); Celery's Sentinel backend also splits at ``;``;
#: SQLAlchemy ends the password at the first ``@``.
_BREAKS = {"urllib": "#/?[]", "sentinel": "#/?[];", "sqlalchemy": "@"}
#: Characters best percent-encoded in a password even where a driver reads them.
_RISKY = "#/?[];@%: "


def unencoded_characters(url: str) -> list[str]:
    """Characters of *url*'s passwords that are URL syntax and not percent-encoded
    (``%`` counts only when it does not start an escape such as ``%40``)."""
    found: list[str] = []
    for chunk in _chunks(url):
        span = _password_span(chunk)
        if span is None:
            continue
        password = re.sub(r"%[0-9A-Fa-f]{2}", "", chunk[span[0] : span[1]])
        found += [c for c in _RISKY if c in password and c not in found]
    return found


def credential_problem(url: str, reader: str) -> str | None:
    """Why the driver family *reader* (``urllib``, ``sentinel``, ``sqlalchemy``) would
    misread the credentials of *url*; None when it reads them as written.

    The driver's own parsing decides: urllib's (redis-py, kombu and Celery split
    URLs with it) misreads a raw password when it then finds no valid host and
    port; SQLAlchemy's when the host it finds holds an ``@``; Celery's Sentinel
    backend splits at ``;``.  The message never holds the password: it names
    the characters at fault and their encodings.
    """
    for chunk in _chunks(url):
        span = _password_span(chunk)
        password = chunk[span[0] : span[1]] if span else ""
        if reader == "sqlalchemy":
            misread = _sqlalchemy_misreads(chunk)
        else:
            misread = _urllib_misreads(chunk, password) or (
                reader == "sentinel" and ";" in password
            )
        if misread and password:
            bad = [c for c in _BREAKS[reader] if c in password] or [
                c for c in _RISKY if c in password
            ]
            listed = ", ".join(repr(c) for c in bad)
            encoded = ", ".join(f"{quote(c, safe='')} for {c!r}" for c in bad)
            who = "SQLAlchemy" if reader == "sqlalchemy" else "redis-py, kombu and Celery"
            return (
                f"the password in {mask_url(chunk)} holds {listed} without percent-encoding, "
                f"so {who} would read a different password and host: write {encoded} "
                "(urllib.parse.quote(password, safe='') encodes a whole password)"
            )
        if reader != "sqlalchemy" and "@" in chunk.partition("://")[2]:
            after = chunk.rpartition("@")[2]
            host = (
                re.split(r"[/?#]", after, maxsplit=1)[0].rpartition(":")[0]
                or re.split(r"[/?#:]", after, maxsplit=1)[0]
            )
            if not host:
                scheme = chunk.partition("://")[0]
                return (
                    f"{mask_url(chunk)} has credentials but no host: write "
                    f"{scheme}://HOST:6379/0 (with :PASSWORD@ before HOST when the server "
                    "has a password)"
                )
    return None


def _urllib_misreads(chunk: str, password: str) -> bool:
    """True when urllib (as kombu calls it) takes another password than *password*
    and is left without a valid host and port."""
    from urllib.parse import urlsplit

    rest = chunk.partition("://")[2]
    try:
        parts = urlsplit("http://" + rest)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
        valid = bool(parts.hostname)
    except ValueError:
        return True
    return (parts.password or "") != password and not valid


def _sqlalchemy_misreads(chunk: str) -> bool:
    """True when SQLAlchemy's parser finds a host holding ``@`` (the password ended
    at the first ``@``), or cannot parse the URL at all."""
    import sqlalchemy as sa

    scheme, _, rest = chunk.partition("://")
    name = scheme.split("+", 1)[1] if "+" in scheme else scheme
    try:
        parsed = sa.make_url(f"{name}://{rest}")
    except sa.exc.ArgumentError:
        return True
    except ValueError:  # a port that is no number: parse_backend_url says so
        return False
    return "@" in (parsed.host or "")


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
    def path(self) -> str:
        """Everything after ``://`` (a file system path for ``file://`` and ``jsonl://``)."""
        return self.raw.partition("://")[2]

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
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigurationError(
            f"{mask_url(url)!r} holds a control character (a tab or a line break pasted "
            "with it?): write the URL on one line"
        )
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
    if kind is BackendKind.REDIS and rest == "rediscluster":
        kind = BackendKind.REDIS_CLUSTER
    if kind is None:
        kind = _other_alias_kind(alias)
    if kind is not BackendKind.SENTINEL and len(_chunks(url)) > 1:
        # Only Sentinel lists URLs with ";"; anywhere else the driver reads one URL,
        # while the masks would take the text after ";" for another one.
        raise ConfigurationError(
            f"{mask_url(url)!r} holds ';' before another scheme://, which only sentinel:// "
            "URLs may: percent-encode it as %3B where it is part of a password"
        )
    reader = _READERS.get(kind)
    problem = credential_problem(url, reader) if reader else None
    if problem:
        raise ConfigurationError(problem)
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
        sqlalchemy_url = url.split("+", 1)[1]
        _check_sqlalchemy_url(sqlalchemy_url, url)
        return BackendURL(url, scheme, alias, kind, sqlalchemy_url=sqlalchemy_url)
    return BackendURL(url, scheme, alias, kind)


def _check_sqlalchemy_url(url: str, given: str) -> None:
    """Refuse what SQLAlchemy cannot parse (a port that is no number, ...) here, with
    the URL masked, rather than as a bare ValueError when the engine is made."""
    import sqlalchemy as sa

    try:
        sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        reason = "its port is not a number" if "int()" in str(exc) else "SQLAlchemy cannot parse it"
        raise ConfigurationError(
            f"{mask_url(given)} is not a valid database URL ({reason}): write "
            "dialect+driver://user:password@host:port/database"
        ) from None


def parse_store_url(url: str) -> BackendURL:
    """A URL a resultkit store reads: a result backend's (:func:`parse_backend_url`),
    an archive (``jsonl://PATH``) or django-celery-results' tables
    (``django+<SQLAlchemy URL>``)."""
    url = url.strip()
    scheme = url.partition("://")[0].lower()
    if scheme == "jsonl" or scheme.startswith("jsonl+"):
        return BackendURL(url, scheme, "jsonl", BackendKind.ARCHIVE)
    if scheme.startswith("django+"):
        tables = parse_backend_url("db+" + url.split("+", 1)[1])
        return BackendURL(
            url, scheme, "django", BackendKind.DJANGO, sqlalchemy_url=tables.sqlalchemy_url
        )
    return parse_backend_url(url)


#: The URL parser each kind's driver uses (see :func:`credential_problem`).
_READERS = {
    BackendKind.REDIS: "urllib",
    BackendKind.SENTINEL: "sentinel",
    BackendKind.SQL: "sqlalchemy",
}


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
