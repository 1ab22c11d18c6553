"""Benchmark: resultkit cleanup against Celery's own, on the same data, in one run.

PostgreSQL: 1,000,000 expired rows (plus 100,000 fresh ones that must stay),
deleted by ``resultkit cleanup`` (bounded batches) and by Celery's
``DatabaseBackend.cleanup()`` (one DELETE): total time, rows/s, longest
transaction.  Redis: keys without TTL repaired by ``cleanup --fix-missing-ttl``
against SCAN + pipelined EXPIRE.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timedelta, timezone

import psycopg
import redis
import sqlalchemy as sa
from celery import Celery

from resultkit.commands import cleanup

REDIS = os.environ.get("RESULTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
POSTGRES = os.environ.get(
    "RESULTKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCHEMA = "rk_bench_cleanup"


def sql_url() -> str:
    url = sa.make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={SCHEMA}"})
    return "db+" + url.render_as_string(hide_password=False)


def celery_app() -> Celery:
    app = Celery("bench", set_as_current=False)
    app.conf.update(result_backend=sql_url(), result_expires=86400)
    return app


def fill(expired: int, fresh: int) -> None:
    """Celery's tables, filled by COPY: *expired* rows 3 days old and *fresh* rows just stored."""
    engine = sa.create_engine(POSTGRES)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    engine.dispose()
    celery_app().backend.ResultSession().close()  # Celery creates its tables and index
    dsn = sa.make_url(POSTGRES).set(drivername="postgresql").render_as_string(hide_password=False)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    old = now - timedelta(days=3)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SET search_path TO {SCHEMA}")
        with cur.copy(
            "COPY celery_taskmeta (id, task_id, status, result, date_done) FROM STDIN"
        ) as copy:
            for i in range(expired + fresh):
                copy.write_row(
                    (i + 1, f"t-{i}", "SUCCESS", b'{"ok": true}', old if i < expired else now)
                )
        cur.execute("SELECT setval('task_id_sequence', %s)", (expired + fresh + 1,))
        cur.execute("ANALYZE celery_taskmeta")
        conn.commit()


def remaining() -> int:
    engine = sa.create_engine(POSTGRES)
    with engine.connect() as conn:
        count = conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.celery_taskmeta")).scalar_one()
    engine.dispose()
    return int(count)


def redis_repair(keys: int, db: int) -> dict[str, float]:
    client = redis.Redis.from_url(f"{REDIS}/{db}")
    meta = json.dumps(
        {
            "status": "SUCCESS",
            "result": 1,
            "traceback": None,
            "children": [],
            "date_done": datetime.now(timezone.utc).isoformat(),
            "task_id": "x",
        }
    )

    def seed() -> None:
        client.flushdb()
        pipe = client.pipeline(transaction=False)
        for i in range(keys):
            pipe.set(f"celery-task-meta-k{i}", meta)
            if i % 10000 == 9999:
                pipe.execute()
        pipe.execute()

    seed()
    started = time.perf_counter()
    report = cleanup(f"{REDIS}/{db}", fix_missing_ttl=True, batch_size=5000)
    ours = time.perf_counter() - started
    assert report.ttl_fixed == keys, report
    seed()
    started = time.perf_counter()
    cursor, fixed = 0, 0
    while True:
        cursor, batch = client.scan(cursor=cursor, match="celery-task-meta-*", count=5000)
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.expire(key, 86400)
        fixed += sum(pipe.execute())
        if cursor == 0:
            break
    raw = time.perf_counter() - started
    client.flushdb()
    return {
        "keys": keys,
        "resultkit_per_s": round(keys / ours),
        "raw_per_s": round(keys / raw),
        "ratio": round(raw / ours, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fresh", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--redis-keys", type=int, default=200_000)
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        fill(args.rows, args.fresh)
        started = time.perf_counter()
        report = cleanup(sql_url(), older_than="1d", batch_size=args.batch_size)
        ours = time.perf_counter() - started
        assert report.deleted == args.rows, report
        assert remaining() == args.fresh

        fill(args.rows, args.fresh)
        app = celery_app()
        started = time.perf_counter()
        app.backend.cleanup()
        theirs = time.perf_counter() - started
        assert remaining() == args.fresh
    finally:
        engine = sa.create_engine(POSTGRES)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        engine.dispose()
    figures = {
        "postgres": {
            "rows": args.rows,
            "resultkit_seconds": round(ours, 2),
            "resultkit_rows_per_s": round(args.rows / ours),
            "resultkit_longest_transaction_s": round(report.longest_transaction_s, 3),
            "resultkit_batches": report.batches,
            "celery_seconds": round(theirs, 2),
            "celery_rows_per_s": round(args.rows / theirs),
            "celery_longest_transaction_s": round(theirs, 2),
            "ratio": round(theirs / ours, 2),
        },
        "redis_ttl_repair": redis_repair(args.redis_keys, args.redis_db),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    pg, rd = figures["postgres"], figures["redis_ttl_repair"]
    print(f"cleanup benchmark: {args.rows:,} expired PostgreSQL rows (+{args.fresh:,} fresh kept)")
    print(
        f"  resultkit: {pg['resultkit_seconds']} s, {pg['resultkit_rows_per_s']:,} rows/s, "
        f"longest transaction {pg['resultkit_longest_transaction_s']} s "
        f"({pg['resultkit_batches']} batches)"
    )
    print(
        f"  Celery:    {pg['celery_seconds']} s, {pg['celery_rows_per_s']:,} rows/s, "
        f"one transaction of {pg['celery_longest_transaction_s']} s"
    )
    print(f"  ratio (Celery time / resultkit time): {pg['ratio']}")
    print(
        f"Redis TTL repair of {rd['keys']:,} keys: resultkit {rd['resultkit_per_s']:,}/s, "
        f"raw pipelined EXPIRE {rd['raw_per_s']:,}/s, ratio {rd['ratio']}"
    )


if __name__ == "__main__":
    main()
