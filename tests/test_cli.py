"""The command-line contract: exit codes, one-line errors, -A apps and `celery results`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import RedisDB, run


def write_app(folder: Path, name: str, backend: str, **settings: Any) -> None:
    lines = [
        "from celery import Celery",
        f"app = Celery({name!r}, broker='memory://', backend={backend!r})",
    ]
    lines += [f"app.conf.{key} = {value!r}" for key, value in settings.items()]
    (folder / f"{name}.py").write_text("\n".join(lines) + "\n")


def test_help_lists_the_commands(cli: Any) -> None:
    result = cli("--help")
    assert result.code == 0
    assert "doctor" in result.stdout


def test_version_is_printed(cli: Any) -> None:
    result = cli("--version")
    assert result.code == 0
    assert "resultkit, version" in result.stdout


def test_an_unknown_option_is_a_usage_error(cli: Any) -> None:
    result = cli("doctor", "--no-such-option")
    assert result.code == 2
    assert "No such option" in result.stderr


def test_a_url_and_an_app_together_are_a_usage_error(cli: Any) -> None:
    result = cli("doctor", "redis://localhost/0", "-A", "proj")
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [
        "error: give either a backend URL or -A/--app, not both"
    ]


def test_an_app_that_cannot_be_imported_is_a_one_line_usage_error(cli: Any) -> None:
    result = cli("doctor", "-A", "no_such_module_here")
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot load the Celery app 'no_such_module_here'" in result.stderr
    assert "Traceback" not in result.output


def test_a_timeout_below_the_minimum_is_a_usage_error(cli: Any) -> None:
    result = cli("doctor", "--timeout", "0")
    assert result.code == 2


def test_doctor_with_an_app_uses_its_backend_and_audits_its_settings(
    cli: Any, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given an app with a typo in a setting and pickle accepted
    write_app(
        tmp_path,
        "proj_typo",
        redis_db.url,
        result_expire=60,
        accept_content=["json", "pickle"],
        redis_password="s3cr3t-unused",
    )
    # When doctor runs with -A
    result = cli("doctor", "-A", "proj_typo", "--json")
    # Then the backend works, the audit fails on the typo and warns on pickle
    assert result.code == 1, result.output
    assert result.json["backend"] == redis_db.url
    assert result.check("roundtrip.success")["status"] == "pass"
    unknown = result.check("config.unknown-setting")
    assert unknown["status"] == "fail"
    assert "did you mean result_expires?" in unknown["message"]
    assert result.check("config.pickle")["status"] == "warn"


def test_celery_results_doctor_gives_the_same_report_as_resultkit_doctor(
    redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given an app configured with a Redis backend and a typo
    write_app(tmp_path, "proj_same", redis_db.url, result_extended=True, result_backend_max_retry=3)
    # When the doctor runs inside Celery's CLI and as resultkit
    inside = run("celery", "-A", "proj_same", "results", "doctor", "--json", cwd=tmp_path)
    outside = run("resultkit", "doctor", "-A", "proj_same", "--json", cwd=tmp_path)
    # Then both check the app's backend with the same checks and the same verdicts
    assert inside.code == outside.code == 1, inside.output
    verdicts = lambda r: [(c["id"], c["status"]) for c in r.json["checks"]]  # noqa: E731
    assert verdicts(inside) == verdicts(outside)
    assert inside.json["backend"] == redis_db.url
    assert (
        "result_backend_max_retry (did you mean result_backend_max_retries?)"
        in (inside.check("config.unknown-setting")["message"])
    )


def test_celery_results_is_listed_in_celerys_help(tmp_path: Path) -> None:
    result = run("celery", "--help", cwd=tmp_path)
    assert result.code == 0
    assert "results" in result.stdout


def test_an_app_without_a_result_backend_fails_the_url_check(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "nobackend.py").write_text(
        "from celery import Celery\napp = Celery('nobackend', broker='memory://')\n"
    )
    result = cli("doctor", "-A", "nobackend", "--json")
    assert result.code == 1
    check = result.check("url")
    assert check["status"] == "fail"
    assert "has no result_backend" in check["message"]


def test_human_output_never_shows_the_password(cli: Any) -> None:
    result = cli("doctor", "redis://:Sup3rSecretPw@127.0.0.1:1/0", "--timeout", "2")
    assert result.code == 1
    assert "Sup3rSecretPw" not in result.output
    assert "redis://:***@127.0.0.1:1/0" in result.stdout
