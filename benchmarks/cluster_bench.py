"""Benchmark: resultkit-redis on a Redis Cluster against resultkit-redis on one node.

Starts its own six-node cluster (three masters, three replicas) and its own
single redis-server, both on loopback with the same settings, and measures in
the same run:

- ``store_result`` and ``get_task_meta`` per second in one client process, on
  the cluster (with and without ``resultkit_redis_wait_replicas = 1``) and on
  the single node, with their ratio;
- ``resultkit migrate`` from the single node to the cluster against a raw
  SCAN + MGET + PTTL + pipelined SET (grouped per master), with their ratio;
- the loss window: writer threads store results continuously, a master is
  killed with SIGKILL (its replica in step, or cut off ``--lag`` seconds before),
  the writers go on through the failover; then every
  result whose store had returned is read back, and the missing ones counted,
  without and with the replica wait.

Run: ``.venv/bin/python benchmarks/cluster_bench.py [--seconds 3] [--rounds 3] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster, free_cluster_ports, running_cluster  # noqa: E402


def app(url: str, **settings: Any) -> Celery:
    celery = Celery("bench", set_as_current=False)
    celery.conf.update(result_backend=url, result_expires=3600, **settings)
    return celery


def rate(backend: Any, op: str, seconds: float, ids: list[str]) -> float:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        if op == "store":
            task_id = f"{uuid.uuid4().hex[:8]}-{count}"
            backend.store_result(task_id, {"n": count, "ok": True}, "SUCCESS")
            ids.append(task_id)
        else:
            backend.get_task_meta(ids[count % len(ids)], cache=False)
        count += 1
    return count / (time.perf_counter() - started)


def raw_rate(
    client: Any, op: str, seconds: float, keys: list[str], sharded: bool, tag: str = ""
) -> float:
    """The yardstick: redis-py's own client, no Celery, no resultkit.  "store" is what
    a Celery store sends (GET of the current state, then SET with a TTL and PUBLISH
    in one pipeline), "get" one GET."""
    value = json.dumps({"status": "SUCCESS", "result": {"n": 1, "ok": True}})
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        if op == "store":
            key = f"{tag}celery-task-meta-raw-{uuid.uuid4().hex[:8]}-{count}"
            client.get(key)
            pipe = client.pipeline(transaction=False)
            pipe.set(key, value, ex=3600)
            # as the backends do: PUBLISH on one node, SPUBLISH (to the slot's master) on a cluster
            pipe.execute_command("SPUBLISH" if sharded else "PUBLISH", key, value)
            pipe.execute()
            keys.append(key)
        else:
            client.get(keys[count % len(keys)])
        count += 1
    return count / (time.perf_counter() - started)


def throughput(cluster: Cluster, single_url: str, seconds: float, rounds: int) -> dict[str, float]:
    """Each side in turn, *rounds* times (a busy machine then slows all sides alike);
    the median of each figure, and of each round's ratios.  Beside resultkit on
    both, redis-py's raw clients doing the same commands: on the single node, on
    one master of the cluster (the server's cost) and through the cluster client."""
    import redis

    sides = {
        "single": app("resultkit-redis+" + single_url).backend,
        "cluster": app(cluster.backend_url).backend,
        "cluster_wait1": app(cluster.backend_url, resultkit_redis_wait_replicas=1).backend,
    }
    # One master of the cluster through a plain client, keys in one of its slots: the
    # server's own cost (a master feeding its replica) without any cluster routing.
    tag = "{bench}"
    master = cluster.master_of(tag)
    raw = {
        "raw_single": redis.Redis.from_url(single_url),
        "raw_master": redis.Redis(host="127.0.0.1", port=master.port),
        "raw_cluster": cluster.client(),
    }
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, backend in sides.items():
            ids: list[str] = []
            for op in ("store", "get"):
                figure = rate(backend, op, seconds, ids)
                samples.setdefault(f"{name}_{op}_per_s", []).append(figure)
        for name, client in raw.items():
            keys: list[str] = []
            for op in ("store", "get"):
                figure = raw_rate(
                    client,
                    op,
                    seconds,
                    keys,
                    name != "raw_single",
                    tag if name == "raw_master" else "",
                )
                samples.setdefault(f"{name}_{op}_per_s", []).append(figure)
    # A store then a get of the same result, as a client process does (the issue's
    # "store+get"): per round, from the two rates measured in it.
    for name in ("single", "cluster", "cluster_wait1"):
        samples[f"{name}_storeget_per_s"] = [
            1 / (1 / store + 1 / get)
            for store, get in zip(
                samples[f"{name}_store_per_s"], samples[f"{name}_get_per_s"], strict=True
            )
        ]
    figures = {key: statistics.median(values) for key, values in samples.items()}

    def ratio(upper: str, lower: str) -> float:
        # The median of the rounds' own ratios: sides measured seconds apart in one
        # round share the machine's load, which drifts by 2x over minutes here.
        pairs = zip(samples[upper], samples[lower], strict=True)
        return statistics.median(a / b for a, b in pairs)

    figures["cluster_storeget_ratio"] = ratio("cluster_storeget_per_s", "single_storeget_per_s")
    figures["cluster_wait1_storeget_ratio"] = ratio(
        "cluster_wait1_storeget_per_s", "single_storeget_per_s"
    )
    for op in ("store", "get"):
        figures[f"cluster_{op}_ratio"] = ratio(f"cluster_{op}_per_s", f"single_{op}_per_s")
        figures[f"cluster_wait1_{op}_ratio"] = ratio(
            f"cluster_wait1_{op}_per_s", f"single_{op}_per_s"
        )
        figures[f"raw_master_{op}_ratio"] = ratio(
            f"raw_master_{op}_per_s", f"raw_single_{op}_per_s"
        )
        figures[f"raw_cluster_{op}_ratio"] = ratio(
            f"raw_cluster_{op}_per_s", f"raw_single_{op}_per_s"
        )
        # ours on the cluster against redis-py's cluster client: our own overhead
        figures[f"cluster_vs_raw_{op}"] = ratio(f"cluster_{op}_per_s", f"raw_cluster_{op}_per_s")
        figures[f"single_vs_raw_{op}"] = ratio(f"single_{op}_per_s", f"raw_single_{op}_per_s")
    return figures


def fill_single(source: Any, count: int) -> None:
    pipe = source.pipeline(transaction=False)
    for number in range(count):
        meta = {"status": "SUCCESS", "result": {"order": number, "lines": ["a", "b"]}}
        meta |= {"traceback": None, "children": [], "task_id": f"mig-{number:07d}"}
        meta |= {"date_done": "2026-11-30T12:00:00+00:00"}
        pipe.set(f"celery-task-meta-mig-{number:07d}", json.dumps(meta), ex=86400)
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()


def peak_rss_of_migrate(cluster: Cluster, single_url: str, count: int) -> tuple[float, float]:
    """``resultkit migrate`` single → cluster of *count* results: its peak RSS (MiB,
    from the kernel's rusage of that one process) and its wall time."""
    import os

    import redis

    source = redis.Redis.from_url(single_url)
    source.flushdb()
    cluster.flush()
    fill_single(source, count)
    command = [str(Path(sys.executable).parent / "resultkit"), "migrate", single_url]
    command += [cluster.url, "--batch-size", "1000", "--json"]
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        assert process.returncode == 0, out.read()
        assert json.loads(out.read())["copied"] == count
    source.flushdb()
    cluster.flush()
    return usage.ru_maxrss / 1024, seconds


def memory_flat(cluster: Cluster, single_url: str, counts: list[int]) -> dict[str, Any]:
    """Peak RSS of migrate single → cluster for each of *counts*: flat when the
    largest is within 15% of the smallest."""
    peaks = {count: peak_rss_of_migrate(cluster, single_url, count) for count in counts}
    low, high = peaks[min(counts)][0], peaks[max(counts)][0]
    return {
        "peak_rss_mib": {str(count): round(peak, 1) for count, (peak, _) in peaks.items()},
        "seconds": {str(count): round(took, 1) for count, (_, took) in peaks.items()},
        "growth": high / low,
        "flat": high / low <= 1.15,
    }


def migrate_to_cluster(cluster: Cluster, single_url: str, count: int) -> dict[str, float]:
    """``resultkit migrate`` single → cluster against a raw SCAN + MGET + pipelined SET,
    in the same run, on the same *count* results."""
    import redis

    source = redis.Redis.from_url(single_url)
    source.flushdb()  # the throughput runs' results
    cluster.flush()
    fill_single(source, count)
    started = time.perf_counter()
    done = subprocess.run(
        [
            *(str(Path(sys.executable).parent / "resultkit"), "migrate", single_url),
            *(cluster.url, "--batch-size", "1000", "--json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    ours = time.perf_counter() - started
    assert json.loads(done.stdout)["copied"] == count
    cluster.flush()
    target = cluster.client()
    started = time.perf_counter()
    cursor, copied = 0, 0
    while True:
        cursor, keys = source.scan(cursor=cursor, match="celery-task-meta-*", count=1000)
        if keys:
            values, ttls = source.mget(keys), source.pipeline(transaction=False)
            for key in keys:
                ttls.pttl(key)
            writes = target.pipeline(transaction=False)
            for key, value, ttl in zip(keys, values, ttls.execute(), strict=True):
                writes.set(key, value, px=ttl if ttl > 0 else None)
            copied += len(writes.execute())
        if not cursor:
            break
    raw = time.perf_counter() - started
    assert copied == count
    cluster.flush()
    source.flushdb()
    return {
        "migrate_per_s": count / ours,
        "raw_per_s": count / raw,
        "migrate_ratio": raw / ours,
    }


def loss_round(cluster: Cluster, wait: int, lag_s: float, writers: int = 4) -> dict[str, Any]:
    """Kill a master while *writers* threads store, its replica *lag_s* behind (0: in step);
    count the acknowledged results that are gone."""
    prefix = f"loss{uuid.uuid4().hex[:6]}-"
    backend_app = app(
        cluster.backend_url,
        resultkit_redis_wait_replicas=wait,
        result_backend_transport_options={"global_keyprefix": prefix},
    )
    acknowledged: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        backend = backend_app.backend
        number = 0
        while not stop.is_set():
            task_id = f"w{worker}-{number}"
            number += 1
            try:
                backend.store_result(task_id, task_id, "SUCCESS")
                acknowledged.append(task_id)
            except Exception:
                failed.append(task_id)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    victim = cluster.masters()[0]
    before_kill = len(acknowledged)
    if lag_s:
        cluster.kill_with_lagging_replica(victim, lag_s)
    else:
        cluster.kill(victim)
    killed_at = time.monotonic()
    time.sleep(4.0)  # through the failover (node timeout 1 s)
    stop.set()
    for thread in threads:
        thread.join(60)
    cluster.restart(victim)
    cluster.wait_healthy()
    reader = app(cluster.backend_url, result_backend_transport_options={"global_keyprefix": prefix})
    found = dict(reader.backend.get_many(acknowledged, timeout=60, max_iterations=1))
    lost = [task_id for task_id in acknowledged if task_id not in found]
    cluster.flush()
    return {
        "wait_replicas": wait,
        "replica_lag_s": lag_s,
        "acknowledged": len(acknowledged),
        "acknowledged_before_kill": before_kill,
        "lost": len(lost),
        "failed_stores": len(failed),
        "seconds_after_kill": round(time.monotonic() - killed_at, 1),
    }


def single_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_cluster_ports(1)[0]
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(folder)),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return process, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput figure")
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughput rounds, and master kills per mode"
    )
    parser.add_argument("--no-loss", action="store_true", help="measure throughput only")
    parser.add_argument(
        "--migrate", type=int, default=100_000, help="results migrated single → cluster"
    )
    parser.add_argument(
        "--memory",
        default="20000,100000",
        help="result counts whose migrate single → cluster peak RSS is compared ('' to skip)",
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip the rates")
    parser.add_argument(
        "--lag", type=float, default=0.3, help="seconds the replica falls behind before the kill"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running_cluster() as cluster:
        process, single_url = single_server(Path(folder))
        try:
            figures: dict[str, Any] = {}
            if not args.no_throughput:
                figures = throughput(cluster, single_url, args.seconds, args.rounds)
                figures |= migrate_to_cluster(cluster, single_url, args.migrate)
            counts = [int(c) for c in args.memory.split(",") if c.strip()]
            memory = memory_flat(cluster, single_url, counts) if counts else None
        finally:
            process.terminate()
            process.wait(10)
        cluster.flush()
        rounds = [
            loss_round(cluster, wait, lag)
            for lag in (0.0, args.lag)
            for wait in (0, 1)
            for _ in range(0 if args.no_loss else args.rounds)
        ]
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    if args.json:
        document = {"throughput": figures, "memory": memory, "loss": rounds, "load": load}
        print(json.dumps(document, indent=2))
        return
    print(f"load average at the end: {' '.join(load)}")
    if figures:
        print(
            f"store+get  single {figures['single_storeget_per_s']:8.0f}/s   "
            f"cluster {figures['cluster_storeget_per_s']:8.0f}/s "
            f"({figures['cluster_storeget_ratio']:.2f}, target 0.80)   "
            f"cluster+WAIT 1 {figures['cluster_wait1_storeget_per_s']:8.0f}/s "
            f"({figures['cluster_wait1_storeget_ratio']:.2f})"
        )
    for op in ("store", "get") if figures else ():
        single, plain = figures[f"single_{op}_per_s"], figures[f"cluster_{op}_per_s"]
        waited = figures[f"cluster_wait1_{op}_per_s"]
        print(
            f"{op:5}  single {single:8.0f}/s   "
            f"cluster {plain:8.0f}/s ({figures[f'cluster_{op}_ratio']:.2f})   "
            f"cluster+WAIT 1 {waited:8.0f}/s ({figures[f'cluster_wait1_{op}_ratio']:.2f})"
        )
        print(
            f"{op:5}  raw redis-py: single {figures[f'raw_single_{op}_per_s']:8.0f}/s   "
            f"one master {figures[f'raw_master_{op}_per_s']:8.0f}/s "
            f"({figures[f'raw_master_{op}_ratio']:.2f})   "
            f"cluster client {figures[f'raw_cluster_{op}_per_s']:8.0f}/s "
            f"({figures[f'raw_cluster_{op}_ratio']:.2f});  "
            f"resultkit/raw: cluster {figures[f'cluster_vs_raw_{op}']:.2f}, "
            f"single {figures[f'single_vs_raw_{op}']:.2f}"
        )
    if figures:
        print(
            f"migrate single -> cluster  resultkit {figures['migrate_per_s']:8.0f}/s   "
            f"raw SCAN+MGET+pipelined SET {figures['raw_per_s']:8.0f}/s "
            f"({figures['migrate_ratio']:.2f})"
        )
    if memory:
        peaks = ", ".join(
            f"{count} results {peak} MiB ({memory['seconds'][count]} s)"
            for count, peak in memory["peak_rss_mib"].items()
        )
        verdict = "flat" if memory["flat"] else "NOT flat"
        print(f"migrate single -> cluster peak RSS: {peaks}: x{memory['growth']:.2f}, {verdict}")
    for result in rounds:
        print(
            f"master killed, replica lag {result['replica_lag_s']:.1f} s, "
            f"wait_replicas={result['wait_replicas']}: "
            f"{result['lost']} lost of {result['acknowledged']} acknowledged "
            f"({result['acknowledged_before_kill']} before the kill), "
            f"{result['failed_stores']} stores failed"
        )


if __name__ == "__main__":
    main()
