"""Backend URLs: the parser and the masker, on any text.

``parse_backend_url`` and ``parse_store_url`` refuse with ConfigurationError
(or UnknownBackend) only.  Of a URL it accepts, the password its driver would read (urllib's
split for Redis and Sentinel, as redis-py and kombu read it; SQLAlchemy's for
SQL) is gone from ``mask_url``'s output as that driver reads it, and a
Redactor that was given the URL hides that password (4 characters or more)
in any message a driver may print.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

from _common import fuzz, instrumented

with instrumented(__name__):
    from resultkit import urls
    from resultkit.errors import ConfigurationError


def text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def urllib_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def sqlalchemy_password(url: str) -> str | None:
    import sqlalchemy as sa

    try:
        password = sa.engine.make_url(
            url.split("+", 1)[1] if url.startswith("db+") else url
        ).password
    except (sa.exc.ArgumentError, ValueError, TypeError, IndexError):
        return None
    return None if password is None else str(password)


READERS = {
    urls.BackendKind.REDIS: urllib_password,
    urls.BackendKind.SENTINEL: urllib_password,
    urls.BackendKind.REDIS_CLUSTER: urllib_password,
    urls.BackendKind.SQL: sqlalchemy_password,
}


def check(data: bytes) -> None:
    url = text_of(data)
    try:
        parsed = urls.parse_backend_url(url)
    except ConfigurationError:
        parsed = None
    with contextlib.suppress(ConfigurationError):
        urls.parse_store_url(url)
    masked = urls.mask_url(url)
    if parsed is None:
        return
    if parsed.masked != urls.mask_url(parsed.raw):
        raise AssertionError("BackendURL.masked is not mask_url")
    read = READERS.get(parsed.kind)
    if read is None:
        return
    redactor = urls.Redactor()
    redactor.add_url(url)
    # Sentinel URLs are lists joined by ";"; a driver reads any other URL whole.
    sentinel = parsed.kind is urls.BackendKind.SENTINEL
    for chunk in urls._chunks(parsed.raw) if sentinel else [parsed.raw]:
        password = read(chunk)
        if not password or password == urls.MASK:
            continue
        if any(read(part) == password for part in (urls._chunks(masked) if sentinel else [masked])):
            raise AssertionError(f"{read.__name__}: {password!r} survives masking {url!r}")
        message = f"connection refused for {password}"
        if len(password) >= urls.Redactor.MIN_SECRET_CHARS and password in redactor.redact(message):
            raise AssertionError(f"{read.__name__}: {password!r} survives redacting {url!r}")


if __name__ == "__main__":
    fuzz(check)
