"""Benchmark: resultkit migrate against the raw pipeline, on the same data, in one run.

Redis → PostgreSQL: ``resultkit migrate`` (a subprocess, so its peak RSS is
its own) against SCAN + MGET + decode + COPY.  PostgreSQL → Redis: against
SELECT + encode + pipelined SET.  Prints rates, ratios and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psycopg
import redis
import sqlalchemy as sa
from celery.backends.database.models import TaskExtended

import resultkit

REDIS = os.environ.get("RESULTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
POSTGRES = os.environ.get(
    "RESULTKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCHEMA = "rk_bench_migrate"
#: Celery 5.5 and later index date_done in their model of the task table.
DATE_DONE_INDEXED = bool(TaskExtended.__table__.c.date_done.index)
BIN = Path(sys.executable).parent


def fill_redis(client: redis.Redis, count: int) -> None:
    now = datetime.now(timezone.utc).isoformat()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        meta = {
            "status": "SUCCESS" if i % 10 else "FAILURE",
            "result": {"order": i, "total": i * 1.5, "lines": ["sku-1", "sku-2"], "ok": True}
            if i % 10
            else {"exc_type": "ValueError", "exc_message": [f"bad {i}"], "exc_module": "builtins"},
            "traceback": None if i % 10 else "Traceback (most recent call last):\n...",
            "children": [],
            "date_done": now,
            "task_id": f"bench-{i:07d}",
            "name": "shop.tasks.checkout",
            "args": [i],
            "kwargs": {"user": i % 100},
            "worker": "celery@bench",
            "retries": 0,
            "queue": "celery",
        }
        pipe.set(f"celery-task-meta-bench-{i:07d}", orjson.dumps(meta), ex=86400)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def reset_schema(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))


#: As an installed package runs: with its modules' bytecode compiled once, not at each
#: run (PYTHONDONTWRITEBYTECODE, set on some machines, would make every run compile them).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_resultkit(source: str, target: str, batch: int) -> tuple[float, dict[str, object], int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "resultkit"), "migrate", source, target, "--batch-size", str(batch), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=CHILD_ENV,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"resultkit migrate failed: {done.stderr or done.stdout}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, json.loads(done.stdout), max(peak_kb, before)


def raw_redis_to_postgres(client: redis.Redis, dsn: str, batch: int) -> tuple[float, int]:
    """SCAN + MGET + decode + COPY into a table of Celery's layout."""
    started = time.perf_counter()
    copied = 0
    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"CREATE TABLE {SCHEMA}.raw_taskmeta (id serial primary key, task_id varchar(155) "
            "unique, status varchar(50), result bytea, date_done timestamp, traceback text, "
            "children bytea, name varchar(155), args bytea, kwargs bytea, worker varchar(155), "
            "retries integer, queue varchar(155))"
        )
        if DATE_DONE_INDEXED:  # as Celery's own model has it: the same table to write
            conn.execute(f"CREATE INDEX ON {SCHEMA}.raw_taskmeta (date_done)")
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY {SCHEMA}.raw_taskmeta (task_id, status, result, date_done, traceback, "
                "children, name, args, kwargs, worker, retries, queue) FROM STDIN"
            ) as copy,
        ):
            cursor = 0
            while True:
                cursor, keys = client.scan(cursor=cursor, match="celery-task-meta-*", count=batch)
                for value in client.mget(keys) if keys else []:
                    meta = orjson.loads(value)
                    copy.write_row(
                        (
                            meta["task_id"],
                            meta["status"],
                            orjson.dumps(meta["result"]),
                            meta["date_done"],
                            meta["traceback"],
                            orjson.dumps(meta["children"]),
                            meta["name"],
                            orjson.dumps(meta["args"]),
                            orjson.dumps(meta["kwargs"]),
                            meta["worker"],
                            meta["retries"],
                            meta["queue"],
                        )
                    )
                    copied += 1
                if cursor == 0:
                    break
        conn.commit()
    return time.perf_counter() - started, copied


def raw_postgres_to_redis(
    client: redis.Redis, dsn: str, table: str, batch: int
) -> tuple[float, int]:
    """SELECT + encode Celery's meta (extended, as the source holds) + pipelined SET with a TTL."""
    started = time.perf_counter()
    copied = 0
    with psycopg.connect(dsn) as conn, conn.cursor(name="bench") as cur:
        cur.itersize = batch
        cur.execute(
            "SELECT task_id, status, result, date_done, traceback, children, name, args, "
            f"kwargs, worker, retries, queue FROM {table}"
        )
        pipe = client.pipeline(transaction=False)
        for row in cur:
            task_id, status, result, date_done, traceback, children = row[:6]
            name, args, kwargs, worker, retries, queue = row[6:]
            meta = {
                "status": status,
                "result": orjson.loads(result),
                "traceback": traceback,
                "children": orjson.loads(children) if children else None,
                "date_done": date_done.isoformat() + "+00:00",
                "task_id": task_id,
                "name": name,
                "args": orjson.loads(args) if args is not None else None,
                "kwargs": orjson.loads(kwargs) if kwargs is not None else None,
                "worker": worker,
                "retries": retries,
                "queue": queue,
            }
            pipe.set(f"celery-task-meta-{task_id}", orjson.dumps(meta), ex=86400)
            copied += 1
            if copied % batch == 0:
                pipe.execute()
        pipe.execute()
    return time.perf_counter() - started, copied


def one_round(
    args: argparse.Namespace,
    source: redis.Redis,
    back: redis.Redis,
    engine: sa.Engine,
    dsn: str,
    sql_url: str,
) -> dict[str, float]:
    """Both directions, resultkit then raw, each on an empty target."""
    reset_schema(engine)
    back.flushdb()
    ours_s, summary, peak_kb = run_resultkit(f"{REDIS}/{args.redis_db}", sql_url, args.batch_size)
    assert summary["copied"] == args.count, summary
    raw_s, raw_n = raw_redis_to_postgres(source, dsn, args.batch_size)
    assert raw_n == args.count
    back_s, back_summary, back_peak_kb = run_resultkit(
        sql_url, f"{REDIS}/{args.redis_db + 1}", args.batch_size
    )
    assert back_summary["copied"] == args.count, back_summary
    back.flushdb()
    raw_back_s, _ = raw_postgres_to_redis(back, dsn, f"{SCHEMA}.raw_taskmeta", args.batch_size)
    back.flushdb()
    return {
        "ours": float(summary["seconds"]),
        "ours_with_startup": ours_s,
        "raw": raw_s,
        "back": float(back_summary["seconds"]),
        "back_with_startup": back_s,
        "raw_back": raw_back_s,
        "peak_kb": peak_kb,
        "back_peak_kb": back_peak_kb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median pair is kept")
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    source = redis.Redis.from_url(f"{REDIS}/{args.redis_db}")
    back = redis.Redis.from_url(f"{REDIS}/{args.redis_db + 1}")
    engine = sa.create_engine(POSTGRES)
    dsn = sa.make_url(POSTGRES).set(drivername="postgresql").render_as_string(hide_password=False)
    sql_url = "db+" + sa.make_url(POSTGRES).update_query_dict(
        {"options": f"-csearch_path={SCHEMA}"}
    ).render_as_string(hide_password=False)
    for client in (source, back):
        client.flushdb()
    rounds = []
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(resultkit.__file__).parent)],
        check=True,
        env=CHILD_ENV,
    )
    try:
        fill_redis(source, args.count)
        for _ in range(args.rounds):
            rounds.append(one_round(args, source, back, engine, dsn, sql_url))
    finally:
        for client in (source, back):
            client.flushdb()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))

    def direction(ours: str, raw: str, peak: str) -> dict[str, float]:
        # Each ratio is taken within one round (the two ran back to back); this
        # shared VM's speed drifts between rounds.  The median round is reported.
        ratios = sorted(r[raw] / r[ours] for r in rounds)
        middle = next(r for r in rounds if r[raw] / r[ours] == ratios[len(ratios) // 2])
        return {
            "resultkit_per_s": round(args.count / middle[ours]),
            "resultkit_with_startup_per_s": round(args.count / middle[f"{ours}_with_startup"]),
            "raw_per_s": round(args.count / middle[raw]),
            "ratio": round(ratios[len(ratios) // 2], 2),
            "ratios": [round(r, 2) for r in ratios],
            "peak_rss_mb": round(max(r[peak] for r in rounds) / 1024, 1),
        }

    figures = {
        "records": args.count,
        "rounds": args.rounds,
        "redis_to_postgres": direction("ours", "raw", "peak_kb"),
        "postgres_to_redis": direction("back", "raw_back", "back_peak_kb"),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"migrate benchmark: {args.count:,} results, batch {args.batch_size:,}, "
        f"median of {args.rounds} rounds"
    )
    for name, f in (
        ("Redis → PostgreSQL", figures["redis_to_postgres"]),
        ("PostgreSQL → Redis", figures["postgres_to_redis"]),
    ):
        print(
            f"  {name}: resultkit {f['resultkit_per_s']:>8,}/s "
            f"({f['resultkit_with_startup_per_s']:,}/s with interpreter start-up)   "
            f"raw {f['raw_per_s']:>8,}/s   ratio {f['ratio']:.2f} (rounds: "
            f"{', '.join(f'{r:.2f}' for r in f['ratios'])})   peak RSS {f['peak_rss_mb']} MB"
        )


if __name__ == "__main__":
    main()
