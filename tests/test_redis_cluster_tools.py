"""The resultkit commands on a real Redis Cluster (``rediscluster://``), run as a user runs them."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from celery import Celery

from tests.cluster import Cluster, str_of
from tests.conftest import RedisDB, redis_database
from tests.worker import load, wait_until, write_app

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


def test_doctor_passes_a_healthy_cluster_and_names_keys_without_ttl(
    cli: Any, redis_cluster: Cluster, cluster_prefix: str, tmp_path: Path
) -> None:
    lending_app(tmp_path, redis_cluster, cluster_prefix)
    ids = seed(redis_cluster.backend_url, cluster_prefix, STATES[:30])
    redis_cluster.client().persist(f"{cluster_prefix}celery-task-meta-{ids[0]}")

    report = cli("doctor", "-A", "rkapp", "--json")

    assert report.code == 0, report.output
    assert report.check("cluster.state")["status"] == "pass"
    assert "all 16,384 slots" in report.check("cluster.state")["message"]
    assert report.check("cluster.nodes")["message"].startswith("3 masters, 3 replicas")
    keys = report.check("redis.result-keys")
    assert (keys["status"], keys["data"]["keys"]) == ("warn", 30)
    assert "1 sampled keys have no TTL" in keys["message"]
    assert report.check("roundtrip.group")["status"] == "pass"


def test_doctor_fails_a_cluster_with_a_master_down(
    cli: Any, redis_cluster: Cluster, tmp_path: Path
) -> None:
    # Given a master that is dead and whose replica has not taken over yet
    masters = redis_cluster.masters()
    victim, alive = masters[2], masters[0]
    replica = redis_cluster.replica_of(victim)
    replica.process.send_signal(19)  # SIGSTOP: no failover while the doctor looks
    redis_cluster.kill(victim)
    try:
        wait_until(lambda: alive.client().cluster("info")["cluster_state"] == "fail", 20)
        report = cli("doctor", redis_cluster.url, "--json", "--timeout", "20")
        # Then the cluster checks fail and name the node, with a fix
        assert report.code == 1
        state, nodes = report.check("cluster.state"), report.check("cluster.nodes")
        assert state["status"] == "fail"
        assert "cluster_state is fail" in state["message"]
        assert nodes["status"] == "fail"
        assert f"127.0.0.1:{victim.port}" in nodes["message"]
        assert "restart" in nodes["fix"]
    finally:
        replica.process.send_signal(18)  # SIGCONT
        redis_cluster.restart(victim)
        redis_cluster.wait_healthy()


def test_doctor_says_a_cluster_url_points_at_a_single_redis(cli: Any, redis_db: RedisDB) -> None:
    host = redis_db.url.split("://")[1].split("/")[0]
    report = cli("doctor", f"rediscluster://{host}", "--json")
    assert report.code == 1
    connect = report.check("connect")
    assert "not in cluster mode" in connect["message"]
    assert "resultkit-redis+redis://" in connect["fix"]


def test_config_check_knows_the_replica_wait(cli: Any, tmp_path: Path) -> None:
    for name, value, status in [("good", 1, "pass"), ("bad", -1, "fail")]:
        write_app(
            tmp_path,
            name,
            "memory://",
            "resultkit-redis+rediscluster://127.0.0.1:7000",
            resultkit_redis_wait_replicas=value,
        )
        report = cli("config", "check", "-A", name, "--json")
        assert report.check("config.replica-wait")["status"] == status, report.output
        assert report.check("config.unknown-setting")["status"] == "pass"


def test_config_new_writes_a_cluster_configuration_that_doctor_passes(
    cli: Any, redis_cluster: Cluster, tmp_path: Path
) -> None:
    written = cli("config", "new", "--backend", "rediscluster", "--retention", "7d")
    assert written.code == 0, written.output
    assert "resultkit_redis_wait_replicas" in (tmp_path / "celeryconfig.py").read_text()
    env = {"RESULT_REDIS_NODES": redis_cluster.hosts}

    checked = cli("config", "check", "-A", "celeryconfig", "--json", env=env)
    report = cli("doctor", "-A", "celeryconfig", "--json", env=env)

    assert checked.check("config.replica-wait")["status"] == "pass", checked.output
    assert report.code == 0, report.output
    assert report.check("cluster.nodes")["status"] == "pass"
    assert report.check("roundtrip.success")["status"] == "pass"


def test_bench_measures_the_cluster_and_leaves_nothing_behind(
    cli: Any, redis_cluster: Cluster, redis_db: RedisDB
) -> None:
    # Given the cluster, and a single Redis to compare it with
    report = cli(
        "bench", redis_cluster.url, "resultkit-redis+" + redis_db.url, "--seconds", "1", "--json"
    )
    assert report.code == 0, report.output
    cases = {case["backend"]: case for case in report.json["cases"]}
    cluster_case = next(c for url, c in cases.items() if "rediscluster://" in url)
    # Then the cluster's rates are measured, with no Celery counterpart (Celery has none)
    assert cluster_case["throughput"]["store"] > 0
    assert cluster_case["throughput"]["fetch"] > 0
    assert not any("rediscluster" in str(c.get("counterpart_of")) for c in cases.values())
    # ... and nothing it wrote stays on any master
    for node in redis_cluster.masters():
        assert node.client().dbsize() == 0


# ------------------------------------------------- migrate --resume under faults


def fill_cluster(cluster: Cluster, prefix: str, total: int) -> list[str]:
    """*total* results as Celery's json serializer writes them (result = their number)."""
    import json

    ids = [f"f{i:06d}" for i in range(total)]
    pipe = cluster.client().pipeline(transaction=False)
    for number, task_id in enumerate(ids):
        meta = {"status": "SUCCESS", "result": number, "traceback": None, "children": []}
        meta |= {"date_done": "2026-11-30T12:00:00+00:00", "task_id": task_id}
        pipe.set(f"{prefix}celery-task-meta-{task_id}", json.dumps(meta), ex=86400)
    pipe.execute()
    return ids


def test_resume_after_a_failover_copies_every_result(
    redis_cluster: Cluster, cluster_prefix: str, sqlite_db: Any, tmp_path: Path
) -> None:
    from tests.conftest import run
    from tests.faults import assert_every_result_once, start, stop_after

    # Given 4,000 results on the cluster, each on its master's replica too
    lending_app(tmp_path, redis_cluster, cluster_prefix)
    ids = fill_cluster(redis_cluster, cluster_prefix, 4000)
    for node in redis_cluster.masters():
        assert node.client().wait(1, 5000) == 1
    checkpoint = tmp_path / "cp.json"
    args = ["migrate", redis_cluster.url, sqlite_db.url, "-A", "rkapp"]
    args += ["--batch-size", "100", "--checkpoint", str(checkpoint), "--json"]
    # When the migration is killed part-way and a master dies, its replica taking over
    process = start(*args, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    stop_after(process, checkpoint, 1000, signal.SIGKILL)
    process.wait()
    victim = redis_cluster.masters()[0]
    redis_cluster.kill(victim)
    try:
        redis_cluster.wait_healthy()
        # Then --resume finds the new master, scans again, and every result arrives once
        resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
        assert resumed.code == 0, resumed.output
        assert resumed.json["resumed"] is True
        assert resumed.json["rescans"] >= 1
        assert resumed.json["complete"] is True
        assert_every_result_once(sqlite_db.url, ids, sqlite_db)
    finally:
        redis_cluster.restart(victim)
        redis_cluster.wait_healthy()


# ----------------------------------------- migrate during redis-cli --cluster reshard


def ids_in_the_slots_moved(cluster: Cluster, prefix: str, source: int, slots: int) -> list[str]:
    """Task ids whose keys hash to the first *slots* slots of master *source* (the
    ones ``redis-cli --cluster reshard`` moves first), three per slot."""
    from redis.crc import key_slot

    first = sorted(
        slot
        for r in cluster.node(source).client().execute_command("CLUSTER", "SLOTS")
        if int(r[2][1]) == source
        for slot in range(int(r[0]), int(r[1]) + 1)
    )[:slots]
    # Three in every one of them: the slot a test catches half moved always holds some.
    per_slot, found = dict.fromkeys(first, 0), []
    n = 0
    while len(found) < 3 * len(first):
        task_id = f"m{n:07d}"
        slot = key_slot(f"{prefix}celery-task-meta-{task_id}".encode())
        if per_slot.get(slot, 3) < 3:
            per_slot[slot] += 1
            found.append(task_id)
        n += 1
    return found


def fill_redis(client: Any, prefix: str, ids: list[str]) -> None:
    """Results as Celery's json serializer writes them (result = their index in *ids*)."""
    pipe = client.pipeline(transaction=False)
    for number, task_id in enumerate(ids):
        meta = {"status": "SUCCESS", "result": number, "traceback": None, "children": []}
        meta |= {"date_done": "2026-11-30T12:00:00+00:00", "task_id": task_id}
        pipe.set(f"{prefix}celery-task-meta-{task_id}", json.dumps(meta), ex=86400)
    pipe.execute()


def stop_mid_slot(cluster: Cluster, resharding: Any, source: int) -> int:
    """SIGSTOP *resharding* while a slot of *source* is half moved; return that slot."""
    import time

    client = cluster.node(source).client(decode_responses=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert resharding.poll() is None, resharding.stdout.read()
        resharding.send_signal(signal.SIGSTOP)
        nodes = str_of(client.execute_command("CLUSTER", "NODES"))
        myself = next(line for line in nodes.splitlines() if "myself" in line)
        migrating = [part for part in myself.split() if "->-" in part]
        if migrating:
            return int(migrating[0].strip("[").split("-")[0])
        resharding.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    raise AssertionError("redis-cli never had a slot half moved")


def test_migrate_to_the_cluster_during_a_reshard_resumes_exact(
    redis_cluster: Cluster, cluster_prefix: str, redis_db: RedisDB, tmp_path: Path
) -> None:
    from redis.crc import key_slot

    from tests.celery_view import stored_through_celery
    from tests.conftest import run
    from tests.faults import start, stop_after

    # Given 3,000 results on a single Redis, a third of them bound for the slots
    # that redis-cli will be moving
    masters = redis_cluster.masters()
    source, target = masters[0].port, masters[1].port
    moving = 300
    lending_app(tmp_path, redis_cluster, cluster_prefix)
    ids = [f"s{i:06d}" for i in range(2100)]
    ids += ids_in_the_slots_moved(redis_cluster, cluster_prefix, source, moving)
    fill_redis(redis_db.client, cluster_prefix, ids)
    before = redis_cluster.slots_of(target)
    checkpoint = tmp_path / "cp.json"
    args = ["migrate", redis_db.url, redis_cluster.url, "-A", "rkapp", "--verify"]
    args += ["--batch-size", "100", "--checkpoint", str(checkpoint), "--json"]

    # When redis-cli reshards (300 slots from one master to another), and the
    # migration into the cluster starts while a slot is half moved (ASK redirections)
    resharding = redis_cluster.reshard(source, target, moving)
    try:
        half_moved = stop_mid_slot(redis_cluster, resharding, source)
        assert any(
            key_slot(f"{cluster_prefix}celery-task-meta-{i}".encode()) == half_moved for i in ids
        )
        process = start(*args, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
        stop_after(process, checkpoint, 1000, signal.SIGKILL)
        process.wait()
        # ... is killed part-way, and resumed while the reshard goes on
        resharding.send_signal(signal.SIGCONT)
        resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
        output, _ = resharding.communicate(timeout=120)
    finally:
        resharding.send_signal(signal.SIGCONT)
        if resharding.poll() is None:
            resharding.kill()

    # Then the reshard moved its slots, the resumed run ends complete and verified
    assert resharding.returncode == 0, output
    assert redis_cluster.slots_of(target) == before + moving
    assert resumed.code == 0, resumed.output
    report = resumed.json
    assert report["resumed"] is True
    assert (report["complete"], report["mismatched"]) == (True, 0)
    assert report["copied"] + report["skipped"] == len(ids)
    # ... and every result is on the cluster once, read back through Celery's own classes
    stored = stored_through_celery(
        redis_cluster.backend_url,
        ids,
        result_backend_transport_options={"global_keyprefix": cluster_prefix},
    )
    assert len(stored) == len(ids)
    assert [stored[i]["result"] for i in ids] == list(range(len(ids)))
    total = sum(
        1
        for node in redis_cluster.masters()
        for _ in node.client().scan_iter(match=f"{cluster_prefix}*", count=1000)
    )
    assert total == len(ids)


def test_migrate_from_the_cluster_during_a_reshard_resumes_exact(
    redis_cluster: Cluster, cluster_prefix: str, sqlite_db: Any, tmp_path: Path
) -> None:
    from tests.conftest import run
    from tests.faults import assert_every_result_once, start, stop_after

    # Given 4,000 results on the cluster, a fifth of them in the slots redis-cli will move
    masters = redis_cluster.masters()
    source, target = masters[0].port, masters[1].port
    moving = 300
    lending_app(tmp_path, redis_cluster, cluster_prefix)
    ids = [f"s{i:06d}" for i in range(3100)]
    ids += ids_in_the_slots_moved(redis_cluster, cluster_prefix, source, moving)
    fill_redis(redis_cluster.client(), cluster_prefix, ids)
    before = redis_cluster.slots_of(target)
    checkpoint = tmp_path / "cp.json"
    args = ["migrate", redis_cluster.url, sqlite_db.url, "-A", "rkapp", "--verify"]
    args += ["--batch-size", "100", "--checkpoint", str(checkpoint), "--json"]

    # When the migration out of the cluster runs while redis-cli reshards it,
    # is killed part-way, and is resumed once the reshard is done
    process = start(*args, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    resharding = redis_cluster.reshard(source, target, moving)
    try:
        stop_after(process, checkpoint, 2000, signal.SIGKILL)
        process.wait()
        output, _ = resharding.communicate(timeout=120)
        resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
    finally:
        if resharding.poll() is None:
            resharding.kill()

    # Then every result is in the target once, read back through Celery's classes
    assert resharding.returncode == 0, output
    assert redis_cluster.slots_of(target) == before + moving
    assert resumed.code == 0, resumed.output
    assert (resumed.json["complete"], resumed.json["mismatched"]) == (True, 0)
    assert_every_result_once(sqlite_db.url, ids, sqlite_db)


def test_slots_moved_behind_a_running_migrations_cursor_are_noticed(
    redis_cluster: Cluster, cluster_prefix: str, sqlite_db: Any, tmp_path: Path
) -> None:
    from tests.faults import assert_every_result_once, finish, start, wait_until

    # Given results on the cluster, 900 in slots of the master scanned last
    masters = sorted(redis_cluster.masters(), key=lambda node: f"127.0.0.1:{node.port}")
    first, last = masters[0].port, masters[-1].port
    lending_app(tmp_path, redis_cluster, cluster_prefix)
    ids = [f"s{i:06d}" for i in range(3000)]
    ids += ids_in_the_slots_moved(redis_cluster, cluster_prefix, last, 300)
    fill_redis(redis_cluster.client(), cluster_prefix, ids)
    checkpoint = tmp_path / "cp.json"
    args = ["migrate", redis_cluster.url, sqlite_db.url, "-A", "rkapp"]
    args += ["--batch-size", "100", "--checkpoint", str(checkpoint), "--json"]
    process = start(*args, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})

    def past_the_first_master() -> bool:
        try:
            return not json.loads(checkpoint.read_text())["cursors"]["task"].startswith("0:")
        except (FileNotFoundError, ValueError, KeyError, AttributeError):
            return False

    # When, once the first master is scanned, redis-cli moves 300 slots of the last
    # master to the first (their keys go behind the cursor: no SCAN sees them again)
    wait_until(past_the_first_master, 60, "the first master scanned")
    process.send_signal(signal.SIGSTOP)
    resharding = redis_cluster.reshard(last, first, 300)
    output, _ = resharding.communicate(timeout=120)
    process.send_signal(signal.SIGCONT)
    code, stdout, stderr = finish(process, timeout=120)

    # Then the run notices the move, scans again, and copies every result once
    assert resharding.returncode == 0, output
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["rescans"] >= 1
    assert (report["complete"], report["missing"]) == (True, 0)
    assert_every_result_once(sqlite_db.url, ids, sqlite_db)


def test_the_zero_downtime_move_from_one_redis_to_the_cluster_as_documented(
    cli: Any, redis_cluster: Cluster, cluster_prefix: str, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given results on a single Redis, and an app that dual-writes to it and the cluster
    options = {"global_keyprefix": cluster_prefix}
    before = seed(redis_db.url, cluster_prefix, STATES[:200])
    write_app(
        tmp_path,
        "dualapp",
        "memory://",
        "resultkit-dual://",
        resultkit_dual_write={"old": redis_db.url, "new": redis_cluster.backend_url},
        result_backend_transport_options=options,
        result_expires=7200,
    )
    dual = load(tmp_path, "dualapp")
    for n in range(50):
        dual.backend.store_result(f"d{n}", {"n": n}, "SUCCESS")
    assert dual.AsyncResult(before[7]).result == {"n": before[7]}  # read from old
    waiting = cli("cutover", "status", "-A", "dualapp", "--json")
    assert waiting.code == 1, waiting.output

    # When what only the old Redis has is copied, verified
    copied = cli("migrate", redis_db.url, redis_cluster.url, "-A", "dualapp", "--verify", "--json")

    # Then the cutover may happen: the cluster alone serves every result through Celery
    assert copied.code == 0, copied.output
    assert (copied.json["copied"], copied.json["skipped"]) == (200, 50)
    assert (copied.json["verified"], copied.json["mismatched"]) == (250, 0)
    ready = cli("cutover", "status", "-A", "dualapp", "--json")
    assert ready.code == 0, ready.output
    after = Celery(set_as_current=False)
    after.conf.update(
        result_backend=redis_cluster.backend_url, result_backend_transport_options=options
    )
    metas = dict(after.backend.get_many([*before, *(f"d{n}" for n in range(50))], timeout=10))
    assert len(metas) == 250
    assert metas["d7"]["result"] == {"n": 7}
    assert metas[before[3]]["result"] == {"n": before[3]}
