"""resultkit stats: exact totals and states on every store."""

from __future__ import annotations

from typing import Any

from resultkit.stores import OnConflict, open_store
from tests.samples import failure, group, task


def test_stats_counts_exactly_what_is_stored(cli: Any, store_url: str) -> None:
    # Given 6 successes, 2 failures, a retry and a group
    store = open_store(store_url)
    store.write_many(
        [task(f"s{i}") for i in range(6)]
        + [failure("f1"), failure("f2"), task("r1", "RETRY"), group("g1", ["s1"])],
        OnConflict.SKIP,
    )
    store.close()
    # When stats runs
    result = cli("stats", store_url, "--json")
    # Then the counts are exact
    assert result.code == 0, result.output
    assert result.json["total"] == 9
    assert result.json["by_state"] == {"FAILURE": 2, "RETRY": 1, "SUCCESS": 6}
    assert result.json["groups"] == 1


def test_stats_prints_a_table(cli: Any, redis_db: Any) -> None:
    open_store(redis_db.url).write_many([task("x")], OnConflict.SKIP)
    result = cli("stats", redis_db.url)
    assert result.code == 0
    assert "SUCCESS" in result.stdout
    assert "total" in result.stdout


def test_stats_refuses_rpc(cli: Any) -> None:
    result = cli("stats", "rpc://")
    assert result.code == 2
    assert "keeps no stored results" in result.stderr
