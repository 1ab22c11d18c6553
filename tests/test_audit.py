"""The configuration audit: each rule's pass and fail path, from settings alone."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from resultkit.checks.audit import AuditContext, audit
from resultkit.report import CheckResult, Status
from resultkit.urls import parse_backend_url

REDIS = "redis://127.0.0.1:6379/0"
POSTGRES = "db+postgresql+psycopg://app@db/results"
MYSQL = "db+mysql+pymysql://app@db/results"


def run_audit(url: str, **settings: Any) -> dict[str, CheckResult]:
    app = Celery("audited", set_as_current=False)
    app.conf.update(result_backend=url, **settings)
    results = audit(AuditContext.from_app(app, parse_backend_url(url)))
    return {r.id: r for r in results}


def test_invented_settings_fail_with_did_you_mean() -> None:
    found = run_audit(REDIS, result_compresion="gzip", redis_socket_keepalive_options={1: 2})
    check = found["config.unknown-setting"]
    assert check.status is Status.FAIL
    assert "result_compresion (did you mean result_compression?)" in check.message
    assert "redis_socket_keepalive_options (did you mean redis_socket_keepalive?)" in check.message
    assert "rename result_compresion to result_compression" in check.fix


def test_result_compression_level_is_reported_as_invented() -> None:
    check = run_audit(REDIS, result_compression_level=9)["config.unknown-setting"]
    assert check.status is Status.FAIL
    assert "result_compression_level" in check.message


def test_application_settings_of_their_own_are_left_alone() -> None:
    check = run_audit(REDIS, my_company_flag=True, result_extended=True)["config.unknown-setting"]
    assert check.status is Status.PASS


def test_pickle_results_warn_and_json_passes() -> None:
    assert (
        run_audit(REDIS, result_serializer="pickle", result_accept_content=["pickle"])[
            "config.pickle"
        ].status
        is Status.WARN
    )
    assert (
        run_audit(REDIS, accept_content=["json", "pickle"])["config.pickle"].status is Status.WARN
    )
    assert run_audit(REDIS)["config.pickle"].status is Status.PASS


def test_a_result_serializer_the_clients_refuse_fails() -> None:
    check = run_audit(REDIS, result_serializer="msgpack", result_accept_content=["json"])[
        "config.serializer-accepted"
    ]
    assert check.status is Status.FAIL
    assert "ContentDisallowed" in check.message
    assert "'msgpack'" in check.fix
    assert (
        run_audit(REDIS, result_serializer="msgpack", accept_content=["json", "msgpack"])[
            "config.serializer-accepted"
        ].status
        is Status.PASS
    )


@pytest.mark.parametrize("expires", [None, 0])
def test_disabled_result_expires_on_redis_warns(expires: Any) -> None:
    check = run_audit(REDIS, result_expires=expires)["config.result-expires"]
    assert check.status is Status.WARN
    assert "never expire" in check.message


def test_result_expires_on_redis_passes() -> None:
    check = run_audit(REDIS, result_expires=3600)["config.result-expires"]
    assert check.status is Status.PASS
    assert "1h" in check.message


def test_sql_backend_without_beat_warns_of_unbounded_growth() -> None:
    check = run_audit(POSTGRES)["config.sql-cleanup"]
    assert check.status is Status.WARN
    assert "grows without bound" in check.message
    assert "resultkit cleanup" in check.fix


def test_sql_backend_with_a_beat_schedule_passes() -> None:
    schedule = {"nightly": {"task": "proj.nightly", "schedule": 86400}}
    assert run_audit(POSTGRES, beat_schedule=schedule)["config.sql-cleanup"].status is Status.PASS


def test_sql_backend_with_result_expires_disabled_warns() -> None:
    check = run_audit(POSTGRES, result_expires=None)["config.sql-cleanup"]
    assert check.status is Status.WARN
    assert "never deleted" in check.message


def test_rpc_warns_about_chords() -> None:
    check = run_audit("rpc://")["config.rpc-chords"]
    assert check.status is Status.WARN
    assert "chords" in check.message


def test_rules_for_other_backends_stay_quiet() -> None:
    found = run_audit(REDIS)
    assert "config.rpc-chords" not in found
    assert "config.sql-cleanup" not in found
    assert "config.mysql-isolation" not in found


def test_mysql_without_read_committed_warns() -> None:
    check = run_audit(MYSQL)["config.mysql-isolation"]
    assert check.status is Status.WARN
    assert "READ COMMITTED" in check.fix


def test_mysql_with_read_committed_passes() -> None:
    found = run_audit(MYSQL, database_engine_options={"isolation_level": "READ COMMITTED"})
    assert found["config.mysql-isolation"].status is Status.PASS
    assert "config.mysql-isolation" not in run_audit(POSTGRES)


def test_redis_max_connections_below_concurrency_warns() -> None:
    check = run_audit(REDIS, redis_max_connections=2, worker_concurrency=8)[
        "config.redis-max-connections"
    ]
    assert check.status is Status.WARN
    assert "at least 8" in check.fix
    assert (
        run_audit(REDIS, redis_max_connections=20, worker_concurrency=8)[
            "config.redis-max-connections"
        ].status
        is Status.PASS
    )


def test_result_compression_on_a_backend_that_ignores_it_warns() -> None:
    check = run_audit(POSTGRES, result_compression="gzip")["config.result-compression"]
    assert check.status is Status.WARN
    assert "ignored by DatabaseBackend" in check.message


def test_result_compression_on_redis_passes_and_an_unknown_method_fails() -> None:
    assert (
        run_audit(REDIS, result_compression="gzip")["config.result-compression"].status
        is Status.PASS
    )
    check = run_audit(REDIS, result_compression="rar")["config.result-compression"]
    assert check.status is Status.FAIL
    assert "gzip" in check.fix


def test_result_extended_off_is_information_with_a_fix() -> None:
    off = run_audit(REDIS)["config.result-extended"]
    assert off.status is Status.PASS
    assert off.message.startswith("info:")
    assert off.fix == "set result_extended = True to store them"
    on = run_audit(REDIS, result_extended=True)["config.result-extended"]
    assert on.status is Status.PASS
    assert not on.message.startswith("info:")


def test_a_setting_of_the_wrong_type_is_reported_not_raised() -> None:
    check = run_audit(REDIS, redis_max_connections="many")["config.redis-max-connections"]
    assert check.status is Status.FAIL
    assert "cannot read" in check.message


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ({"cleanup": {"task": "celery.backend_cleanup", "schedule": 3600}}, "every 1h"),
        ({"cleanup": {"task": "celery.backend_cleanup", "schedule": 900.0}}, "every 15m"),
        ({"nightly": {"task": "proj.nightly", "schedule": 86400}}, "daily at 04:00"),
    ],
)
def test_the_sql_cleanup_audit_says_how_often_beat_really_cleans(
    schedule: dict[str, Any], words: str
) -> None:
    # Given a beat schedule with (or without) its own backend_cleanup entry
    check = run_audit(POSTGRES, beat_schedule=schedule)["config.sql-cleanup"]
    # Then the audit states the schedule beat will follow, not always "daily"
    assert check.status is Status.PASS
    assert words in check.message, check.message
    if words != "daily at 04:00":
        assert "daily" not in check.message


def test_a_crontab_cleanup_schedule_is_described_as_a_crontab() -> None:
    from celery.schedules import crontab

    schedule = {"c": {"task": "celery.backend_cleanup", "schedule": crontab(minute="*/30")}}
    check = run_audit(POSTGRES, beat_schedule=schedule)["config.sql-cleanup"]
    assert "*/30" in check.message
    assert "daily" not in check.message
