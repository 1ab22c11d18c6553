"""resultkit cleanup under real faults: a full disk for its archive, the process
killed or stopped past its database's timeouts, a worker writing meanwhile.

Whatever happens, nothing is deleted that is not in the archive, and a rerun
ends with every expired result deleted and archived exactly once.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from resultkit.commands import migrate
from resultkit.records import Kind
from resultkit.stores import OnConflict, open_store
from tests import services
from tests.celery_view import stored_through_celery
from tests.conftest import RedisDB, SqlDB, run
from tests.faults import finish, one_line, small_disk, start, wait_until, with_session_timeouts
from tests.netutil import slow_link
from tests.samples import NOW, failure, task
from tests.worker import celery_worker, load, write_app


def seed_old(url: str, total: int, pad_bytes: int = 0, failed_every: int = 0) -> list[str]:
    """*total* results done two days ago (each with *pad_bytes* of random text);
    every *failed_every*-th one a failure."""
    store = open_store(url)
    ids = [f"old-{i:06d}" for i in range(total)]
    records = []
    for n, task_id in enumerate(ids):
        value = {"n": n, "pad": os.urandom(pad_bytes // 2).hex()} if pad_bytes else {"n": n}
        done = NOW - timedelta(days=2)
        if failed_every and n % failed_every == 0:
            record = failure(task_id, done=done)
        else:
            record = task(task_id, result=value, done=done)
        # Redis: no TTL, the cleanup decides
        records.append(record.replace(expires_known=True, expires_at=None))
    for at in range(0, total, 2000):
        store.write_many(records[at : at + 2000], OnConflict.SKIP)
    store.close()
    return ids


def archived(path: Path) -> list[str]:
    """The ids of every line of the archive at *path* (repeats included)."""
    store = open_store(f"jsonl://{path}")
    try:
        return [r.id for page in store.pages(Kind.TASK, 5000) for r in page.records]
    finally:
        store.close()


def assert_archive_restores_every_one(archive: Path, ids: list[str], tmp_path: Path) -> None:
    """The archive holds each of *ids* once, and restores them all: Celery reads
    each back from the restored database with its own value."""
    assert sorted(archived(archive)) == ids
    restored = f"db+sqlite:///{tmp_path / 'restored.sqlite3'}"
    report = migrate(f"jsonl://{archive}", restored, checkpoint=tmp_path / "restore.json")
    assert report.ok, report.as_dict()
    stored = stored_through_celery(restored, ids)
    assert [stored[i]["result"]["n"] for i in ids] == list(range(len(ids)))


def remaining(db: SqlDB) -> set[str]:
    with db.engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT task_id FROM celery_taskmeta")).scalars())


def cleanup_args(url: str, archive: Path, batch: int = 200) -> list[str]:
    return [
        "cleanup",
        url,
        "--older-than",
        "1h",
        "--archive",
        str(archive),
        "--batch-size",
        str(batch),
        "--json",
    ]


def test_a_full_disk_for_the_archive_stops_deletion_with_one_line(
    postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given 2,000 expired results, more than a 256 KB disk holds once archived
    ids = seed_old(postgres_db.url, 2000, pad_bytes=300)
    with small_disk(tmp_path / "disk") as disk:
        archive = disk / "archive.jsonl.gz"
        # When cleanup archives onto that disk
        result = run("resultkit", *cleanup_args(postgres_db.url, archive), cwd=tmp_path)
        # Then it stops with one line that says the archive could not be written
        assert result.code == 1, result.output
        line = one_line(result.stderr)
        assert f"could not write the archive {archive}" in line, line
        assert "No space left on device" in line, line
        # and nothing was deleted that is not in the archive, which stays whole
        gone = set(ids) - remaining(postgres_db)
        in_archive = archived(archive)
        assert 0 < len(gone) < len(ids)
        assert gone <= set(in_archive)
        assert len(in_archive) == len(set(in_archive))
        gzip.decompress(archive.read_bytes())  # whole: no batch cut off part-way
        # And once there is room, the same command finishes: each result archived once
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        rerun = run("resultkit", *cleanup_args(postgres_db.url, archive), cwd=tmp_path)
        assert rerun.code == 0, rerun.output
        assert remaining(postgres_db) == set()
        assert_archive_restores_every_one(archive, ids, tmp_path)


def test_a_cleanup_killed_part_way_reruns_to_exact(postgres_db: SqlDB, tmp_path: Path) -> None:
    # Given 5,000 expired results, cleaned up with an archive in batches of 100
    ids = seed_old(postgres_db.url, 5000)
    archive = tmp_path / "archive.jsonl.gz"
    args = cleanup_args(postgres_db.url, archive, batch=100)
    process = start(*args, cwd=tmp_path)
    # When the cleanup is killed (SIGKILL) part-way
    wait_until(lambda: len(remaining(postgres_db)) <= 4000 or process.poll() is not None)
    process.kill()
    process.wait()
    # Then nothing it deleted is missing from the archive
    gone = set(ids) - remaining(postgres_db)
    assert 0 < len(gone) < len(ids)
    assert gone <= set(archived(archive))
    # And running it again deletes the rest, every result in the archive exactly once
    rerun = run("resultkit", *args, cwd=tmp_path)
    assert rerun.code == 0, rerun.output
    assert remaining(postgres_db) == set()
    assert_archive_restores_every_one(archive, ids, tmp_path)


def test_a_cleanup_stopped_past_its_databases_timeouts_deletes_nothing_unarchived(
    postgres_db: SqlDB, tmp_path: Path
) -> None:
    # Given a database that ends sessions idle for 0.5 s, and a cleanup under way
    ids = seed_old(postgres_db.url, 5000)
    archive = tmp_path / "archive.jsonl.gz"
    args = cleanup_args(with_session_timeouts(postgres_db, 500), archive, batch=100)
    process = start(*args, cwd=tmp_path)
    # When the cleanup is stopped (SIGSTOP) for 1.5 s, then continued
    wait_until(lambda: len(remaining(postgres_db)) <= 4000 or process.poll() is not None)
    process.send_signal(signal.SIGSTOP)
    time.sleep(1.5)
    process.send_signal(signal.SIGCONT)
    code, _, stderr = finish(process)
    # Then it finishes, or stops with one line; nothing it deleted is unarchived
    if code != 0:
        assert code == 1
        assert "run the same command again" in one_line(stderr)
    assert set(ids) - remaining(postgres_db) <= set(archived(archive))
    # And a rerun ends exact
    rerun = run("resultkit", *args, cwd=tmp_path)
    assert rerun.code == 0, rerun.output
    assert remaining(postgres_db) == set()
    assert_archive_restores_every_one(archive, ids, tmp_path)


def test_cleanup_never_deletes_what_a_worker_wrote_after_it_began(
    redis_db: RedisDB, amqp_url: str, tmp_path: Path
) -> None:
    # Given 5,000 results from two days ago in Redis, one in 50 a failure, and a
    # worker storing there
    ids = seed_old(redis_db.url, 5000, failed_every=50)
    assert redis_db.client.dbsize() == 5000
    write_app(tmp_path, "rewrites", amqp_url, redis_db.url)
    app = load(tmp_path, "rewrites")
    archive = tmp_path / "archive.jsonl.gz"
    rerun_ids = ids[::50]
    with (
        celery_worker(tmp_path, "rewrites"),
        slow_link(services.address("redis")[1], 0.002) as port,
    ):
        sent = [app.send_task("misc.add", args=[0, 0])]
        assert sent[0].get(timeout=30) == 0
        # When a cleanup (over a slow link) has begun deleting, and the worker then
        # stores new results and runs again the tasks that failed (same ids: Celery
        # replaces any result but a success) while the cleanup goes on
        url = f"redis://127.0.0.1:{port}/{redis_db.number}"
        process = start(*cleanup_args(url, archive, batch=50), cwd=tmp_path)
        wait_until(
            lambda: archive.exists() or process.poll() is not None,
            what="the cleanup's first archived batch",
        )
        process.send_signal(signal.SIGSTOP)  # held mid-run until the worker writes
        assert process.poll() is None, "the cleanup ended before the worker could write"
        sent += [
            app.send_task("misc.add", args=[n, 1000], task_id=i) for n, i in enumerate(rerun_ids)
        ]
        sent += [app.send_task("misc.add", args=[n, 2000]) for n in range(100)]
        first = f"celery-task-meta-{rerun_ids[0]}"
        wait_until(lambda: b'"result": 1000' in (redis_db.client.get(first) or b""))
        process.send_signal(signal.SIGCONT)
        # (one worker, one process: once the last task is done, every one is)
        assert sent[-1].get(timeout=60) == 99 + 2000
        code, _, stderr = finish(process)
    assert code == 0, stderr
    # Then every result the worker wrote is there, as the worker wrote it
    expected = {sent[0].id: 0}
    expected.update({i: n + 1000 for n, i in enumerate(rerun_ids)})
    expected.update({r.id: n + 2000 for n, r in enumerate(sent[1 + len(rerun_ids) :])})
    stored = stored_through_celery(redis_db.url, list(expected))
    assert {i: meta["result"] for i, meta in stored.items()} == expected
    # and nothing else: every old result not run again is deleted, and archived
    prefix = len("celery-task-meta-")
    left = {key.decode()[prefix:] for key in redis_db.client.scan_iter("celery-task-meta-*")}
    assert left == set(expected)
    assert set(ids) - left <= set(archived(archive))


def test_a_result_stored_again_after_it_was_archived_is_archived_again(
    cli: Any, sqlite_db: SqlDB, tmp_path: Path
) -> None:
    # Given a failure that a first cleanup archived and deleted
    archive = tmp_path / "archive.jsonl.gz"
    store = open_store(sqlite_db.url)
    store.write_many([failure("again", done=NOW - timedelta(days=2))], OnConflict.SKIP)
    assert cli(*cleanup_args(sqlite_db.url, archive)).json["deleted"] == 1
    # When the task runs again under the same id, and that result expires too
    rerun = task("again", result={"second": True}, done=NOW - timedelta(hours=3))
    store.write_many([rerun], OnConflict.SKIP)
    store.close()
    second = cli(*cleanup_args(sqlite_db.url, archive))
    # Then the second cleanup archives the new result before deleting it
    assert (second.json["archived"], second.json["deleted"]) == (1, 1)
    restored = tmp_path / "restored.sqlite3"
    restore = cli(
        "migrate", f"jsonl://{archive}", f"db+sqlite:///{restored}", "--on-conflict", "newer"
    )
    assert restore.code == 0, restore.output
    meta = stored_through_celery(f"db+sqlite:///{restored}", ["again"])["again"]
    assert (meta["status"], meta["result"]) == ("SUCCESS", {"second": True})
