"""resultkit export: the results a query selects, as an archive that migrate
restores (read back through Celery) or as CSV; never a half-written file."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from resultkit.records import Kind
from resultkit.stores import OnConflict, open_store
from tests.celery_view import celery_app
from tests.conftest import run, run_on_terminal
from tests.samples import standard_set
from tests.subjects import CELERY_WRITTEN, archived, fresh_store, subject_record, write_subjects

STORES = ["redis", "postgres", "mysql", "sqlite", "django", "file"]


def async_view(url: str, ids: set[str]) -> dict[str, tuple[Any, ...]]:
    """What an application reads of each result through Celery's AsyncResult."""
    app = celery_app(url)
    out = {}
    for task_id in sorted(ids):
        result = app.AsyncResult(task_id)
        value = result.result
        shown = (type(value).__name__, str(value)) if isinstance(value, Exception) else value
        out[task_id] = (
            result.state,
            shown,
            result.name,
            list(result.args or []),
            result.kwargs,
            result.worker,
            result.queue,
            result.date_done.replace(tzinfo=None).isoformat(timespec="seconds"),
        )
    app.close()
    return out


@pytest.mark.parametrize("kind", STORES)
def test_export_round_trip_restores_what_celery_reads(
    kind: str, cli: Any, request: Any, tmp_path: Path
) -> None:
    # Given results of user 42 among others', written by Celery's own backend
    url = fresh_store(kind, request, tmp_path / "store")
    subjects = write_subjects(kind, url)
    path = tmp_path / "user-42.jsonl.gz"
    # When user 42's results are exported
    done = cli("export", url, "--kwarg", "user_id=42", "--to", str(path), "--json")
    assert done.code == 0, done.output
    assert done.json["exported"] == len(subjects.user_42)
    assert done.json["format"] == "jsonl"
    assert set(archived(path)) == subjects.user_42
    # Then migrate restores them into a fresh store, where Celery reads what it read before
    target = f"db+sqlite:///{tmp_path / 'restored.sqlite3'}"
    restored = cli("migrate", f"jsonl://{path}", target, "--verify", "--json")
    assert restored.code == 0, restored.output
    assert restored.json["copied"] == len(subjects.user_42)
    after = async_view(target, subjects.user_42)
    if kind in CELERY_WRITTEN:
        assert after == async_view(url, subjects.user_42)
    else:  # django-celery-results: compare with what was stored
        assert after["u42-1"][:5] == (
            "SUCCESS",
            {"sent_to": "alice@example.com", "body": "Secret Street 9"},
            "mail.send",
            ["alice@example.com", {"card": "4111-1111-1111-1111"}],
            {"user_id": 42, "address": "Secret Street 9"},
        )
    # And the source is untouched
    store = open_store(url)
    assert set(store.read_many(Kind.TASK, sorted(subjects.all))) == subjects.all
    store.close()


def test_export_without_filters_is_a_full_backup_with_groups(
    cli: Any, redis_db: Any, tmp_path: Path
) -> None:
    records = standard_set()
    store = open_store(redis_db.url)
    store.write_many(records, OnConflict.SKIP)
    store.close()
    path = tmp_path / "all.jsonl.gz"
    done = cli("export", redis_db.url, "--to", str(path), "--json")
    assert done.code == 0, done.output
    assert done.json["exported"] == len(records)
    held = archived(path)
    assert {r.id for r in records} == set(held)
    assert held["t-group"].kind is Kind.GROUP


def test_export_csv_holds_one_row_per_result(cli: Any, postgres_db: Any, tmp_path: Path) -> None:
    subjects = write_subjects("postgres", postgres_db.url)
    path = tmp_path / "failures.csv"
    done = cli("export", postgres_db.url, "--state", "FAILURE", "--to", str(path), "--json")
    assert done.code == 0, done.output
    assert done.json["format"] == "csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["task_id"] for row in rows} == {"u42-0", "u7-1"}
    assert len(subjects.all) > len(rows)
    row = next(r for r in rows if r["task_id"] == "u42-0")
    assert row["status"] == "FAILURE"
    assert row["name"] == "billing.charge"
    assert row["queue"] == "mail"
    assert row["worker"] == "celery@w1"
    assert json.loads(row["args"]) == ["alice@example.com", {"card": "4111-1111-1111-1111"}]
    assert json.loads(row["kwargs"]) == {"user_id": 42, "address": "Secret Street 9"}
    assert json.loads(row["result"])["exc_type"] == "ValueError"
    assert row["traceback"] == "ValueError: alice@example.com"
    assert row["date_done"]
    # --format wins over the suffix
    other = tmp_path / "failures.txt"
    forced = cli("export", postgres_db.url, "--format", "csv", "--to", str(other), "--json")
    assert forced.code == 0, forced.output
    assert other.read_text().startswith("task_id,kind,status")


def test_export_from_an_archive(cli: Any, request: Any, tmp_path: Path) -> None:
    source = tmp_path / "old.jsonl.gz"
    store = open_store(f"jsonl://{source}")
    store.write_many(
        [subject_record("u42-0", 42), subject_record("u7-0", 7, fail=True)], OnConflict.SKIP
    )
    store.close()
    path = tmp_path / "out.csv"
    done = cli("export", f"jsonl://{source}", "--kwarg", "user_id=7", "--to", str(path), "--json")
    assert done.code == 0, done.output
    with open(path, newline="") as handle:
        assert [r["task_id"] for r in csv.DictReader(handle)] == ["u7-0"]


@pytest.mark.parametrize("filters", [(), ("--state", "SUCCESS")], ids=["everything", "filtered"])
def test_export_from_a_damaged_archive_exports_the_rest_and_exits_1_naming_the_damage(
    cli: Any, tmp_path: Path, filters: tuple[str, ...]
) -> None:
    # Given an archive of three members whose second member is garbled
    from tests.test_archive import BATCH, member_offsets, write_archive

    source = tmp_path / "old.jsonl.gz"
    ids = write_archive(source)
    data = bytearray(source.read_bytes())
    starts = member_offsets(bytes(data))
    middle = (starts[1] + starts[2]) // 2
    data[middle - 8 : middle + 8] = b"\xff" * 16
    source.write_bytes(bytes(data))
    # When it is exported
    path = tmp_path / "copy.jsonl.gz"
    done = cli("export", f"jsonl://{source}", *filters, "--to", str(path), "--json")
    # Then the intact members are exported, and the damage is counted and placed: exit 1
    assert done.code == 1, done.output
    assert done.json["complete"] is False
    assert done.json["damaged"] == 1
    assert f"line {BATCH + 1}" in done.json["damaged_examples"][0]
    assert done.json["exported"] == 2 * BATCH
    exported = {
        r.id for page in open_store(f"jsonl://{path}").pages(Kind.TASK, 1000) for r in page.records
    }
    assert exported == set(ids[:BATCH]) | set(ids[2 * BATCH :])
    # And the text report says the export is not complete and how to see the damage
    text = cli("export", f"jsonl://{source}", *filters, "--to", str(tmp_path / "t.csv"))
    assert text.code == 1
    assert "NOT COMPLETE" in text.output
    assert "damaged" in text.output


def test_an_existing_file_is_kept_unless_overwrite(
    cli: Any, sqlite_db: Any, tmp_path: Path
) -> None:
    write_subjects("sqlite", sqlite_db.url)
    path = tmp_path / "out.jsonl.gz"
    path.write_bytes(b"precious")
    refused = cli("export", sqlite_db.url, "--to", str(path))
    assert refused.code == 2
    assert "--overwrite" in refused.stderr
    assert path.read_bytes() == b"precious"
    done = cli("export", sqlite_db.url, "--to", str(path), "--overwrite", "--json")
    assert done.code == 0, done.output
    assert len(archived(path)) == 13


def test_a_failed_export_leaves_no_file(cli: Any, redis_db: Any, tmp_path: Path) -> None:
    # Given results, one of them bytes that are no result at all
    write_subjects("redis", redis_db.url)
    redis_db.client.set("celery-task-meta-garbage", b"\xff\xfe not a result")
    path = tmp_path / "all.jsonl.gz"
    done = cli("export", redis_db.url, "--to", str(path))
    # Then the export fails in one line, and neither the file nor a temporary one is left
    assert done.code == 1, done.output
    assert "garbage" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    # As CSV, the result is a row that says why it could not be read
    table = tmp_path / "all.csv"
    assert cli("export", redis_db.url, "--to", str(table)).code == 0
    with open(table, newline="") as handle:
        rows = {row["task_id"]: row for row in csv.DictReader(handle)}
    assert rows["garbage"]["error"]
    assert len(rows) == 14


def test_usage_errors_are_one_line(cli: Any, sqlite_db: Any, tmp_path: Path) -> None:
    unknown = cli("export", sqlite_db.url, "--to", str(tmp_path / "out.xlsx"))
    assert unknown.code == 2
    assert "--format" in unknown.stderr
    missing = cli("export", sqlite_db.url, "--to", str(tmp_path / "nowhere" / "out.csv"))
    assert missing.code == 2
    assert "does not exist" in missing.stderr
    bad = cli("export", sqlite_db.url, "--state", "LOST", "--to", str(tmp_path / "o.csv"))
    assert bad.code == 2
    for result in (unknown, missing, bad):
        assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.csv"))


def test_export_shows_progress_on_a_terminal(sqlite_db: Any, tmp_path: Path) -> None:
    write_subjects("sqlite", sqlite_db.url)
    done = run_on_terminal(f"export {sqlite_db.url} --to {tmp_path / 'all.csv'}", tmp_path)
    assert done.code == 0, done.output
    assert "exporting tasks" in done.stdout
    assert "exported 13 results" in done.stdout


def test_export_through_celery_results(cli: Any, redis_db: Any, tmp_path: Path) -> None:
    write_subjects("redis", redis_db.url)
    (tmp_path / "proj.py").write_text(
        f"from celery import Celery\napp = Celery('proj', backend={redis_db.url!r})\n"
    )
    path = tmp_path / "u42.csv"
    done = run(
        "celery",
        "-A",
        "proj",
        "results",
        "export",
        "--kwarg",
        "user_id=42",
        "--to",
        str(path),
        cwd=tmp_path,
    )
    assert done.code == 0, done.output
    with open(path, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6
