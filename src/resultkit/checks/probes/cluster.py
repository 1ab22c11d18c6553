"""Doctor probe for ``resultkit-redis+rediscluster://``: the cluster's health
(every slot served, nodes up, masters replicated), then the Redis checks of
every master, each reported once by its worst master."""

from __future__ import annotations

from typing import Any

from ...report import CheckResult, Status
from .redis import RedisProbe

__all__ = ["RedisClusterProbe"]

#: How bad each status is, to report the worst node of a cluster.
_SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}
#: Every hash slot of a Redis Cluster.
SLOTS = 16384


class NotACluster(Exception):
    """The URL names a Redis server that is not in cluster mode."""


class RedisClusterProbe(RedisProbe):
    label = "a Redis Cluster result backend (resultkit-redis)"

    def check_url(self) -> list[CheckResult]:
        return []  # TLS is ?ssl=true here (see docs/redis-cluster.md)

    def connect(self) -> str:
        from redis.exceptions import RedisClusterException

        backend = self.build_backend()
        try:
            client = backend.client
        except RedisClusterException as exc:
            text = str(exc).lower()
            if "cluster mode is not enabled" in text or "cluster support" in text:
                raise NotACluster(
                    f"{self.where} points at a Redis server that is not in cluster mode: for a "
                    "single Redis use resultkit-redis+redis://HOST:PORT/0; for a cluster, name "
                    "its nodes (cluster-enabled yes)"
                ) from exc
            raise
        node = client.get_default_node()
        version = client.get_redis_connection(node).info("server").get("redis_version", "?")
        return f"a Redis Cluster of {len(client.get_primaries())} masters (Redis {version})"

    def fail(self, check_id: str, exc: BaseException) -> CheckResult:
        if isinstance(exc, NotACluster):
            message, _, fix = str(exc).partition(": ")
            return CheckResult.failed(check_id, message, fix, reason="not-a-cluster")
        return super().fail(check_id, exc)

    def server_checks(self) -> list[CheckResult]:
        cluster = self.backend.client
        results = _health(cluster)
        per_check: dict[str, list[tuple[str, CheckResult]]] = {}
        for node in cluster.get_primaries():
            try:
                found = self.checks_on(cluster.get_redis_connection(node))
            except Exception as exc:  # an unreachable master is reported by cluster.nodes
                found = [super().fail("redis.node", exc)]
            for result in found:
                per_check.setdefault(result.id, []).append((node.name, result))
        for check_id, found_on in per_check.items():
            results.append(_worst(check_id, found_on))
        return results


def _worst(check_id: str, found_on: list[tuple[str, CheckResult]]) -> CheckResult:
    """One check of every master, reported by the worst of them."""
    name, worst = max(found_on, key=lambda item: _SEVERITY[item[1].status])
    if check_id == "redis.result-keys":
        keys = sum(int(r.data.get("keys", 0)) for _, r in found_on)
        no_ttl = sum(int(r.data.get("no_ttl_in_sample", 0)) for _, r in found_on)
        sampled = sum(int(r.data.get("sampled", 0)) for _, r in found_on)
        message = f"{keys:,} result keys on {len(found_on)} masters, {sampled:,} sampled"
        if no_ttl:
            message += f"; {no_ttl} sampled keys have no TTL (worst: {name})"
        return CheckResult(check_id, worst.status, message, worst.fix, {"keys": keys})
    if worst.status is not Status.PASS:
        message = f"{name}: {worst.message}"
    else:
        message = f"every master: {worst.message}" if len(found_on) > 1 else worst.message
    return CheckResult(check_id, worst.status, message, worst.fix, worst.data)


def _health(cluster: Any) -> list[CheckResult]:
    """CLUSTER INFO and NODES: state, slot coverage, nodes down, masters without replicas."""
    node = cluster.get_default_node()
    info = cluster.get_redis_connection(node).execute_command("CLUSTER INFO")
    if isinstance(info, bytes):
        info = info.decode()
    if isinstance(info, str):
        info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    state = str(info.get("cluster_state", "?"))
    covered = int(info.get("cluster_slots_ok", 0))
    if state != "ok" or covered < SLOTS:
        results = [
            CheckResult.failed(
                "cluster.state",
                f"cluster_state is {state}, {covered:,} of 16,384 slots served: "
                "stores and reads of results in the other slots fail (CLUSTERDOWN)",
                "bring the failed master back or let its replica take over; "
                "redis-cli --cluster fix HOST:PORT covers slots nobody serves",
                state=state,
                slots_ok=covered,
            )
        ]
    else:
        results = [
            CheckResult.passed(
                "cluster.state", "cluster_state ok, all 16,384 slots served", slots_ok=covered
            )
        ]
    return [*results, _nodes(cluster.cluster_nodes())]


def _nodes(nodes: dict[str, Any]) -> CheckResult:
    down = sorted(
        address
        for address, entry in nodes.items()
        if {"fail", "fail?", "noaddr"} & set(str(entry.get("flags", "")).split(","))
        or not entry.get("connected", True)
    )
    masters = {
        entry["node_id"]: address
        for address, entry in nodes.items()
        if "master" in str(entry.get("flags", "")) and "fail" not in str(entry.get("flags", ""))
    }
    replicas: dict[str, int] = dict.fromkeys(masters, 0)
    for entry in nodes.values():
        flags = str(entry.get("flags", ""))
        if "slave" in flags and "fail" not in flags and entry.get("master_id") in replicas:
            replicas[entry["master_id"]] += 1
    lonely = sorted(masters[m] for m, count in replicas.items() if count == 0)
    layout = f"{len(masters)} masters, {sum(replicas.values())} replicas"
    if down:
        return CheckResult.failed(
            "cluster.nodes",
            f"{layout}; unreachable or failed: {', '.join(down)}",
            "restart those nodes (they rejoin by their nodes.conf), or remove them with "
            "redis-cli --cluster del-node",
            down=down,
        )
    if lonely:
        return CheckResult.warned(
            "cluster.nodes",
            f"{layout}; without a replica: {', '.join(lonely)} (its results are lost "
            "with it, and resultkit_redis_wait_replicas cannot be met)",
            "add a replica to each: redis-cli --cluster add-node NEW:PORT HOST:PORT "
            "--cluster-slave --cluster-master-id ID",
            without_replica=lonely,
        )
    return CheckResult.passed(
        "cluster.nodes", f"{layout}; every node reachable, each master replicated"
    )
