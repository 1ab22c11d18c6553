"""Benchmark: find, show and failures against the best hand-written query, in one run.

PostgreSQL: 1,000,000 results in Celery's extended table (loaded with COPY,
into a schema of the benchmark's own, dropped afterwards unless
``--keep-schema``, which also reuses one a run left), the recommended
indexes created by ``resultkit find --create-indexes``. Each question is
asked through resultkit's library (a store already open, as a page of the
command is) and as the SQL a person would write for it, through psycopg:

- ``find --state FAILURE --task 'reports.*' --limit 50``, and the next page
- ``show TASK_ID`` (a failure: its row; no children, no group)
- ``failures`` (grouped by task and exception type, with an example each)

Redis: 1,000,000 result keys in a redis-server of the benchmark's own (a free
port): keys scanned per ``find`` call, the time of a page of a common filter
and of a rare one, against SCAN + MGET + json.loads on the client, and the
client's memory across every page of a rare filter.

Prints ours, the yardstick and the ratio (yardstick time / our time: 1.0 is
as fast, the target is 0.8 or more); ``--json`` prints one document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
import redis
import sqlalchemy as sa
from celery import Celery

from resultkit.commands.show import describe_result
from resultkit.query import Query, find, select
from resultkit.retention import RetentionPolicy
from resultkit.stores import StoreSettings, open_store
from resultkit.stores.redis_find import MAX_SCAN_KEYS_PER_PAGE

POSTGRES = os.environ.get(
    "RESULTKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCHEMA = "rk_bench_find"
NAMES = (
    "reports.daily",
    "reports.weekly",
    "mail.send",
    "billing.charge",
    "billing.refund",
    "search.index",
    "images.resize",
    "audit.log",
    "export.csv",
    "users.sync",
)
EXCEPTIONS = ("ValueError", "KeyError", "TimeoutError")
#: One result in this many is a failure, one in RETRY_EVERY a retry.
FAILURE_EVERY = 20
RETRY_EVERY = 50
REPEATS = 41


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def paired(ours: Callable[[], Any], yard: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median seconds of each, their calls alternating: this shared machine's speed
    drifts, and both then see the same drift."""
    ours()
    yard()
    mine, theirs = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        ours()
        middle = time.perf_counter()
        yard()
        mine.append(middle - started)
        theirs.append(time.perf_counter() - middle)
    return statistics.median(mine), statistics.median(theirs)


def row_of(i: int, start: datetime) -> tuple[Any, ...]:
    """Result *i*: a state, a task name, args and kwargs, a worker and queue."""
    name = NAMES[i % len(NAMES)]
    if i % FAILURE_EVERY == 0:
        status = "FAILURE"
        exc = EXCEPTIONS[(i // FAILURE_EVERY) % len(EXCEPTIONS)]
        result = json.dumps(
            {"exc_type": exc, "exc_message": [f"job {i} failed"], "exc_module": "builtins"}
        ).encode()
        traceback = f"Traceback (most recent call last):\n{exc}: job {i} failed\n"
    elif i % RETRY_EVERY == 1:
        status, result, traceback = "RETRY", b'{"exc_type": "TimeoutError"}', None
    else:
        status, result, traceback = "SUCCESS", json.dumps({"rows": i % 1000}).encode(), None
    done = start + timedelta(seconds=i * 2.5)
    args = json.dumps([i, "eu"]).encode()
    kwargs = json.dumps({"user_id": i % 100_000}).encode()
    worker = f"celery@host{i % 8}"
    queue = "reports" if name.startswith("reports") else "default"
    return (
        i + 1,
        f"t-{i:07d}",
        status,
        result,
        done,
        traceback,
        name,
        args,
        kwargs,
        worker,
        0,
        queue,
    )


# ------------------------------------------------------------------ PostgreSQL
def sql_url() -> str:
    url = sa.make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={SCHEMA}"})
    return "db+" + url.render_as_string(hide_password=False)


def dsn() -> str:
    return sa.make_url(POSTGRES).set(drivername="postgresql").render_as_string(hide_password=False)


def fill_postgres(rows: int) -> float:
    """Celery's extended tables, filled by COPY; seconds taken."""
    started = time.perf_counter()
    engine = sa.create_engine(POSTGRES)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    engine.dispose()
    app = Celery("bench", set_as_current=False)
    app.conf.update(result_backend=sql_url(), result_extended=True)
    app.backend.ResultSession().close()  # Celery creates its extended tables
    start = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=rows * 2.5)
    columns = (
        "id, task_id, status, result, date_done, traceback, name, args, kwargs, worker, "
        "retries, queue"
    )
    with psycopg.connect(dsn()) as conn, conn.cursor() as cur:
        cur.execute(f"SET search_path TO {SCHEMA}")
        with cur.copy(f"COPY celery_taskmeta ({columns}) FROM STDIN") as copy:
            for i in range(rows):
                copy.write_row(row_of(i, start))
        cur.execute("SELECT setval('task_id_sequence', %s)", (rows + 1,))
        conn.commit()
    return time.perf_counter() - started


def analyze() -> None:
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.celery_taskmeta")


FIND_SQL = (
    "SELECT * FROM celery_taskmeta WHERE status = 'FAILURE' AND name LIKE 'reports.%%' "
    "ORDER BY date_done DESC, id DESC LIMIT 51"
)
NEXT_SQL = (
    "SELECT * FROM celery_taskmeta WHERE status = 'FAILURE' AND name LIKE 'reports.%%' "
    "AND (date_done < %s OR (date_done = %s AND id < %s)) "
    "ORDER BY date_done DESC, id DESC LIMIT 51"
)
SHOW_SQL = "SELECT * FROM celery_taskmeta WHERE task_id = %s"
FAILURES_SQL = (
    "SELECT name, substring(encode(result, 'escape'), '\"exc_type\": ?\"([A-Za-z0-9_.]*)\"'), "
    "count(*), min(date_done), max(date_done), max(id) FROM celery_taskmeta "
    "WHERE status = 'FAILURE' GROUP BY 1, 2"
)


def loaded_rows() -> int | None:
    """Rows of the benchmark's table left by a run with --keep-schema (None: no table)."""
    with psycopg.connect(dsn(), autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.celery_taskmeta",)).fetchone()
        if found is None or found[0] is None:
            return None
        counted = conn.execute(f"SELECT count(*) FROM {SCHEMA}.celery_taskmeta").fetchone()
        return int(counted[0]) if counted else None


def bench_postgres(rows: int, keep: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows}
    if keep and loaded_rows() == rows:
        out["load_s"] = "reused the schema of an earlier --keep-schema run"
    else:
        out["load_s"] = round(fill_postgres(rows), 1)
    store = open_store(sql_url(), settings=StoreSettings(celery={"result_extended": True}))
    started = time.perf_counter()
    out["indexes_created"] = store.create_indexes()
    out["index_s"] = round(time.perf_counter() - started, 1)
    analyze()
    query = Query.build(["FAILURE"], ["reports.*"])
    first = find(store, query, limit=50)
    assert len(first.records) == 50
    assert first.cursor
    out["plan"] = store.explain_query(query, 50)
    conn = psycopg.connect(dsn())
    conn.execute(f"SET search_path TO {SCHEMA}")

    def yard_first() -> Any:
        return conn.execute(FIND_SQL).fetchall()

    rows_first = yard_first()
    last = rows_first[49]

    def yard_next() -> Any:
        return conn.execute(NEXT_SQL, (last[4], last[4], last[0])).fetchall()

    def ours_first() -> Any:
        page = find(store, query, limit=50)
        return [r.meta for r in page.records]  # decoded, as the command prints them

    def ours_next() -> Any:
        page = find(store, query, limit=50, cursor=first.cursor)
        return [r.meta for r in page.records]

    assert [r.id for r in find(store, query, limit=50, cursor=first.cursor).records] == [
        row[1] for row in yard_next()[:50]
    ]
    policy = RetentionPolicy.uniform(86400.0)
    failed = first.records[0].id

    def ours_show() -> Any:
        return describe_result(store, failed, policy)

    def yard_show() -> Any:
        return conn.execute(SHOW_SQL, (failed,)).fetchall()

    def ours_failures() -> Any:
        return store.failure_groups(Query.build(["FAILURE"]))

    def yard_failures() -> Any:
        groups = conn.execute(FAILURES_SQL).fetchall()
        ids = [g[5] for g in groups]
        return groups, conn.execute(
            "SELECT * FROM celery_taskmeta WHERE id = ANY(%s)", (ids,)
        ).fetchall()

    names = [column.name for column in conn.execute(FIND_SQL).description or ()]
    at = [names.index("result"), names.index("args"), names.index("kwargs")]

    def decoded(rows: list[Any]) -> list[Any]:
        # What a script shows of each row: its result, args and kwargs decoded.
        return [[orjson.loads(row[i]) for i in at] for row in rows]

    # Ours decodes what it returns (records, a show report): the rows "(yardstick
    # decodes)" compare it with SQL whose rows are decoded too, the fair question.
    cases = {
        "find page 1": (ours_first, yard_first),
        "find page 1 (yardstick decodes)": (ours_first, lambda: decoded(yard_first())),
        "find page 2": (ours_next, yard_next),
        "find page 2 (yardstick decodes)": (ours_next, lambda: decoded(yard_next())),
        "show": (ours_show, yard_show),
        "show (yardstick decodes)": (ours_show, lambda: decoded(yard_show())),
        "failures": (ours_failures, yard_failures),
    }
    for label, (ours, yard) in cases.items():
        repeats = 5 if label == "failures" else REPEATS
        mine, theirs = paired(ours, yard, repeats)
        out[label] = {
            "ours_ms": round(mine * 1000, 2),
            "yardstick_ms": round(theirs * 1000, 2),
            "ratio": round(theirs / mine, 2),
        }
    # Memory: every failure of the table, streamed through select().
    before = rss_mb()
    count = sum(1 for _ in select(store, Query.build(["FAILURE"])))
    out["select_failures"] = {"results": count, "rss_growth_mb": round(rss_mb() - before, 1)}
    conn.close()
    store.close()
    if not keep:
        engine = sa.create_engine(POSTGRES)
        with engine.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        engine.dispose()
    return out


# ------------------------------------------------------------------ Redis
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return process, port


def fill_redis(client: redis.Redis, keys: int) -> float:
    """*keys* results as Celery's RedisBackend stores them (JSON meta, a TTL)."""
    started = time.perf_counter()
    start = datetime.now(timezone.utc) - timedelta(seconds=keys * 2.5)
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        (
            _,
            task_id,
            status,
            result,
            done,
            traceback,
            name,
            args,
            kwargs,
            worker,
            retries,
            queue,
        ) = row_of(i, start)
        meta = {
            "status": status,
            "result": json.loads(result),
            "traceback": traceback,
            "children": [],
            "date_done": done.isoformat(),
            "name": name,
            "args": json.loads(args),
            "kwargs": json.loads(kwargs),
            "worker": worker,
            "retries": retries,
            "queue": queue,
            "task_id": task_id,
        }
        pipe.set(f"celery-task-meta-{task_id}", json.dumps(meta), ex=86400)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def client_side_page(
    client: redis.Redis, wanted: Callable[[dict[str, Any]], bool], limit: int
) -> tuple[int, int]:
    """The yardstick: SCAN + MGET + json.loads, filtered on the client, until *limit* match."""
    cursor, found, scanned = 0, 0, 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match="celery-task-meta-*", count=1000)
        scanned += len(keys)
        if keys:
            for value in client.mget(keys):
                if value is not None and wanted(json.loads(value)):
                    found += 1
        if found >= limit or cursor == 0 or scanned >= MAX_SCAN_KEYS_PER_PAGE:
            return found, scanned


def bench_redis(keys: int) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="rk-find-bench-")
    process, port = start_redis(folder)
    out: dict[str, Any] = {"keys": keys}
    try:
        client = redis.Redis(port=port)
        out["load_s"] = round(fill_redis(client, keys), 1)
        url = f"redis://127.0.0.1:{port}/0"
        store = open_store(url, settings=StoreSettings(celery={"result_extended": True}))
        common = Query.build(["FAILURE"], ["reports.*"])
        rare = Query.build(kwargs=["user_id=42"])

        def is_common(meta: dict[str, Any]) -> bool:
            return meta.get("status") == "FAILURE" and str(meta.get("name")).startswith("reports.")

        def is_rare(meta: dict[str, Any]) -> bool:
            return (meta.get("kwargs") or {}).get("user_id") == 42

        for label, query, wanted in (("common", common, is_common), ("rare", rare, is_rare)):
            page = find(store, query, limit=50)
            mine, theirs = paired(
                lambda q=query: find(store, q, limit=50),
                lambda w=wanted: client_side_page(client, w, 50),
                7,
            )
            out[f"page of a {label} filter"] = {
                "filter": {k: v for k, v in query.describe().items() if v not in (None, [])},
                "results": len(page.records),
                "keys_scanned": page.scanned,
                "ours_ms": round(mine * 1000, 1),
                "yardstick_ms": round(theirs * 1000, 1),
                "ratio": round(theirs / mine, 2),
            }
        # Every page of the rare filter: keys scanned per call, the client's memory.
        before = rss_mb()
        calls, found, biggest, cursor = 0, 0, 0, None
        started = time.perf_counter()
        while True:
            page = find(store, rare, limit=50, cursor=cursor)
            calls += 1
            found += len(page.records)
            biggest = max(biggest, page.scanned)
            cursor = page.cursor
            if cursor is None:
                break
        out["every page of the rare filter"] = {
            "calls": calls,
            "results": found,
            "most_keys_scanned_by_one_call": biggest,
            "seconds": round(time.perf_counter() - started, 1),
            "rss_growth_mb": round(rss_mb() - before, 1),
        }
        store.close()
        client.close()
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["postgres", "redis"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--keep-schema",
        action="store_true",
        help=f"leave the PostgreSQL schema {SCHEMA} in place, and reuse one left with as many rows",
    )
    options = parser.parse_args()
    random.seed(7)
    report: dict[str, Any] = {}
    if options.only != "redis":
        report["postgres"] = bench_postgres(options.rows, options.keep_schema)
    if options.only != "postgres":
        report["redis"] = bench_redis(options.keys)
    if options.json:
        print(json.dumps(report, indent=2, default=str))
        return
    for store, figures in report.items():
        print(f"== {store}")
        for label, value in figures.items():
            if isinstance(value, dict) and "ours_ms" in value:
                print(
                    f"  {label:32} ours {value['ours_ms']:>9} ms   yardstick "
                    f"{value['yardstick_ms']:>9} ms   ratio {value['ratio']}"
                    + (
                        f"   ({value['keys_scanned']} keys scanned)"
                        if "keys_scanned" in value
                        else ""
                    )
                )
            elif label == "plan":
                print("  plan: " + " / ".join(str(line) for line in value))
            else:
                print(f"  {label}: {value}")


if __name__ == "__main__":
    main()
