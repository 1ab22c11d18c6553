"""One contract, run on every store: Redis, PostgreSQL, MariaDB, SQLite,
django-celery-results tables, the filesystem backend and archives."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from resultkit.compare import differences
from resultkit.errors import ConfigurationError
from resultkit.records import Kind, Payload, Record
from resultkit.stores import OnConflict, Store
from tests.conftest import PICKLED_LAYOUT, open_test_store, store_url_for
from tests.samples import NOW, failure, group, standard_set, task

#: Every test here runs in the compatibility matrix too (noxfile.py).
pytestmark = pytest.mark.compat


@pytest.fixture
def store(store_url: str) -> Store:
    opened = open_test_store(store_url)
    yield opened
    opened.close()


def by_kind(records: list[Record], kind: Kind) -> list[Record]:
    return [r for r in records if r.kind is kind]


def test_written_records_read_back_equal(store: Store) -> None:
    # Given the standard set of results
    records = standard_set()
    # When they are written
    outcome = store.write_many(records, OnConflict.SKIP)
    # Then all are written and read back with every field the layout keeps
    assert sorted(outcome.written) == sorted(r.id for r in records)
    for kind in Kind:
        wanted = by_kind(records, kind)
        found = store.read_many(kind, [r.id for r in wanted])
        assert set(found) == {r.id for r in wanted}
        for record in wanted:
            assert (
                differences(
                    record,
                    found[record.id].meta,
                    store.extended_fields,
                    children=store.keeps_children,
                )
                == []
            )


def test_scan_pages_through_every_record_exactly_once(store: Store) -> None:
    records = [task(f"scan-{i:03d}") for i in range(53)]
    store.write_many(records, OnConflict.SKIP)
    seen: list[str] = []
    for page in store.pages(Kind.TASK, 10):
        seen.extend(r.id for r in page.records)
    assert sorted(seen) == sorted(r.id for r in records)


def test_scan_resumes_from_a_cursor(store: Store) -> None:
    store.write_many([task(f"cur-{i:03d}") for i in range(30)], OnConflict.SKIP)
    first = store.scan(Kind.TASK, None, 10)
    rest = [r.id for page in store.pages(Kind.TASK, 10, first.cursor) for r in page.records]
    assert sorted([r.id for r in first.records] + rest) == sorted(f"cur-{i:03d}" for i in range(30))


def test_skip_keeps_the_stored_result(store: Store) -> None:
    store.write_many([task("c1", result={"v": "old"})], OnConflict.SKIP)
    outcome = store.write_many([task("c1", result={"v": "new"})], OnConflict.SKIP)
    assert outcome.skipped == ["c1"]
    assert store.read_many(Kind.TASK, ["c1"])["c1"].meta["result"] == {"v": "old"}


def test_skip_in_a_batch_of_both_kinds_writes_the_new_and_keeps_the_stored(store: Store) -> None:
    store.write_many([group("g-kept", ["first"])], OnConflict.SKIP)
    outcome = store.write_many([task("t-new"), group("g-kept", ["second"])], OnConflict.SKIP)
    assert (outcome.written, outcome.skipped) == (["t-new"], ["g-kept"])
    assert set(store.read_many(Kind.TASK, ["t-new"])) == {"t-new"}
    kept = store.read_many(Kind.GROUP, ["g-kept"])["g-kept"].meta
    assert kept is not None
    assert kept["result"][1][0][0][0] == "first"


def test_overwrite_replaces_the_stored_result(store: Store) -> None:
    store.write_many([task("c2", result={"v": "old"})], OnConflict.SKIP)
    outcome = store.write_many([task("c2", result={"v": "new"})], OnConflict.OVERWRITE)
    assert outcome.written == ["c2"]
    assert store.read_many(Kind.TASK, ["c2"])["c2"].meta["result"] == {"v": "new"}


def test_newer_replaces_only_an_older_result(store: Store) -> None:
    earlier, later = NOW - timedelta(hours=1), NOW
    store.write_many([task("c3", result={"v": "later"}, done=later)], OnConflict.SKIP)
    older = store.write_many([task("c3", result={"v": "earlier"}, done=earlier)], OnConflict.NEWER)
    assert older.skipped == ["c3"]
    newer = store.write_many(
        [task("c3", result={"v": "latest"}, done=later + timedelta(hours=1))], OnConflict.NEWER
    )
    assert newer.written == ["c3"]
    assert store.read_many(Kind.TASK, ["c3"])["c3"].meta["result"] == {"v": "latest"}


def test_a_record_without_a_payload_fails_alone(store: Store) -> None:
    broken = Record(Kind.TASK, "broken", Payload(None, error="corrupt blob"))
    outcome = store.write_many([task("fine"), broken], OnConflict.SKIP)
    assert outcome.written == ["fine"]
    assert "corrupt blob" in outcome.failed["broken"]


def test_counts_are_exact(store: Store) -> None:
    store.write_many(
        [task(f"n{i}") for i in range(7)] + [failure("nf1"), failure("nf2"), group("ng", ["n1"])],
        OnConflict.SKIP,
    )
    assert store.count(Kind.TASK) == 9
    assert store.count(Kind.GROUP) == 1
    assert store.state_counts() == {"SUCCESS": 7, "FAILURE": 2}


def test_delete_many_removes_exactly_the_given_ids(store: Store) -> None:
    store.write_many([task("d1"), task("d2"), task("d3")], OnConflict.SKIP)
    if not store.deletable:
        with pytest.raises(ConfigurationError, match="append-only"):
            store.delete_many(Kind.TASK, ["d1"])
        return
    assert store.delete_many(Kind.TASK, ["d1", "d3", "absent"]) == 2
    assert set(store.read_many(Kind.TASK, ["d1", "d2", "d3"])) == {"d2"}


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql", "sqlite", "file"])
def test_celery_reads_what_the_store_wrote(kind: str, request: Any, tmp_path: Path) -> None:
    store = open_test_store(store_url_for(kind, request, tmp_path))
    assert store.celery_readable
    records = standard_set("cel")
    store.write_many(records, OnConflict.SKIP)
    tasks = by_kind(records, Kind.TASK)
    seen = store.celery_read_many(Kind.TASK, [r.id for r in tasks])
    for record in tasks:
        found = seen.get(record.id)
        assert (
            differences(record, found, store.extended_fields, children=store.keeps_children) == []
        )
    groups = store.celery_read_many(Kind.GROUP, ["cel-group"])
    assert groups["cel-group"]["result"] == ["cel-ok-0", "cel-ok-1"]
    store.close()


@pytest.mark.parametrize("kind", ["postgres", "mysql", "sqlite"])
def test_the_older_layout_keeps_everything_but_the_children(
    kind: str, request: Any, tmp_path: Path
) -> None:
    # Given the tables of the installed Celery, and the standard set (with children)
    store = open_test_store(store_url_for(kind, request, tmp_path))
    records = standard_set("old")
    store.write_many(records, OnConflict.SKIP)
    tasks = by_kind(records, Kind.TASK)
    assert any(r.meta and r.meta.get("children") for r in tasks)
    found = store.read_many(Kind.TASK, [r.id for r in tasks])
    # Then every field but the children reads back equal, whatever the release
    for record in tasks:
        assert (
            differences(record, found[record.id].meta, store.extended_fields, children=False) == []
        )
    # ... and the children too, unless the tables are those of Celery 5.4-5.6, which have
    # no column for them (a limitation of Celery's layout; docs/compatibility.md)
    assert store.keeps_children is not PICKLED_LAYOUT
    kept = [bool(found[r.id].meta.get("children")) for r in tasks if r.meta.get("children")]
    assert kept == [store.keeps_children] * len(kept)
    store.close()


@pytest.mark.parametrize("kind", ["postgres", "mysql", "sqlite"])
def test_without_accept_pickle_the_older_layout_is_refused_saying_how_to_opt_in(
    kind: str, request: Any, tmp_path: Path, cli: Any
) -> None:
    # Given the tables of Celery 5.4-5.6 (or 5.7's), with results in them
    url = store_url_for(kind, request, tmp_path)
    writer = open_test_store(url)
    writer.write_many([task("old-1", result={"v": 1})], OnConflict.SKIP)
    writer.close()
    # When they are read without --accept-pickle
    result = cli("migrate", url, f"jsonl://{tmp_path / 'out.jsonl.gz'}", "--json")
    if not PICKLED_LAYOUT:
        assert (result.code, result.json["copied"]) == (0, 1), result.output
        return
    # Then the one failure says, in one line, which layout it is and how to opt in
    assert result.code == 1, result.output
    error = result.json["failures"][0]["error"]
    assert "\n" not in error
    assert "layout of Celery 5.6 or older" in error
    assert "pass --accept-pickle" in error
