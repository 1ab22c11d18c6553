"""Offloaded objects live exactly as long as their results: forget, expiry and cleanup.

Results are stored through the real backends (``resultkit-redis``,
``resultkit-db`` on PostgreSQL) into a SeaweedFS bucket of the test's own,
and read back through Celery's ``AsyncResult``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from resultkit.offload import MARKER, MissingObject, parse_reference

BIG = "x" * 200_000  # above the 64 KB threshold (no compression in these apps)


def make_app(backend: str, offload: str, **settings: Any) -> Celery:
    app = Celery("lifetimes", set_as_current=False)
    app.conf.update(
        result_backend=backend,
        resultkit_offload={"url": offload, "threshold": "64KB"},
        result_extended=True,
        **settings,
    )
    return app


def backend_url(kind: str, request: Any) -> str:
    if kind == "redis":
        return "resultkit-redis+" + request.getfixturevalue("redis_db").url
    return "resultkit-" + request.getfixturevalue("postgres_db").url


def store_url(kind: str, request: Any) -> str:
    if kind == "redis":
        return str(request.getfixturevalue("redis_db").url)
    return str(request.getfixturevalue("postgres_db").url)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_forget_deletes_the_object_with_its_reference(
    kind: str, request: Any, s3_bucket: Any
) -> None:
    # Given an offloaded result and an inline one
    app = make_app(backend_url(kind, request), s3_bucket.url())
    app.backend.store_result("big-1", BIG, "SUCCESS")
    app.backend.store_result("small-1", "tiny", "SUCCESS")
    assert len(s3_bucket.object_keys()) == 1
    assert app.AsyncResult("big-1").get(timeout=10) == BIG
    # When both are forgotten
    app.AsyncResult("big-1").forget()
    app.AsyncResult("small-1").forget()
    # Then nothing is left in the bucket, and Celery sees both as pending
    assert s3_bucket.object_keys() == []
    assert app.AsyncResult("big-1").state == "PENDING"


def test_a_missing_object_is_a_clear_error_naming_its_key(request: Any, s3_bucket: Any) -> None:
    # Given an offloaded result whose object was deleted behind its back
    app = make_app(backend_url("redis", request), s3_bucket.url())
    app.backend.store_result("lost-1", BIG, "SUCCESS")
    (key,) = s3_bucket.object_keys()
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=key)
    # When the result is read, Then the error names the object
    with pytest.raises(MissingObject, match=f"s3://{s3_bucket.name}/{key}"):
        app.AsyncResult("lost-1").get(timeout=10)


def test_redis_expiry_then_cleanup_leaves_no_object_and_keeps_referenced_ones(
    request: Any, s3_bucket: Any, cli: Any
) -> None:
    # Given one offloaded result that expires at once and one that lives on
    short = make_app(backend_url("redis", request), s3_bucket.url(), result_expires=1)
    long = make_app(backend_url("redis", request), s3_bucket.url(), result_expires=3600)
    short.backend.store_result("gone-1", BIG, "SUCCESS")
    long.backend.store_result("kept-1", BIG, "SUCCESS")
    client = request.getfixturevalue("redis_db").client
    deadline = time.monotonic() + 30
    while client.exists("celery-task-meta-gone-1") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not client.exists("celery-task-meta-gone-1")
    assert len(s3_bucket.object_keys()) == 2
    env = s3_bucket.env

    # When cleanup runs with no grace: first as a dry run, then for real
    dry = cli(
        "cleanup",
        store_url("redis", request),
        "--offload",
        s3_bucket.url(),
        "--orphan-grace",
        "0s",
        "--dry-run",
        "--json",
        env=env,
    )
    assert dry.code == 0, dry.output
    assert dry.json["offload_deleted"] == 1
    assert len(s3_bucket.object_keys()) == 2
    done = cli(
        "cleanup",
        store_url("redis", request),
        "--offload",
        s3_bucket.url(),
        "--orphan-grace",
        "0s",
        "--json",
        env=env,
    )
    # Then the expired result's object is gone, the live one's stays and still reads
    assert done.code == 0, done.output
    assert done.json["offload_deleted"] == 1
    assert done.json["offload_kept"] == 1
    (left,) = s3_bucket.object_keys()
    assert left.startswith("results/kept-1.")
    assert long.AsyncResult("kept-1").get(timeout=10) == BIG


def test_cleanup_grace_keeps_young_orphans(request: Any, s3_bucket: Any, cli: Any) -> None:
    # Given an object whose reference is gone a moment ago
    app = make_app(backend_url("redis", request), s3_bucket.url())
    app.backend.store_result("young-1", BIG, "SUCCESS")
    request.getfixturevalue("redis_db").client.delete("celery-task-meta-young-1")
    # When cleanup runs with the default grace (an hour)
    done = cli(
        "cleanup",
        store_url("redis", request),
        "--offload",
        s3_bucket.url(),
        "--json",
        env=s3_bucket.env,
    )
    # Then the object is kept: its reference might be about to be written
    assert done.code == 0, done.output
    assert done.json["offload_deleted"] == 0
    assert len(s3_bucket.object_keys()) == 1


def test_resultkit_db_cleanup_deletes_expired_rows_objects(request: Any, s3_bucket: Any) -> None:
    # Given resultkit-db results living an hour, two of them stored two hours ago
    import sqlalchemy as sa

    app = make_app(backend_url("postgres", request), s3_bucket.url(), result_expires=3600)
    for task_id in ("old-1", "old-2", "new-1"):
        app.backend.store_result(task_id, BIG, "SUCCESS")
    db = request.getfixturevalue("postgres_db")
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE celery_taskmeta SET date_done = date_done - interval '2 hours' "
                "WHERE task_id IN ('old-1', 'old-2')"
            )
        )
    assert len(s3_bucket.object_keys()) == 3
    # When Celery's beat cleanup runs (backend.cleanup)
    app.backend.cleanup()
    # Then the expired rows' objects went with them; the fresh result still reads
    (left,) = s3_bucket.object_keys()
    assert left.startswith("results/new-1.")
    assert app.AsyncResult("new-1").get(timeout=10) == BIG


def test_resultkit_cleanup_command_on_postgres_deletes_rows_then_objects(
    request: Any, s3_bucket: Any, cli: Any, tmp_path: Path
) -> None:
    # Given offloaded results in resultkit-db's tables, and a later inline one
    app = make_app(backend_url("postgres", request), s3_bucket.url())
    for n in range(3):
        app.backend.store_result(f"r-{n}", BIG, "SUCCESS")
    stored = app.backend.offload_references(["r-0", "r-1", "r-2"])
    assert all(p.startswith(MARKER) for p in stored)
    assert all(parse_reference(p) is not None for p in stored)
    # When every result older than now is cleaned up, with no grace for orphans
    done = cli(
        "cleanup",
        store_url("postgres", request),
        "--older-than",
        "0s",
        "--offload",
        s3_bucket.url(),
        "--orphan-grace",
        "0s",
        "--json",
        env=s3_bucket.env,
    )
    # Then the rows and their objects are gone
    assert done.code == 0, done.output
    assert done.json["deleted"] == 3
    assert done.json["offload_deleted"] == 3
    assert s3_bucket.object_keys() == []


def test_redis_cluster_offloads_reads_joins_and_forgets(
    redis_cluster: Any, cluster_prefix: str, s3_bucket: Any
) -> None:
    # Given resultkit-redis on a Redis Cluster with offload
    from celery.result import GroupResult

    app = make_app(
        redis_cluster.backend_url,
        s3_bucket.url(),
        result_backend_transport_options={"global_keyprefix": cluster_prefix},
    )
    ids = [f"c-{n}" for n in range(6)]  # spread over the masters' slots
    for task_id in ids:
        app.backend.store_result(task_id, BIG + task_id, "SUCCESS")
    # Then every key holds a reference, and get() and a join across slots read the values
    client = redis_cluster.client()
    for task_id in ids:
        assert client.get(f"{cluster_prefix}celery-task-meta-{task_id}").startswith(MARKER)
    assert app.AsyncResult("c-0").get(timeout=10) == BIG + "c-0"
    group = GroupResult("g-1", [app.AsyncResult(i) for i in ids], app=app)
    assert group.join(timeout=10) == [BIG + i for i in ids]
    # When they are forgotten, Then the bucket is empty
    for task_id in ids:
        app.AsyncResult(task_id).forget()
    assert s3_bucket.object_keys() == []


def test_resultkit_dual_offloads_through_new_and_keeps_old_inline(
    request: Any, s3_bucket: Any
) -> None:
    # Given resultkit-dual writing resultkit-redis (new) and resultkit-db (old)
    redis_db = request.getfixturevalue("redis_db")
    postgres_db = request.getfixturevalue("postgres_db")
    app = Celery("dual", set_as_current=False)
    app.conf.update(
        result_backend="resultkit-dual://",
        resultkit_dual_write={
            "new": "resultkit-redis+" + redis_db.url,
            "old": "resultkit-" + postgres_db.url,
        },
        resultkit_offload={"url": s3_bucket.url(), "threshold": "64KB"},
    )
    # When a large result is stored
    app.backend.store_result("d-1", BIG, "SUCCESS")
    # Then new holds a reference to the one object, old the payload inline
    assert redis_db.client.get("celery-task-meta-d-1").startswith(MARKER)
    with postgres_db.engine.connect() as conn:
        import sqlalchemy as sa

        old = conn.scalar(sa.text("SELECT result FROM celery_taskmeta WHERE task_id = 'd-1'"))
    assert not bytes(old).startswith(MARKER)
    assert len(s3_bucket.object_keys()) == 1
    assert app.AsyncResult("d-1").get(timeout=10) == BIG
    # When it is forgotten, Then the object goes with new's reference
    app.AsyncResult("d-1").forget()
    assert s3_bucket.object_keys() == []


def test_cleanup_archives_offloaded_payloads_inline_before_sweeping_their_objects(
    request: Any, s3_bucket: Any, cli: Any, tmp_path: Path
) -> None:
    from tests.conftest import redis_database

    # Given offloaded results in resultkit-redis
    app = make_app(backend_url("redis", request), s3_bucket.url())
    for n in range(2):
        app.backend.store_result(f"a-{n}", BIG, "SUCCESS")
    # When cleanup archives and deletes them, and sweeps their objects at once
    archive = tmp_path / "old.jsonl.gz"
    done = cli(
        "cleanup", store_url("redis", request), "--older-than", "0s", "--archive", str(archive),
        "--offload", s3_bucket.url(), "--orphan-grace", "0s", "--json", env=s3_bucket.env,
    )  # fmt: skip
    assert done.code == 0, done.output
    assert (done.json["archived"], done.json["deleted"]) == (2, 2)
    assert s3_bucket.object_keys() == []
    # Then the archive alone restores them, readable by Celery's own backend
    with redis_database() as restored:
        back = cli("migrate", f"jsonl://{archive}", restored.url, "--json")
        assert back.code == 0, back.output
        reader = Celery("reader", set_as_current=False)
        reader.conf.result_backend = restored.url
        assert reader.AsyncResult("a-1").get(timeout=10) == BIG
