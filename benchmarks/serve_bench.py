"""Benchmark: ``resultkit serve`` pages and API against the query layer called directly.

PostgreSQL: Celery's extended table filled with COPY (``find_bench``'s rows,
in a schema of this benchmark's own, dropped afterwards), the recommended
indexes created. A real ``resultkit serve`` (uvicorn, in a subprocess) is asked
for one page of a common filter (``state=SUCCESS``) and of a rarer one
(``state=FAILURE&task=reports.*``), as JSON and as HTML, many times over one
kept-alive connection; the yardstick is ``resultkit.query.find`` on a store
already open, in this process, for the same query. ``/metrics`` is timed
uncached (the first scrape of a fresh server: the SQL store's one GROUP BY) and
cached; its yardstick is the ``stats`` scan it used to wait for.

Prints p50/p95 of ours and of the yardstick and the ratio (yardstick p50 /
our p50: 1.0 is as fast); ``--json`` prints one document.

    python benchmarks/serve_bench.py [--rows 1000000] [--requests 200] [--json]
        [--keep: leave the schema for the next run] [--reuse: use the kept schema]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

import find_bench
from resultkit.commands import stats
from resultkit.query import Query, find
from resultkit.stores import StoreSettings, open_store

find_bench.SCHEMA = "rk_bench_serve"
BIN = Path(sys.executable).parent
FILTERS = {
    "common": ({"state": "SUCCESS"}, Query.build(["SUCCESS"])),
    "rare": ({"state": "FAILURE", "task": "reports.*"}, Query.build(["FAILURE"], ["reports.*"])),
}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2)}


def timed(call: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "resultkit"), "serve", url, "--port", str(port), "--cache-seconds", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(base + "/openapi.json", timeout=2)
            return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("resultkit serve did not start")


def kept_rows() -> int:
    """Rows in the kept schema's table (0: none kept)."""
    engine = sa.create_engine(find_bench.POSTGRES)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(f"SELECT count(*) FROM {find_bench.SCHEMA}.celery_taskmeta")
                ).scalar_one()
            )
    except sa.exc.ProgrammingError:
        return 0
    finally:
        engine.dispose()


def bench(rows: int, requests: int, *, keep: bool = False, reuse: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows, "requests": requests}
    if reuse and kept_rows() == rows:
        out["load_s"] = 0.0
    else:
        out["load_s"] = round(find_bench.fill_postgres(rows), 1)
    url = find_bench.sql_url()
    store = open_store(url, settings=StoreSettings(celery={"result_extended": True}))
    store.create_indexes()
    find_bench.analyze()
    process, base = start_server(url)
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            started = time.perf_counter()
            assert client.get("/metrics").status_code == 200
            out["metrics_uncached_s"] = round(time.perf_counter() - started, 3)
            cached = timed(lambda: client.get("/metrics"), 50)
            out["metrics_cached"] = percentiles(cached)
            started = time.perf_counter()
            stats(url)
            out["stats_scan_s"] = round(time.perf_counter() - started, 3)
            out["metrics_ratio"] = round(out["stats_scan_s"] / out["metrics_uncached_s"], 2)
            for label, (params, query) in FILTERS.items():
                # Warm both sides once (connections, plans).
                assert client.get("/api/results", params=params).status_code == 200
                find(store, query, limit=50)
                api = timed(lambda p=params: client.get("/api/results", params=p), requests)
                page = timed(lambda p=params: client.get("/", params=p), requests)
                direct = timed(lambda q=query: find(store, q, limit=50), requests)
                ours_api, ours_html, yard = (
                    percentiles(api),
                    percentiles(page),
                    percentiles(direct),
                )
                out[label] = {
                    "json": ours_api,
                    "html": ours_html,
                    "query_layer": yard,
                    "ratio_json": round(yard["p50_ms"] / ours_api["p50_ms"], 3),
                    "ratio_html": round(yard["p50_ms"] / ours_html["p50_ms"], 3),
                }
    finally:
        process.terminate()
        process.wait(10)
        store.close()
        if not keep:
            engine = sa.create_engine(find_bench.POSTGRES)
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {find_bench.SCHEMA} CASCADE"))
            engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the schema for --reuse")
    parser.add_argument("--reuse", action="store_true", help="use a kept schema of --rows")
    options = parser.parse_args()
    result = bench(options.rows, options.requests, keep=options.keep, reuse=options.reuse)
    if options.json:
        print(json.dumps(result, indent=2))
        return
    print(f"PostgreSQL, {result['rows']:,} results (loaded in {result['load_s']} s)")
    for label in FILTERS:
        item = result[label]
        for kind in ("json", "html"):
            ours = item[kind]
            print(
                f"  {label:6} {kind:4}: p50 {ours['p50_ms']} ms, p95 {ours['p95_ms']} ms | "
                f"query layer p50 {item['query_layer']['p50_ms']} ms, "
                f"p95 {item['query_layer']['p95_ms']} ms | ratio {item['ratio_' + kind]}"
            )
    print(
        f"  /metrics: uncached {result['metrics_uncached_s']} s, cached p50 "
        f"{result['metrics_cached']['p50_ms']} ms, p95 {result['metrics_cached']['p95_ms']} ms"
        f" | stats scan {result['stats_scan_s']} s | ratio {result['metrics_ratio']}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
