"""Masking secrets and recognising backend URLs."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ------------------------------------------------- passwords of any characters

#: Passwords that URL parsers read differently when they are not percent-encoded.
NASTY_PASSWORDS = ["pa#ss", "p@ss", "a/b", "a?b", "a%b", "a%41b", "a:b", "a b", "é✓結", "a;b", "x"]


@pytest.mark.parametrize("password", NASTY_PASSWORDS)
@pytest.mark.parametrize(
    ("template", "masked"),
    [
        ("redis://:{}@host:6379/0", "redis://:***@host:6379/0"),
        ("db+postgresql+psycopg://app:{}@db/results", "db+postgresql+psycopg://app:***@db/results"),
        (
            "sentinel://:{}@h1:26379/0;sentinel://:{}@h2:26379/0",
            "sentinel://:***@h1:26379/0;sentinel://:***@h2:26379/0",
        ),
    ],
)
def test_mask_url_hides_a_password_of_any_characters_quoted_or_not(
    password: str, template: str, masked: str
) -> None:
    # Given the password written as it is, and percent-encoded
    for written in (password, quote(password, safe="")):
        # When the URL is masked
        # Then exactly the password is replaced, whatever its characters
        assert mask_url(template.format(written, written)) == masked


def test_mask_url_leaves_urls_without_credentials_alone() -> None:
    for url in ("redis://", "redis://host:6379/0?a=b", "db+sqlite:////tmp/a@b/x.db", "file:///a@b"):
        assert mask_url(url) == url


@pytest.mark.parametrize(
    ("url", "character"),
    [
        ("redis://:zq#xw@host:6379/0", "#"),
        ("redis://:zq/xw@host:6379/0", "/"),
        ("rediss://:zq?xw@host:6380/0?ssl_cert_reqs=required", "?"),
        ("sentinel://:zq;xw@h1:26379/0", ";"),
        ("db+postgresql+psycopg://app:zq@xw@db/results", "@"),
        ("db+mysql+pymysql://app:zq@xw@db/results", "@"),
    ],
)
def test_a_password_the_driver_would_cut_short_is_refused_without_showing_it(
    url: str, character: str
) -> None:
    # When a URL whose unencoded password the driver would read differently is parsed
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url(url)
    # Then the message names the character and its encoding, never the password
    message = str(info.value)
    assert repr(character) in message
    assert quote(character, safe="") in message
    assert "zq" not in message
    assert "xw" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://p@ss:pw@host:6379/0",  # '@' in a Redis password is read whole by redis-py
        "db+postgresql+psycopg://app:pa#ss@db/results",  # SQLAlchemy reads '#', '/', '?'
        "db+postgresql+psycopg://app:a/b?c@db/results",
        "redis://:" + quote("pa#s/s?@", safe="") + "@host:6379/0",
    ],
)
def test_a_password_the_driver_reads_whole_is_accepted(url: str) -> None:
    parse_backend_url(url)


@pytest.mark.parametrize("url", ["redis://:@", "redis://:pw@/0", "rediss://user:pw@:6380/0"])
def test_a_redis_url_with_credentials_but_no_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url(url)
    assert "no host" in str(info.value)
    assert "HOST" in str(info.value)


def test_redactor_hides_short_and_odd_passwords_in_driver_messages() -> None:
    # Given a redactor that knows a URL whose password holds a space and a quote
    url = "db+postgresql+psycopg://app:a b'c@db/results"
    redactor = Redactor()
    redactor.add_url(url)
    # When messages echo the URL raw, as SQLAlchemy renders it, and as Python's repr
    rendered = "postgresql+psycopg://app:" + quote("a b'c", safe=" +") + "@db/results"
    for text in (f"failed at {url} now", f"engine {rendered} failed", f"bad url {url!r}"):
        # Then the password never survives
        out = redactor.redact(text)
        assert "a b'c" not in out
        assert quote("a b'c", safe=" +") not in out
        assert "a b\\'c" not in out


@settings(max_examples=300, deadline=None)
@given(password=st.text(min_size=1).filter(lambda p: "://" not in p))
def test_property_mask_url_replaces_exactly_the_password(password: str) -> None:
    # Whatever the password, written raw or percent-encoded, in a URL with a user or without
    for written in (password, quote(password, safe="")):
        assert mask_url(f"redis://:{written}@h:6379/0") == "redis://:***@h:6379/0"
        assert mask_url(f"db+postgresql+psycopg://u:{written}@h/db") == (
            "db+postgresql+psycopg://u:***@h/db"
        )
        assert mask_url(f"sentinel://:{written}@a:1/0;sentinel://:{written}@b:2/0") == (
            "sentinel://:***@a:1/0;sentinel://:***@b:2/0"
        )


@settings(max_examples=300, deadline=None)
@given(password=st.text(min_size=4).filter(lambda p: "://" not in p))
def test_property_the_redactor_lets_no_form_of_the_password_through(password: str) -> None:
    # Given a redactor that knows a URL holding the password (percent-encoded, as drivers want)
    url = f"db+postgresql+psycopg://app:{quote(password, safe='')}@db/results"
    redactor = Redactor()
    redactor.add_url(url)
    # When any message quotes the URL, the password, or their usual encodings
    texts = [
        f"cannot connect to {url}",
        f"{url!r} refused",
        f"password authentication failed: {password}",
        f"password {password!r} refused",
        f"rendered postgresql+psycopg://app:{quote(password, safe=' +')}@db/results",
    ]
    for text in texts:
        out = redactor.redact(text)
        # Then none of those forms survives
        for form in {password, quote(password, safe=""), quote(password, safe=" +")}:
            assert form not in out, (text, out)


@pytest.mark.parametrize(
    "url",
    [
        "rediss://:pw@host:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca@2024.pem",
        "db+postgresql+psycopg://app:pw@db/results?sslrootcert=/etc/ssl/ca@2024.pem",
        "redis://host:6379/0?client_name=a@b",
    ],
)
def test_an_at_sign_in_the_query_is_not_taken_for_a_broken_password(url: str) -> None:
    # The driver reads these as their authors meant: nothing to refuse (the mask hides
    # more than the password here, which shows nothing it should not)
    parse_backend_url(url)
    assert "pw" not in mask_url(url)


def test_a_database_url_whose_port_is_no_number_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="port is not a number") as caught:
        parse_backend_url("db+postgresql+psycopg://user:s3cret@localhost:54x2/test")
    assert "s3cret" not in str(caught.value)
    assert "user:***@localhost" in str(caught.value)


def test_the_redactor_hides_the_part_of_a_password_a_driver_reads() -> None:
    # urllib (redis-py, kombu) ends this password at the first "@"; the mask covers
    # up to the last one, and a driver's error may name what it read alone.
    url = "redis://:s3cret@localhost://:other@localhost:6379/0"
    redactor = Redactor()
    redactor.add_url(url)
    assert redactor.redact("AUTH failed with s3cret") == "AUTH failed with ***"


def test_a_scheme_with_an_underscore_has_its_password_masked() -> None:
    # SQLAlchemy's dialect names may hold "_": the mask must see the scheme as one.
    assert mask_url("db+my_dialect+driver://user:s3cret@host/db") == (
        "db+my_dialect+driver://user:***@host/db"
    )


def test_a_url_with_a_line_break_is_refused_and_masked_as_urllib_reads_it() -> None:
    # urllib drops tabs and line breaks anywhere in a URL before reading it.
    url = "redis\r://:s3cret@localhost:6379/0"
    assert mask_url(url) == "redis://:***@localhost:6379/0"
    with pytest.raises(ConfigurationError, match="control character") as caught:
        parse_backend_url(url)
    assert "s3cret" not in str(caught.value)


def test_a_scheme_with_letters_beyond_ascii_has_its_password_masked() -> None:
    # SQLAlchemy reads any word characters as a dialect name; so does the mask.
    assert mask_url("db+postgresql+psycopgü://user:s3cret@host/db") == (
        "db+postgresql+psycopgü://user:***@host/db"
    )


def test_only_sentinel_urls_may_list_urls_with_semicolons() -> None:
    # A driver reads a database or Redis URL whole; the mask would split it at ";".
    with pytest.raises(ConfigurationError, match="%3B") as caught:
        parse_backend_url("db+postgresql+psycopg://user:pa;redis://x:s3cret@host/db")
    assert "s3cret" not in str(caught.value)
    assert parse_backend_url("sentinel://:a@h1:26379/0;sentinel://:b@h2:26379/0").kind is (
        BackendKind.SENTINEL
    )


def test_the_redactor_reads_an_upper_case_alias_as_parse_backend_url_does() -> None:
    # SQLAlchemy ends this password at the first "@"; the alias is "db" in any case.
    url = "DB+postgresql://user:s3cret@first@host/db"
    redactor = Redactor()
    redactor.add_url(url)
    assert "s3cret" not in redactor.redact("password authentication failed: s3cret")
