"""Archives fail loudly: damage is counted with its line number, never restored silently."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from resultkit.records import Kind
from resultkit.stores import OnConflict, open_store
from tests.conftest import RedisDB, SqlDB
from tests.samples import task

#: Results per gzip member in the archives these tests write.
BATCH = 10


def write_archive(path: Path, batches: int = 3) -> list[str]:
    """An archive written by resultkit: *batches* gzip members of BATCH tasks each."""
    store = open_store(f"jsonl://{path}")
    ids = []
    for b in range(batches):
        records = [task(f"b{b}-{i}") for i in range(BATCH)]
        store.write_many(records, OnConflict.SKIP)
        ids += [r.id for r in records]
    store.close()
    return ids


def member_offsets(data: bytes) -> list[int]:
    """Where each gzip member starts."""
    offsets, at = [], 0
    while at < len(data):
        offsets.append(at)
        inflater = zlib.decompressobj(wbits=31)
        inflater.decompress(data[at:])
        at = len(data) - len(inflater.unused_data)
    return offsets


def restore(cli: Any, archive: Path, target: str, *extra: str) -> Any:
    return cli("migrate", f"jsonl://{archive}", target, "--json", *extra)


def stored_ids(url: str) -> set[str]:
    store = open_store(url)
    try:
        return {r.id for page in store.pages(Kind.TASK, 1000) for r in page.records}
    finally:
        store.close()


def test_a_truncated_archive_restores_what_it_holds_and_exits_1(
    cli: Any, tmp_path: Path, sqlite_db: SqlDB
) -> None:
    # Given an archive of three members, cut in the middle of the last one
    archive = tmp_path / "a.jsonl.gz"
    ids = write_archive(archive)
    data = archive.read_bytes()
    last = member_offsets(data)[-1]
    archive.write_bytes(data[: last + (len(data) - last) // 2])
    # When it is restored
    result = restore(cli, archive, sqlite_db.url)
    # Then the complete members are restored, and the cut is counted with its line number
    assert result.code == 1, result.output
    report = result.json
    assert stored_ids(sqlite_db.url) >= set(ids[: 2 * BATCH])
    assert report["failed"] == 1
    (failure,) = report["failures"]
    assert "truncated" in failure["error"]
    assert failure["line"] == report["copied"] + 1  # the first line lost
    assert "unknown" in failure["error"]  # how many lines were lost cannot be known


def test_a_damaged_member_is_reported_and_the_members_after_it_restored(
    cli: Any, tmp_path: Path, sqlite_db: SqlDB
) -> None:
    # Given an archive whose second member's compressed data is garbled
    archive = tmp_path / "a.jsonl.gz"
    ids = write_archive(archive)
    data = bytearray(archive.read_bytes())
    starts = member_offsets(bytes(data))
    middle = (starts[1] + starts[2]) // 2
    data[middle - 8 : middle + 8] = b"\xff" * 16
    archive.write_bytes(bytes(data))
    # When it is restored
    result = restore(cli, archive, sqlite_db.url)
    # Then the first and third members are restored, the second is reported lost
    assert result.code == 1, result.output
    restored = stored_ids(sqlite_db.url)
    assert set(ids[:BATCH]) | set(ids[2 * BATCH :]) <= restored
    assert not set(ids[BATCH : 2 * BATCH]) & restored
    assert result.json["failed"] == 1
    (failure,) = result.json["failures"]
    assert failure["line"] == BATCH + 1
    assert "damaged" in failure["error"]


def test_a_member_whose_crc_does_not_match_is_not_restored(
    cli: Any, tmp_path: Path, sqlite_db: SqlDB
) -> None:
    # Given an archive whose second member's CRC no longer matches its data
    archive = tmp_path / "a.jsonl.gz"
    ids = write_archive(archive)
    data = bytearray(archive.read_bytes())
    crc_at = member_offsets(bytes(data))[2] - 8
    data[crc_at] ^= 0xFF
    archive.write_bytes(bytes(data))
    # When it is restored
    result = restore(cli, archive, sqlite_db.url)
    # Then none of that member's lines is restored, and the check is named
    assert result.code == 1, result.output
    assert not set(ids[BATCH : 2 * BATCH]) & stored_ids(sqlite_db.url)
    assert set(ids[2 * BATCH :]) <= stored_ids(sqlite_db.url)
    (failure,) = result.json["failures"]
    assert "check" in failure["error"]


def test_invalid_lines_are_each_counted_with_their_line_number(
    cli: Any, tmp_path: Path, sqlite_db: SqlDB
) -> None:
    # Given an archive with lines no reader can use among good ones
    good = {"v": 1, "kind": "task", "serializer": "json", "meta": {"status": "SUCCESS"}}
    lines = [
        json.dumps({**good, "id": "ok-1"}),
        "{not json",
        json.dumps({**good, "id": "future", "v": 2}),
        json.dumps({k: v for k, v in good.items() if k != "v"} | {"id": "no-version"}),
        json.dumps(good),  # no id
        json.dumps({**good, "id": "odd-kind", "kind": "chord"}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({**good, "id": "ok-2"}),
    ]
    archive = tmp_path / "odd.jsonl.gz"
    archive.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    # When it is restored, with a filter that every good line matches
    result = restore(cli, archive, sqlite_db.url, "--state", "SUCCESS")
    # Then the good lines are restored and each bad one is counted where it is
    assert result.code == 1, result.output
    assert stored_ids(sqlite_db.url) == {"ok-1", "ok-2"}
    failures = {f["line"]: f for f in result.json["failures"]}
    assert sorted(failures) == [2, 3, 4, 5, 6, 7]
    assert result.json["failed"] == 6
    assert "not valid JSON" in failures[2]["error"]
    assert "version 2" in failures[3]["error"]
    assert failures[3]["id"] == "future"
    assert "no format version" in failures[4]["error"]
    assert "no id" in failures[5]["error"]
    assert "chord" in failures[6]["error"]
    assert "not a JSON object" in failures[7]["error"]


def test_a_dry_run_counts_the_damage_too(cli: Any, tmp_path: Path, sqlite_db: SqlDB) -> None:
    archive = tmp_path / "a.jsonl.gz"
    write_archive(archive, batches=2)
    data = archive.read_bytes()
    archive.write_bytes(data[:-10])
    result = restore(cli, archive, sqlite_db.url, "--dry-run")
    assert result.code == 1
    assert result.json["failed"] == 1


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.jsonl.gz", None, "does not exist"),
        ("plain.jsonl.gz", b'{"v": 1}\n', "not a gzip"),
    ],
)
def test_an_archive_that_is_not_there_or_not_gzip_is_a_usage_error(
    cli: Any, tmp_path: Path, sqlite_db: SqlDB, name: str, content: bytes | None, words: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = restore(cli, path, sqlite_db.url)
    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert words in lines[0]
    assert stored_ids(sqlite_db.url) == set()


def test_an_empty_archive_file_restores_nothing_and_passes(
    cli: Any, tmp_path: Path, sqlite_db: SqlDB
) -> None:
    # A writer that crashed before its first member leaves an empty file
    path = tmp_path / "empty.jsonl.gz"
    path.write_bytes(b"")
    result = restore(cli, path, sqlite_db.url)
    assert result.code == 0, result.output
    assert result.json["copied"] == 0


def test_a_partial_last_member_left_by_a_crashed_writer_is_cut_off_on_append(
    cli: Any, tmp_path: Path, redis_db: RedisDB
) -> None:
    # Given an archive whose last member a crash cut short (that batch was never acknowledged)
    archive = tmp_path / "a.jsonl.gz"
    ids = write_archive(archive, batches=2)
    data = archive.read_bytes()
    archive.write_bytes(data[: member_offsets(data)[-1] + 20])
    # ... and old results to archive
    seed = open_store(redis_db.url)
    old = [task(f"old-{i}", expires_in=None).replace(expires_known=True) for i in range(3)]
    seed.write_many(old, OnConflict.SKIP)
    seed.close()
    # When a cleanup archives into it
    result = cli("cleanup", redis_db.url, "--older-than", "0s", "--archive", str(archive))
    assert result.code == 0, result.output
    # Then the archive reads whole again: the first batch, then the new results
    store = open_store(f"jsonl://{archive}")
    records = [r for page in store.pages(Kind.TASK, 1000) for r in page.records]
    assert [r.error for r in records if r.error] == []
    assert [r.id for r in records][:BATCH] == ids[:BATCH]
    assert sorted(r.id for r in records[BATCH:]) == sorted(r.id for r in old)


@pytest.mark.parametrize("damage", ["middle", "not-gzip"])
def test_a_damaged_archive_is_never_appended_to_and_nothing_is_deleted(
    cli: Any, tmp_path: Path, redis_db: RedisDB, damage: str
) -> None:
    # Given an archive damaged where appending would hide what follows (or a file that is
    # not an archive at all)
    archive = tmp_path / "a.jsonl.gz"
    if damage == "middle":
        write_archive(archive)
        data = bytearray(archive.read_bytes())
        starts = member_offsets(bytes(data))
        data[(starts[1] + starts[2]) // 2] ^= 0xFF
        archive.write_bytes(bytes(data))
    else:
        archive.write_text('{"some": "lines of my own"}\n')
    before = archive.read_bytes()
    seed = open_store(redis_db.url)
    record = task("old-1").replace(expires_known=True)
    seed.write_many([record], OnConflict.SKIP)
    seed.close()
    # When a cleanup is asked to archive into it
    result = cli("cleanup", redis_db.url, "--older-than", "0s", "--archive", str(archive))
    # Then it refuses in one line, the file is untouched, and nothing is deleted
    assert result.code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "damaged" in lines[0] or "not a gzip" in lines[0]
    assert archive.read_bytes() == before
    assert redis_db.client.exists("celery-task-meta-old-1") == 1


def test_small_pages_read_a_damaged_archive_exactly_as_one_page_does(
    cli: Any, tmp_path: Path
) -> None:
    # Given an archive of four members, the second one damaged
    archive = tmp_path / "a.jsonl.gz"
    write_archive(archive, batches=4)
    data = bytearray(archive.read_bytes())
    starts = member_offsets(bytes(data))
    data[(starts[1] + starts[2]) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    # When it is restored in pages of 3 (pages start inside members) and in one page
    outcomes = []
    for batch in ("3", "1000"):
        target = f"db+sqlite:///{tmp_path / f'restored-{batch}.sqlite3'}"
        result = restore(cli, archive, target, "--batch-size", batch)
        assert result.code == 1, result.output
        outcomes.append((stored_ids(target), result.json["failures"]))
    # Then both restore the same results and report the same damage
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]) == 3 * BATCH
