"""``resultkit doctor`` against the real servers: the pass path on every backend, and
the specific failing check for each way a backend can be unreachable or wrong."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from resultkit import Status, doctor
from tests.conftest import RedisDB, SqlDB, free_port, run
from tests.netutil import black_hole

ROUNDTRIP = ("roundtrip.success", "roundtrip.failure", "roundtrip.group", "roundtrip.forget")


def assert_healthy(result: Any) -> None:
    assert result.code == 0, result.output
    document = result.json
    assert document["ok"] is True
    statuses = {c["id"]: c["status"] for c in document["checks"]}
    for check_id in ("url", "driver", "connect", "latency"):
        assert statuses[check_id] == "pass", document
    assert not [c for c in document["checks"] if c["status"] == "fail"]


# ----------------------------------------------------------------- pass path


def test_doctor_without_arguments_checks_the_embedded_sqlite_default(
    cli: Any, tmp_path: Path
) -> None:
    # Given a folder with nothing in it
    # When the user runs `resultkit doctor` with no URL and no app
    result = cli("doctor", "--json")
    # Then the embedded SQLite default works end to end
    assert_healthy(result)
    assert result.json["backend"] == "db+sqlite:///celery-results.sqlite3"
    assert all(result.check(c)["status"] == "pass" for c in ROUNDTRIP)
    assert (tmp_path / "celery-results.sqlite3").exists()


def test_doctor_prints_a_readable_report_by_default(cli: Any) -> None:
    result = cli("doctor")
    assert result.code == 0, result.output
    assert "resultkit doctor" in result.stdout
    assert "roundtrip.success" in result.stdout
    assert "passed" in result.stdout
    assert "failed" in result.stdout
    assert "Traceback" not in result.output


def test_doctor_passes_on_redis(cli: Any, redis_db: RedisDB) -> None:
    result = cli("doctor", redis_db.url, "--json")
    assert_healthy(result)
    assert all(result.check(c)["status"] == "pass" for c in ROUNDTRIP)
    # the probe leaves nothing behind
    assert redis_db.client.dbsize() == 0


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_doctor_passes_on_postgresql_with_either_driver(
    cli: Any, postgres_db: SqlDB, driver: str
) -> None:
    url = postgres_db.url.replace("postgresql+psycopg://", f"postgresql+{driver}://")
    result = cli("doctor", url, "--json")
    assert_healthy(result)
    assert all(result.check(c)["status"] == "pass" for c in ROUNDTRIP)
    # the server is named once, by its own name and version
    assert re.match(r"connected to PostgreSQL \d+(\.\d+)* in ", result.check("connect")["message"])


def test_doctor_passes_on_mariadb(cli: Any, mysql_db: SqlDB) -> None:
    result = cli("doctor", mysql_db.url, "--json")
    assert_healthy(result)
    assert all(result.check(c)["status"] == "pass" for c in ROUNDTRIP)


def test_doctor_passes_on_sqlite(cli: Any, sqlite_db: SqlDB) -> None:
    result = cli("doctor", sqlite_db.url, "--json")
    assert_healthy(result)


def test_doctor_passes_on_the_filesystem_backend(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    result = cli("doctor", f"file://{folder}", "--json")
    assert_healthy(result)
    assert all(result.check(c)["status"] == "pass" for c in ROUNDTRIP)
    assert result.check("file.results")["status"] == "pass"
    assert not [p for p in folder.iterdir() if p.name.startswith("celery-task-meta-")]


def test_doctor_sends_a_real_result_through_rabbitmq_for_rpc(cli: Any, amqp_url: str) -> None:
    result = cli("doctor", "rpc://", "--broker", amqp_url, "--json")
    assert_healthy(result)
    assert result.check("roundtrip.success")["status"] == "pass"
    assert result.check("roundtrip.failure")["status"] == "pass"
    assert result.check("roundtrip.group")["status"] == "skip"
    assert result.check("config.rpc-chords")["status"] == "warn"
    assert "guest:guest" not in result.output


def test_doctor_is_a_library_function_returning_a_report(redis_db: RedisDB) -> None:
    report = doctor(redis_db.url, timeout=10)
    assert report.ok
    assert report.by_id("roundtrip.group").status is Status.PASS
    assert report.as_dict()["backend"] == redis_db.url


# ----------------------------------------------------------------- fail path


def failing(result: Any, check_id: str) -> dict[str, Any]:
    assert result.code == 1, result.output
    assert result.json["ok"] is False
    check = result.check(check_id)
    assert check["status"] == "fail", check
    assert check["fix"], check
    assert "Traceback" not in result.output
    return check


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:{port}/0",
        "db+postgresql+psycopg://postgres@127.0.0.1:{port}/test",
        "db+mysql+pymysql://root@127.0.0.1:{port}/test",
    ],
)
def test_doctor_fails_connect_on_a_closed_port(cli: Any, url: str) -> None:
    from tests.conftest import free_port

    result = cli("doctor", url.format(port=free_port()), "--json")
    check = failing(result, "connect")
    assert "connection refused" in check["message"]
    assert result.check("roundtrip")["status"] == "skip"


def test_doctor_fails_connect_on_a_wrong_mariadb_password_without_showing_it(
    cli: Any, mysql_db: SqlDB
) -> None:
    import sqlalchemy as sa

    # Given a MariaDB user with a password
    user = f"u{mysql_db.name[-8:]}"
    with mysql_db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-pass-1'"))
    try:
        # When doctor connects with another password
        url = f"db+mysql+pymysql://{user}:Wr0ng-Passw0rd@127.0.0.1:3306/{mysql_db.name}"
        result = cli("doctor", url, "--json")
        # Then connect fails as an authentication failure, and the password is never shown
        check = failing(result, "connect")
        assert "authentication failed" in check["message"]
        assert "Wr0ng-Passw0rd" not in result.output
        assert result.json["backend"].startswith(f"db+mysql+pymysql://{user}:***@")
    finally:
        with mysql_db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'%'"))


def test_doctor_fails_connect_on_a_wrong_redis_password(cli: Any, own_redis: Any) -> None:
    server = own_redis("--requirepass", "the-right-one")
    result = cli("doctor", f"redis://:n0t-the-right-one@127.0.0.1:{server.port}/0", "--json")
    check = failing(result, "connect")
    assert "authentication failed" in check["message"]
    assert "n0t-the-right-one" not in result.output


def test_doctor_fails_connect_on_a_wrong_broker_password_for_rpc(cli: Any, amqp_url: str) -> None:
    broker = amqp_url.replace("guest:guest@", "guest:Wr0ngGuest@")
    result = cli("doctor", "rpc://", "--broker", broker, "--json")
    check = failing(result, "connect")
    assert "authentication failed" in check["message"]
    assert "Wr0ngGuest" not in result.output


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_doctor_fails_connect_on_a_missing_database(cli: Any, server: str, request: Any) -> None:
    db: SqlDB = request.getfixturevalue(f"{server}_db")
    import sqlalchemy as sa

    url = "db+" + sa.make_url(db.sqlalchemy_url).set(
        database="no_such_db_rk", query={}
    ).render_as_string(hide_password=False)
    result = cli("doctor", url, "--json")
    check = failing(result, "connect")
    assert "database does not exist" in check["message"]
    assert "CREATE DATABASE" in check["fix"]


def test_doctor_fails_driver_check_when_the_driver_is_not_installed(cli: Any) -> None:
    # mysqlclient (MySQLdb), the default driver of mysql:// URLs, is not a dependency
    result = cli("doctor", "db+mysql://root@127.0.0.1:3306/test", "--json")
    check = failing(result, "driver")
    assert "'MySQLdb'" in check["message"]
    assert "pip install 'celery-resultkit[mysql]'" in check["fix"]
    assert "db+mysql+pymysql://" in check["fix"]


def test_doctor_names_the_extra_when_psycopg_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given psycopg cannot be imported (None in sys.modules makes any import fail)
    monkeypatch.setitem(__import__("sys").modules, "psycopg", None)
    report = doctor("db+postgresql+psycopg://postgres@127.0.0.1/test", timeout=5)
    check = report.by_id("driver")
    assert check.status is Status.FAIL
    assert check.fix == "pip install 'celery-resultkit[postgres]'"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("foo://somewhere", "no result backend is registered for the scheme 'foo://'"),
        ("postgres://app:S3cretPw@db/results", "needs the db+ prefix"),
        ("amqp://guest@localhost//", "removed in Celery 5"),
        ("sentinel://127.0.0.1:26379/mymaster", "not a database number"),
        ("rediss://127.0.0.1:6379/0", "needs ssl_cert_reqs"),
    ],
)
def test_doctor_fails_the_url_check_for_unknown_schemes_and_common_mistakes(
    cli: Any, url: str, words: str
) -> None:
    result = cli("doctor", url, "--json")
    check = failing(result, "url")
    assert words in check["message"]
    assert "S3cretPw" not in result.output
    assert result.check("connect")["status"] == "skip"


def test_doctor_stays_within_its_timeout_when_the_server_never_answers(cli: Any) -> None:
    # Given a port that accepts connections and never replies
    with black_hole() as port:
        started = time.monotonic()
        result = cli("doctor", f"redis://127.0.0.1:{port}/0", "--timeout", "2", "--json")
        elapsed = time.monotonic() - started
    # Then doctor gives up within its time budget (plus interpreter start-up) and says why
    check = failing(result, "connect")
    assert "no answer" in check["message"]
    assert "--timeout" in check["fix"]
    assert elapsed < 2 + 6


def test_doctor_fails_roundtrip_when_the_user_may_not_write(cli: Any, own_redis: Any) -> None:
    # Given a Redis user that may read but not write
    server = own_redis()
    server.client().execute_command(
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">reader-pass",
        "~*",
        "+@read",
        "+ping",
        "+info",
        "+config|get",
        "+scan",
        "+ttl",
        "+hello",
        "+client",
    )
    result = cli("doctor", f"redis://reader:reader-pass@127.0.0.1:{server.port}/0", "--json")
    # Then the connection passes and the round trip fails, saying why
    assert result.check("connect")["status"] == "pass"
    check = failing(result, "roundtrip")
    assert "NOPERM" in check["message"] or "permission" in check["message"].lower()


def test_doctor_passes_on_redis_sentinel(cli: Any, sentinel: Any) -> None:
    # Given a sentinel watching a master named mymaster
    port, master = sentinel
    # When doctor is given the sentinel URL with the master name
    result = cli("doctor", f"sentinel://127.0.0.1:{port}/0?master_name=mymaster", "--json")
    # Then the round trip goes through the sentinel to the master
    assert_healthy(result)
    assert all(result.check(c)["status"] == "pass" for c in ROUNDTRIP)
    assert master.client().dbsize() == 0


def test_doctor_reads_the_sentinel_master_name_from_the_app(
    cli: Any, sentinel: Any, tmp_path: Path
) -> None:
    port, _ = sentinel
    (tmp_path / "watched.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('watched', backend='sentinel://127.0.0.1:{port}/0')\n"
        "app.conf.result_backend_transport_options = {'master_name': 'mymaster'}\n"
    )
    assert_healthy(cli("doctor", "-A", "watched", "--json"))


def test_doctor_fails_a_sentinel_url_without_a_master_name(cli: Any) -> None:
    check = failing(cli("doctor", "sentinel://127.0.0.1:26379/0", "--json"), "url")
    assert "master_name" in check["fix"]


def test_doctor_explains_a_host_name_that_does_not_resolve(cli: Any) -> None:
    result = cli("doctor", "redis://no-such-host.invalid:6379/0", "--json")
    check = failing(result, "connect")
    assert check["data"]["reason"] in {"dns", "timeout"}
    assert "host" in check["message"]


def test_doctor_explains_tls_to_a_server_without_tls(cli: Any, redis_db: RedisDB) -> None:
    # Given a plain Redis server addressed with rediss://
    url = redis_db.url.replace("redis://", "rediss://") + "?ssl_cert_reqs=required"
    # Then connect fails as a TLS failure with the fix for both directions
    check = failing(cli("doctor", url, "--json"), "connect")
    assert check["data"]["reason"] == "tls"
    assert "use redis://" in check["fix"]


@pytest.mark.parametrize(
    ("url", "name"),
    [("mysql", r"(MariaDB|MySQL) \d+"), ("sqlite", r"SQLite \d+"), ("redis", r"Redis \d+")],
)
def test_doctor_names_the_server_and_its_version(
    cli: Any, request: Any, url: str, name: str
) -> None:
    fixture = {"mysql": "mysql_db", "sqlite": "sqlite_db", "redis": "redis_db"}[url]
    result = cli("doctor", request.getfixturevalue(fixture).url, "--json")
    assert re.match(rf"connected to {name}[.\d]* in ", result.check("connect")["message"]), (
        result.check("connect")
    )


@pytest.mark.parametrize("url", ["redis://:@", "redis://:pw@/0"])
def test_doctor_says_a_url_without_a_host_has_none_and_tests_nothing(cli: Any, url: str) -> None:
    # When the URL names no host (a template left half filled in)
    result = cli("doctor", url, "--json")
    # Then the URL check fails and says what to write, and no server is tried
    assert result.code == 1
    check = result.check("url")
    assert check["status"] == "fail"
    assert "no host" in check["message"]
    assert "redis://HOST:6379/0" in check["fix"]
    assert result.check("connect")["status"] == "skip"


def test_doctor_refuses_a_broker_url_whose_raw_password_kombu_would_misread(cli: Any) -> None:
    # Given rpc:// with a broker URL whose password holds a raw '#'
    result = cli("doctor", "rpc://", "--broker", "amqp://app:zq#xw@127.0.0.1:5672//", "--json")
    # Then the broker check fails naming the character, and no piece of the password shows
    assert result.code == 1
    check = result.check("broker")
    assert check["status"] == "fail"
    assert "%23" in check["message"]
    assert "zq" not in result.output
    assert "xw" not in result.output


# ------------------------------------------------------- resultkit-dual


def _dual_app(folder: Path, new: str, old: str) -> None:
    (folder / "cutover.py").write_text(
        "from celery import Celery\n"
        "app = Celery('cutover', backend='resultkit-dual://')\n"
        f"app.conf.resultkit_dual_write = {{'new': {new!r}, 'old': {old!r}}}\n"
    )


def _checks(result: Any) -> dict[str, Any]:
    return {check["id"]: check for check in result.json["checks"]}


def test_doctor_reaches_both_sides_of_a_dual_backend(
    redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given a cutover app writing PostgreSQL (new) and Redis (old)
    _dual_app(tmp_path, postgres_db.url, redis_db.url)
    # When the doctor checks it
    result = run("resultkit", "doctor", "-A", "cutover", "--json", cwd=tmp_path)
    # Then each side is reached and named, and the round trip goes through both
    checks = _checks(result)
    assert checks["dual.new"]["status"] == "pass", checks["dual.new"]
    assert "PostgreSQL" in checks["dual.new"]["message"]
    assert checks["dual.old"]["status"] == "pass", checks["dual.old"]
    assert "Redis" in checks["dual.old"]["message"]
    assert checks["roundtrip.success"]["status"] == "pass"
    assert result.code == 0, result.output


def test_doctor_warns_when_the_old_side_is_out_of_reach_and_fails_for_the_new(
    redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given the old side's Redis is a port nobody listens on
    port = free_port()
    down = f"redis://:secret-old@127.0.0.1:{port}/0"
    _dual_app(tmp_path, postgres_db.url, down)
    result = run("resultkit", "doctor", "-A", "cutover", "--json", "--timeout", "8", cwd=tmp_path)
    checks = _checks(result)
    # Then the old side warns (the dual backend keeps writing the new one), without
    # its password
    assert checks["dual.old"]["status"] == "warn", checks["dual.old"]
    assert str(port) in checks["dual.old"]["message"]
    assert "secret-old" not in result.output
    assert checks["dual.new"]["status"] == "pass"
    # And with the new side out of reach instead, the doctor fails
    _dual_app(tmp_path, f"redis://127.0.0.1:{port}/0", redis_db.url)
    result = run("resultkit", "doctor", "-A", "cutover", "--json", "--timeout", "8", cwd=tmp_path)
    assert _checks(result)["dual.new"]["status"] == "fail", result.output
    assert result.code == 1
