"""resultkit migrate under real faults: the source restarted or failed over, the
target's connections terminated, the process killed or stopped, a full disk.

Each test ends with every record present exactly once, read back through
Celery's own backend class, or with a non-zero exit that names what is
missing and how to finish.
"""

from __future__ import annotations

import importlib
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.celery_view import stored_through_celery
from tests.conftest import RedisDB, SentinelSet, SqlDB, run
from tests.faults import (
    assert_every_result_once,
    checkpointed,
    fill,
    fill_disk,
    finish,
    one_line,
    restart_from_rdb,
    small_disk,
    start,
    stop_after,
    terminate_backends,
    with_application_name,
    with_session_timeouts,
)


def migrate_args(source: str, target: str, checkpoint: Path, batch: int = 100) -> list[str]:
    return [
        "migrate",
        source,
        target,
        "--batch-size",
        str(batch),
        "--checkpoint",
        str(checkpoint),
        "--json",
    ]


# ------------------------------------------------------ the source restarts


def test_resume_after_the_source_restarted_copies_every_result(
    own_redis: Any, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given 5,000 results in a Redis that keeps an RDB file
    source = own_redis()
    ids = fill(source.client(), "r", 5000)
    checkpoint = tmp_path / "cp.json"
    args = migrate_args(source.url, postgres_db.url, checkpoint)
    # When the migration is killed part-way and the source restarts from its RDB file
    process = start(*args, cwd=tmp_path)
    stop_after(process, checkpoint, 1000, signal.SIGKILL)
    process.wait()
    restart_from_rdb(own_redis, source)
    # Then --resume notices that its SCAN cursor means nothing now, scans again,
    # and every result is in the target exactly once
    resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
    assert resumed.code == 0, resumed.output
    assert_every_result_once(postgres_db.url, ids, postgres_db)
    report = resumed.json
    assert report["resumed"] is True
    assert report["rescans"] == 1
    assert report["complete"] is True
    assert report["missing"] == 0


def test_a_source_restart_under_a_running_migration_is_noticed(
    own_redis: Any, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given a migration of 5,000 results under way
    source = own_redis()
    ids = fill(source.client(), "m", 5000)
    checkpoint = tmp_path / "cp.json"
    args = migrate_args(source.url, postgres_db.url, checkpoint)
    process = start(*args, cwd=tmp_path)
    # When the source restarts from its RDB file while the migration is stopped
    stop_after(process, checkpoint, 1000, signal.SIGSTOP)
    restart_from_rdb(own_redis, source)
    process.send_signal(signal.SIGCONT)
    code, stdout, stderr = finish(process)
    # Then the run scans the new server again from the start and copies every result
    assert code == 0, stderr
    assert_every_result_once(postgres_db.url, ids, postgres_db)
    report = json.loads(stdout)
    assert report["rescans"] == 1
    assert report["complete"] is True
    assert report["missing"] == 0


# ------------------------------------------------------------ the checkpoint


def test_a_checkpoint_keeps_no_password(own_redis: Any, postgres_db: SqlDB, tmp_path: Path) -> None:
    # Given a source whose URL holds a password
    password = "s3cret-Pw-4242"
    source = own_redis("--requirepass", password)
    ids = fill(source.client(password=password), "p", 5000)
    url = f"redis://:{password}@127.0.0.1:{source.port}/0"
    checkpoint = tmp_path / "cp.json"
    args = migrate_args(url, postgres_db.url, checkpoint)
    # When the migration is killed part-way, leaving its checkpoint
    process = start(*args, cwd=tmp_path)
    stop_after(process, checkpoint, 1000, signal.SIGKILL)
    process.wait()
    # Then no file it wrote holds the password
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("dump-")]
    assert checkpoint in written
    for path in written:
        assert password.encode() not in path.read_bytes(), path
    # And --resume still recognises its checkpoint and finishes exactly
    resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
    assert resumed.code == 0, resumed.output
    assert resumed.json["resumed"] is True
    assert password not in resumed.output
    assert_every_result_once(postgres_db.url, ids, postgres_db)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"version": 2, "identity": "ab', "damaged"),
        ("\x00\x01 not json", "damaged"),
        ("[1, 2, 3]", "not a resultkit checkpoint"),
        (
            '{"version": 2, "identity": "0000", "cursors": {}, "epochs": {}, '
            '"finished": [], "counters": {}}',
            "another migration",
        ),
    ],
    ids=["truncated", "garbage", "foreign-shape", "other-migration"],
)
def test_a_bad_checkpoint_given_to_resume_is_one_usage_line(
    cli: Any, redis_db: RedisDB, sqlite_db: SqlDB, tmp_path: Path, content: str, problem: str
) -> None:
    # Given a checkpoint file that is damaged, or another migration's
    fill(redis_db.client, "b", 10)
    checkpoint = tmp_path / "bad-checkpoint.json"
    checkpoint.write_text(content)
    # When it is given to --resume
    result = cli(*migrate_args(redis_db.url, sqlite_db.url, checkpoint), "--resume")
    # Then one line says which file, what is wrong and what to do; exit 2, nothing copied
    assert result.code == 2, result.output
    line = one_line(result.stderr)
    for part in (str(checkpoint), problem, "delete it", "without --resume"):
        assert part in line, line
    assert not sa.inspect(sqlite_db.engine).has_table("celery_taskmeta")


def test_resume_without_a_checkpoint_says_it_starts_from_the_beginning(
    cli: Any, redis_db: RedisDB, sqlite_db: SqlDB, tmp_path: Path
) -> None:
    # Given no checkpoint (the last run finished, or none ran)
    ids = fill(redis_db.client, "n", 20)
    # When --resume is asked for
    result = cli(*migrate_args(redis_db.url, sqlite_db.url, tmp_path / "none.json"), "--resume")
    # Then the run copies everything and says that it started from the beginning
    assert result.code == 0, result.output
    report = result.json
    assert report["resumed"] is False
    assert any("no checkpoint" in note and "from the beginning" in note for note in report["notes"])
    assert_every_result_once(sqlite_db.url, ids, sqlite_db)


# ------------------------------------------------------ the source fails over


def test_a_sentinel_failover_under_a_running_migration_loses_nothing(
    sentinel_with_replica: SentinelSet, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given 5,000 results on a Sentinel-watched master, replicated to its replica
    watched = sentinel_with_replica
    client = watched.master.client()
    ids = fill(client, "f", 5000)
    assert client.wait(1, 5000) == 1
    checkpoint = tmp_path / "cp.json"
    args = migrate_args(watched.url, postgres_db.url, checkpoint)
    process = start(*args, cwd=tmp_path)
    # When the master dies and the Sentinel promotes the replica while the migration runs
    stop_after(process, checkpoint, 1000, signal.SIGSTOP)
    watched.fail_over()
    process.send_signal(signal.SIGCONT)
    code, stdout, stderr = finish(process)
    # Then the migration notices that it reads another server, scans it from
    # the start, and copies every result exactly once
    assert code == 0, stderr
    assert_every_result_once(postgres_db.url, ids, postgres_db)
    report = json.loads(stdout)
    assert report["rescans"] == 1
    assert report["complete"] is True


# ------------------------------------------------- the target's connections


def test_target_connections_terminated_mid_batch_end_exact(
    redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given 10,000 results migrated into PostgreSQL in batches of 100
    ids = fill(redis_db.client, "t", 10_000)
    name = f"rk-{uuid.uuid4().hex[:10]}"
    target = with_application_name(postgres_db, name)
    checkpoint = tmp_path / "cp.json"
    args = migrate_args(redis_db.url, target, checkpoint)
    process = start(*args, cwd=tmp_path)
    # When PostgreSQL terminates the migration's connections again and again
    terminated = 0
    while process.poll() is None and terminated < 8:
        if checkpointed(checkpoint) >= 1000:
            terminated += terminate_backends(postgres_db.engine, name)
        time.sleep(0.02)
    code, stdout, stderr = finish(process)
    assert terminated >= 3, "the run finished before its connections could be terminated"
    assert "Traceback" not in stderr, stderr
    # Then the run retries what was cut off, or stops with one line and --resume finishes
    if code != 0:
        assert "--resume" in one_line(stderr)
        resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
        assert resumed.code == 0, resumed.output
    assert_every_result_once(postgres_db.url, ids, postgres_db)
    report = json.loads(stdout) if code == 0 else None
    if report is not None:
        assert report["failed"] == report["unaccounted"] == 0
        assert report["copied"] + report["skipped"] == len(ids)


# ------------------------------------------------------- the process stops


def test_a_migration_stopped_past_its_servers_timeouts_ends_exact(
    own_redis: Any, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given a source that drops clients idle for 1 s, a target that ends sessions
    # idle for 1 s (in a transaction or not), and a migration under way
    source = own_redis("--timeout", "1")
    ids = fill(source.client(), "s", 5000)
    checkpoint = tmp_path / "cp.json"
    args = migrate_args(source.url, with_session_timeouts(postgres_db, 1000), checkpoint)
    process = start(*args, cwd=tmp_path)
    # When the migration is stopped (SIGSTOP) for longer than both, then continued
    stop_after(process, checkpoint, 1000, signal.SIGSTOP)
    time.sleep(2.5)
    process.send_signal(signal.SIGCONT)
    code, stdout, stderr = finish(process)
    # Then it reconnects and finishes, or stops with one line and --resume finishes
    if code != 0:
        assert "--resume" in one_line(stderr)
        resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
        assert resumed.code == 0, resumed.output
    else:
        assert "Traceback" not in stderr, stderr
        assert json.loads(stdout)["failed"] == 0
    assert_every_result_once(postgres_db.url, ids, postgres_db)


# --------------------------------------------------------------- full disks


def test_a_full_disk_for_the_checkpoint_stops_with_one_line_and_loses_nothing(
    redis_db: RedisDB, postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given a migration whose checkpoint lives on a small file system
    ids = fill(redis_db.client, "d", 20000)
    with small_disk(tmp_path / "disk") as disk:
        checkpoint = disk / "cp.json"
        args = migrate_args(redis_db.url, postgres_db.url, checkpoint)
        process = start(*args, cwd=tmp_path)
        # When that file system fills up part-way (the run held meanwhile, so that
        # it cannot finish before the disk is full)
        stop_after(process, checkpoint, 1000, signal.SIGSTOP)
        fill_disk(disk)
        process.send_signal(signal.SIGCONT)
        code, _, stderr = finish(process)
        # Then the run stops with one line naming the checkpoint and the way to finish
        assert code == 1, stderr
        line = one_line(stderr)
        assert f"could not save the checkpoint {checkpoint}" in line, line
        assert "No space left on device" in line, line
        assert "--resume" in line, line
        # leaving the last whole checkpoint and no temporary file
        assert sorted(p.name for p in disk.iterdir()) == ["cp.json", "filler"]
        assert checkpointed(checkpoint) >= 1000
        # And once there is room, --resume finishes: every result exactly once
        (disk / "filler").unlink()
        resumed = run("resultkit", *args, "--resume", cwd=tmp_path)
        assert resumed.code == 0, resumed.output
        assert not checkpoint.exists()
    assert_every_result_once(postgres_db.url, ids, postgres_db)


def test_a_source_that_keeps_changing_ends_incomplete_with_the_command_to_finish(
    own_redis: Any, postgres_db: SqlDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a migration that may start its pass again no more than once
    command = importlib.import_module("resultkit.commands.migrate")
    reading = importlib.import_module("resultkit.transfer.reading")
    monkeypatch.setattr(reading, "MAX_RESCANS", 1)
    source = own_redis()
    ids = fill(source.client(), "g", 5000)
    checkpoint = tmp_path / "cp.json"
    restarts: list[int] = []
    passes = [0]  # passes begun again: a rescan counts from zero
    last = [0]

    def restart_once_per_pass(progress: Any) -> None:
        if progress.done < last[0]:
            passes[0] += 1
        last[0] = progress.done
        if progress.done >= 1000 and len(restarts) == passes[0] < 2:
            restarts.append(progress.done)
            restart_from_rdb(own_redis, source)

    # When its source restarts under it, and again once it has begun again
    report = command.migrate(
        source.url,
        postgres_db.url,
        batch_size=100,
        checkpoint=checkpoint,
        progress=restart_once_per_pass,
    )
    # Then it says it is incomplete, how many results are not in the target and
    # how to finish, and keeps its checkpoint
    assert len(restarts) == 2, report.as_dict()
    assert report.complete is False
    assert not report.ok
    assert report.rescans == 2
    in_target = len(stored_through_celery(postgres_db.url, ids))
    assert report.missing == len(ids) - in_target > 0
    assert report.resume_command is not None
    assert report.resume_command.endswith("--resume")
    assert checkpoint.exists()
    # And the command it names finishes: every result exactly once
    finished = command.migrate(
        source.url, postgres_db.url, batch_size=100, checkpoint=checkpoint, resume=True
    )
    assert finished.ok, finished.as_dict()
    assert_every_result_once(postgres_db.url, ids, postgres_db)
