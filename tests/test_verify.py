"""--verify compares like with like: both sides decoded the way Celery decodes them.

Failures are written by Celery's own backend, so the exceptions are stored
exactly as a worker stores them; the copy is then verified in every kind of
target, and what cannot be verified is counted and named, never passed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from resultkit.records import Kind
from resultkit.stores import OnConflict, open_store
from tests.celery_view import celery_app
from tests.conftest import RedisDB, store_url_for
from tests.samples import task

#: An exception class from a module no process but this test can import.
Unimportable = type("Unimportable", (Exception,), {"__module__": "rk_nowhere.errors"})


class NeedsTwo(Exception):
    """An exception whose constructor Celery cannot call with its stored args."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


EXCEPTIONS: dict[str, BaseException] = {
    "key-error": KeyError("x"),
    "os-error": OSError(2, "no such file"),
    "os-error-filename": OSError(2, "no such file", "/tmp/x"),
    "several-args": ValueError("bad", 42, None, ["nested", 1.5]),
    "no-args": RuntimeError(),
    "unicode": ValueError("résultat ✓ 結果"),
    "unimportable-class": Unimportable("from a module nobody has"),
    "refuses-its-args": NeedsTwo(7, "seven"),
    "json-decode": json.JSONDecodeError("Expecting value", "{x", 1),
}


def write_failures(url: str, **settings: Any) -> list[str]:
    """Store each exception as a worker does: through Celery's own backend."""
    app = celery_app(url, **settings)
    backend = app.backend
    for task_id, exc in EXCEPTIONS.items():
        backend.mark_as_failure(task_id, exc, traceback="Traceback: ...", call_errbacks=False)
    backend.store_result("ok", {"v": 1}, "SUCCESS")
    return [*EXCEPTIONS, "ok"]


@pytest.mark.parametrize(
    "target_kind", ["postgres", "sqlite", "redis", "file", "django", "archive"]
)
def test_every_exception_shape_verifies_and_moves(
    target_kind: str, cli: Any, request: Any, tmp_path: Path, redis_db: RedisDB
) -> None:
    # Given failures of every shape, stored by Celery in Redis
    ids = write_failures(redis_db.url)
    if target_kind == "redis":
        target = request.getfixturevalue("own_redis")().url  # a server of its own
    else:
        target = store_url_for(target_kind, request, tmp_path / "target")
    # When they are copied with --verify, then moved
    verified = cli("migrate", redis_db.url, target, "--verify", "--json")
    # Then every one verifies: the same bytes are never a mismatch
    assert verified.code == 0, verified.output
    assert (verified.json["verified"], verified.json["mismatched"]) == (len(ids), 0), (
        verified.stdout
    )
    assert verified.json["unverified"] == 0
    if target_kind == "archive":
        return  # --move out of Redis into an archive works as into any store; once is enough
    moved = cli("migrate", redis_db.url, target, "--move", "--json")
    assert moved.code == 0, moved.output
    assert moved.json["deleted"] == len(ids)
    assert redis_db.client.dbsize() == 0


def test_a_real_difference_in_an_exception_is_still_a_mismatch(
    cli: Any, redis_db: RedisDB, sqlite_db: Any
) -> None:
    # Given failures copied to SQLite
    write_failures(redis_db.url)
    assert cli("migrate", redis_db.url, sqlite_db.url).code == 0
    # ... one of which then differs in the target: another argument, or another type
    app = celery_app(sqlite_db.url)
    app.backend.mark_as_failure("key-error", KeyError("y"), traceback="Traceback: ...")
    app.backend.mark_as_failure("os-error", FileExistsError(2, "no such file"), "Traceback: ...")
    # When they are verified
    result = cli("migrate", redis_db.url, sqlite_db.url, "--verify", "--json")
    # Then exactly those two are mismatches, on their result
    assert result.code == 1
    mismatches = {m["id"]: m["fields"] for m in result.json["mismatches"]}
    assert set(mismatches) == {"key-error", "os-error"}
    assert all("result" in fields for fields in mismatches.values())


def test_what_cannot_be_verified_is_counted_named_and_kept(
    cli: Any, redis_db: RedisDB, tmp_path: Path
) -> None:
    # Given pickle results (never decoded without --accept-pickle) beside JSON ones, to be
    # moved where their bytes can be copied as they are (SQL needs them decoded)
    target = f"file://{tmp_path / 'results'}"
    app = celery_app(redis_db.url, result_serializer="pickle", result_accept_content=["pickle"])
    app.backend.store_result("pickled-1", {"v": 1}, "SUCCESS")
    app.backend.mark_as_failure("pickled-2", KeyError("x"), traceback="Traceback: ...")
    celery_app(redis_db.url).backend.store_result("plain", {"v": 2}, "SUCCESS")
    # When they are moved with --verify, pickle not accepted
    result = cli("migrate", redis_db.url, target, "--move", "--verify", "--json")
    # Then the pickle results are copied but named as unverified, and stay in the source
    report = result.json
    assert result.code == 1, result.output
    assert (report["copied"], report["verified"], report["unverified"]) == (3, 1, 2)
    unverified = {u["id"]: u["reason"] for u in report["unverified_records"]}
    assert set(unverified) == {"pickled-1", "pickled-2"}
    assert all("--accept-pickle" in reason for reason in unverified.values())
    assert report["deleted"] == 1
    kept = {k["id"]: k["reason"] for k in report["kept_records"]}
    assert report["kept"] == 2
    assert set(kept) == {"pickled-1", "pickled-2"}
    assert all("not verified" in reason for reason in kept.values())
    assert redis_db.client.exists("celery-task-meta-pickled-1", "celery-task-meta-plain") == 1
    # ... and the text report says so too
    text = cli("migrate", redis_db.url, target, "--move")
    assert "unverified 2" in text.stdout
    assert "kept task pickled-1 in the source: not verified" in text.stdout
    # When pickle is accepted, they verify and move
    accepted = cli("migrate", redis_db.url, target, "--move", "--accept-pickle", "--json")
    assert accepted.code == 0, accepted.output
    assert (accepted.json["verified"], accepted.json["unverified"]) == (2, 0)
    assert redis_db.client.dbsize() == 0


def test_move_says_why_each_kept_record_stayed(cli: Any, redis_db: RedisDB, tmp_path: Path) -> None:
    # Given a result that cannot be read, one already in the target but different, and a good one
    redis_db.client.set("celery-task-meta-garbled", b"\x00not a payload")
    store = open_store(redis_db.url)
    store.write_many([task("good"), task("differs")], OnConflict.SKIP)
    store.close()
    target = f"file://{tmp_path / 'results'}"
    other = open_store(target)
    other.write_many(
        [task("differs", "FAILURE", {"exc_type": "KeyError", "exc_message": ["z"]})],
        OnConflict.SKIP,
    )
    other.close()
    # When they are moved
    result = cli("migrate", redis_db.url, target, "--move", "--json")
    # Then only the good one is deleted, and the report says why the others stayed
    assert result.code == 1
    kept = {k["id"]: k["reason"] for k in result.json["kept_records"]}
    assert set(kept) == {"garbled", "differs"}
    assert kept["garbled"].startswith("failed: ")
    assert kept["differs"].startswith("mismatched: ")
    assert redis_db.client.exists("celery-task-meta-good") == 0
    assert redis_db.client.exists("celery-task-meta-garbled", "celery-task-meta-differs") == 2


def test_exceptions_in_every_layout_compare_as_celery_reads_them() -> None:
    """The comparison itself: Celery's decoding on both sides, whatever each layout holds."""
    from resultkit.compare import differences
    from resultkit.records import Payload, Record

    for exc in EXCEPTIONS.values():
        stored = {
            "exc_type": type(exc).__name__,
            "exc_message": list(exc.args),
            "exc_module": type(exc).__module__,
        }
        meta = {"status": "FAILURE", "result": stored, "traceback": None, "date_done": None}
        record = Record(Kind.TASK, "x", Payload(meta))
        # read back as a dict (an archive, django's table) or as Celery's exception object
        app = celery_app("cache+memory://")
        as_object = {**meta, "result": app.backend.exception_to_python(stored)}
        assert differences(record, dict(meta), ()) == []
        assert differences(record, as_object, ()) == [], exc
    assert pickle  # pickle payloads are covered end to end above
