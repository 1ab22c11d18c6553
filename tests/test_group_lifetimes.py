"""Every copied group can expire: whatever store it comes from, in whatever store it lands.

Celery's Redis backend stores a group without a date (its key has a TTL); a
SQL row without ``date_done`` is never removed by Celery's ``backend_cleanup``
nor by ``resultkit cleanup``.  For each target, groups are migrated from every
other kind of store; then the target's own expiry removes each of them.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from resultkit.records import Kind, naive_utc
from resultkit.stores import OnConflict, open_store
from tests.celery_view import celery_app
from tests.conftest import STORE_KINDS, run, store_url_for
from tests.samples import group, task

TARGETS = [kind for kind in STORE_KINDS if kind != "archive"]  # archives never expire


def seed_group(url: str, source_kind: str) -> str:
    """A group (and its two members) in the source, as that store keeps it."""
    group_id = f"g-{source_kind}"
    members = [f"{group_id}-m{i}" for i in range(2)]
    store = open_store(url)
    store.write_many([task(m) for m in members] + [group(group_id, members)], OnConflict.SKIP)
    store.close()
    return group_id


def migrate_all(sources: dict[str, str], target: str, cwd: Path) -> None:
    def one(source: str) -> Any:
        return run("resultkit", "migrate", source, target, "--verify", "--json", cwd=cwd)

    # The first one alone creates the target's tables (two first migrations at once race
    # on CREATE TABLE; that race is tests/test_faults' business, not this test's).
    first, *others = sources.values()
    with ThreadPoolExecutor(max_workers=3) as pool:
        for result in [one(first), *pool.map(one, others)]:
            assert result.code == 0, result.output
            assert result.json["verified"] == 3, result.stdout


def group_dates(url: str) -> dict[str, Any]:
    """Each group's date_done as the target keeps it."""
    store = open_store(url)
    try:
        if store.layout == "sql":
            table = store.table(Kind.GROUP)  # type: ignore[attr-defined]
            with store.engine.connect() as conn:  # type: ignore[attr-defined]
                rows = conn.execute(sa.select(table.c.taskset_id, table.c.date_done))
                return {row[0]: row[1] for row in rows}
        return {
            r.id: (r.meta or {}).get("date_done")
            for page in store.pages(Kind.GROUP, 1000)
            for r in page.records
        }
    finally:
        store.close()


@pytest.mark.parametrize("target_kind", TARGETS)
def test_groups_copied_from_every_store_expire_in_the_target(
    target_kind: str, request: Any, tmp_path: Path
) -> None:
    # Given a group in every other kind of store (Redis and archives keep no group date)
    target = store_url_for(target_kind, request, tmp_path / "target")
    sources = {
        kind: store_url_for(kind, request, tmp_path / f"source-{kind}")
        for kind in STORE_KINDS
        if kind != target_kind
    }
    groups = {kind: seed_group(url, kind) for kind, url in sources.items()}
    copied_at = time.time()
    # When each is migrated into the target
    migrate_all(sources, target, tmp_path)
    # Then every group in the target carries a lifetime
    if target_kind == "redis":
        client = open_store(target).client  # type: ignore[attr-defined]
        for group_id in groups.values():
            ttl = client.pttl(f"celery-taskset-meta-{group_id}")
            assert 0 < ttl <= 86400 * 1000, (group_id, ttl)  # Redis expires it by itself
        return
    dates = group_dates(target)
    assert set(dates) >= set(groups.values())
    for kind, group_id in groups.items():
        done = naive_utc(dates[group_id])
        assert done is not None, f"the group from {kind} has no date_done"
        if kind in ("redis", "archive"):
            # ... the time it was copied, when the source kept none
            copied = done.replace(tzinfo=timezone.utc).timestamp()
            assert copied_at - 1 <= copied <= time.time() + 1, (kind, done)
    # ... and the target's own cleanup removes them once they are past result_expires
    time.sleep(1.1)
    if target_kind == "django":
        done = run("resultkit", "cleanup", target, "--older-than", "1s", "--json", cwd=tmp_path)
        assert done.code == 0, done.output
    else:
        celery_app(target, result_expires=1).backend.cleanup()
    assert not set(group_dates(target)) & set(groups.values())


def test_a_group_keeps_its_own_date_when_the_source_has_one(
    request: Any, tmp_path: Path, sqlite_db: Any, postgres_db: Any
) -> None:
    # Given a group in SQLite with its date
    seed_group(sqlite_db.url, "sqlite")
    before = group_dates(sqlite_db.url)["g-sqlite"]
    # When it is migrated into PostgreSQL
    assert run("resultkit", "migrate", sqlite_db.url, postgres_db.url, cwd=tmp_path).code == 0
    # Then it keeps that date, not the time of the copy
    after = group_dates(postgres_db.url)["g-sqlite"]
    assert abs(naive_utc(after).timestamp() - naive_utc(before).timestamp()) < 1  # type: ignore[union-attr]
