"""Every pair of stores: migrate with --verify, then read back through Celery."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from resultkit.records import Kind
from resultkit.stores import OnConflict
from tests.celery_view import assert_celery_reads
from tests.conftest import STORE_KINDS, accept_pickle_args, open_test_store, store_url_for
from tests.samples import standard_set

#: Every test here runs in the compatibility matrix too (noxfile.py).
pytestmark = pytest.mark.compat

PAIRS = [(a, b) for a, b in itertools.permutations(STORE_KINDS, 2)]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_migrate_copies_everything_so_celery_reads_it_back(
    source_kind: str, target_kind: str, cli: Any, request: Any, tmp_path: Path
) -> None:
    # Given successes, a failure with its traceback, children, a retry and a group
    source_url = store_url_for(source_kind, request, tmp_path / "source")
    target_url = store_url_for(target_kind, request, tmp_path / "target")
    records = standard_set()
    source = open_test_store(source_url)
    source.write_many(records, OnConflict.SKIP)
    source.close()

    # When they are migrated with --verify
    result = cli(
        "migrate",
        source_url,
        target_url,
        "--verify",
        "--json",
        "--batch-size",
        "3",
        *accept_pickle_args(source_url, target_url),
    )

    # Then every record is copied and verified, and nothing failed
    assert result.code == 0, result.output
    summary = result.json
    assert (summary["copied"], summary["failed"], summary["mismatched"]) == (len(records), 0, 0)
    assert summary["verified"] == len(records)
    # ... the source is untouched
    source = open_test_store(source_url)
    assert source.count(Kind.TASK) == len(records) - 1
    source.close()
    # ... and Celery reads the target back as an application would
    target = open_test_store(target_url)
    fields = tuple(set(target.extended_fields) & set(source.extended_fields))
    if target.celery_readable:
        children = source.keeps_children and target.keeps_children
        assert_celery_reads(target_url, records, fields, children=children)
    target.close()


def test_migrating_twice_is_harmless(cli: Any, redis_db: Any, sqlite_db: Any) -> None:
    source = open_test_store(redis_db.url)
    source.write_many(standard_set(), OnConflict.SKIP)
    pickled = accept_pickle_args(sqlite_db.url)
    first = cli("migrate", redis_db.url, sqlite_db.url, "--json", *pickled)
    second = cli("migrate", redis_db.url, sqlite_db.url, "--verify", "--json", *pickled)
    assert first.json["copied"] == 9
    assert (second.json["copied"], second.json["skipped"], second.json["verified"]) == (0, 9, 9)
    assert open_test_store(sqlite_db.url).count(Kind.TASK) == 8
