"""resultkit-redis on a real six-node Redis Cluster: what Celery does with results,
across slots, through failover and slot migration."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chord, group
from celery.exceptions import BackendGetMetaError, BackendStoreError

from resultkit.backends import rediscluster as rediscluster_backend
from resultkit.cluster import parse_cluster_url
from resultkit.errors import ConfigurationError
from tests.cluster import Cluster
from tests.samples import RETENTION_POLICY
from tests.worker import celery_worker, load, wait_until, write_app


def cluster_app(cluster: Cluster, prefix: str, **settings: Any) -> Celery:
    app = Celery(set_as_current=False)
    app.conf.update(
        result_backend=cluster.backend_url,
        result_backend_transport_options={"global_keyprefix": prefix},
        **settings,
    )
    return app


def spread_ids(cluster: Cluster, prefix: str, count: int) -> list[str]:
    """Task ids whose result keys fall on every master of the cluster."""
    client = cluster.client()
    ids, owners = [f"t{i}" for i in range(count)], set()
    for task_id in ids:
        owners.add(client.get_node_from_key(f"{prefix}celery-task-meta-{task_id}").name)
    assert len(owners) == 3, "the ids must span all three masters"
    return ids


# ------------------------------------------------------------------- URLs


def test_a_cluster_url_names_its_nodes_credentials_and_tls() -> None:
    url = parse_cluster_url(
        "resultkit-redis+rediscluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002/0"
        "?ssl=true&ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    )
    assert url.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (url.username, url.password) == ("app", "s@cret")
    assert url.ssl is True
    assert url.ssl_options == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/ca.pem"}
    assert "s%40cret" not in url.masked
    assert parse_cluster_url("rediscluster://h:1").ssl is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediscluster://h:7000/3", "only database 0"),
        ("rediscluster://h:port", "not a port number"),
        ("rediscluster://", "names no node"),
        ("rediscluster://h:1?db=2", "unknown parameter"),
        ("redis://h:1", "not a Redis Cluster URL"),
    ],
)
def test_a_wrong_cluster_url_says_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_cluster_url(url)


# ------------------------------------------------------- the backend itself


def test_results_keep_celerys_key_names_ttls_and_read_back_across_slots(
    redis_cluster: Cluster, cluster_prefix: str
) -> None:
    # Given an app on the cluster with a result lifetime
    app = cluster_app(redis_cluster, cluster_prefix, result_expires=1234)
    backend = app.backend
    assert type(backend).__name__ == "ResultkitRedisClusterBackend"
    ids = spread_ids(redis_cluster, cluster_prefix, 30)
    client = redis_cluster.client()

    # When results are stored on every master
    for number, task_id in enumerate(ids):
        backend.store_result(task_id, {"n": number}, "SUCCESS")

    # Then each key has Celery's name and the lifetime
    key = f"{cluster_prefix}celery-task-meta-{ids[0]}"
    assert 1200 <= client.ttl(key) <= 1234
    # ... each reads back through AsyncResult, and all at once across slots
    assert app.AsyncResult(ids[5]).get(timeout=5) == {"n": 5}
    many = dict(backend.get_many(ids, timeout=10))
    assert [many[task_id]["result"]["n"] for task_id in ids] == list(range(30))
    assert app.GroupResult("g", [app.AsyncResult(i) for i in ids]).join_native(timeout=10) == [
        {"n": n} for n in range(30)
    ]
    # ... and forget removes one
    app.AsyncResult(ids[0]).forget()
    assert client.exists(key) == 0
    assert app.AsyncResult(ids[0]).state == "PENDING"


def test_groups_are_saved_restored_and_deleted_under_celerys_name(
    redis_cluster: Cluster, cluster_prefix: str
) -> None:
    app = cluster_app(redis_cluster, cluster_prefix)
    members = [app.AsyncResult(f"member-{i}") for i in range(5)]
    saved = app.GroupResult("grp-1", members)
    saved.save()
    client = redis_cluster.client()
    assert client.exists(f"{cluster_prefix}celery-taskset-meta-grp-1") == 1
    restored = app.GroupResult.restore("grp-1", app=app)
    assert [r.id for r in restored.results] == [f"member-{i}" for i in range(5)]
    restored.delete()
    assert client.exists(f"{cluster_prefix}celery-taskset-meta-grp-1") == 0
    assert app.GroupResult.restore("grp-1", app=app) is None


def test_retention_policies_set_each_results_lifetime(
    redis_cluster: Cluster, cluster_prefix: str
) -> None:
    app = cluster_app(redis_cluster, cluster_prefix, resultkit_retention=RETENTION_POLICY)
    from celery.app.task import Context

    app.backend.store_result("kept", 1, "SUCCESS", request=Context(task="audit.log"))
    app.backend.store_result("week", 1, "SUCCESS", request=Context(task="reports.daily"))
    client = redis_cluster.client()
    assert client.ttl(f"{cluster_prefix}celery-task-meta-kept") == -1
    assert 7 * 86400 - 60 <= client.ttl(f"{cluster_prefix}celery-task-meta-week") <= 7 * 86400


def test_get_is_woken_by_a_sharded_message_on_the_results_master(
    redis_cluster: Cluster, cluster_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client waiting for a result that is not there yet, which re-reads
    # it every 30 s only: the message alone can wake it sooner
    monkeypatch.setattr(rediscluster_backend, "RECHECK_S", 30.0)
    app = cluster_app(redis_cluster, cluster_prefix)
    writer = cluster_app(redis_cluster, cluster_prefix)
    result = app.AsyncResult("waited")
    app.backend.on_task_call(None, "waited")
    channel = f"{cluster_prefix}celery-task-meta-waited"
    master = redis_cluster.master_of(channel).client()
    # ... subscribed with SSUBSCRIBE on the master that owns the key
    assert master.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1
    stored_at: list[float] = []

    def store() -> None:
        stored_at.append(time.monotonic())
        writer.backend.store_result("waited", 42, "SUCCESS")

    # When another process stores it half a second later
    threading.Timer(0.5, store).start()
    started = time.monotonic()
    assert result.get(timeout=10) == 42
    woken = time.monotonic()
    # Then get() returns soon after the store (milliseconds on a quiet machine;
    # the bound leaves room for a loaded one), long before any re-read
    assert woken - started >= 0.45
    assert woken - stored_at[0] < 2.0
    # ... and unsubscribes once it has the result
    wait_until(lambda: master.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 0, 5)


@pytest.mark.parametrize("ending", ["get", "forget"])
def test_a_sent_task_subscribes_its_channel_and_get_or_forget_unsubscribes_it(
    redis_cluster: Cluster, cluster_prefix: str, ending: str
) -> None:
    # What Celery's test_asyncresult_get_cancels_subscription and
    # ..._forget_cancels_subscription check with PUBSUB CHANNELS on a single Redis
    # (scripts/celery-suite runs them against its helper Redis, where a cluster
    # backend never subscribes), checked on the cluster's own masters.
    # Given a task sent (Celery subscribes to its result as apply_async does)
    app = cluster_app(redis_cluster, cluster_prefix)
    writer = cluster_app(redis_cluster, cluster_prefix)
    task_id = f"sent-{ending}"
    app.backend.on_task_call(None, task_id)
    channel = f"{cluster_prefix}celery-task-meta-{task_id}"
    master = redis_cluster.master_of(channel).client()
    # Then its channel is subscribed on the master that owns it, and on no other node
    assert master.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1
    for node in redis_cluster.nodes:
        if node.port != master.connection_pool.connection_kwargs["port"]:
            assert node.client().execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 0
    # When the result is read (get) or forgotten (forget)
    result = app.AsyncResult(task_id)
    if ending == "get":
        writer.backend.store_result(task_id, 3, "SUCCESS")
        assert result.get(timeout=10) == 3
    else:
        result.forget()
    # Then the channel is unsubscribed
    wait_until(lambda: master.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1] == 0, 5)


def test_an_unreachable_cluster_raises_celerys_backend_errors_after_bounded_retries() -> None:
    from tests.cluster import free_cluster_ports

    port = free_cluster_ports(1)[0]
    app = Celery(set_as_current=False)
    app.conf.update(
        result_backend=f"resultkit-redis+rediscluster://127.0.0.1:{port}",
        result_backend_transport_options={
            "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.1}
        },
    )
    started = time.monotonic()
    with pytest.raises(BackendStoreError, match=r"after retrying"):
        app.backend.store_result("x", 1, "SUCCESS")
    with pytest.raises(BackendGetMetaError, match=r"after retrying"):
        app.backend.get_task_meta("x")
    assert time.monotonic() - started < 10


# ------------------------------------------------------------- a real worker


def test_a_worker_runs_tasks_groups_and_chords_with_results_on_the_cluster(
    redis_cluster: Cluster, cluster_prefix: str, amqp_url: str, tmp_path: Path
) -> None:
    # Given a prefork worker whose results go to the cluster
    options = {"global_keyprefix": cluster_prefix}
    write_app(
        tmp_path,
        "clustered",
        amqp_url,
        redis_cluster.backend_url,
        result_backend_transport_options=options,
    )
    app = load(tmp_path, "clustered")
    with celery_worker(tmp_path, "clustered", pool="prefork", concurrency=2):
        # When it runs a task, a failing task, a group and a chord
        single = app.send_task("misc.add", args=[2, 3])
        failed = app.send_task("reports.fail", args=[1])
        members = group(app.signature("misc.add", args=[i, i]) for i in range(12)).apply_async()
        summed = chord([app.signature("misc.add", args=[i, 1]) for i in range(8)])(
            app.signature("misc.sum")
        )
        # Then get() returns each
        assert single.get(timeout=30) == 5
        assert failed.get(timeout=30, propagate=False).__class__.__name__ == "ValueError"
        assert members.get(timeout=30) == [2 * i for i in range(12)]
        assert summed.get(timeout=30) == sum(range(1, 9))
    client = redis_cluster.client()
    # ... the chord was counted in hash-tagged keys in its group key's slot, then finished
    group_key = f"{cluster_prefix}celery-taskset-meta-{summed.parent.id}"
    assert client.get("{" + group_key + "}.c") == b"done"
    assert client.exists("{" + group_key + "}.j") == 0
    assert client.keyslot("{" + group_key + "}.j") == client.keyslot(group_key)
    # ... and results read back through plain Celery under their own names
    assert client.exists(f"{cluster_prefix}celery-task-meta-{single.id}") == 1


# ------------------------------------------------------------------- faults


def _store_continuously(app: Celery, ids: list[str], acknowledged: list[str]) -> None:
    for task_id in ids:
        app.backend.store_result(task_id, task_id, "SUCCESS")
        acknowledged.append(task_id)


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_only_with_the_replica_wait_every_acknowledged_result_survives_a_masters_death(
    redis_cluster: Cluster, cluster_prefix: str, wait_replicas: int
) -> None:
    # Given stores running continuously, waiting for one replica or not
    app = cluster_app(redis_cluster, cluster_prefix, resultkit_redis_wait_replicas=wait_replicas)
    ids = spread_ids(redis_cluster, cluster_prefix, 3000)
    victim = redis_cluster.master_of(f"{cluster_prefix}celery-task-meta-{ids[0]}")
    acknowledged: list[str] = []
    writer = threading.Thread(target=_store_continuously, args=(app, ids, acknowledged))
    writer.start()
    wait_until(lambda: len(acknowledged) >= 100, 30)
    try:
        # When a master is killed with SIGKILL while its replica lags 0.3 s behind
        redis_cluster.kill_with_lagging_replica(victim, lag_s=0.3)
        stop_at = len(acknowledged) + 300
        wait_until(lambda: len(acknowledged) >= stop_at, 60)  # through the failover
        del ids[len(acknowledged) + 50 :]  # the writer stops soon after
        writer.join(60)
        assert not writer.is_alive()
        # Then no store failed, and, only when the stores waited for the replica,
        # every acknowledged result is there after the replica took over
        assert acknowledged == ids
        redis_cluster.wait_healthy()
        reader = cluster_app(redis_cluster, cluster_prefix)
        found = dict(reader.backend.get_many(ids, timeout=30, max_iterations=1))
        lost = [task_id for task_id in ids if task_id not in found]
        if wait_replicas:
            assert lost == []
        else:
            assert lost, "without the wait, the writes the replica missed are lost"
    finally:
        redis_cluster.restart(victim)
        redis_cluster.wait_healthy()


def test_a_worker_keeps_storing_while_a_master_dies(
    redis_cluster: Cluster, cluster_prefix: str, amqp_url: str, tmp_path: Path
) -> None:
    # Given a worker storing results continuously on the cluster
    write_app(
        tmp_path,
        "failover",
        amqp_url,
        redis_cluster.backend_url,
        result_backend_transport_options={"global_keyprefix": cluster_prefix},
        resultkit_redis_wait_replicas=1,
    )
    app = load(tmp_path, "failover")
    with celery_worker(tmp_path, "failover", pool="prefork", concurrency=2):
        results = [app.send_task("misc.add", args=[i, 1]) for i in range(300)]
        wait_until(lambda: results[40].ready(), 30)
        # When a master is killed with SIGKILL while it stores them
        victim = redis_cluster.masters()[1]
        redis_cluster.kill(victim)
        try:
            # Then no task fails, and get() returns each result
            assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(300)]
        finally:
            redis_cluster.restart(victim)
            redis_cluster.wait_healthy()


def test_reads_writes_and_waiters_follow_a_slot_while_it_migrates(
    redis_cluster: Cluster, cluster_prefix: str
) -> None:
    # Given results stored in one slot (a hash tag in the prefix puts them there)
    prefix = cluster_prefix + "{mig}-"
    app = cluster_app(redis_cluster, prefix)
    ids = [f"m{i}" for i in range(40)]
    for task_id in ids:
        app.backend.store_result(task_id, task_id, "SUCCESS")
    client = redis_cluster.client()
    slot = client.keyslot(f"{prefix}celery-task-meta-m0")
    source = redis_cluster.master_of(f"{prefix}celery-task-meta-m0").port
    target = next(n.port for n in redis_cluster.masters() if n.port != source)
    # ... a client waiting for a result in that slot, and a reader reading all the time
    waiter = cluster_app(redis_cluster, prefix)
    pending = waiter.AsyncResult("late")
    waiter.backend.on_task_call(None, "late")
    errors: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal reads
        reader = cluster_app(redis_cluster, prefix)
        while not stop.is_set():
            try:
                metas = dict(reader.backend.get_many(ids, timeout=10))
                assert sorted(metas) == sorted(ids)
                reads += 1
            except BaseException as exc:
                errors.append(exc)
                return

    reading = threading.Thread(target=read)
    reading.start()
    try:
        # When the slot moves to another master, with a store while it is half moved (ASK)
        def half_moved() -> None:
            app.backend.store_result("during", "during", "SUCCESS")

        redis_cluster.migrate_slot(slot, source, target, half_moved)
        # ... and the waited-for result is stored after the move
        app.backend.store_result("late", "late", "SUCCESS")
        # Then the waiter is woken, on the new master
        assert pending.get(timeout=15) == "late"
        time.sleep(0.3)
    finally:
        stop.set()
        reading.join(30)
    # ... the reads never failed
    assert errors == []
    assert reads > 0
    # ... and every result, including the one stored mid-move, is on the new master
    new_owner = redis_cluster.node(target).client()
    assert new_owner.exists(*(f"{prefix}celery-task-meta-{i}" for i in [*ids, "during"])) == 41
    assert app.AsyncResult("during").get(timeout=5) == "during"
    # Cleanup: the slot goes back home, so other tests see the layout they expect
    redis_cluster.migrate_slot(slot, target, source)


# ----------------------------------------------------------- TLS and ACL users


def _tls_files(folder: Path) -> dict[str, Path]:
    """A CA, and a certificate it signed for 127.0.0.1."""
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "node.key", "node.csr", "node.pem")
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        [
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca),
            *("-days", "1", "-subj", "/CN=resultkit test CA"),
        ],
        [
            *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr),
            *("-subj", "/CN=127.0.0.1"),
        ],
        [
            *("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"),
            *("-out", cert, "-days", "1", "-extfile", ext),
        ],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return {"ca": ca, "key": key, "cert": cert}


def test_a_cluster_over_tls_with_an_acl_user_stores_reads_and_wakes_get(tmp_path: Path) -> None:
    import shutil

    from tests.cluster import ClusterUnavailable, start_cluster
    from tests.conftest import services

    if shutil.which("openssl") is None:
        if services.in_ci():
            pytest.fail("openssl is needed to make the TLS test's certificates")
        pytest.skip("openssl is needed to make the TLS test's certificates")
    # Given three TLS-only masters that accept only the ACL user 'app'
    files = _tls_files(tmp_path)
    tls = ("--tls-cert-file", files["cert"], "--tls-key-file", files["key"])
    tls += ("--tls-ca-cert-file", files["ca"], "--tls-cluster", "yes", "--tls-auth-clients", "no")
    acl = ("--user", "default", "off", "--user", "app", "on", ">s3cr@t", "~*", "&*", "+@all")
    try:
        cluster = start_cluster(
            tmp_path,
            replicas=0,
            extra=tuple(map(str, tls + acl)),
            cli_options=(
                "--tls",
                "--cacert",
                str(files["ca"]),
                "--user",
                "app",
                "--pass",
                "s3cr@t",
            ),
            client_options={
                "ssl": True,
                "ssl_ca_certs": str(files["ca"]),
                "username": "app",
                "password": "s3cr@t",
            },
        )
    except ClusterUnavailable as exc:
        pytest.fail(str(exc))
    try:
        # When a Celery app uses it with the TLS form of the URL and the user in it
        url = (
            f"resultkit-redis+rediscluster://app:s3cr%40t@{cluster.hosts}"
            f"?ssl=true&ssl_cert_reqs=required&ssl_ca_certs={files['ca']}"
        )
        app = Celery(set_as_current=False)
        app.conf.update(result_backend=url)
        waiter = app.AsyncResult("tls-late")
        app.backend.on_task_call(None, "tls-late")
        writer = Celery(set_as_current=False)
        writer.conf.update(result_backend=url)
        threading.Timer(0.3, lambda: writer.backend.store_result("tls-late", 7, "SUCCESS")).start()
        # Then results go and come back over TLS, and get() is woken
        assert waiter.get(timeout=10) == 7
        assert cluster.client().get("celery-task-meta-tls-late") is not None
        # ... and a wrong password is refused at once with Celery's error, never retried
        wrong = Celery(set_as_current=False)
        wrong.conf.update(result_backend=url.replace("s3cr%40t", "nope"))
        started = time.monotonic()
        with pytest.raises(BackendStoreError, match="refused the credentials"):
            wrong.backend.store_result("x", 1, "SUCCESS")
        assert time.monotonic() - started < 5
    finally:
        cluster.stop()
