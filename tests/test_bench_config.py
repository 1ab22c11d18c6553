"""config new, config check, doctor and bench, end to end on the real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import services
from tests.conftest import RedisDB, SqlDB, run


def _env_for(backend: str, request: Any) -> dict[str, str]:
    if backend == "redis":
        db: RedisDB = request.getfixturevalue("redis_db")
        return {"RESULT_REDIS_HOST": "127.0.0.1", "RESULT_REDIS_DB": str(db.number)}
    if backend in ("postgresql", "mysql"):
        sql: SqlDB = request.getfixturevalue(
            "postgres_db" if backend == "postgresql" else "mysql_db"
        )
        url = sa.make_url(sql.sqlalchemy_url)
        env = {
            "RESULT_DB_HOST": url.host or "127.0.0.1",
            "RESULT_DB_PORT": str(url.port),
            "RESULT_DB_USER": url.username or "",
            "RESULT_DB_NAME": url.database or "",
        }
        if backend == "postgresql":
            env["RESULT_DB_OPTIONS"] = f"options=-csearch_path%3D{sql.name}"
        else:
            env["RESULT_DB_NAME"] = sql.name
        return env
    return {}


@pytest.mark.parametrize("backend", ["redis", "postgresql", "mysql", "sqlite"])
def test_a_new_user_goes_from_nothing_to_a_checked_benchmarked_configuration(
    backend: str, request: Any, tmp_path: Path
) -> None:
    env = {**_env_for(backend, request), "CELERY_BROKER_URL": services.AMQP_URL}
    # config new writes the configuration and the environment template
    made = run(
        "resultkit",
        "config",
        "new",
        "--backend",
        backend,
        "--retention",
        "7d",
        cwd=tmp_path,
        env=env,
    )
    assert made.code == 0, made.output
    assert (tmp_path / "celeryconfig.py").exists()
    template = (tmp_path / ".env.example").read_text()
    assert "_PASSWORD=\n" in template or backend == "sqlite"  # to fill in, never a literal
    # config check passes on it
    checked = run(
        "resultkit", "config", "check", "-A", "celeryconfig", "--json", cwd=tmp_path, env=env
    )
    assert checked.code == 0, checked.output
    # doctor passes against the real server
    doctor = run("resultkit", "doctor", "-A", "celeryconfig", "--json", cwd=tmp_path, env=env)
    assert doctor.code == 0, doctor.output
    # bench measures it (and Celery's own counterpart) and plots it
    bench = run(
        "resultkit",
        "bench",
        "-A",
        "celeryconfig",
        "--seconds",
        "0.6",
        "--json",
        "--plot",
        str(tmp_path / "bench.png"),
        cwd=tmp_path,
        env=env,
    )
    assert bench.code == 0, bench.output
    cases = bench.json["cases"]
    assert cases[0]["throughput"]["store"] > 0
    assert set(cases[0]["latency_ms"]["fetch"]) == {"p50", "p95", "p99"}
    assert any(c["counterpart_of"] for c in cases)  # Celery's own backend, same run
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_config_new_refuses_to_overwrite_and_refuses_pickle(tmp_path: Path) -> None:
    assert run("resultkit", "config", "new", "--backend", "rpc", cwd=tmp_path).code == 0
    again = run("resultkit", "config", "new", "--backend", "rpc", cwd=tmp_path)
    assert again.code == 2
    assert "pass --force" in again.stderr
    pickle = run(
        "resultkit",
        "config",
        "new",
        "--backend",
        "redis",
        "--serializer",
        "pickle",
        "--force",
        cwd=tmp_path,
    )
    assert pickle.code == 2


def test_config_check_fails_on_errors_and_explains(tmp_path: Path) -> None:
    (tmp_path / "badconfig.py").write_text(
        "result_backend = 'redis://localhost:6379/0'\n"
        "result_expires = '1 day'\n"
        "result_extended = 'yes'\n"
        "result_compression_level = 9\n"
        "database_table_names = {'task': 'x'}\n"
    )
    result = run("resultkit", "config", "check", "-A", "badconfig", "--json", cwd=tmp_path)
    assert result.code == 1
    checks = {c["id"]: c for c in result.json["checks"]}
    assert checks["config.types"]["status"] == "fail"
    assert "result_expires must be a number of seconds" in checks["config.types"]["fix"]
    assert checks["config.unknown-setting"]["status"] == "fail"
    assert checks["config.conflicts"]["status"] == "warn"
    assert "database_table_names" in checks["config.conflicts"]["message"]


def test_bench_cleans_up_and_never_touches_other_results(cli: Any, redis_db: RedisDB) -> None:
    redis_db.client.set("celery-task-meta-someone-else", b'{"status": "SUCCESS"}')
    result = cli("bench", redis_db.url, "--seconds", "0.5", "--concurrency", "2", "--json")
    assert result.code == 0, result.output
    assert redis_db.client.keys("*") == [b"celery-task-meta-someone-else"]


def test_bench_in_processes_and_html_plot(cli: Any, sqlite_db: SqlDB, tmp_path: Path) -> None:
    page = tmp_path / "bench.html"
    result = cli(
        "bench",
        "resultkit-db+" + sqlite_db.sqlalchemy_url,
        "--seconds",
        "0.6",
        "--mode",
        "processes",
        "--concurrency",
        "2",
        "--size",
        "2KB",
        "--plot",
        str(page),
    )
    assert result.code == 0, result.output
    assert "resultkit bench" in result.stdout
    assert "<svg" in page.read_text()
    assert "Celery's, vs" in result.stdout
