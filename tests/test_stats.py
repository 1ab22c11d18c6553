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


def test_stats_details_match_the_data(cli: Any, request: Any, tmp_path: Any) -> None:
    import json
    from datetime import timedelta

    from tests.conftest import store_url_for
    from tests.samples import NOW

    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"rules": [{"state": "FAILURE", "expires": "30d"}], "default": "1d"})
    )
    for kind in ("redis", "postgres", "mysql", "sqlite"):
        url = store_url_for(kind, request, tmp_path / kind)
        records = [
            task("young", name="a.x", done=NOW - timedelta(minutes=5)),
            task("day", name="a.x", done=NOW - timedelta(hours=5)),
            task("week", name="b.y", done=NOW - timedelta(days=3)),
            task("big", name="b.y", result="z" * 50_000, done=NOW - timedelta(days=10)),
            failure("old-fail", name="c.z", done=NOW - timedelta(days=40)),
        ]
        # Redis keys without TTL, but the first
        records = [r.replace(expires_known=True, expires_at=None) for r in records]
        records[0] = records[0].replace(expires_at=NOW.timestamp() + 3600)
        open_store(url).write_many(records, OnConflict.SKIP)
        document = cli("stats", url, "--policy", str(policy), "--json").json
        assert document["by_task"] == {"a.x": 2, "b.y": 2, "c.z": 1}, kind
        assert document["age"] == {"<1h": 1, "1h-1d": 1, "1d-7d": 1, "7d-30d": 1, ">30d": 1}, kind
        assert document["largest"][0]["id"] == "big", kind
        assert document["sizes"]["max"] >= 50_000, kind
        assert document["past_lifetime"] == 3, kind  # week, big (1d) and old-fail (30d)
        assert document["no_ttl"] == (4 if kind == "redis" else None), kind
