"""Masking secrets and recognising backend URLs."""

from __future__ import annotations

import pytest

from resultkit.errors import ConfigurationError, UnknownBackend
from resultkit.urls import BackendKind, Redactor, mask_url, parse_backend_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        (
            "db+postgresql+psycopg://app:p%40ss@db/results",
            "db+postgresql+psycopg://app:***@db/results",
        ),
        ("db+mysql+pymysql://root@127.0.0.1/test", "db+mysql+pymysql://root@127.0.0.1/test"),
        (
            "sentinel://:pw1@h1:26379/0;sentinel://:pw2@h2:26379/0",
            "sentinel://:***@h1:26379/0;sentinel://:***@h2:26379/0",
        ),
        (
            "rediss://h:6380/0?ssl_cert_reqs=required&password=abc",
            "rediss://h:6380/0?ssl_cert_reqs=required&password=***",
        ),
        ("amqp://guest:guest@localhost:5672//", "amqp://guest:***@localhost:5672//"),
        ("db+sqlite:///results.sqlite3", "db+sqlite:///results.sqlite3"),
        ("rpc://", "rpc://"),
    ],
)
def test_mask_url_hides_every_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_redactor_hides_secrets_inside_driver_messages() -> None:
    # Given a redactor that knows the URL's password
    redactor = Redactor()
    redactor.add_url("db+postgresql+psycopg://app:hunter22@db/results")
    # When a driver message echoes the password and a URL
    text = redactor.redact("auth failed for password hunter22 at postgresql://app:hunter22@db/x")
    # Then neither survives
    assert "hunter22" not in text
    assert "postgresql://app:***@db/x" in text


@pytest.mark.parametrize(
    ("url", "kind", "alias"),
    [
        ("redis://localhost:6379/0", BackendKind.REDIS, "redis"),
        ("rediss://localhost:6380/0?ssl_cert_reqs=required", BackendKind.REDIS, "rediss"),
        ("sentinel://localhost:26379/0", BackendKind.SENTINEL, "sentinel"),
        ("db+postgresql+psycopg://u@h/d", BackendKind.SQL, "db"),
        ("db+postgresql+psycopg2://u@h/d", BackendKind.SQL, "db"),
        ("db+mysql+pymysql://u@h/d", BackendKind.SQL, "db"),
        ("db+sqlite:///x.sqlite3", BackendKind.SQL, "db"),
        ("rpc://", BackendKind.RPC, "rpc"),
        ("file:///tmp/results", BackendKind.FILE, "file"),
        ("cache+memory://", BackendKind.OTHER, "cache"),
    ],
)
def test_parse_backend_url_recognises_celery_schemes(
    url: str, kind: BackendKind, alias: str
) -> None:
    parsed = parse_backend_url(url)
    assert (parsed.kind, parsed.alias) == (kind, alias)


def test_parse_backend_url_strips_db_prefix_for_sqlalchemy() -> None:
    assert parse_backend_url("db+sqlite:///x.sqlite3").sqlalchemy_url == "sqlite:///x.sqlite3"


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("postgres://u:pw@h/d", "db+postgresql+psycopg://"),
        ("postgresql://u@h/d", "db+ prefix"),
        ("mysql://u@h/d", "db+mysql+pymysql://"),
        ("amqp://guest@localhost//", "removed in Celery 5: use rpc://"),
        ("db+postgres://u@h/d", "db+postgresql+psycopg://"),
        ("db://u@h/d", "names no database"),
        ("localhost:6379", "is not a URL"),
    ],
)
def test_parse_backend_url_explains_common_mistakes(url: str, advice: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url(url)
    assert advice in str(info.value)
    assert "pw@" not in str(info.value)


def test_parse_backend_url_rejects_unknown_scheme_with_the_known_ones() -> None:
    with pytest.raises(UnknownBackend) as info:
        parse_backend_url("foo://bar")
    assert "'foo://'" in str(info.value)
    assert "redis://" in str(info.value)
