"""resultkit cleanup: exactly what has expired goes, on every store, even with a
worker storing results meanwhile; archives restore completely."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from resultkit.records import Kind, Record
from resultkit.stores import OnConflict, open_store
from tests.conftest import RedisDB, SqlDB, run_on_terminal, store_url_for
from tests.samples import NOW, RETENTION_POLICY, failure, group, task
from tests.worker import celery_worker, load, write_app


def aged(record: Record) -> Record:
    """No lifetime of its own (a Redis key without TTL), so only the policy decides."""
    return record.replace(expires_known=True, expires_at=None)


def dataset() -> tuple[list[Record], set[str]]:
    """Results across names, states and ages, and the ids the policy expires."""
    day = timedelta(days=1)
    records = [
        task("audit-old", name="audit.log", done=NOW - 400 * day),  # forever
        task("rep-8d", name="reports.daily", done=NOW - 8 * day),  # 7d: expired
        task("rep-6d", name="reports.daily", done=NOW - 6 * day),  # 7d: kept
        failure("fail-31d", name="reports.daily", done=NOW - 31 * day),  # 30d: expired
        failure("fail-29d", name="billing.charge", done=NOW - 29 * day),  # 30d: kept
        task("misc-2h", name="misc.add", done=NOW - timedelta(hours=2)),  # 1h: expired
        task("misc-10m", name="misc.add", done=NOW - timedelta(minutes=10)),  # kept
        task("retry-3h", "RETRY", name="reports.daily", done=NOW - timedelta(hours=3)),  # 1h
    ]
    old_group = group("grp-old", ["misc-2h"])
    old_group.meta["date_done"] = NOW - timedelta(hours=5)  # 1h: expired
    records.append(old_group)
    records.append(group("grp-new", ["misc-10m"]))  # kept
    return [aged(r) for r in records], {"rep-8d", "fail-31d", "misc-2h", "retry-3h", "grp-old"}


def ids_in(url: str) -> set[str]:
    store = open_store(url)
    try:
        return {r.id for kind in Kind for page in store.pages(kind, 100) for r in page.records}
    finally:
        store.close()


def write_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(RETENTION_POLICY))
    return path


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql", "sqlite", "django", "file"])
def test_cleanup_deletes_exactly_what_the_policy_expires(
    kind: str, cli: Any, request: Any, tmp_path: Path
) -> None:
    # Given results of every kind and age
    url = store_url_for(kind, request, tmp_path / "store")
    records, expired = dataset()
    store = open_store(url)
    store.write_many(records, OnConflict.SKIP)
    store.close()
    # When cleanup runs with the policy
    result = cli(
        "cleanup", url, "--policy", str(write_policy(tmp_path)), "--batch-size", "2", "--json"
    )
    if kind == "redis":
        # Celery keeps no date in a Redis group key: groups there live by their TTL.
        expired = expired - {"grp-old"}
    # Then exactly the expired results are gone
    assert result.code == 0, result.output
    summary = result.json
    assert summary["deleted"] == len(expired)
    assert summary["kept"] == len(records) - len(expired)
    assert ids_in(url) == {r.id for r in records} - expired
    groups = {"GROUP": 1} if "grp-old" in expired else {}
    assert summary["by_state"] == {"FAILURE": 1, "RETRY": 1, "SUCCESS": 2, **groups}


def test_dry_run_shows_what_would_go_by_state_and_task(
    cli: Any, postgres_db: SqlDB, tmp_path: Path
) -> None:
    records, expired = dataset()
    open_store(postgres_db.url).write_many(records, OnConflict.SKIP)
    result = cli(
        "cleanup", postgres_db.url, "--policy", str(write_policy(tmp_path)), "--dry-run", "--json"
    )
    summary = result.json
    assert (summary["deleted"], summary["would_delete"]) == (0, len(expired))
    assert summary["by_task"] == {"reports.daily": 3, "misc.add": 1}
    assert ids_in(postgres_db.url) == {r.id for r in records}
    human = cli("cleanup", postgres_db.url, "--policy", str(write_policy(tmp_path)), "--dry-run")
    assert "would delete 5" in human.stdout
    assert "reports.daily" in human.stdout


def test_older_than_ignores_policies(cli: Any, sqlite_db: SqlDB) -> None:
    records, _ = dataset()
    open_store(sqlite_db.url).write_many(records, OnConflict.SKIP)
    summary = cli("cleanup", sqlite_db.url, "--older-than", "7d", "--json").json
    assert ids_in(sqlite_db.url) == {
        "rep-6d",
        "misc-2h",
        "misc-10m",
        "retry-3h",
        "grp-old",
        "grp-new",
    }
    assert summary["deleted"] == 4


def test_the_apps_policy_is_used_with_dash_a(cli: Any, mysql_db: SqlDB, tmp_path: Path) -> None:
    (tmp_path / "policed.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('policed', backend={mysql_db.url!r})\n"
        f"app.conf.resultkit_retention = {RETENTION_POLICY!r}\n"
    )
    records, expired = dataset()
    open_store(mysql_db.url).write_many(records, OnConflict.SKIP)
    summary = cli("cleanup", "-A", "policed", "--json").json
    assert summary["deleted"] == len(expired)


def test_archive_then_restore_everything(cli: Any, postgres_db: SqlDB, tmp_path: Path) -> None:
    # Given results, some expired
    records, expired = dataset()
    open_store(postgres_db.url).write_many(records, OnConflict.SKIP)
    archive = tmp_path / "archive.jsonl.gz"
    # When cleanup archives before deleting
    summary = cli(
        "cleanup",
        postgres_db.url,
        "--policy",
        str(write_policy(tmp_path)),
        "--archive",
        str(archive),
        "--json",
    ).json
    assert (summary["archived"], summary["deleted"]) == (len(expired), len(expired))
    # Then migrate restores every archived result, verified through Celery
    restored = cli("migrate", f"jsonl://{archive}", postgres_db.url, "--verify", "--json")
    assert restored.code == 0, restored.output
    assert (restored.json["copied"], restored.json["verified"]) == (len(expired), len(expired))
    assert ids_in(postgres_db.url) == {r.id for r in records}


def test_a_result_that_cannot_be_archived_is_not_deleted(
    cli: Any, sqlite_db: SqlDB, tmp_path: Path
) -> None:
    import pickle

    import sqlalchemy as sa

    store = open_store(sqlite_db.url)
    store.write_many([aged(task("ok-old", done=NOW - timedelta(days=3)))], OnConflict.SKIP)
    store.close()
    with sqlite_db.engine.begin() as conn:  # a pickle nobody accepted: unreadable, unarchivable
        conn.execute(
            sa.text("UPDATE celery_taskmeta SET result = :r"), {"r": pickle.dumps({"x": 1})}
        )
        conn.execute(
            sa.text(
                "INSERT INTO celery_taskmeta (id, task_id, status, result, date_done) "
                "VALUES (99, 'pickled-old', 'SUCCESS', :r, :d)"
            ),
            {"r": pickle.dumps(1), "d": (NOW - timedelta(days=3)).replace(tzinfo=None)},
        )
    summary = cli(
        "cleanup",
        sqlite_db.url,
        "--older-than",
        "1d",
        "--archive",
        str(tmp_path / "a.jsonl.gz"),
        "--json",
    ).json
    assert summary["deleted"] == 0
    assert ids_in(sqlite_db.url) >= {"pickled-old"}


def test_fix_missing_ttl_gives_keys_the_policys_lifetime(
    cli: Any, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given keys without TTL: one kept forever, one with 6 days left, one fresh default
    # (dated from now: samples.NOW is when the module was imported, minutes ago in a
    # long run, and the lifetimes below are measured to two minutes)
    now = datetime.now(timezone.utc)
    store = open_store(redis_db.url)
    store.write_many(
        [
            aged(task("audit-1", name="audit.log", done=now - timedelta(days=100))),
            aged(task("rep-1", name="reports.daily", done=now - timedelta(days=1))),
            aged(task("misc-1", name="misc.add", done=now - timedelta(minutes=10))),
        ],
        OnConflict.SKIP,
    )
    summary = cli(
        "cleanup",
        redis_db.url,
        "--policy",
        str(write_policy(tmp_path)),
        "--fix-missing-ttl",
        "--json",
    ).json
    assert (summary["ttl_fixed"], summary["deleted"]) == (2, 0)
    ttl = redis_db.client.ttl
    assert ttl("celery-task-meta-audit-1") == -1
    # Lifetimes count from date_done (samples.NOW, set when the tests were collected).
    since_now = time.time() - NOW.timestamp()
    assert 6 * 86400 - since_now - 5 <= ttl("celery-task-meta-rep-1") <= 6 * 86400
    assert 50 * 60 - since_now - 5 <= ttl("celery-task-meta-misc-1") <= 50 * 60


def test_results_stored_during_cleanup_are_never_deleted(
    cli: Any, postgres_db: SqlDB, amqp_url: str, tmp_path: Path
) -> None:
    # Given 3,000 results from last week
    store = open_store(postgres_db.url)
    old = [
        aged(task(f"old-{i}", name="misc.add", done=NOW - timedelta(days=7))) for i in range(3000)
    ]
    store.write_many(old, OnConflict.SKIP)
    store.close()
    write_app(tmp_path, "busy", amqp_url, postgres_db.url, result_extended=True)
    app = load(tmp_path, "busy")
    sent: list[Any] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            sent.append(app.send_task("misc.add", args=[len(sent), 1]))
            time.sleep(0.01)

    # When a worker keeps storing results while cleanup deletes in small batches
    with celery_worker(tmp_path, "busy"):
        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(1.0)
        result = cli(
            "cleanup", postgres_db.url, "--older-than", "1h", "--batch-size", "100", "--json"
        )
        time.sleep(0.5)
        stop.set()
        producer.join()
        for async_result in sent:
            async_result.get(timeout=60)
    # Then every old result is gone and every new one is there
    assert result.code == 0, result.output
    assert result.json["deleted"] == 3000
    remaining = ids_in(postgres_db.url)
    assert not any(i.startswith("old-") for i in remaining)
    assert {r.id for r in sent} <= remaining
    assert len(sent) > 20


def test_beat_entry_runs_the_cleanup(redis_db: RedisDB, tmp_path: Path) -> None:
    from celery import Celery

    from resultkit.beat import CLEANUP_TASK_NAME, install_cleanup

    app = Celery(set_as_current=False)
    app.conf.update(result_backend=redis_db.url, resultkit_retention=RETENTION_POLICY)
    records, expired = dataset()
    open_store(redis_db.url).write_many(records, OnConflict.SKIP)
    cleanup_task = install_cleanup(app, every=600)
    assert app.conf.beat_schedule["resultkit-cleanup"] == {
        "task": CLEANUP_TASK_NAME,
        "schedule": 600,
    }
    outcome = cleanup_task.apply().get()
    assert outcome["deleted"] == len(expired - {"grp-old"})  # Redis groups live by their TTL


def test_usage_errors_are_one_line(cli: Any, sqlite_db: SqlDB, tmp_path: Path) -> None:
    both = cli("cleanup", sqlite_db.url, "--older-than", "1d", "--policy", "p.toml")
    assert both.code == 2
    assert "either --older-than or --policy" in both.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"state": "LOST", "expires": "1d"}]}')
    invalid = cli("cleanup", sqlite_db.url, "--policy", str(bad))
    assert invalid.code == 2
    assert len(invalid.stderr.strip().splitlines()) == 1
    assert "unknown state 'LOST'" in invalid.stderr
    archive = cli("cleanup", f"jsonl://{tmp_path}/a.jsonl.gz", "--older-than", "1d")
    assert archive.code == 2
    assert "append-only" in archive.stderr


def test_cleanup_shows_progress_on_a_terminal(sqlite_db: SqlDB, tmp_path: Path) -> None:
    store = open_store(sqlite_db.url)
    store.write_many(
        [aged(task(f"p{i}", done=NOW - timedelta(days=3))) for i in range(40)], OnConflict.SKIP
    )
    store.close()
    done = run_on_terminal(f"cleanup {sqlite_db.url} --older-than 1d --batch-size 5", tmp_path)
    assert done.code == 0, done.output
    assert "deleting tasks" in done.stdout
    assert "deleted 40" in done.stdout
