"""resultkit migrate: lifetimes, filters, dry runs, --move, bad data, pickle,
transcoding, app settings, old table layouts, and crash safety."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery.app.task import Context

from resultkit._celery_compat import CELERY_VERSION
from resultkit.records import Kind
from resultkit.stores import OnConflict, open_store
from tests.celery_view import assert_celery_reads, celery_app
from tests.conftest import (
    ROOT,
    RedisDB,
    SqlDB,
    accept_pickle_args,
    open_test_store,
    run_on_terminal,
)
from tests.samples import NOW, failure, group, standard_set, task

#: Celery's result_compression (the marker Celery reads compressed results by) is new in 5.7.
NEEDS_RESULT_COMPRESSION = pytest.mark.skipif(
    CELERY_VERSION < (5, 7), reason="Celery reads compressed results from 5.7 on"
)


def seed(url: str, records: list[Any]) -> None:
    store = open_test_store(url)
    store.write_many(records, OnConflict.SKIP)
    store.close()


# ------------------------------------------------ written by Celery itself


def celery_writes(url: str, **settings: Any) -> list[str]:
    """Results written by Celery's own backend, as a worker with result_extended does."""
    from celery.result import AsyncResult, GroupResult

    app = celery_app(url, **settings)
    backend = app.backend
    ids = []
    for i in range(4):
        request = Context(
            id=f"real-{i}",
            task="proj.tasks.mul",
            args=[i, 3],
            kwargs={"scale": i},
            hostname="celery@w1",
            retries=i,
            delivery_info={"routing_key": "reports"},
        )
        backend.store_result(
            f"real-{i}", {"value": i * 3, "tags": ["x", i]}, "SUCCESS", request=request
        )
        ids.append(f"real-{i}")
    request = Context(
        id="real-fail",
        task="proj.tasks.div",
        args=[1, 0],
        kwargs={},
        hostname="celery@w2",
        retries=1,
        delivery_info={"routing_key": "celery"},
    )
    try:
        _ = 1 / 0
    except ZeroDivisionError as exc:
        backend.mark_as_failure(
            "real-fail",
            exc,
            traceback="Traceback: ZeroDivisionError",
            request=request,
            call_errbacks=False,
        )
    ids.append("real-fail")
    backend.save_group(
        "real-group", GroupResult("real-group", [AsyncResult(i, app=app) for i in ids[:2]], app=app)
    )
    return ids


@pytest.mark.compat
def test_what_celery_wrote_reads_back_identically_after_redis_to_postgres_and_back(
    cli: Any, redis_db: RedisDB, postgres_db: SqlDB, own_redis: Any
) -> None:
    # Given results written by Celery's RedisBackend
    ids = celery_writes(redis_db.url)
    original = celery_app(redis_db.url)
    before = {i: original.backend.get_task_meta(i) for i in ids}
    # When they go to PostgreSQL and from there to another Redis
    other = own_redis().url
    pickled = accept_pickle_args(postgres_db.url)
    assert cli("migrate", redis_db.url, postgres_db.url, "--verify", "--json", *pickled).code == 0
    assert cli("migrate", postgres_db.url, other, "--verify", "--json", *pickled).code == 0
    # Then Celery's DatabaseBackend and RedisBackend read them as Celery wrote them
    for url in (postgres_db.url, other):
        app = celery_app(url)
        for task_id in ids:
            after = app.backend.get_task_meta(task_id, cache=False)
            left, right = before[task_id], after
            for key in (
                "status",
                "traceback",
                "name",
                "args",
                "kwargs",
                "worker",
                "retries",
                "queue",
            ):
                assert left.get(key) == right.get(key) or list(left.get(key)) == list(
                    right.get(key)
                ), key
            if left["status"] == "FAILURE":
                assert type(right["result"]) is ZeroDivisionError
                assert str(right["result"]) == str(left["result"])
            else:
                assert right["result"] == left["result"]
        members = app.GroupResult.restore("real-group").results
        assert [m.id for m in members] == ids[:2]


# ----------------------------------------------------------- lifetimes


def test_a_redis_result_keeps_its_remaining_lifetime(
    cli: Any, redis_db: RedisDB, own_redis: Any
) -> None:
    # Given a result with 2 hours left
    seed(redis_db.url, [task("ttl-2h", expires_in=7200)])
    redis_db.client.pexpire("celery-task-meta-ttl-2h", 7_200_000)
    other = own_redis()
    # When it is migrated to another Redis
    assert cli("migrate", redis_db.url, other.url, "--json").json["copied"] == 1
    # Then it still has about 2 hours
    assert 7100 <= other.client().ttl("celery-task-meta-ttl-2h") <= 7200


@pytest.mark.compat
def test_a_result_from_sql_gets_date_done_plus_result_expires(
    cli: Any, sqlite_db: SqlDB, redis_db: RedisDB
) -> None:
    # Given a SQL result done an hour ago (result_expires: 1 day) and one done 2 days ago
    seed(
        sqlite_db.url,
        [task("fresh", done=NOW - timedelta(hours=1)), task("stale", done=NOW - timedelta(days=2))],
    )
    # When they are migrated to Redis
    summary = cli(
        "migrate", sqlite_db.url, redis_db.url, "--json", *accept_pickle_args(sqlite_db.url)
    ).json
    # Then the fresh one lives about 23 more hours and the stale one is not resurrected
    assert (summary["copied"], summary["expired"]) == (1, 1)
    ttl = redis_db.client.ttl("celery-task-meta-fresh")
    # NOW was fixed when the tests were collected, maybe minutes ago.
    left = 24 * 3600 - (datetime.now(timezone.utc) - (NOW - timedelta(hours=1))).total_seconds()
    assert left - 120 <= ttl <= left + 120
    assert redis_db.client.exists("celery-task-meta-stale") == 0


# ------------------------------------------------------------- filters


@pytest.mark.compat
def test_filters_select_by_state_task_and_date(cli: Any, sqlite_db: SqlDB, tmp_path: Path) -> None:
    seed(
        sqlite_db.url,
        [
            task("a", name="reports.daily", done=NOW - timedelta(days=3)),
            task("b", name="reports.weekly", done=NOW - timedelta(hours=2)),
            task("c", name="billing.charge", done=NOW - timedelta(hours=1)),
            failure("d", name="reports.daily"),
        ],
    )

    def copied(*args: str) -> set[str]:
        fresh = f"jsonl://{tmp_path}/{len(args)}-{abs(hash(args))}.jsonl.gz"
        result = cli(
            "migrate", sqlite_db.url, fresh, *args, "--json", *accept_pickle_args(sqlite_db.url)
        )
        assert result.code == 0, result.output
        return set(open_store(fresh).read_many(Kind.TASK, list("abcd")))

    assert copied("--state", "FAILURE") == {"d"}
    assert copied("--task", "reports.*") == {"a", "b", "d"}
    assert copied("--task", "reports.*", "--state", "SUCCESS") == {"a", "b"}
    assert copied("--since", "1d") == {"b", "c", "d"}
    assert copied("--until", (NOW - timedelta(days=1)).isoformat()) == {"a"}


def test_a_bad_date_is_a_usage_error(cli: Any, redis_db: RedisDB, sqlite_db: SqlDB) -> None:
    result = cli("migrate", redis_db.url, sqlite_db.url, "--since", "last tuesday")
    assert result.code == 2
    assert "is not a time" in result.stderr


# ------------------------------------------------------------- dry run


def test_dry_run_counts_and_writes_nothing(cli: Any, redis_db: RedisDB, sqlite_db: SqlDB) -> None:
    seed(redis_db.url, standard_set())
    result = cli("migrate", redis_db.url, sqlite_db.url, "--dry-run", "--json")
    assert result.code == 0, result.output
    summary = result.json
    assert summary["by_state"] == {"FAILURE": 1, "GROUP": 1, "RETRY": 1, "SUCCESS": 6}
    assert summary["bytes"] > 1000
    assert summary["estimated_seconds"] is not None
    assert summary["copied"] == 0
    assert not sa.inspect(sqlite_db.engine).has_table("celery_taskmeta")


# ---------------------------------------------------------------- move


def test_move_deletes_only_what_was_verified(
    cli: Any, redis_db: RedisDB, postgres_db: SqlDB
) -> None:
    # Given results, one of which differs in the target already
    seed(redis_db.url, [task("m1"), task("m2"), task("m3", result={"v": "source"})])
    seed(postgres_db.url, [task("m3", result={"v": "different"})])
    # When they are moved
    result = cli("migrate", redis_db.url, postgres_db.url, "--move", "--json")
    # Then the verified ones left the source, the mismatched one stayed
    summary = result.json
    assert result.code == 1
    assert (summary["deleted"], summary["mismatched"]) == (2, 1)
    assert summary["mismatches"] == [{"id": "m3", "kind": "task", "fields": ["result"]}]
    assert redis_db.client.exists("celery-task-meta-m3") == 1
    assert redis_db.client.exists("celery-task-meta-m1", "celery-task-meta-m2") == 0


def test_without_move_the_source_is_never_modified(
    cli: Any, redis_db: RedisDB, sqlite_db: SqlDB
) -> None:
    seed(redis_db.url, standard_set())
    before = {k: redis_db.client.get(k) for k in redis_db.client.keys("*")}
    cli("migrate", redis_db.url, sqlite_db.url, "--verify")
    assert {k: redis_db.client.get(k) for k in redis_db.client.keys("*")} == before


def test_move_out_of_an_archive_is_refused(cli: Any, tmp_path: Path, sqlite_db: SqlDB) -> None:
    archive = f"jsonl://{tmp_path / 'a.jsonl.gz'}"
    seed(archive, [task("x")])
    result = cli("migrate", archive, sqlite_db.url, "--move")
    assert result.code == 2
    assert "append-only" in result.stderr


# ------------------------------------------------------------ bad data


def test_bad_records_are_reported_and_the_rest_copied(
    cli: Any, redis_db: RedisDB, mysql_db: SqlDB
) -> None:
    # Given good results, a corrupt blob, and a result too large for MySQL's BLOB column
    seed(redis_db.url, [task("good-1"), task("good-2"), task("huge", result="x" * 70_000)])
    redis_db.client.set("celery-task-meta-corrupt", b"\x00\x01 not a payload {")
    # When they are migrated to MariaDB
    result = cli("migrate", redis_db.url, mysql_db.url, "--json")
    # Then each bad one is reported with its id, the good ones are copied, exit 1
    assert result.code == 1
    summary = result.json
    assert (summary["copied"], summary["failed"]) == (2, 2)
    assert {f["id"] for f in summary["failures"]} == {"corrupt", "huge"}
    assert set(open_store(mysql_db.url).read_many(Kind.TASK, ["good-1", "good-2"])) == {
        "good-1",
        "good-2",
    }


def test_an_unreachable_target_is_one_line_and_nothing_is_read_away(
    cli: Any, redis_db: RedisDB
) -> None:
    # Given results in Redis and a PostgreSQL target where nothing listens
    seed(redis_db.url, [task("kept-1"), task("kept-2")])
    target = "db+postgresql+psycopg://postgres:s3cret@127.0.0.1:9/test"
    # When they are migrated (and moved) there
    result = cli("migrate", redis_db.url, target, "--move", "--json")
    # Then the run stops with one line that says what to do, the password unsaid
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [
        "error: cannot connect: connection refused by "
        "db+postgresql+psycopg://postgres:***@127.0.0.1:9/test: nothing is listening there; "
        "start the server, or correct the host and port in the URL"
    ]
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert "s3cret" not in result.output
    # And the source still holds every result
    assert redis_db.client.exists("celery-task-meta-kept-1", "celery-task-meta-kept-2") == 2


def test_rpc_is_refused_with_an_explanation(cli: Any, redis_db: RedisDB) -> None:
    for args in (("rpc://", redis_db.url), (redis_db.url, "rpc://")):
        result = cli("migrate", *args)
        assert result.code == 2
        assert "rpc:// keeps no stored results" in result.stderr


# ----------------------------------------------------- pickle, transcoding


@pytest.mark.compat
def test_pickle_is_never_decoded_without_accept_pickle(
    cli: Any, redis_db: RedisDB, sqlite_db: SqlDB, own_redis: Any
) -> None:
    # Given results Celery wrote with pickle
    app = celery_app(redis_db.url, result_serializer="pickle", result_accept_content=["pickle"])
    app.backend.store_result("p1", {"set": {1, 2}}, "SUCCESS")
    # When they go to SQL without --accept-pickle: refused, saying how
    refused = cli("migrate", redis_db.url, sqlite_db.url, "--json")
    assert refused.code == 1
    assert "--accept-pickle" in refused.json["failures"][0]["error"]
    # ... Redis to Redis copies the bytes without decoding them
    other = own_redis()
    assert cli("migrate", redis_db.url, other.url, "--json").json["copied"] == 1
    assert other.client().get("celery-task-meta-p1") == redis_db.client.get("celery-task-meta-p1")
    # ... and with --accept-pickle SQL gets it, readable by Celery
    accepted = cli("migrate", redis_db.url, sqlite_db.url, "--accept-pickle", "--json")
    assert accepted.json["copied"] == 1
    reader = celery_app(sqlite_db.url, result_serializer="pickle", result_accept_content=["pickle"])
    assert reader.AsyncResult("p1").result == {"set": {1, 2}}


@pytest.mark.compat
@NEEDS_RESULT_COMPRESSION
def test_transcoding_to_msgpack_with_compression(
    cli: Any, redis_db: RedisDB, postgres_db: SqlDB, own_redis: Any
) -> None:
    seed(redis_db.url, standard_set())
    other = own_redis()
    result = cli(
        "migrate",
        redis_db.url,
        other.url,
        "--target-serializer",
        "msgpack",
        "--target-compression",
        "gzip",
        "--verify",
        "--json",
    )
    assert result.code == 0, result.output
    raw = other.client().get("celery-task-meta-t-ok-0")
    assert raw.startswith(b"\x00celery-compressed\x00application/x-gzip")
    records = standard_set()
    assert_celery_reads(
        other.url,
        records,
        ("name",),
        result_serializer="msgpack",
        result_accept_content=["msgpack", "json"],
    )


@pytest.mark.compat
@NEEDS_RESULT_COMPRESSION
def test_compressed_results_keep_their_compression(
    cli: Any, redis_db: RedisDB, postgres_db: SqlDB
) -> None:
    # Given results Celery 5.7 wrote with result_compression = gzip
    app = celery_app(redis_db.url, result_compression="gzip")
    app.backend.store_result("z1", {"big": "y" * 5000}, "SUCCESS")
    assert redis_db.client.get("celery-task-meta-z1").startswith(b"\x00celery-compressed\x00")
    # When migrated to PostgreSQL, the result column keeps the marker, and Celery reads it
    assert cli("migrate", redis_db.url, postgres_db.url, "--verify", "--json").json["verified"] == 1
    with postgres_db.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT result FROM celery_taskmeta")).scalar_one()
    assert bytes(stored).startswith(b"\x00celery-compressed\x00")
    assert celery_app(postgres_db.url).AsyncResult("z1").result == {"big": "y" * 5000}


# -------------------------------------------------------- app settings


@pytest.mark.compat
def test_app_settings_give_key_prefix_and_table_names(
    cli: Any, redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given an app with a global key prefix and custom table names
    (tmp_path / "tenant.py").write_text(
        "from celery import Celery\n"
        "app = Celery('tenant')\n"
        "app.conf.result_backend_transport_options = {'global_keyprefix': 'acme:'}\n"
        "app.conf.database_table_names = {'task': 'acme_tasks', 'group': 'acme_groups'}\n"
        "app.conf.result_extended = True\n"
    )
    settings = {"result_backend_transport_options": {"global_keyprefix": "acme:"}}
    celery_app(redis_db.url, **settings).backend.store_result("k1", 41, "SUCCESS")
    # When migrated with -A
    result = cli("migrate", "-A", "tenant", redis_db.url, postgres_db.url, "--verify", "--json")
    # Then the prefixed key was found and went to the custom table
    assert result.json["copied"] == 1, result.output
    with postgres_db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT task_id FROM acme_tasks")).scalar_one() == "k1"
    reader = celery_app(
        postgres_db.url, database_table_names={"task": "acme_tasks", "group": "acme_groups"}
    )
    assert reader.AsyncResult("k1").result == 41


LEGACY = """
CREATE TABLE celery_taskmeta (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id VARCHAR(155) UNIQUE, status VARCHAR(50),
    result BLOB, date_done DATETIME, traceback TEXT
)
"""


@pytest.mark.compat
def test_the_older_layout_with_a_pickled_result_column(
    cli: Any, sqlite_db: SqlDB, redis_db: RedisDB
) -> None:
    import pickle

    # Given a table from an older Celery: pickled results, no children column
    with sqlite_db.engine.begin() as conn:
        conn.execute(sa.text(LEGACY))
        conn.execute(
            sa.text(
                "CREATE TABLE celery_tasksetmeta (id INTEGER PRIMARY KEY, "
                "taskset_id VARCHAR(155) UNIQUE, result BLOB, date_done DATETIME)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO celery_taskmeta (task_id, status, result, date_done) "
                "VALUES ('old-1', 'SUCCESS', :r, :d)"
            ),
            {"r": pickle.dumps({"answer": 42}), "d": NOW.replace(tzinfo=None)},
        )
    # Then without --accept-pickle it is refused, with it it is copied
    refused = cli("migrate", sqlite_db.url, redis_db.url, "--json")
    assert refused.code == 1, refused.output
    assert refused.json["failed"] == 1
    copied = cli("migrate", sqlite_db.url, redis_db.url, "--accept-pickle", "--verify", "--json")
    assert (copied.json["copied"], copied.json["verified"]) == (1, 1)
    assert celery_app(redis_db.url).AsyncResult("old-1").result == {"answer": 42}
    # ... and writing into the older layout pickles, as that Celery expects
    seed(redis_db.url, [task("new-1", result=[1, 2])])
    back = cli("migrate", redis_db.url, sqlite_db.url, "--json")
    assert back.json["copied"] == 1
    with sqlite_db.engine.connect() as conn:
        blob = conn.execute(
            sa.text("SELECT result FROM celery_taskmeta WHERE task_id='new-1'")
        ).scalar_one()
    assert pickle.loads(blob) == [1, 2]


# ------------------------------------------------------------ crash safety


def fill_json_results(redis_db: RedisDB, prefix: str, total: int) -> None:
    """*total* small results, as Celery's json serializer writes them, with a day to live."""
    pipe = redis_db.client.pipeline(transaction=False)
    for i in range(total):
        pipe.set(
            f"celery-task-meta-{prefix}{i:05d}",
            b'{"status": "SUCCESS", "result": %d, "traceback": null, "children": [], '
            b'"date_done": "%s", "task_id": "%s%05d"}'
            % (i, NOW.isoformat().encode(), prefix.encode(), i),
            ex=86400,
        )
    pipe.execute()


def migrate_command(source: str, target: str, checkpoint: Path, batch: int) -> list[str]:
    """The CLI, run as a user runs it, checkpointing in batches of *batch*."""
    resultkit = str(Path(sys.executable).parent / "resultkit")
    options = ["--batch-size", str(batch), "--checkpoint", str(checkpoint), "--json"]
    return [resultkit, "migrate", source, target, *options]


def rows_and_ids(db: SqlDB) -> tuple[int, int]:
    """Rows in the task table, and distinct task ids among them."""
    with db.engine.connect() as conn:
        query = "SELECT count(*), count(DISTINCT task_id) FROM celery_taskmeta"
        rows, distinct = conn.execute(sa.text(query)).one()
    return int(rows), int(distinct)


def test_a_migration_killed_part_way_resumes_to_exactly_once(
    redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given 50,000 results in Redis, migrated in batches of 100
    total = 50_000
    fill_json_results(redis_db, "k", total)
    checkpoint = tmp_path / "cp.json"
    command = migrate_command(redis_db.url, postgres_db.url, checkpoint, 100)
    # When the migration is killed with SIGKILL after some batches
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # a few batches on
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    partial, _ = rows_and_ids(postgres_db)
    assert 0 < partial < total
    # Then --resume finishes it, and a verifying run finds every record exactly once
    resumed = subprocess.run(
        [*command, "--resume"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] is True
    verify = subprocess.run(
        [*command[:-3], "--verify", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert json.loads(verify.stdout)["verified"] == total
    assert rows_and_ids(postgres_db) == (total, total)
    assert not checkpoint.exists()


def test_ctrl_c_stops_cleanly_and_resume_redoes_no_batch(
    redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given 50,000 results in Redis, migrated in batches of 100
    total = 50_000
    fill_json_results(redis_db, "c", total)
    checkpoint = tmp_path / "cp.json"
    command = migrate_command(redis_db.url, postgres_db.url, checkpoint, 100)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: whatever the test runner does with SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    # When Ctrl-C is pressed part-way
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    # Then it stops with one line and exit 130, having written part of the results
    assert process.returncode == 130, stderr
    assert stderr.strip() == "error: interrupted"
    partial, _ = rows_and_ids(postgres_db)
    assert 0 < partial < total
    # And --resume copies the rest without redoing a batch written before the stop
    resumed = subprocess.run(
        [*command, "--resume"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] is True
    assert (summary["copied"], summary["skipped"], summary["failed"]) == (total, 0, 0)
    assert rows_and_ids(postgres_db) == (total, total)


def test_a_progress_bar_shows_on_a_terminal_and_not_in_a_pipe(
    cli: Any, redis_db: RedisDB, sqlite_db: SqlDB, tmp_path: Path
) -> None:
    seed(redis_db.url, [task(f"p{i}") for i in range(50)])
    # In a pipe: only the report
    piped = cli("migrate", redis_db.url, sqlite_db.url, "--batch-size", "5")
    assert "migrating tasks" not in piped.output
    assert "copied 50" in piped.stdout
    # On a terminal (script(1) gives the command a pseudo-terminal): a bar with rate and ETA
    target = f"db+sqlite:///{tmp_path / 'tty.sqlite3'}"
    done = run_on_terminal(f"migrate {redis_db.url} {target} --batch-size 5", tmp_path)
    assert done.code == 0, done.output
    assert "migrating tasks" in done.stdout
    assert "/s" in done.stdout


# ---------------------------------------------------- resultkit's serializers


@pytest.mark.compat
def test_resultkit_json_results_keep_their_types_and_verify(
    cli: Any, redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    import uuid
    from decimal import Decimal

    from resultkit import serializers  # noqa: F401  (registers resultkit-json with kombu)

    settings = {"result_serializer": "resultkit-json", "result_accept_content": ["resultkit-json"]}
    values = {
        "rk-0": {
            "when": datetime(2026, 11, 23, 10, tzinfo=timezone.utc),
            "day": datetime(2026, 11, 23).date(),
            "price": Decimal("9.99"),
            "id": uuid.UUID(int=7),
            "pair": (1, "~x"),
            "path": "~/reports",
            "tag_key": {"__rk__": "user data"},
        },
        "rk-1": [Decimal("0.1"), {"~k": "~~"}],
    }
    writer = celery_app(redis_db.url, **settings)
    for task_id, value in values.items():
        writer.backend.store_result(task_id, value, "SUCCESS")
    archive = tmp_path / "out.jsonl.gz"
    # Into PostgreSQL (read back through Celery) and on into an archive (read back by resultkit)
    for source, target in (
        (redis_db.url, postgres_db.url),
        (postgres_db.url, f"jsonl://{archive}"),
    ):
        result = cli(
            "migrate",
            source,
            target,
            "--source-serializer",
            "resultkit-json",
            "--verify",
            "--json",
            *accept_pickle_args(source, target),
        )
        assert result.code == 0, result.output
        assert result.json["verified"] == len(values), result.output
    reader = celery_app(postgres_db.url, **settings)
    for task_id, value in values.items():
        assert reader.AsyncResult(task_id).get(timeout=5) == value


@pytest.mark.compat
@pytest.mark.parametrize("pure_python", [False, True], ids=["c", "pure-python"])
def test_numbers_json_holds_inexactly_survive_every_hop(
    cli: Any,
    redis_db: RedisDB,
    postgres_db: SqlDB,
    sqlite_db: SqlDB,
    own_redis: Any,
    tmp_path: Path,
    pure_python: bool,
) -> None:
    # Given results Celery's RedisBackend stored with NaN, infinities and big integers
    # (Python's json writes NaN and Infinity; orjson would read or write them otherwise)
    values = {
        "nan": {"mean": math.nan, "n": 0},
        "inf": [math.inf, -math.inf, 1.5],
        "big": {"id": 2**70 + 1, "neg": -(3**45), "u64": 2**64 - 1},
        "mixed": {"x": [math.nan, 2**80 + 7], "label": "12345678901234567890123"},
    }
    writer = celery_app(redis_db.url)
    for task_id, value in values.items():
        writer.backend.store_result(task_id, value, "SUCCESS")
    # When they go Redis -> PostgreSQL -> archive -> SQLite -> Redis, verified at each hop
    other = own_redis().url
    hops = [
        redis_db.url,
        postgres_db.url,
        f"jsonl://{tmp_path / 'numbers.jsonl.gz'}",
        sqlite_db.url,
        other,
    ]
    env = {"RESULTKIT_PURE_PYTHON": "1"} if pure_python else None
    for source, target in itertools.pairwise(hops):
        pickled = accept_pickle_args(source, target)
        result = cli("migrate", source, target, "--verify", "--json", *pickled, env=env)
        assert result.code == 0, (source, target, result.output)
        assert result.json["verified"] == len(values), (source, target, result.output)
    # Then Celery reads every value back exactly, wherever it reads them
    for url in (postgres_db.url, sqlite_db.url, other):
        reader = celery_app(url)
        for task_id, value in values.items():
            back = reader.backend.get_task_meta(task_id, cache=False)["result"]
            assert repr(back) == repr(value), (url, task_id)


def test_a_bad_group_fails_alone_in_a_file_target(
    cli: Any, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given groups in Redis: a good one, one whose date is no date, one whose id is no file name
    seed(redis_db.url, [group("g-good", ["t-1", "t-2"])])
    redis_db.client.set(
        "celery-taskset-meta-g-bad-date",
        json.dumps({"result": [["g-bad-date", None], []], "date_done": "no date"}),
    )
    redis_db.client.set(
        "celery-taskset-meta-../escape", json.dumps({"result": [["../escape", None], []]})
    )
    target = tmp_path / "results"
    # When they are migrated to a folder, one group per batch
    result = cli("migrate", redis_db.url, f"file://{target}", "--batch-size", "1", "--json")
    # Then the good group is copied and each bad one fails alone, saying why
    assert result.code == 1, result.output
    assert result.json["copied"] == 1
    failures = {f["id"]: f["error"] for f in result.json["failures"]}
    assert set(failures) == {"g-bad-date", "../escape"}
    assert "date" in failures["g-bad-date"]
    assert "file name" in failures["../escape"]
    assert (target / "celery-taskset-meta-g-good").exists()
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in target.iterdir()) == ["celery-taskset-meta-g-good"]
