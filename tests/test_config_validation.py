"""config check validates as the code that uses each setting does; CLI choices are
checked up front; config new writes URLs that survive any password."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import ROOT, RedisDB, run


def write_config(folder: Path, name: str, **settings: Any) -> None:
    lines = [f"{key} = {value!r}" for key, value in settings.items()]
    (folder / f"{name}.py").write_text("\n".join(lines) + "\n")


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in result.json["checks"]}


# ------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("retention", "words"),
    [
        ({"rules": [{"state": "FAILUR", "expires": "30d"}]}, "unknown state 'FAILUR'"),
        ({"rules": [{"state": "FAILURE", "expires": "1 day"}]}, "'1 day' is not a duration"),
        ({"default": "1h", "rule": []}, "unknown key 'rule'"),
    ],
)
def test_config_check_refuses_the_retention_the_backend_refuses(
    tmp_path: Path, retention: dict[str, Any], words: str
) -> None:
    # Given an app whose resultkit_retention the backend would refuse
    write_config(
        tmp_path,
        "retentionapp",
        result_backend="resultkit-redis+redis://127.0.0.1:6379/0",
        resultkit_retention=retention,
    )
    # When its configuration is checked
    result = run("resultkit", "config", "check", "-A", "retentionapp", "--json", cwd=tmp_path)
    # Then the retention check fails with the backend's own words
    assert result.code == 1, result.output
    check = checks_of(result)["config.retention"]
    assert check["status"] == "fail"
    assert words in check["message"]


def test_a_valid_retention_passes_and_is_described(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        "goodretention",
        result_backend="redis://127.0.0.1:6379/0",
        resultkit_retention={"rules": [{"state": "FAILURE", "expires": "30d"}], "default": "1h"},
    )
    result = run("resultkit", "config", "check", "-A", "goodretention", "--json", cwd=tmp_path)
    check = checks_of(result)["config.retention"]
    assert check["status"] == "pass"
    assert "state FAILURE: 30d" in check["message"]


def test_doctor_reports_a_refused_retention_as_configuration_not_connection(
    cli: Any, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given a resultkit-redis app on a working Redis, with a retention state misspelt
    write_config(
        tmp_path,
        "doctorretention",
        result_backend=f"resultkit-redis+{redis_db.url}",
        resultkit_retention={"rules": [{"state": "FAILUR", "expires": "30d"}]},
    )
    # When the doctor runs
    result = cli("doctor", "-A", "doctorretention", "--json")
    # Then the failure is the configuration's, with a fix about the setting, not the URL
    assert result.code == 1
    checks = checks_of(result)
    failed = [c for c in checks.values() if c["status"] == "fail" and c["id"] != "config.retention"]
    assert failed, result.output
    assert failed[0]["data"]["reason"] == "configuration"
    assert "FAILUR" in failed[0]["message"]
    assert "URL" not in failed[0]["fix"]
    assert "config check" in failed[0]["fix"]
    assert checks["config.retention"]["status"] == "fail"


@pytest.mark.parametrize(
    ("dual", "words"),
    [
        ({"new": "redis://127.0.0.1:6379/1"}, "needs resultkit_dual_write"),
        ({"new": "redis://h/1", "old": "redis://h/2", "write-old": True}, "unknown key"),
        ({"new": "postgres://u@h/d", "old": "redis://h/2"}, "db+ prefix"),
        (
            {"new": "redis://h/1", "old": "redis://h/2", "old_retry_after": "soon"},
            "old_retry_after",
        ),
    ],
)
def test_config_check_refuses_the_dual_write_settings_the_backend_refuses(
    tmp_path: Path, dual: dict[str, Any], words: str
) -> None:
    write_config(tmp_path, "dualapp", result_backend="resultkit-dual://", resultkit_dual_write=dual)
    result = run("resultkit", "config", "check", "-A", "dualapp", "--json", cwd=tmp_path)
    assert result.code == 1, result.output
    check = checks_of(result)["config.dual-write"]
    assert check["status"] == "fail"
    assert words in check["message"]


def test_config_check_refuses_a_poll_interval_resultkit_db_refuses(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        "pollapp",
        result_backend="resultkit-db+sqlite:///r.sqlite3",
        resultkit_poll_interval="fast",
    )
    result = run("resultkit", "config", "check", "-A", "pollapp", "--json", cwd=tmp_path)
    assert result.code == 1
    check = checks_of(result)["config.poll-interval"]
    assert check["status"] == "fail"
    assert "resultkit_poll_interval" in check["message"]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("db+postgresql+psycopg://app:pa%ss@db/results", "warn"),  # '%' that is no escape
        ("db+postgresql+psycopg://app:pa:ss@db/results", "warn"),
        ("db+postgresql+psycopg://app:pa%40ss@db/results", "pass"),
        ("db+postgresql+psycopg://app@db/results", "pass"),
    ],
)
def test_config_check_warns_about_an_unencoded_special_character_in_a_password(
    tmp_path: Path, url: str, status: str
) -> None:
    write_config(tmp_path, "pwapp", result_backend=url, broker_url="memory://")
    result = run("resultkit", "config", "check", "-A", "pwapp", "--json", cwd=tmp_path)
    check = checks_of(result)["config.url-password"]
    assert check["status"] == status, check
    assert "pa" not in check["message"].replace("password", "")


def test_config_check_fails_a_password_the_driver_would_misread(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        "hashapp",
        result_backend="redis://:zq#xw@127.0.0.1:6379/0",
        broker_url="memory://",
    )
    result = run("resultkit", "config", "check", "-A", "hashapp", "--json", cwd=tmp_path)
    assert result.code == 1
    assert "%23" in checks_of(result)["url"]["message"]
    assert "zq" not in result.output
    assert "xw" not in result.output


# ------------------------------------------------------------ CLI choices


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("migrate", "redis://h/0", "db+sqlite:///x", "--state", "FAILED"), "did you mean FAILURE"),
        (("migrate", "redis://h/0", "db+sqlite:///x", "--state", "sucess"), "did you mean SUCCESS"),
        (
            ("migrate", "redis://h/0", "db+sqlite:///x", "--target-compression", "gzipp"),
            "did you mean gzip",
        ),
        (
            ("migrate", "redis://h/0", "db+sqlite:///x", "--target-serializer", "jsno"),
            "did you mean json",
        ),
        (("bench", "db+sqlite:///x", "--size", "-1KB"), "--size"),
        (("bench", "db+sqlite:///x", "--size", "0"), "--size"),
        (("bench", "db+sqlite:///x", "--size", "12XB"), "--size"),
        (("bench", "db+sqlite:///x", "--compression", "gzipp"), "did you mean gzip"),
        (("bench", "db+sqlite:///x", "--serializer", "msgpak"), "did you mean msgpack"),
        (("cleanup", "db+sqlite:///x", "--older-than", "99999999d"), "--older-than"),
        (("cleanup", "db+sqlite:///x", "--older-than", "1 day"), "not a duration"),
    ],
)
def test_a_choice_that_matches_nothing_is_a_usage_error_with_a_suggestion(
    cli: Any, args: tuple[str, ...], words: str
) -> None:
    # When a command is given a value that names nothing (and would silently match nothing)
    result = cli(*args)
    # Then it refuses before doing anything, in one line, with the closest valid value
    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]


# ------------------------------------------------------------ config new

NASTY = "p@ss/w#rd%x y:z?é"


def _load_config(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """Import the generated celeryconfig in a fresh interpreter; return its settings."""
    code = (
        "import json, celeryconfig as c\n"
        "print(json.dumps({k: v for k, v in vars(c).items() "
        "if not k.startswith('_') and isinstance(v, (str, int, dict, list))}))"
    )
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RESULT_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env={**clean, "PYTHONPATH": str(folder), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "redis", "rediss", "sentinel"])
def test_config_new_quotes_every_credential_from_the_environment(
    tmp_path: Path, backend: str
) -> None:
    # Given a configuration written for a backend
    made = run("resultkit", "config", "new", "--backend", backend, cwd=tmp_path)
    assert made.code == 0, made.output
    # When the password in the environment holds every special character
    env = {
        "RESULT_DB_PASSWORD": NASTY,
        "RESULT_DB_USER": "us@er",
        "RESULT_REDIS_PASSWORD": NASTY,
        "CELERY_BROKER_PASSWORD": NASTY,
        "CELERY_BROKER_USER": "bro:ker",
    }
    settings = _load_config(tmp_path, env)
    # Then each URL carries exactly that password, as its driver reads it
    backend_url = settings["result_backend"]
    if backend in ("postgresql", "mysql"):
        import sqlalchemy as sa

        parsed = sa.make_url(backend_url.split("+", 1)[1])
        assert (parsed.username, parsed.password, parsed.host) == ("us@er", NASTY, "localhost")
    else:
        from redis.connection import parse_url

        first = backend_url.split(";")[0].replace("sentinel://", "redis://")
        assert parse_url(first.split("?")[0])["password"] == NASTY
    from kombu.utils.url import url_to_parts

    broker = url_to_parts(settings["broker_url"])
    assert (broker.username, broker.password) == ("bro:ker", NASTY)
    # ... and config check finds nothing wrong with the URLs
    checked = run(
        "resultkit",
        "config",
        "check",
        "-A",
        "celeryconfig",
        "--json",
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
    )
    checks = checks_of(checked)
    assert checks.get("url", {"status": "pass"})["status"] == "pass", checked.output
    assert checks["config.url-password"]["status"] == "pass"


def test_config_new_writes_no_literal_password(tmp_path: Path) -> None:
    for backend in ("redis", "postgresql", "rpc"):
        folder = tmp_path / backend
        assert (
            run("resultkit", "config", "new", "--backend", backend, "--folder", str(folder)).code
            == 0
        )
        config = (folder / "celeryconfig.py").read_text()
        example = (folder / ".env.example").read_text()
        assert "guest:guest" not in config + example
        assert "guest" not in config
        # Unset, the broker default carries no credentials at all
        settings = _load_config(folder, {})
        assert "@" not in settings["broker_url"]


def test_the_generated_configuration_reads_dot_env_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    # Given a configuration and a .env beside it, as the docs say: cp .env.example .env
    assert run("resultkit", "config", "new", "--backend", "redis", cwd=tmp_path).code == 0
    (tmp_path / ".env").write_text(
        "# results\nRESULT_REDIS_HOST=redis.internal\n"
        "RESULT_REDIS_DB='5'\nexport RESULT_REDIS_PORT=6390\n"
        f'RESULT_REDIS_PASSWORD="{NASTY}"\n\n'
    )
    # When it is imported from another folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "import celeryconfig; print(celeryconfig.result_backend)"
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RESULT_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        env={**clean, "PYTHONPATH": str(tmp_path), "RESULT_REDIS_DB": "7"},
        capture_output=True,
        text=True,
        check=True,
    )
    # Then the .env values are used, and a variable already set wins over the file
    assert done.stdout.strip() == f"redis://:{quote(NASTY, safe='')}@redis.internal:6390/7"


def test_the_docs_and_the_template_agree_on_dot_env() -> None:
    # The docs tell users to copy .env.example to .env, and say who reads it
    setup = (ROOT / "docs" / "setup.md").read_text()
    assert "cp .env.example .env" in setup
    assert "celeryconfig.py reads `.env`" in setup
