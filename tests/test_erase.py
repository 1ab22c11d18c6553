"""resultkit erase: exactly the results of a subject go, archived first when asked,
with one audit line holding no result data; a dry run removes nothing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from resultkit.records import Kind
from resultkit.stores import OnConflict, open_store
from tests.celery_view import celery_app
from tests.conftest import SqlDB, run_on_terminal
from tests.subjects import (
    SECRETS,
    archived,
    fresh_store,
    store_through_celery,
    subject_record,
    task_ids,
    write_subjects,
)

STORES = ["redis", "postgres", "mysql", "sqlite", "django", "file"]


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind", STORES)
def test_erase_removes_exactly_the_subjects_results_archived_and_audited(
    kind: str, cli: Any, request: Any, tmp_path: Path
) -> None:
    # Given results of user 42 among others', written by Celery's own backend
    url = fresh_store(kind, request, tmp_path / "store")
    subjects = write_subjects(kind, url)
    audit = tmp_path / "erasures.log"
    archive = tmp_path / "user-42.jsonl.gz"

    # When a dry run counts them
    dry = cli(
        "erase", url, "--kwarg", "user_id=42", "--dry-run", "--audit-log", str(audit), "--json"
    )
    # Then it matches them all and removes nothing
    assert dry.code == 0, dry.output
    assert (dry.json["matched"], dry.json["deleted"], dry.json["archived"]) == (6, 0, 0)
    assert task_ids(url) == subjects.all
    assert not archive.exists()

    # When the erasure runs, archiving first, in small batches
    done = cli(
        "erase",
        url,
        "--kwarg",
        "user_id=42",
        "--yes",
        "--archive",
        str(archive),
        "--audit-log",
        str(audit),
        "--batch-size",
        "4",
        "--json",
    )
    # Then exactly user 42's results are gone, and the archive holds exactly them
    assert done.code == 0, done.output
    assert (done.json["matched"], done.json["deleted"], done.json["archived"]) == (6, 6, 6)
    assert task_ids(url) == subjects.others
    kept = archived(archive)
    assert set(kept) == subjects.user_42
    assert archive.stat().st_mode & 0o077 == 0  # personal data: the owner's only
    assert all(r.meta is not None and r.meta["kwargs"]["user_id"] == 42 for r in kept.values())
    # And the audit log has one line per run: who, when, where, filters, counts; no data
    lines = audit_lines(audit)
    assert [(x["dry_run"], x["matched"], x["deleted"], x["archived"]) for x in lines] == [
        (True, 6, 0, 0),
        (False, 6, 6, 6),
    ]
    assert all(x["who"] and x["at"] and x["ok"] for x in lines)
    assert lines[1]["filters"] == {"kwarg": ["user_id=42"], "kind": ["task"]}
    text = audit.read_text()
    for secret in SECRETS:
        assert secret not in text
    for task_id in subjects.all:
        assert task_id not in text
    # The archive restores into a store Celery reads
    restored = f"db+sqlite:///{tmp_path / 'restored.sqlite3'}"
    back = cli("migrate", f"jsonl://{archive}", restored, "--json")
    assert back.code == 0, back.output
    app = celery_app(restored)
    result = app.AsyncResult("u42-1")
    assert result.kwargs == {"user_id": 42, "address": "Secret Street 9"}
    assert result.result == {"sent_to": "alice@example.com", "body": "Secret Street 9"}


def test_erase_by_a_value_anywhere_in_the_arguments(cli: Any, redis_db: Any) -> None:
    subjects = write_subjects("redis", redis_db.url)
    done = cli("erase", redis_db.url, "--arg", "alice@example.com", "--yes", "--json")
    assert done.code == 0, done.output
    assert done.json["deleted"] == len(subjects.user_42)
    assert task_ids(redis_db.url) == subjects.others


def test_the_password_is_masked_in_the_report_and_the_audit_line(
    cli: Any, redis_db: Any, tmp_path: Path
) -> None:
    write_subjects("redis", redis_db.url)
    audit = tmp_path / "audit.log"
    # the server needs no password: the run fails, and says so without the password
    url = redis_db.url.replace("redis://", "redis://:hunter2@")
    done = cli("erase", url, "--kwarg", "user_id=42", "--dry-run", "--audit-log", str(audit))
    assert "hunter2" not in done.output
    line = audit_lines(audit)[-1]
    assert "hunter2" not in audit.read_text()
    assert "***" in line["store"]


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql", "sqlite", "file"])
def test_erase_with_a_writer_storing_meanwhile_deletes_only_what_it_matched(
    kind: str, cli: Any, request: Any, tmp_path: Path
) -> None:
    # Given 300 running tasks of user 42 (STARTED: their worker will store them
    # again) among 300 results of user 7
    url = fresh_store(kind, request, tmp_path / "store")
    app = celery_app(url)
    for i in range(300):
        store_through_celery(app, f"u42-{i}", 42, state="STARTED")
        store_through_celery(app, f"u7-{i}", 7)
    stop = threading.Event()
    written: dict[str, int] = {}
    rewritten: list[str] = []

    def writer() -> None:
        # New results of both users; and some of user 42's running tasks stored
        # again as another user's, which the erasure must then leave alone.
        writer_app = celery_app(url)
        i = 0
        while not stop.is_set():
            store_through_celery(writer_app, f"new7-{i}", 7)
            written[f"new7-{i}"] = 7
            store_through_celery(writer_app, f"new42-{i}", 42)
            written[f"new42-{i}"] = 42
            if i < 300 and i % 3 == 0:
                store_through_celery(writer_app, f"u42-{299 - i}", 7)
                rewritten.append(f"u42-{299 - i}")
            i += 1
            time.sleep(0.002)
        writer_app.close()

    archive = tmp_path / "a.jsonl.gz"
    thread = threading.Thread(target=writer)
    # When the erasure runs in small batches while the writer writes
    thread.start()
    try:
        # Some of user 42's tasks stored again as another user's before the erasure
        # starts, however fast this machine is; the writer goes on during the erasure.
        deadline = time.monotonic() + 60
        while len(rewritten) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(written)
        done = cli(
            "erase",
            url,
            "--kwarg",
            "user_id=42",
            "--yes",
            "--archive",
            str(archive),
            "--batch-size",
            "20",
            "--json",
        )
        during = len(written) - before
    finally:
        stop.set()
        thread.join()
    assert done.code == 0, done.output
    assert during > 0, "the writer should have stored results while the erasure ran"
    report = done.json
    remaining = task_ids(url)
    # Then nothing of anyone else's is gone, and no result rewritten as another
    # user's is gone (whether rewritten before it was read, or between read and delete)
    assert {f"u7-{i}" for i in range(300)} <= remaining
    assert {i for i, user in written.items() if user == 7} <= remaining
    assert set(rewritten) <= remaining
    assert len(rewritten) >= 5, "the writer should have rewritten some results meanwhile"
    # And what is gone is exactly what was deleted, every one of it archived first
    user_42 = {f"u42-{i}" for i in range(300)} | {i for i, u in written.items() if u == 42}
    gone = user_42 - remaining
    kept = archived(archive)
    assert gone <= set(kept)
    # an archived result that is still there was rewritten: either meanwhile, and
    # then kept as it was, or after it was deleted (stored anew by its worker)
    back = set(kept) - gone
    assert back <= set(rewritten)
    assert len(gone) <= report["deleted"] <= len(gone) + len(back)
    assert report["archived"] <= report["deleted"] + report["changed"]
    # Every result of user 42 stored before the erasure and never rewritten is gone
    assert {f"u42-{i}" for i in range(300)} - set(rewritten) <= gone


def test_a_rewritten_result_is_not_deleted(request: Any, tmp_path: Path) -> None:
    """Store.delete_unchanged, on each store that can tell: a result rewritten
    after it was read stays."""
    for kind in ["redis", "postgres", "mysql", "sqlite", "file", "django"]:
        url = fresh_store(kind, request, tmp_path / kind)
        store = open_store(url)
        try:
            if kind == "django":
                records = [subject_record(f"u42-{i}", 42) for i in range(2)]
                store.write_many(records, OnConflict.SKIP)
            else:
                app = celery_app(url)
                for i in range(2):
                    store_through_celery(app, f"u42-{i}", 42, state="STARTED")
            read = store.read_many(Kind.TASK, ["u42-0", "u42-1"])
            # a worker stores u42-1 again, now as another user's
            if kind == "django":
                store.write_many([subject_record("u42-1", 7)], OnConflict.OVERWRITE)
            else:
                store_through_celery(app, "u42-1", 7)
                app.close()
            assert store.delete_unchanged(Kind.TASK, list(read.values())) == 1, kind
            assert set(store.read_many(Kind.TASK, ["u42-0", "u42-1"])) == {"u42-1"}, kind
        finally:
            store.close()


def test_erase_refuses_without_dry_run_or_yes_and_without_filters(
    cli: Any, sqlite_db: SqlDB, tmp_path: Path
) -> None:
    write_subjects("sqlite", sqlite_db.url)
    neither = cli("erase", sqlite_db.url, "--kwarg", "user_id=42")
    assert neither.code == 2
    assert len(neither.stderr.strip().splitlines()) == 1
    assert "--dry-run" in neither.stderr
    assert "--yes" in neither.stderr
    both = cli("erase", sqlite_db.url, "--kwarg", "user_id=42", "--dry-run", "--yes")
    assert both.code == 2
    nothing = cli("erase", sqlite_db.url, "--yes")
    assert nothing.code == 2
    assert "--all" in nothing.stderr
    assert len(task_ids(sqlite_db.url)) == 13
    # --all says it: every result goes
    everything = cli("erase", sqlite_db.url, "--yes", "--all", "--json")
    assert everything.code == 0, everything.output
    assert everything.json["deleted"] == 13
    assert task_ids(sqlite_db.url) == set()


def test_erase_on_an_archive_is_refused_as_read_only(cli: Any, tmp_path: Path) -> None:
    archive = tmp_path / "old.jsonl.gz"
    store = open_store(f"jsonl://{archive}")
    store.write_many([subject_record("u42-0", 42)], OnConflict.SKIP)
    store.close()
    refused = cli("erase", f"jsonl://{archive}", "--kwarg", "user_id=42", "--yes")
    assert refused.code == 2
    assert "append-only" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert set(archived(archive)) == {"u42-0"}


def test_an_audit_log_that_cannot_be_written_stops_the_erasure_before_it_starts(
    cli: Any, sqlite_db: SqlDB, tmp_path: Path
) -> None:
    write_subjects("sqlite", sqlite_db.url)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    done = cli(
        "erase",
        sqlite_db.url,
        "--kwarg",
        "user_id=42",
        "--yes",
        "--audit-log",
        str(not_a_folder / "audit.log"),
    )
    assert done.code == 1, done.output
    assert "audit log" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert len(task_ids(sqlite_db.url)) == 13


def test_a_filter_on_results_stored_without_result_extended_is_refused(
    cli: Any, redis_db: Any
) -> None:
    app = celery_app(redis_db.url)
    app.conf.result_extended = False
    app.backend.store_result("plain-1", {"x": 1}, "SUCCESS")
    refused = cli("erase", redis_db.url, "--kwarg", "user_id=42", "--yes")
    assert refused.code == 2, refused.output
    assert "result_extended" in refused.stderr
    assert task_ids(redis_db.url) == {"plain-1"}


def test_erase_shows_progress_on_a_terminal(sqlite_db: SqlDB, tmp_path: Path) -> None:
    write_subjects("sqlite", sqlite_db.url)
    done = run_on_terminal(f"erase {sqlite_db.url} --kwarg user_id=42 --yes", tmp_path)
    assert done.code == 0, done.output
    assert "erasing tasks" in done.stdout
    assert "matched 6, deleted 6" in done.stdout


def test_export_and_erase_on_redis_cluster(
    cli: Any, redis_cluster: Any, cluster_prefix: str, tmp_path: Path
) -> None:
    # Given user 42's results among others' on every master of a Redis Cluster,
    # written by Celery through the resultkit-redis backend
    from tests.worker import load, write_app

    write_app(
        tmp_path,
        "rkapp",
        "memory://",
        redis_cluster.backend_url,
        result_backend_transport_options={"global_keyprefix": cluster_prefix},
        result_extended=True,
    )
    app = load(tmp_path, "rkapp")
    for i in range(30):
        store_through_celery(app, f"u42-{i}", 42)
        store_through_celery(app, f"u7-{i}", 7)
    path = tmp_path / "u42.jsonl.gz"
    # When they are exported, then erased with an archive
    exported = cli("export", "-A", "rkapp", "--kwarg", "user_id=42", "--to", str(path), "--json")
    erased = cli(
        "erase", "-A", "rkapp", "--kwarg", "user_id=42", "--yes",
        "--archive", str(tmp_path / "erased.jsonl.gz"), "--json",
    )  # fmt: skip
    # Then both hold exactly user 42's results, and only those are gone
    assert exported.code == 0, exported.output
    assert erased.code == 0, erased.output
    assert exported.json["exported"] == 30
    assert (erased.json["matched"], erased.json["deleted"], erased.json["archived"]) == (30, 30, 30)
    assert set(archived(path)) == set(archived(tmp_path / "erased.jsonl.gz"))
    assert len(archived(path)) == 30
    assert all(app.AsyncResult(f"u7-{i}").state == "SUCCESS" for i in range(30))
    assert all(app.AsyncResult(f"u42-{i}").state == "PENDING" for i in range(30))


def test_pickled_results_are_matched_only_with_accept_pickle(cli: Any, redis_db: Any) -> None:
    # Given a result of user 42 that Celery stored as pickle
    app = celery_app(
        redis_db.url, result_serializer="pickle", result_accept_content=["pickle", "json"]
    )
    store_through_celery(app, "pickled-42", 42)
    store_through_celery(app, "pickled-7", 7)
    # Then it is not decoded, so not matched, unless pickle is accepted
    assert (
        cli("erase", redis_db.url, "--kwarg", "user_id=42", "--yes", "--json").json["matched"] == 0
    )
    done = cli("erase", redis_db.url, "--kwarg", "user_id=42", "--yes", "--accept-pickle", "--json")
    assert done.code == 0, done.output
    assert (done.json["matched"], done.json["deleted"]) == (1, 1)
    assert task_ids(redis_db.url) == {"pickled-7"}


def test_a_full_disk_for_the_archive_stops_the_erasure_before_deleting_unarchived(
    cli: Any, postgres_db: SqlDB, tmp_path: Path
) -> None:
    import gzip
    import os
    import subprocess

    from tests.faults import small_disk

    # Given 2,000 results of user 42, more than a 256 KB disk holds once archived
    ids = [f"u42-{i}" for i in range(2000)]
    records = []
    for task_id in ids:
        record = subject_record(task_id, 42)
        assert record.meta is not None
        record.meta["result"] = {"noise": os.urandom(150).hex()}  # incompressible
        records.append(record)
    store = open_store(postgres_db.url)
    store.write_many(records, OnConflict.SKIP)
    store.close()
    audit = tmp_path / "audit.log"
    with small_disk(tmp_path / "disk") as disk:
        archive = disk / "u42.jsonl.gz"
        args = ("erase", postgres_db.url, "--kwarg", "user_id=42", "--yes", "--json")
        extra = ("--archive", str(archive), "--audit-log", str(audit), "--batch-size", "100")
        # When the erasure archives onto that disk
        done = cli(*args, *extra)
        # Then it stops with one line saying the archive could not be written
        assert done.code == 1, done.output
        assert len(done.stderr.strip().splitlines()) == 1
        assert "could not write the archive" in done.stderr
        assert "No space left on device" in done.stderr
        # and nothing was deleted that is not in the archive, which stays whole
        gone = set(ids) - task_ids(postgres_db.url)
        held = archived(archive)
        assert 0 < len(gone) < len(ids)
        assert gone <= set(held)
        gzip.decompress(archive.read_bytes())
        # and the audit line says so, with the counts so far
        line = audit_lines(audit)[-1]
        assert line["ok"] is False
        assert line["deleted"] == len(gone)
        # And once there is room, the same command finishes
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        again = cli(*args, *extra)
        assert again.code == 0, again.output
        assert task_ids(postgres_db.url) == set()
        assert set(archived(archive)) == set(ids)


def test_an_erasure_killed_part_way_deleted_nothing_unarchived_and_reruns_to_exact(
    cli: Any, postgres_db: SqlDB, tmp_path: Path
) -> None:
    from tests.faults import start, wait_until

    # Given 5,000 results of user 42 among 1,000 of user 7
    records = [subject_record(f"u42-{i}", 42) for i in range(5000)]
    records += [subject_record(f"u7-{i}", 7) for i in range(1000)]
    store = open_store(postgres_db.url)
    store.write_many(records, OnConflict.SKIP)
    store.close()
    archive = tmp_path / "u42.jsonl.gz"
    args = ("erase", postgres_db.url, "--kwarg", "user_id=42", "--yes", "--archive", str(archive))
    process = start(*args, "--batch-size", "100", cwd=tmp_path)
    # When it is killed (SIGKILL) part-way
    wait_until(lambda: len(task_ids(postgres_db.url)) <= 5000 or process.poll() is not None)
    process.kill()
    process.wait()
    # Then nothing it deleted is missing from the archive, and nobody else's is gone
    left = task_ids(postgres_db.url)
    gone = {f"u42-{i}" for i in range(5000)} - left
    assert 0 < len(gone) < 5000
    assert gone <= set(archived(archive))
    assert {f"u7-{i}" for i in range(1000)} <= left
    # And the same command run again erases the rest, every one archived
    again = cli(*args, "--json")
    assert again.code == 0, again.output
    assert task_ids(postgres_db.url) == {f"u7-{i}" for i in range(1000)}
    assert set(archived(archive)) == {f"u42-{i}" for i in range(5000)}


def test_unreadable_results_are_erased_by_id(cli: Any, redis_db: Any, sqlite_db: SqlDB) -> None:
    import pickle

    import sqlalchemy as sa

    # Given results no filter on their content can read: bytes that are no result
    # (Redis), a pickle nobody accepted (SQL)
    write_subjects("redis", redis_db.url)
    redis_db.client.set("celery-task-meta-u42-garbled", b"\xff\xfe not a result")
    write_subjects("sqlite", sqlite_db.url)
    with sqlite_db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE celery_taskmeta SET result = :r WHERE task_id = 'u42-1'"),
            {"r": pickle.dumps({"secret": 1})},
        )
    # Then the content filter does not match them, and --id does
    for url, unreadable in ((redis_db.url, "u42-garbled"), (sqlite_db.url, "u42-1")):
        before = task_ids(url)
        assert unreadable in before
        done = cli("erase", url, "--id", unreadable, "--yes", "--json")
        assert done.code == 0, done.output
        assert (done.json["matched"], done.json["deleted"]) == (1, 1)
        assert task_ids(url) == before - {unreadable}
