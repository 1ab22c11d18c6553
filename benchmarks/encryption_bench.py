"""Benchmark: the cost of resultkit-encrypted against its inner serializer alone, in one run.

Encode+decode round trips per second of ``resultkit-encrypted`` (AES-256-GCM
over ``resultkit-json``) and of ``resultkit-json`` alone, on a 1 KB and a
100 KB result, with and without zstd inside the envelope; then
``store_result`` + ``get_task_meta`` through Celery's Redis backend with each
serializer.  Best of interleaved rounds; ratios are encrypted / inner.

    python benchmarks/encryption_bench.py [--seconds 0.3] [--rounds 5] [--redis URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kombu.serialization import registry

from resultkit import encryption

sys.path.insert(0, str(Path(__file__).parent))
from serializers_bench import per_second, plain_1kb, plain_100kb

REDIS = os.environ.get("RESULTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/15"


def codec_round(serializer: str, value: Any) -> Callable[[], Any]:
    def once() -> Any:
        content_type, encoding, payload = registry.dumps(value, serializer)
        return registry.loads(payload, content_type, encoding, accept={content_type})

    return once


def backend_round(serializer: str, redis_url: str, value: Any) -> tuple[Callable[[], Any], Any]:
    from celery import Celery

    app = Celery("bench", set_as_current=False)
    app.conf.update(
        result_backend=redis_url,
        result_serializer=serializer,
        result_accept_content=[serializer],
    )
    backend = app.backend
    prefix = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))

    def once() -> Any:
        task_id = f"rk-bench-{prefix}-{next(counter)}"
        backend.store_result(task_id, value, "SUCCESS")
        meta = backend.get_task_meta(task_id, cache=False)
        backend.forget(task_id)
        return meta

    return once, backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default=REDIS, help="Redis URL for the backend round trips")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    keys = [encryption.generate_key()]
    runs: dict[tuple[str, str], Callable[[], Any]] = {}
    for name, value in (("plain-1kb", plain_1kb()), ("plain-100kb", plain_100kb())):
        runs[(name, "resultkit-json")] = codec_round("resultkit-json", value)
        runs[(name, "encrypted")] = codec_round("resultkit-encrypted", value)
        runs[(name, "encrypted+zstd")] = codec_round("resultkit-encrypted", value)
    backends = []
    for serializer in ("resultkit-json", "resultkit-encrypted"):
        once, backend = backend_round(serializer, args.redis, plain_1kb()["result"])
        runs[("redis store+get 1kb", serializer.replace("resultkit-", ""))] = once
        backends.append(backend)

    best: dict[tuple[str, str], float] = {}
    sizes: dict[tuple[str, str], int] = {}
    for _ in range(args.rounds):
        for key, fn in runs.items():
            compression = "zstd" if key[1] == "encrypted+zstd" else None
            encryption.configure(keys, conf={}, compression=compression)
            best[key] = max(best.get(key, 0.0), per_second(fn, args.seconds))
    for payload, value in (("plain-1kb", plain_1kb()), ("plain-100kb", plain_100kb())):
        sizes[(payload, "resultkit-json")] = len(registry.dumps(value, "resultkit-json")[2])
        for variant, compression in (("encrypted", None), ("encrypted+zstd", "zstd")):
            encryption.configure(keys, conf={}, compression=compression)
            sizes[(payload, variant)] = len(registry.dumps(value, "resultkit-encrypted")[2])

    rows = []
    for (payload, variant), rate in best.items():
        inner = best.get((payload, "resultkit-json")) or best.get((payload, "json"))
        rows.append(
            {
                "payload": payload,
                "serializer": variant,
                "per_s": rate,
                "bytes": sizes.get((payload, variant)),
                "vs_inner": rate / inner if inner else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'payload':22} {'serializer':16} {'bytes':>8} {'per second':>11} {'x inner':>8}")
    for row in rows:
        ratio = f"{row['vs_inner']:.2f}" if row["vs_inner"] else "-"
        size = f"{row['bytes']:,}" if row["bytes"] else "-"
        print(
            f"{row['payload']:22} {row['serializer']:16} {size:>8} "
            f"{row['per_s']:>11,.0f} {ratio:>8}"
        )


if __name__ == "__main__":
    main()
