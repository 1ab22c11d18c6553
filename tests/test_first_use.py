"""Tables made on first use, by several processes at once: two migrations into a
fresh database, a prefork resultkit-db worker's first results, many stores.

To make the race certain rather than likely, PostgreSQL tests hold the
schema's lock (an uncommitted DROP SCHEMA) until every process is waiting to
create the tables, then let them all go at the same instant.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from resultkit.stores import open_store
from tests.celery_view import stored_through_celery
from tests.conftest import RedisDB, SqlDB
from tests.faults import (
    assert_every_result_once,
    fill,
    finish,
    start,
    wait_until,
    with_application_name,
)
from tests.worker import celery_worker, load, write_app


@contextmanager
def schema_held(db: SqlDB) -> Iterator[sa.Connection]:
    """Hold *db*'s schema locked (a DROP SCHEMA not yet rolled back): whoever
    creates a table in it waits, until the block ends."""
    admin = sa.create_engine(str(db.engine.url).split("?")[0])
    conn = admin.connect()
    transaction = conn.begin()
    conn.execute(sa.text(f'DROP SCHEMA "{db.name}" CASCADE'))
    try:
        yield conn
    finally:
        transaction.rollback()
        conn.close()
        admin.dispose()


def waiting_on_locks(db: SqlDB, name: str) -> int:
    """Connections named *name* that wait for a lock."""
    with db.engine.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = :name AND wait_event_type = 'Lock'"
        )
        return int(conn.execute(sa.text(query), {"name": name}).scalar_one())


def test_two_migrations_into_a_fresh_database_at_once_end_exact(
    redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given 2,000 results and a PostgreSQL schema without tables
    ids = fill(redis_db.client, "w", 2000)
    name = f"rk-{uuid.uuid4().hex[:10]}"
    target = with_application_name(postgres_db, name)
    # When two migrations of them start at once, both reaching table creation together
    with schema_held(postgres_db):
        processes = [
            start(
                "migrate",
                redis_db.url,
                target,
                "--checkpoint",
                str(tmp_path / f"cp-{n}.json"),
                "--json",
                cwd=tmp_path,
            )
            for n in range(2)
        ]
        wait_until(lambda: waiting_on_locks(postgres_db, name) == 2, what="both to wait")
    outcomes = [finish(process) for process in processes]
    # Then both succeed, and every result is there exactly once
    for code, _, stderr in outcomes:
        assert code == 0, stderr
    assert_every_result_once(postgres_db.url, ids, postgres_db)


def test_a_prefork_workers_first_results_race_nothing(
    postgres_db: SqlDB, amqp_url: str, tmp_path: Path
) -> None:
    # Given a resultkit-db app on a fresh PostgreSQL schema, and a prefork worker
    name = f"rk-{uuid.uuid4().hex[:10]}"
    backend = "resultkit-db+" + with_application_name(postgres_db, name)[len("db+") :]
    write_app(tmp_path, "fresh", amqp_url, backend)
    app = load(tmp_path, "fresh")
    with celery_worker(tmp_path, "fresh", pool="prefork", concurrency=2):
        # When its two processes store their first results at the same instant
        with schema_held(postgres_db):
            sent = [app.send_task("misc.add", args=[n, 100]) for n in range(2)]
            wait_until(lambda: waiting_on_locks(postgres_db, name) == 2, what="both to wait")
        sent += [app.send_task("misc.add", args=[n, 100]) for n in range(2, 20)]
        wait_until(lambda: len(stored_through_celery(postgres_db.url, [r.id for r in sent])) == 20)
    # Then every result is stored, and the worker logged no error and no retry
    stored = stored_through_celery(postgres_db.url, [r.id for r in sent])
    assert sorted(meta["result"] for meta in stored.values()) == list(range(100, 120))
    log = (tmp_path / "worker-fresh.log").read_text()
    for sign in ("UniqueViolation", "already exists", "Traceback", "ERROR", "etry"):
        assert sign not in log, log


def _make_tables(url: str, barrier: Any) -> None:
    store = open_store(url)
    barrier.wait()
    store.ensure_tables()
    store.close()


@pytest.mark.parametrize("kind", ["mysql", "sqlite", "django"])
def test_stores_made_by_several_processes_at_once_all_succeed(
    kind: str, request: Any, tmp_path: Path
) -> None:
    # Given a database without tables
    if kind == "django":
        url = "django+" + request.getfixturevalue("mysql_db").sqlalchemy_url
    else:
        url = request.getfixturevalue(f"{kind}_db").url
    # When four processes make the tables at the same instant
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_make_tables, args=(url, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    # Then every one succeeds, and the tables are there
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    store = open_store(url)
    tables = set(sa.inspect(store.engine).get_table_names())  # type: ignore[attr-defined]
    store.close()
    expected = TABLES["django" if kind == "django" else "celery"]
    assert expected <= tables, tables


TABLES = {
    "celery": {"celery_taskmeta", "celery_tasksetmeta"},
    "django": {"django_celery_results_taskresult", "django_celery_results_groupresult"},
}
