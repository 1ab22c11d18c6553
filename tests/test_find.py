"""The query layer on every store: each filter, pagination, the extended-fields check.

The results are written by Celery's own backends (``tests/find_writer.py``, in a
subprocess): Redis, PostgreSQL, MariaDB and SQLite through Celery's backends,
django-celery-results' tables through its own backend, the filesystem backend;
an archive holds what the filesystem backend wrote, copied by the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from resultkit.errors import UsageError
from resultkit.query import Query, find, select
from resultkit.records import Kind
from resultkit.stores import OnConflict, Store, StoreSettings, open_store
from tests.conftest import ROOT, store_url_for

pytestmark = pytest.mark.timeout(300)

ALL = {
    "w1-report",
    "w1-fail",
    "w1-mail",
    "w2-leaf",
    "w2-c1",
    "w2-c2",
    "w2-root",
    "w3-weekly",
    "w3-retry",
    "w3-add",
}
WAVE1 = {i for i in ALL if i.startswith("w1-")}
WAVE2 = {i for i in ALL if i.startswith("w2-")}
WAVE3 = {i for i in ALL if i.startswith("w3-")}
USER_42 = {"w1-report", "w1-mail", "w3-weekly", "w2-c2"}

#: (case, Query.build keyword arguments, the ids it selects); "since"/"until"
#: stand for the manifest's wave boundaries.
CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("everything", {}, ALL),
    ("one state", {"states": ["FAILURE"]}, {"w1-fail", "w2-c2", "w3-weekly"}),
    (
        "several states",
        {"states": ["FAILURE", "RETRY"]},
        {"w1-fail", "w2-c2", "w3-weekly", "w3-retry"},
    ),
    ("task glob", {"tasks": ["reports.*"]}, {"w1-report", "w1-fail", "w3-weekly", "w3-retry"}),
    ("task globs", {"tasks": ["flows.st*", "misc.*"]}, {"w2-c1", "w2-c2", "w2-root", "w3-add"}),
    ("since", {"since": "since"}, WAVE2 | WAVE3),
    ("until", {"until": "since"}, WAVE1),
    ("since and until", {"since": "since", "until": "until"}, WAVE2),
    ("worker", {"worker": "celery@beta"}, {"w1-mail", "w2-leaf"}),
    ("worker glob", {"worker": "celery@g*"}, {"w3-add"}),
    ("queue", {"queue": "q-reports"}, {"w1-report", "w1-fail", "w3-weekly", "w3-retry"}),
    ("group", {"group": "g-1"}, {"w1-report", "w1-fail"}),
    ("parent", {"parent": "w2-root"}, {"w2-c1", "w2-c2"}),
    ("root", {"root": "w2-root"}, WAVE2),
    ("exact id", {"ids": ["w2-c1"]}, {"w2-c1"}),
    ("id prefix", {"id_prefix": "w2-c"}, {"w2-c1", "w2-c2"}),
    ("exception", {"exception": "ValueError"}, {"w1-fail", "w3-weekly"}),
    ("exception dotted", {"exception": "builtins.KeyError"}, {"w2-c2"}),
    ("arg text", {"args": ["eu"]}, {"w1-report"}),
    ("arg number, also in kwargs", {"args": ["42"]}, USER_42),
    ("arg nested", {"args": ["welcome"]}, {"w1-mail"}),
    ("kwarg", {"kwargs": ["user_id=42"]}, USER_42),
    ("kwarg other value", {"kwargs": ["user_id=7"]}, {"w1-fail"}),
    (
        "combined",
        {"states": ["FAILURE"], "tasks": ["reports.*"], "kwargs": ["user_id=42"]},
        {"w3-weekly"},
    ),
    ("exception since", {"exception": "ValueError", "since": "since"}, {"w3-weekly"}),
    ("nothing", {"tasks": ["nope.*"]}, set()),
]

#: Fields a layout does not keep: the case is refused rather than answered.
REFUSED = {"django": {"queue"}}
STORES = ("redis", "postgres", "mysql", "sqlite", "django", "file", "archive")


@dataclass
class Written:
    """A store holding the dataset, and the wave boundaries."""

    kind: str
    url: str
    since: datetime
    until: datetime
    settings: StoreSettings

    def store(self) -> Store:
        return open_store(self.url, settings=self.settings)


def write_dataset(backend: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the dataset through Celery (``tests/find_writer.py``); its manifest."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "find_writer.py"), backend, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads(done.stdout)
    return manifest


def written_in(kind: str, request: Any, tmp_path: Path) -> Written:
    """Write the dataset through Celery into a fresh store of *kind*."""
    settings = StoreSettings(celery={"result_extended": True})
    if kind == "django":
        db = request.getfixturevalue("postgres_db")
        manifest = write_dataset("django", db.sqlalchemy_url)
        url = "django+" + db.sqlalchemy_url
    elif kind == "archive":
        folder = tmp_path / "written"
        manifest = write_dataset(f"file://{folder}")
        url = f"jsonl://{tmp_path / 'archive.jsonl.gz'}"
        source = open_store(f"file://{folder}", settings=settings)
        target = open_store(url, settings=settings)
        for item in (Kind.TASK, Kind.GROUP):
            for page in source.pages(item, 100):
                target.write_many(page.records, OnConflict.SKIP)
        source.close()
        target.close()
    else:
        url = store_url_for(kind, request, tmp_path / "store")
        manifest = write_dataset(url)
    return Written(
        kind,
        url,
        datetime.fromisoformat(manifest["since"]),
        datetime.fromisoformat(manifest["until"]),
        settings,
    )


@pytest.fixture(params=STORES)
def written(request: Any, tmp_path: Path) -> Written:
    return written_in(request.param, request, tmp_path)


def build(case: dict[str, Any], data: Written) -> Query:
    args = dict(case)
    for bound in ("since", "until"):
        if args.get(bound) == "since":
            args[bound] = data.since
        elif args.get(bound) == "until":
            args[bound] = data.until
    return Query.build(**args)


def all_pages(store: Store, query: Query, limit: int) -> Iterator[list[Any]]:
    cursor = None
    for _ in range(1000):
        page = find(store, query, limit=limit, cursor=cursor)
        yield page.records
        cursor = page.cursor
        if cursor is None:
            return
    raise AssertionError("find never reached its last page")


def undated(store: Store) -> set[str]:
    """Results stored without a date_done: Celery's key-value backends date only
    the ready states (a RETRY has none), its SQL tables every row."""
    return {r.id for r in select(store, Query.build()) if r.date_done is None}


def check_case(
    store: Store, data: Written, name: str, case: dict[str, Any], expected: set[str]
) -> None:
    query = build(case, data)
    if query.since or query.until:
        expected = expected - undated(store)
    selected = [r.id for r in select(store, query)]
    assert sorted(selected) == sorted(expected), f"{data.kind}: select {name}"
    pages = list(all_pages(store, query, limit=2))
    assert all(len(page) <= 2 for page in pages), f"{data.kind}: {name}: a page over its limit"
    paged = [r for page in pages for r in page]
    ids = [r.id for r in paged]
    assert len(ids) == len(set(ids)), f"{data.kind}: {name}: a result on two pages"
    assert set(ids) == expected, f"{data.kind}: find {name}"
    # Ties (MySQL keeps whole seconds) are in each store's own order: dates only.
    for run in [paged] if store.ordered_pages else pages:
        dates = [query.sort_key(r)[0] for r in run]
        assert dates == sorted(dates, reverse=True), f"{data.kind}: {name}: not newest first"


def test_every_filter_selects_exactly_its_results_on_every_store(written: Written) -> None:
    # Given the dataset, written by Celery's own backend into this store
    store = written.store()
    refused = REFUSED.get(written.kind, set())
    try:
        for name, case, expected in CASES:
            if refused & set(case):
                # Then a filter on a field this layout never keeps is refused, naming it
                with pytest.raises(UsageError, match="--queue"):
                    list(select(store, build(case, written)))
                continue
            # When each filter is asked, through select and page by page through find
            # Then exactly its results come back, each once, newest first
            check_case(store, written, name, case, expected)
    finally:
        store.close()


def test_oldest_first_pages_run_from_the_oldest(written: Written) -> None:
    store = written.store()
    try:
        query = Query.build(oldest_first=True)
        pages = list(all_pages(store, query, limit=3))
        ids = [r.id for page in pages for r in page]
        assert len(ids) == len(ALL) == len(set(ids))
        if not store.ordered_pages:
            # Redis: pages follow the keyspace; each one runs from its oldest.
            for page in pages:
                dates = [query.sort_key(r)[0] for r in page]
                assert dates == sorted(dates)
            return
        # Results without a date come first (as the oldest), then the waves in order.
        none = undated(store)
        assert set(ids[: len(none)]) == none
        dated = ids[len(none) :]
        first, last = WAVE1 - none, WAVE3 - none
        assert set(dated[: len(first)]) == first
        assert set(dated[-len(last) :]) == last
    finally:
        store.close()


def test_groups_are_selected_only_when_asked(written: Written) -> None:
    store = written.store()
    try:
        tasks = {r.id for r in select(store, Query.build())}
        both = {(r.kind, r.id) for r in select(store, Query.build(kinds=(Kind.TASK, Kind.GROUP)))}
        assert "g-1" not in tasks
        assert (Kind.GROUP, "g-1") in both
    finally:
        store.close()


# ----------------------------------------------------------- Redis Cluster


def test_every_filter_on_redis_cluster(redis_cluster: Any, cluster_prefix: str) -> None:
    # Given the dataset written by resultkit's cluster backend, under this test's prefix
    options = {"global_keyprefix": cluster_prefix}
    manifest = write_dataset(
        redis_cluster.backend_url,
        "--setting",
        f"result_backend_transport_options={json.dumps(options)}",
    )
    settings = StoreSettings(
        celery={"result_extended": True, "result_backend_transport_options": options}
    )
    data = Written(
        "rediscluster",
        redis_cluster.url,
        datetime.fromisoformat(manifest["since"]),
        datetime.fromisoformat(manifest["until"]),
        settings,
    )
    store = data.store()
    try:
        for name, case, expected in CASES:
            check_case(store, data, name, case, expected)
    finally:
        store.close()


# ------------------------------------------------------ result_extended off


@pytest.mark.parametrize("kind", ["redis", "sqlite", "file"])
def test_extended_filters_say_result_extended_is_off(
    kind: str, request: Any, tmp_path: Path
) -> None:
    # Given results stored by Celery with result_extended off
    url = store_url_for(kind, request, tmp_path / "store")
    write_dataset(url, "--setting", "result_extended=false")
    store = open_store(url)
    try:
        for case in ({"tasks": ["reports.*"]}, {"kwargs": ["user_id=42"]}, {"worker": "x"}):
            # When a filter needs the extended fields, Then it is refused, naming the setting
            with pytest.raises(UsageError, match="result_extended"):
                find(store, Query.build(**case))
        # And the filters that need no extended field still work
        failed = {r.id for r in select(store, Query.build(states=["FAILURE"]))}
        assert failed == {"w1-fail", "w2-c2", "w3-weekly"}
    finally:
        store.close()


# ----------------------------------------------------- concurrent writers


@pytest.mark.parametrize("kind", ["redis", "postgres", "sqlite"])
def test_pages_have_no_gap_and_no_duplicate_under_concurrent_writes(
    kind: str, request: Any, tmp_path: Path
) -> None:
    # Given the dataset, and a writer storing new results while pages are read
    data = written_in(kind, request, tmp_path)
    from celery import Celery

    app = Celery("writer", set_as_current=False)
    app.conf.update(result_backend=data.url, result_extended=True)
    stop = threading.Event()
    written_new: list[str] = []

    def keep_writing() -> None:
        while not stop.is_set():
            task_id = f"new-{uuid.uuid4().hex[:8]}"
            app.backend.store_result(task_id, 1, "SUCCESS")
            written_new.append(task_id)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    store = data.store()
    try:
        # When every page is read while results are added
        ids = [
            r.id for page in all_pages(store, Query.build(until=data.until), limit=2) for r in page
        ]
    finally:
        stop.set()
        writer.join()
        store.close()
    # Then each result that was there before appears once, and none is missing
    assert written_new, "the writer wrote nothing while pages were read"
    assert len(ids) == len(set(ids))
    assert set(ids) == WAVE1 | WAVE2


# ------------------------------------------------------------------- Redis


def test_redis_compressed_results_are_decided_by_the_client(redis_db: Any) -> None:
    # Given the dataset stored gzip-compressed by Celery: the script cannot read it
    manifest = write_dataset(redis_db.url, "--setting", 'result_compression="gzip"')
    data = Written(
        "redis",
        redis_db.url,
        datetime.fromisoformat(manifest["since"]),
        datetime.fromisoformat(manifest["until"]),
        StoreSettings(celery={"result_extended": True}),
    )
    store = data.store()
    try:
        # When every filter is asked, Then the client decodes and selects the same results
        for name, case, expected in CASES:
            check_case(store, data, name, case, expected)
    finally:
        store.close()


def test_redis_find_scans_a_bounded_number_of_keys_per_call(redis_db: Any) -> None:
    from resultkit.stores.redis_find import MAX_SCAN_KEYS_PER_PAGE

    # Given more results than one call scans: the dataset, and copies of a result
    # Celery stored, under other ids
    write_dataset(redis_db.url)
    store = open_store(redis_db.url, settings=StoreSettings(celery={"result_extended": True}))
    try:
        template = store.read_many(Kind.TASK, ["w3-add"])["w3-add"]
        filler = MAX_SCAN_KEYS_PER_PAGE + 2000
        for start in range(0, filler, 5000):
            batch = [
                template.replace(id=f"fill-{n}") for n in range(start, min(start + 5000, filler))
            ]
            store.write_many(batch, OnConflict.SKIP)
        query = Query.build(exception="KeyError")
        # When pages of a rare filter are asked
        first = find(store, query, limit=50)
        # Then one call scans at most its bound, and says where to go on
        assert first.scanned <= MAX_SCAN_KEYS_PER_PAGE + 1000
        assert first.cursor is not None
        found = [r.id for r in first.records]
        scanned = first.scanned
        cursor = first.cursor
        while cursor is not None:
            page = find(store, query, limit=50, cursor=cursor)
            assert page.scanned <= MAX_SCAN_KEYS_PER_PAGE + 1000
            found += [r.id for r in page.records]
            scanned += page.scanned
            cursor = page.cursor
        # And every key was scanned once overall, the one match found once
        assert found == ["w2-c2"]
        assert scanned >= filler + len(ALL)
    finally:
        store.close()


def test_a_cursor_of_another_query_is_refused(redis_db: Any) -> None:
    write_dataset(redis_db.url)
    store = open_store(redis_db.url, settings=StoreSettings(celery={"result_extended": True}))
    try:
        page = find(store, Query.build(), limit=2)
        assert page.cursor is not None
        with pytest.raises(UsageError, match="another query"):
            find(store, Query.build(states=["FAILURE"]), limit=2, cursor=page.cursor)
        with pytest.raises(UsageError, match="not a cursor"):
            find(store, Query.build(), limit=2, cursor="garbage!")
    finally:
        store.close()


def test_a_page_after_the_servers_connection_ended_is_read_on_a_new_one(
    request: Any, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    # Given a store that read a page, keeping its connection for the next one
    data = written_in("postgres", request, tmp_path)
    store = data.store()
    try:
        first = find(store, Query.build(), limit=3)
        reader = store.reader  # type: ignore[attr-defined]
        pid = reader.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        # When the server ends that connection (a restart, an idle timeout)
        admin = sa.create_engine(request.getfixturevalue("postgres_db").sqlalchemy_url)
        with admin.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.dispose()
        # Then the next page is read all the same, on a new connection
        second = find(store, Query.build(), limit=3, cursor=first.cursor)
        assert len(second.records) == 3
        assert not {r.id for r in first.records} & {r.id for r in second.records}
    finally:
        store.close()
