"""The resultkit commands on a real Redis Cluster (``rediscluster://``), run as a user runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from tests.cluster import Cluster
from tests.conftest import RedisDB, redis_database
from tests.worker import load, write_app

STATES = ["SUCCESS"] * 200 + ["FAILURE"] * 60 + ["REVOKED"] * 40


def lending_app(folder: Path, cluster: Cluster, prefix: str, **settings: Any) -> Celery:
    """An app module ``rkapp`` whose key prefix and lifetimes the commands borrow (``-A``)."""
    write_app(
        folder,
        "rkapp",
        "memory://",
        cluster.backend_url,
        result_backend_transport_options={"global_keyprefix": prefix},
        **settings,
    )
    return load(folder, "rkapp")


def seed(url: str, prefix: str, states: list[str]) -> list[str]:
    app = Celery(set_as_current=False)
    app.conf.update(
        result_backend=url,
        result_backend_transport_options={"global_keyprefix": prefix},
        result_expires=7200,
    )
    ids = [f"r{n}" for n in range(len(states))]
    for task_id, state in zip(ids, states, strict=True):
        app.backend.store_result(task_id, {"n": task_id} if state == "SUCCESS" else None, state)
    return ids


def test_migrate_single_redis_to_the_cluster_and_back_with_verify(
    cli: Any, redis_cluster: Cluster, cluster_prefix: str, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given results on a single Redis
    lending_app(tmp_path, redis_cluster, cluster_prefix)
    ids = seed(redis_db.url, cluster_prefix, STATES)

    # When they are migrated to the cluster, verified
    there = cli("migrate", redis_db.url, redis_cluster.url, "-A", "rkapp", "--verify", "--json")

    # Then every one is copied and reads back through Celery on the cluster
    assert there.code == 0, there.output
    assert (there.json["copied"], there.json["verified"], there.json["mismatched"]) == (300, 300, 0)
    reader = Celery(set_as_current=False)
    reader.conf.update(
        result_backend=redis_cluster.backend_url,
        result_backend_transport_options={"global_keyprefix": cluster_prefix},
    )
    metas = dict(reader.backend.get_many(ids, timeout=10))
    assert len(metas) == 300
    assert metas["r5"]["result"] == {"n": "r5"}
    # ... under Celery's key names, spread over every master, lifetimes kept
    client = redis_cluster.client()
    key = f"{cluster_prefix}celery-task-meta-r5"
    assert 7000 <= client.ttl(key) <= 7200
    owners = {client.get_node_from_key(f"{cluster_prefix}celery-task-meta-{i}").name for i in ids}
    assert len(owners) == 3

    # When they are migrated back to another single Redis
    with redis_database() as back:
        home = cli("migrate", redis_cluster.url, back.url, "-A", "rkapp", "--verify", "--json")
        # Then all of them arrive
        assert home.code == 0, home.output
        counts = (home.json["copied"], home.json["verified"], home.json["mismatched"])
        assert counts == (300, 300, 0)
        assert back.client.exists(*(f"{cluster_prefix}celery-task-meta-{i}" for i in ids)) == 300


def test_stats_counts_exactly_across_every_master(
    cli: Any, redis_cluster: Cluster, cluster_prefix: str, tmp_path: Path
) -> None:
    lending_app(tmp_path, redis_cluster, cluster_prefix)
    seed(redis_cluster.backend_url, cluster_prefix, STATES)

    stats = cli("stats", "-A", "rkapp", "--json")

    assert stats.code == 0, stats.output
    assert stats.json["total"] == 300
    assert stats.json["by_state"] == {"SUCCESS": 200, "FAILURE": 60, "REVOKED": 40}


def test_cleanup_fixes_missing_ttls_and_deletes_old_results_on_every_master(
    cli: Any, redis_cluster: Cluster, cluster_prefix: str, tmp_path: Path
) -> None:
    # Given results on the cluster, 90 of them stored without a TTL
    lending_app(tmp_path, redis_cluster, cluster_prefix, result_expires=3600)
    ids = seed(redis_cluster.backend_url, cluster_prefix, STATES)
    client = redis_cluster.client()
    bare = [f"{cluster_prefix}celery-task-meta-{i}" for i in ids[:90]]
    for key in bare:
        client.persist(key)

    # When cleanup gives them the app's lifetime
    fixed = cli("cleanup", "-A", "rkapp", "--fix-missing-ttl", "--json")

    # Then exactly those get one, on whichever master holds them
    assert fixed.code == 0, fixed.output
    assert fixed.json["ttl_fixed"] == 90
    assert all(0 < client.ttl(key) <= 3600 for key in bare)

    # When everything older than 0 seconds is deleted
    deleted = cli("cleanup", "-A", "rkapp", "--older-than", "0s", "--json")
    assert deleted.code == 0, deleted.output
    assert deleted.json["deleted"] == 300
    assert client.exists(*bare[:1], f"{cluster_prefix}celery-task-meta-{ids[-1]}") == 0
