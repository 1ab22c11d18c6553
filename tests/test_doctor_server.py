"""The doctor's server-state and latency checks, pass and fail paths, on real servers."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.celery_view import celery_app
from tests.conftest import RedisDB, SqlDB
from tests.netutil import slow_link

# ------------------------------------------------------------------- Redis


def test_allkeys_eviction_policy_fails_and_noeviction_passes(cli: Any, own_redis: Any) -> None:
    evicting = own_redis("--maxmemory-policy", "allkeys-lru")
    volatile = own_redis("--maxmemory-policy", "volatile-lru")
    safe = own_redis("--maxmemory-policy", "noeviction")

    check = cli("doctor", evicting.url, "--json").check("redis.maxmemory-policy")
    assert check["status"] == "fail"
    assert "allkeys-lru" in check["message"]
    assert "noeviction" in check["fix"]
    assert cli("doctor", volatile.url, "--json").check("redis.maxmemory-policy")["status"] == "warn"
    assert cli("doctor", safe.url, "--json").check("redis.maxmemory-policy")["status"] == "pass"


def test_persistence_off_warns_and_aof_passes(cli: Any, own_redis: Any) -> None:
    volatile = own_redis()
    durable = own_redis("--appendonly", "yes")

    off = cli("doctor", volatile.url, "--json").check("redis.persistence")
    assert off["status"] == "warn"
    assert "restart loses every result" in off["message"]
    on = cli("doctor", durable.url, "--json").check("redis.persistence")
    assert on["status"] == "pass"
    assert "AOF" in on["message"]


def test_memory_near_maxmemory_warns(cli: Any, own_redis: Any) -> None:
    # Given a server filled to over 90% of its maxmemory
    server = own_redis("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    client = server.client()
    limit = 4 * 1024 * 1024
    n = 0
    while int(client.info("memory")["used_memory"]) < 0.93 * limit:
        client.set(f"filler:{n}", b"x" * 20_000)
        n += 1
    # When doctor looks at it
    check = cli("doctor", server.url, "--json").check("redis.memory")
    # Then memory warns, with the figures
    assert check["status"] == "warn"
    assert check["data"]["maxmemory_bytes"] == limit
    assert check["data"]["used_bytes"] > 0.9 * limit


def test_memory_far_from_the_limit_passes(cli: Any, own_redis: Any) -> None:
    server = own_redis("--maxmemory", "64mb")
    check = cli("doctor", server.url, "--json").check("redis.memory")
    assert check["status"] == "pass"
    assert "of 64.00M" in check["message"]


def test_result_keys_without_ttl_are_counted_and_warned(cli: Any, redis_db: RedisDB) -> None:
    # Given 30 result keys, 12 of them stored without a TTL
    for i in range(30):
        key = f"celery-task-meta-test-{i}"
        if i < 12:
            redis_db.client.set(key, b'{"status": "SUCCESS"}')
        else:
            redis_db.client.set(key, b'{"status": "SUCCESS"}', ex=3600)
    redis_db.client.set("unrelated-key", b"not a result")
    # When doctor runs
    check = cli("doctor", redis_db.url, "--json").check("redis.result-keys")
    # Then exactly those are reported
    assert check["status"] == "warn"
    assert check["data"]["keys"] == 30
    assert check["data"]["no_ttl_in_sample"] == 12
    assert check["data"]["exact"] is True
    assert "--fix-missing-ttl" in check["fix"]


def test_result_keys_all_with_ttl_pass(cli: Any, redis_db: RedisDB) -> None:
    for i in range(5):
        redis_db.client.set(f"celery-task-meta-ttl-{i}", b"{}", ex=600)
    check = cli("doctor", redis_db.url, "--json").check("redis.result-keys")
    assert check["status"] == "pass"
    assert check["data"]["keys"] == 5


def test_result_keys_honour_the_global_keyprefix_of_the_app(
    cli: Any, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given an app whose results live under a global key prefix
    (tmp_path / "prefixed.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('prefixed', backend={redis_db.url!r})\n"
        "app.conf.result_backend_transport_options = {'global_keyprefix': 'tenant7'}\n"
    )
    redis_db.client.set("tenant7_celery-task-meta-a", b"{}")
    redis_db.client.set("tenant7_celery-task-meta-b", b"{}", ex=60)
    redis_db.client.set("celery-task-meta-other-tenant", b"{}")
    # When doctor runs with the app
    result = cli("doctor", "-A", "prefixed", "--json")
    # Then only that prefix is counted, and the round trip worked under it
    check = result.check("redis.result-keys")
    assert check["data"]["keys"] == 2
    assert check["data"]["no_ttl_in_sample"] == 1
    assert result.check("roundtrip.success")["status"] == "pass"


def test_slow_network_makes_the_latency_check_warn(cli: Any, redis_db: RedisDB) -> None:
    # Given a link to Redis that adds 150 ms to every reply
    with slow_link(6379, 0.15) as port:
        url = f"redis://127.0.0.1:{port}/{redis_db.number}"
        result = cli("doctor", url, "--timeout", "20", "--json")
    # Then latency warns with its figures
    check = result.check("latency")
    assert check["status"] == "warn", check
    assert check["data"]["store_p50_ms"] >= 140


def test_fast_redis_latency_passes_with_percentiles(cli: Any, redis_db: RedisDB) -> None:
    check = cli("doctor", redis_db.url, "--json").check("latency")
    assert check["status"] == "pass"
    assert {"store_p50_ms", "store_p95_ms", "store_max_ms", "fetch_p50_ms", "samples"} <= set(
        check["data"]
    )
    assert check["data"]["samples"] == 20


# --------------------------------------------------------------------- SQL

OLD_LAYOUT = """
CREATE TABLE celery_taskmeta (
    id INTEGER PRIMARY KEY,
    task_id VARCHAR(155) UNIQUE,
    status VARCHAR(50),
    result BYTEA,
    date_done TIMESTAMP,
    traceback TEXT
)
"""


def test_missing_tables_warn_until_celery_creates_them(cli: Any, postgres_db: SqlDB) -> None:
    first = cli("doctor", postgres_db.url, "--json")
    assert first.check("sql.tables")["status"] == "warn"
    assert first.check("roundtrip.success")["status"] == "pass"
    second = cli("doctor", postgres_db.url, "--json")
    assert second.check("sql.tables")["status"] == "pass"
    assert second.check("sql.date-done-index")["status"] == "pass"


def test_a_table_without_the_date_done_index_warns_with_the_statement(
    cli: Any, postgres_db: SqlDB
) -> None:
    # Given tables laid out by an older Celery, without the date_done index
    with postgres_db.engine.begin() as conn:
        conn.execute(sa.text(OLD_LAYOUT))
        conn.execute(
            sa.text(
                "CREATE TABLE celery_tasksetmeta (id INTEGER PRIMARY KEY, taskset_id "
                "VARCHAR(155) UNIQUE, result BYTEA, date_done TIMESTAMP)"
            )
        )
    check = cli("doctor", postgres_db.url, "--json").check("sql.date-done-index")
    assert check["status"] == "warn"
    assert (
        check["fix"] == "CREATE INDEX ix_celery_taskmeta_date_done ON celery_taskmeta (date_done)"
    )


def _celery_backend(url: str) -> Any:
    return celery_app(url).backend


def _create_celery_tables(url: str) -> None:
    _celery_backend(url).ResultSession().close()


def test_rows_past_result_expires_are_counted(cli: Any, mysql_db: SqlDB) -> None:
    # Given 7 results older than result_expires (1 day) and 3 fresh ones
    backend = _celery_backend(mysql_db.url)
    for i in range(10):
        backend.store_result(f"{'old' if i < 7 else 'new'}-{i}", i, "SUCCESS")
    three_days_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=3)
    with mysql_db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE celery_taskmeta SET date_done = :when WHERE task_id LIKE 'old-%'"),
            {"when": three_days_ago},
        )
    # When doctor runs
    result = cli("doctor", mysql_db.url, "--json")
    # Then it counts the rows, the oldest, and those awaiting cleanup
    assert result.check("sql.rows")["data"]["rows"] == 10
    expired = result.check("sql.expired-rows")
    assert expired["status"] == "warn"
    assert expired["data"]["rows"] == 7
    assert "resultkit cleanup" in expired["fix"]


def test_no_rows_past_result_expires_passes(cli: Any, sqlite_db: SqlDB) -> None:
    _create_celery_tables(sqlite_db.url)
    check = cli("doctor", sqlite_db.url, "--json").check("sql.expired-rows")
    assert check["status"] == "pass"
    assert check["data"]["rows"] == 0


# -------------------------------------------------------------- filesystem


def test_result_files_past_result_expires_warn(cli: Any, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    stale = time.time() - 3 * 86400
    for i in range(4):
        path = folder / f"celery-task-meta-old-{i}"
        path.write_bytes(b"{}")
        os.utime(path, (stale, stale))
    (folder / "celery-task-meta-fresh").write_bytes(b"{}")
    check = cli("doctor", f"file://{folder}", "--json").check("file.results")
    assert check["status"] == "warn"
    assert (check["data"]["files"], check["data"]["expired"]) == (5, 4)


def test_missing_result_folder_fails_connect(cli: Any, tmp_path: Path) -> None:
    result = cli("doctor", f"file://{tmp_path / 'nowhere'}", "--json")
    assert result.code == 1
    assert result.check("connect")["status"] == "fail"
