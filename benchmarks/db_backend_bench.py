"""Benchmark: resultkit-db against Celery's DatabaseBackend and a raw upsert, in one run.

PostgreSQL by default (``--url`` for MariaDB or SQLite).  Measures, each side
in the same run:

- ``store_result`` and ``get_task_meta`` per second in a client process (one
  that never forked: web apps, scripts) and in a forked worker process;
- the raw driver: one prepared INSERT ... ON CONFLICT per result;
- ``AsyncResult.get()`` from store to wake-up;
- tasks per second through a real worker (prefork, concurrency 2).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery

POSTGRES = os.environ.get(
    "RESULTKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP = os.environ.get("RESULTKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
SCHEMA = "rk_bench_db"


def scoped(url: str) -> str:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.update_query_dict({"options": f"-csearch_path={SCHEMA}"})
    return parsed.render_as_string(hide_password=False)


def app(url: str) -> Celery:
    celery = Celery("bench", set_as_current=False)
    celery.conf.update(result_backend=url)
    return celery


def rate(backend: Any, op: str, seconds: float) -> float:
    prefix = uuid.uuid4().hex[:8]
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        task_id = f"{prefix}-{count}"
        if op == "store":
            backend.store_result(task_id, {"n": count, "ok": True}, "SUCCESS")
        else:
            backend.get_task_meta(f"seed-{count % 200}", cache=False)
        count += 1
    return count / (time.perf_counter() - started)


def measure(url: str, op: str, seconds: float, forked: bool) -> float:
    backend = app(url).backend
    for i in range(200):
        backend.store_result(f"seed-{i}", i, "SUCCESS")
    if not forked:
        return rate(backend, op, seconds)
    context = multiprocessing.get_context("fork")
    queue: Any = context.Queue()
    child = context.Process(target=lambda: queue.put(rate(backend, op, seconds)))
    child.start()
    value = queue.get(timeout=seconds + 60)
    child.join()
    return float(value)


def raw_upsert(url: str, seconds: float) -> float:
    import psycopg

    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    prefix = uuid.uuid4().hex[:8]
    with psycopg.connect(dsn, autocommit=True) as conn:
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute(
                "INSERT INTO celery_taskmeta (id, task_id, status, result, date_done) "
                "VALUES (nextval('task_id_sequence'), %s, 'SUCCESS', %s, now()) "
                "ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, "
                "result = excluded.result, date_done = excluded.date_done "
                "WHERE celery_taskmeta.status <> 'SUCCESS'",
                (f"raw-{prefix}-{count}", b'{"n": 1, "ok": true}'),
                prepare=True,
            )
            count += 1
    return count / (time.perf_counter() - started)


def _writer(url: str, pipe: Any) -> None:
    backend = app(url).backend
    while True:
        task_id = pipe.recv()
        if task_id is None:
            return
        time.sleep(0.02)
        stamp = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        backend.store_result(task_id, 1, "SUCCESS")
        pipe.send(stamp)


def wake_latency(url: str, samples: int) -> float:
    """Milliseconds from the moment another process stores a result to get() returning it."""
    reader = app(url)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    writer = context.Process(target=_writer, args=(url, theirs))
    writer.start()
    try:
        latencies = []
        for i in range(samples + 1):
            task_id = f"wake-{uuid.uuid4().hex}"
            ours.send(task_id)
            reader.AsyncResult(task_id).get(timeout=10)
            woke = time.perf_counter()
            stored = ours.recv()
            if i:  # the first one warms connections up
                latencies.append((woke - stored) * 1000)
        return statistics.median(latencies)
    finally:
        ours.send(None)
        writer.join(30)


WORKER_APP = """
from celery import Celery
app = Celery("benchworker", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
@app.task(name="bench.add")
def add(x, y):
    return x + y
"""


def worker_rate(url: str, tasks: int) -> float:
    folder = Path(tempfile.mkdtemp())
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    (folder / "benchworker.py").write_text(WORKER_APP.format(broker=AMQP, backend=url, queue=queue))
    command = [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "benchworker",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "2",
        "--loglevel",
        "ERROR",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"{queue}@%h",
    ]
    env = {**os.environ, "PYTHONPATH": str(folder)}
    process = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        sys.path.insert(0, str(folder))
        import importlib

        sys.modules.pop("benchworker", None)
        client = importlib.import_module("benchworker").app
        client.conf.result_backend = url
        client.send_task("bench.add", args=[0, 0]).get(timeout=60)  # worker is up
        started = time.perf_counter()
        results = [client.send_task("bench.add", args=[i, i]) for i in range(tasks)]
        for result in results:
            result.get(timeout=120)
        return tasks / (time.perf_counter() - started)
    finally:
        sys.path.remove(str(folder))
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=POSTGRES, help="SQLAlchemy URL (without db+)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--tasks", type=int, default=300, help="tasks through the worker")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = sa.make_url(args.url)
    backend_name = base.get_backend_name()
    postgres = backend_name == "postgresql"
    engine = sa.create_engine(args.url)
    url = scoped(args.url)
    if postgres:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    elif backend_name in ("mysql", "mariadb"):
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {SCHEMA}"))
            conn.execute(sa.text(f"CREATE DATABASE {SCHEMA}"))
        url = base.set(database=SCHEMA).render_as_string(hide_password=False)
    elif backend_name == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    ours, celerys = f"resultkit-db+{url}", f"db+{url}"
    figures: dict[str, Any] = {"url": base.render_as_string(hide_password=True)}
    try:
        for op in ("store", "get"):
            for forked in (False, True):
                where = "forked worker" if forked else "client process"
                mine = measure(ours, op, args.seconds, forked)
                theirs = measure(celerys, op, args.seconds, forked)
                figures[f"{op} ({where})"] = {
                    "resultkit": round(mine),
                    "celery": round(theirs),
                    "ratio": round(mine / theirs, 2),
                }
        if postgres:
            raw = raw_upsert(url, args.seconds)
            mine = figures["store (client process)"]["resultkit"]
            figures["store vs raw upsert"] = {
                "resultkit": mine,
                "raw": round(raw),
                "ratio": round(mine / raw, 2),
            }
            figures["get() wake-up p50 ms"] = {
                "resultkit": round(wake_latency(ours, 30), 2),
                "celery": round(wake_latency(celerys, 8), 2),
            }
        figures["tasks/s through a prefork worker (c=2)"] = {
            "resultkit": round(worker_rate(ours, args.tasks)),
            "celery": round(worker_rate(celerys, args.tasks)),
        }
        row = figures["tasks/s through a prefork worker (c=2)"]
        row["ratio"] = round(row["resultkit"] / row["celery"], 2)
    finally:
        if postgres or backend_name in ("mysql", "mariadb"):
            with engine.begin() as conn:
                if postgres:
                    conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
                else:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS {SCHEMA}"))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"resultkit-db benchmark on {figures.pop('url')}")
    for name, values in figures.items():
        print(
            f"  {name}: "
            + ", ".join(
                f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in values.items()
            )
        )


if __name__ == "__main__":
    main()
