"""Binary COPY into PostgreSQL: rows made in C equal the rows made in Python,
what C declines is made in Python (or refused with the reason), and a
migration through either path reads back through Celery."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resultkit import _speedups, codec
from resultkit.records import Kind, Payload, Record
from resultkit.stores import OnConflict, open_store
from resultkit.stores.sql import SqlStore
from resultkit.stores.sql.pgcopy import SIGNATURE, TRAILER, pack_values, row_spec
from tests.celery_view import assert_celery_reads
from tests.conftest import RedisDB, SqlDB
from tests.samples import NOW, failure, standard_set, task

ROW_ID = 41


@dataclass
class Target:
    """Celery's task table on PostgreSQL, and how rows of it are made."""

    store: SqlStore
    table: Any
    spec: Any
    kinds: list[str]

    def python_row(self, record: Record) -> bytes:
        """The row as the store makes it in Python (raises ValueError when refused)."""
        return pack_values((ROW_ID, *self.store.row(record, self.table)), self.kinds)

    def c_row(self, record: Record) -> bytes | None:
        """The row made in C, or None when C declines it (leaving the buffer as it was)."""
        out = bytearray(b"before")
        assert record.meta is not None
        made = _speedups.pack_row(out, self.spec, record.id, record.meta, orjson.dumps, ROW_ID)
        if not made:
            assert out == b"before"
            return None
        assert out[:6] == b"before"
        return bytes(out[6:])


@pytest.fixture
def target(postgres_db: SqlDB) -> Iterator[Target]:
    store = open_store(postgres_db.url)
    assert isinstance(store, SqlStore)
    store.ensure_tables()
    table = store.table(Kind.TASK)
    assert table is not None
    names = ["id", *store.column_names(Kind.TASK, table)]
    assert store._copier is not None, "PostgreSQL through psycopg 3 writes with COPY"
    with store.engine.connect() as conn:
        types = store._copier.types(conn, table)
    limits = {name: limit for _, name, limit in store.text_limits(table)}
    spec = row_spec(names, types, limits)
    assert spec is not None, types
    yield Target(store, table, spec, [types[n] for n in names])
    store.close()


def meta_of(**changes: Any) -> dict[str, Any]:
    meta = task("t-1").meta
    assert meta is not None
    meta["date_done"] = "2026-11-24T10:11:12.345678+00:00"
    meta.update(changes)
    return meta


# ------------------------------------------------------------ C and Python agree


def test_an_ordinary_result_is_made_in_c_exactly_as_in_python(target: Target) -> None:
    for record in [*standard_set(), failure("f", done=NOW)]:
        if record.kind is not Kind.TASK:
            continue
        made = target.c_row(record)
        assert made is not None, record.id
        assert made == target.python_row(record), record.id


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
date_dones = st.one_of(
    st.none(),
    moments,
    moments.map(lambda d: d.replace(tzinfo=timezone.utc)),
    moments.map(lambda d: d.replace(tzinfo=timezone(timedelta(hours=2)))),
    moments.map(lambda d: d.isoformat()),
    moments.map(lambda d: d.isoformat() + "+00:00"),
    moments.map(lambda d: d.isoformat() + "Z"),
    moments.map(lambda d: d.isoformat(timespec="milliseconds") + "+00:00"),
    moments.map(lambda d: d.isoformat() + "-05:30"),
    st.sampled_from(["2023-02-29T00:00:00", "2026-13-01T00:00:00", "2026-11-24T24:00:00"]),
)
texts = st.none() | st.text(max_size=160) | st.integers(0, 3)
metas = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["SUCCESS", "FAILURE", "RETRY"]) | texts,
        "result": json_values,
        "traceback": texts,
        "children": st.none() | st.just([]) | st.lists(json_values, max_size=2),
        "date_done": date_dones,
        "name": texts,
        "args": st.none() | st.lists(json_values, max_size=3),
        "kwargs": st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "worker": texts,
        "retries": st.none() | st.integers(-(2**40), 2**40) | st.booleans(),
        "queue": texts,
    },
    optional={"stamped_headers": st.none() | st.just([]) | st.just(["h"]), "h": st.just(1)},
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(meta=metas, task_id=st.text(min_size=1, max_size=160))
def test_c_makes_the_python_row_or_declines_it(
    target: Target, meta: dict[str, Any], task_id: str
) -> None:
    record = Record(Kind.TASK, task_id, Payload(meta))
    try:
        expected: bytes | None = target.python_row(record)
    except (ValueError, TypeError):
        expected = None  # refused in Python: the record fails, with the reason
    made = target.c_row(record)
    if made is not None:
        assert made == expected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"name": "n" * 156}, "name is 156 characters, longer than the 155"),
        ({"status": "S" * 51}, "status is 51 characters, longer than the 50"),
        ({"date_done": "2023-02-29T00:00:00+00:00"}, "day is out of range for month"),
        ({"retries": 2**40}, "does not fit its int4 column"),
        ({"retries": True}, "True is not an integer"),
        ({"worker": 7}, "int value for a varchar column"),
    ],
)
def test_c_declines_what_python_refuses_with_the_reason(
    target: Target, change: dict[str, Any], reason: str
) -> None:
    record = Record(Kind.TASK, "t-1", Payload(meta_of(**change)))
    assert target.c_row(record) is None
    with pytest.raises(ValueError, match=reason):
        target.python_row(record)


@pytest.mark.parametrize(
    "date_done",
    [
        "2026-11-24T10:11:12+02:00",  # another offset: converted to UTC in Python
        "2026-11-24T10:11:12.345+00:00",  # milliseconds only
        datetime(2026, 11, 24, 10, 11, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_c_declines_other_date_forms_and_python_makes_them(target: Target, date_done: Any) -> None:
    record = Record(Kind.TASK, "t-1", Payload(meta_of(date_done=date_done)))
    assert target.c_row(record) is None
    assert target.python_row(record)


@pytest.mark.parametrize(
    ("date_done", "expected"),
    [
        ("2000-01-01T00:00:00", datetime(2000, 1, 1)),
        ("2026-11-24T10:11:12.345678+00:00", datetime(2026, 11, 24, 10, 11, 12, 345678)),
        ("2024-02-29T23:59:59Z", datetime(2024, 2, 29, 23, 59, 59)),
        ("0001-01-01T00:00:00", datetime(1, 1, 1)),
        ("9999-12-31T23:59:59.999999", datetime(9999, 12, 31, 23, 59, 59, 999999)),
        ("1970-01-01T00:00:00.000001+00:00", datetime(1970, 1, 1, 0, 0, 0, 1)),
        (datetime(2026, 11, 24, 10, 11, 12, 5), datetime(2026, 11, 24, 10, 11, 12, 5)),
        (datetime(1999, 12, 31, 23, 0, tzinfo=timezone.utc), datetime(1999, 12, 31, 23, 0)),
    ],
)
def test_timestamps_are_microseconds_from_2000(
    target: Target, date_done: Any, expected: datetime
) -> None:
    record = Record(Kind.TASK, "t-1", Payload(meta_of(date_done=date_done)))
    made = target.c_row(record)
    assert made is not None
    micros = (expected - datetime(2000, 1, 1)) // timedelta(microseconds=1)
    assert struct.pack("!iq", 8, micros) in made
    assert made == target.python_row(record)


# ------------------------------------------------------------ through PostgreSQL


def test_blocks_written_by_hand_are_read_by_postgresql(target: Target) -> None:
    records = [task(f"hand-{i}", done=NOW - timedelta(days=i)) for i in range(3)]
    data = (
        SIGNATURE
        + b"".join(
            pack_values((900 + i, *target.store.row(r, target.table)), target.kinds)
            for i, r in enumerate(records)
        )
        + TRAILER
    )
    names = ", ".join(["id", *target.store.column_names(Kind.TASK, target.table)])
    with target.store.engine.begin() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY celery_taskmeta ({names}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.write(data)
    back = target.store.read_many(Kind.TASK, [r.id for r in records])
    for record in records:
        assert back[record.id].meta == record.meta | {"date_done": record.date_done}


@pytest.mark.parametrize("pure_python", [False, True], ids=["c", "pure-python"])
def test_a_migration_reads_back_through_celery_with_either_row_maker(
    cli: Any, redis_db: RedisDB, postgres_db: SqlDB, pure_python: bool
) -> None:
    # Given results in Redis, one dated with another offset (made in Python either
    # way), one whose task name is too long for the table
    offset = task("offset", done=NOW.astimezone(timezone(timedelta(hours=3))))
    too_long = task("too-long", name="n" * 200)
    records = [*standard_set(), offset, too_long]
    store = open_store(redis_db.url)
    store.write_many(records, OnConflict.SKIP)
    store.close()
    # When they are migrated to PostgreSQL, in batches of 3
    env = {"RESULTKIT_PURE_PYTHON": "1"} if pure_python else None
    result = cli(
        "migrate", redis_db.url, postgres_db.url, "--batch-size", "3", "--verify", "--json", env=env
    )
    # Then everything but the long name is copied, verified and read by Celery
    assert result.code == 1, result.output
    summary = result.json
    assert (summary["copied"], summary["verified"], summary["failed"]) == (10, 10, 1)
    assert summary["failures"][0]["id"] == "too-long"
    assert "name is 200 characters, longer than the 155" in summary["failures"][0]["error"]
    good = [r for r in records if r.id != "too-long"]
    assert_celery_reads(postgres_db.url, good, ("name", "queue"))
    written = open_store(postgres_db.url).read_many(Kind.TASK, ["offset"])["offset"]
    assert written.date_done == NOW


# ------------------------------------------------------------ decoded when used


def test_a_redis_payload_that_only_looks_like_json_fails_with_its_reason(
    redis_db: RedisDB,
) -> None:
    redis_db.client.set("celery-task-meta-cut", b'{"status": "SUCCESS", "resu')
    redis_db.client.set("celery-task-meta-list", b"[1, 2]")
    store = open_store(redis_db.url)
    try:
        first = store.read_many(Kind.TASK, ["cut"])["cut"]
        assert first.peek() is None
        assert first.meta is None
        assert first.error
        again = store.read_many(Kind.TASK, ["cut"])["cut"]
        assert again.error == first.error  # the same reason, whichever is read first
        assert store.read_many(Kind.TASK, ["list"])["list"].error
    finally:
        store.close()


def test_peek_gives_the_meta_that_meta_gives(redis_db: RedisDB) -> None:
    store = open_store(redis_db.url)
    try:
        store.write_many([task("p-1")], OnConflict.SKIP)
        record = store.read_many(Kind.TASK, ["p-1"])["p-1"]
        peeked = record.peek()
        assert peeked is not None
        assert peeked["status"] == "SUCCESS"
        assert record.error is None
        assert record.meta == peeked
    finally:
        store.close()


# ------------------------------------------------------------ prepared ahead


def test_a_prepared_batch_meeting_stored_records_is_upserted(postgres_db: SqlDB) -> None:
    store = open_store(postgres_db.url)
    try:
        store.write_many([task("pre-0", result={"v": "stored"})], OnConflict.SKIP)
        batch = [task(f"pre-{i}", result={"v": "new"}) for i in range(4)]
        prepared = store.prepare(batch, OnConflict.SKIP)
        assert prepared is not None
        outcome = store.write_prepared(batch, OnConflict.SKIP, prepared)
        assert (sorted(outcome.written), outcome.skipped) == (
            ["pre-1", "pre-2", "pre-3"],
            ["pre-0"],
        )
        back = store.read_many(Kind.TASK, [r.id for r in batch])
        assert {i: r.meta["result"]["v"] for i, r in back.items() if r.meta} == {
            "pre-0": "stored",
            "pre-1": "new",
            "pre-2": "new",
            "pre-3": "new",
        }
    finally:
        store.close()


def test_a_prepared_batch_is_used_only_for_its_own_records(postgres_db: SqlDB) -> None:
    store = open_store(postgres_db.url)
    try:
        prepared = store.prepare([task("other-1")], OnConflict.SKIP)
        outcome = store.write_prepared([task("mine-1")], OnConflict.SKIP, prepared)
        assert outcome.written == ["mine-1"]
        assert set(store.read_many(Kind.TASK, ["mine-1", "other-1"])) == {"mine-1"}
    finally:
        store.close()


# ------------------------------------------------------------ from the stored JSON

ENCODED_COLUMNS = {"result", "children", "args", "kwargs", "stamps"}


def fields(row: bytes) -> list[bytes | None]:
    """The fields of one binary COPY row."""
    (count,) = struct.unpack_from("!h", row)
    at, out = 2, []
    for _ in range(count):
        (size,) = struct.unpack_from("!i", row, at)
        at += 4
        if size < 0:
            out.append(None)
            continue
        out.append(row[at : at + size])
        at += size
    assert at == len(row)
    return out


def same_row(target: Target, left: bytes, right: bytes) -> None:
    """Equal rows; JSON columns equal as values (their text may differ in form)."""
    names = ["id", *target.store.column_names(Kind.TASK, target.table)]
    for name, a, b in zip(names, fields(left), fields(right), strict=True):
        if name in ENCODED_COLUMNS and a is not None and b is not None:
            assert json.loads(a) == json.loads(b), name
        else:
            assert a == b, name


def json_row(target: Target, raw: bytes) -> bytes | None:
    out = bytearray(b"before")
    made = _speedups.pack_json_row(out, target.spec, "t-1", raw, ROW_ID)
    if not made:
        assert out == b"before"
        return None
    return bytes(out[6:])


def meta_row(target: Target, raw: bytes) -> bytes | None:
    """The row made from the decoded meta (C, else Python); None when refused."""
    record = Record(Kind.TASK, "t-1", Payload(json.loads(raw)))
    try:
        return target.c_row(record) or target.python_row(record)
    except (ValueError, TypeError):
        return None


finite_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
json_metas = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["SUCCESS", "FAILURE"]) | texts,
        "result": finite_json,
        "traceback": st.none() | st.text(max_size=200),
        "children": st.none() | st.just([]) | st.lists(finite_json, max_size=2),
        "date_done": st.none()
        | moments.map(lambda d: d.isoformat())
        | moments.map(lambda d: d.isoformat() + "+00:00")
        | moments.map(lambda d: d.isoformat() + "-05:30"),
        "task_id": st.text(max_size=10),
    },
    optional={
        "name": texts,
        "args": st.none() | st.lists(finite_json, max_size=3),
        "kwargs": st.none() | st.dictionaries(st.text(max_size=5), finite_json, max_size=3),
        "worker": texts,
        "retries": st.none() | st.integers(-(2**40), 2**40) | st.booleans(),
        "queue": texts,
        "stamped_headers": st.none() | st.just([]) | st.just(["h"]),
    },
)
writers = st.sampled_from(
    [
        orjson.dumps,
        lambda m: json.dumps(m).encode(),  # Celery's kombu json: ", " and ": ", \\u escapes
        lambda m: json.dumps(m, ensure_ascii=False, indent=2).encode(),
    ]
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(meta=json_metas, write=writers)
def test_the_stored_json_makes_the_row_the_meta_makes(
    target: Target, meta: dict[str, Any], write: Any
) -> None:
    try:
        raw = write(meta)
    except TypeError:  # orjson: an int beyond 64 bits
        raw = json.dumps(meta).encode()
    made = json_row(target, raw)
    if made is not None:
        expected = meta_row(target, raw)
        assert expected is not None
        same_row(target, made, expected)


def test_an_ordinary_stored_result_is_made_from_its_json(target: Target) -> None:
    for record in [*standard_set(), failure("f", done=NOW)]:
        if record.kind is not Kind.TASK:
            continue
        meta = dict(record.meta or {}, date_done=NOW.isoformat())
        for raw in (orjson.dumps(meta), json.dumps(meta).encode()):
            made = json_row(target, raw)
            assert made is not None, (record.id, raw)
            expected = meta_row(target, raw)
            assert expected is not None
            same_row(target, made, expected)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"status": "SUCCESS", "result": 1',  # cut short
        b'{"status": "SUCCESS"} x',  # trailing garbage
        b'{"status": "SUCCESS", "result": Nan}',
        b'{"status": "SUCCESS", "result": [1,]}',
        b'{"status": "SUCCESS", "result": 01}',
        b'{"status": "SUCCESS", "result": "\xff"}',  # not UTF-8
        b'{"status": "SUCCESS", "result": "\xed\xa0\x80"}',  # a surrogate in UTF-8
        b'{"status": "SUCCESS", "result": "\\ud800"}',  # a lone surrogate escape
        b'{"status": "SUCCESS", "result": "\\x41"}',
        b'{"status": "SUCCESS", "result": "tab\there"}',  # a raw control character
        b'{"status": "SUCCESS", "result": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"sta\\u0074us": "SUCCESS"}',  # a key with an escape
        b'{"status": "SU\\u0000CCESS"}',  # NUL, which text columns cannot hold
        b'{"status": "SUCCESS", "retries": 1.5}',
        b'{"status": "SUCCESS", "retries": 12345678901}',  # beyond int4
        b'{"status": "SUCCESS", "date_done": "2026-11-24T10:00:00+02:00"}',
        b'{"status": "SUCCESS", "date_done": "2026-02-30T10:00:00"}',
        b'{"status": "SUCCESS", "children": 0}',
        b'{"status": "SUCCESS", "stamped_headers": ["h"], "h": 1}',
        b'{"status": "' + b"S" * 51 + b'"}',
        b"[1, 2]",
        b"",
    ],
)
def test_json_not_made_here_is_declined(target: Target, raw: bytes) -> None:
    assert json_row(target, raw) is None


def test_escapes_duplicates_and_big_numbers_read_as_python_reads_them(target: Target) -> None:
    raw = (
        b'{"status": "FAILURE", "status": "SUCCESS", "traceback": "line 1\\nline \\"2\\" \\u00e9'
        b' \\ud83d\\ude00 \\/", "result": 123456789012345678901234567890, "date_done": '
        b'"2026-11-24T10:11:12.000001Z", "children": [ ], "kwargs": {"a": [1e5, -0]}, '
        b'"args": [NaN, Infinity, -Infinity]}'
    )
    made = json_row(target, raw)
    assert made is not None
    names = ["id", *target.store.column_names(Kind.TASK, target.table)]
    values = dict(zip(names, fields(made), strict=True))
    assert values["status"] == b"SUCCESS"
    assert values["traceback"] == 'line 1\nline "2" é 😀 /'.encode()
    assert values["result"] == b"123456789012345678901234567890"
    assert values["children"] is None
    assert json.loads(values["kwargs"] or b"") == {"a": [100000.0, 0]}
    assert values["args"] == b"[NaN, Infinity, -Infinity]"  # as Python's json writes them
    micros = (datetime(2026, 11, 24, 10, 11, 12, 1) - datetime(2000, 1, 1)) // timedelta(
        microseconds=1
    )
    assert values["date_done"] == struct.pack("!q", micros)


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_only_strict_json_objects_are_made(target: Target, raw: bytes) -> None:
    if json_row(target, b'{"status": "SUCCESS", "result": ' + raw + b"}") is not None:
        json.loads(b'{"result": ' + raw + b"}")  # what C took is JSON Python reads


@pytest.mark.parametrize("empty", [b"null", b"false", b'""', b"[]", b"{}", b"[ ]", b"{\n }"])
def test_empty_children_and_stamps_are_null_as_python_finds_them_false(
    target: Target, empty: bytes
) -> None:
    raw = b'{"status": "SUCCESS", "children": %s, "stamped_headers": %s}' % (empty, empty)
    made = json_row(target, raw)
    assert made is not None
    expected = meta_row(target, raw)
    assert expected is not None
    same_row(target, made, expected)
    names = ["id", *target.store.column_names(Kind.TASK, target.table)]
    assert dict(zip(names, fields(made), strict=True))["children"] is None


# ------------------------------------------------------------ numbers JSON holds inexactly

number_trees = st.recursive(
    st.none() | st.floats() | st.integers() | st.text(alphabet="0123456789x", max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(tree=number_trees)
def test_the_c_number_checks_agree_with_python(tree: Any) -> None:
    data = repr(tree).encode()
    assert _speedups.long_digits(data) == codec._long_digits(data)
    assert _speedups.nonfinite(tree) == codec._nonfinite(tree)


@pytest.mark.parametrize(
    "value",
    [math.nan, [math.inf], {"a": [1, {"b": -math.inf}]}, 2**70 + 1, {"n": -(2**80)}],
)
def test_json_dumps_writes_what_orjson_cannot_as_celery_does(value: Any) -> None:
    data = codec.encode_json_tree(value)
    assert repr(json.loads(data)) == repr(value)


@pytest.mark.parametrize(
    "raw", [b'{"v": 123456789012345678901}', b'{"v": NaN}', b'{"v": [Infinity, -Infinity]}']
)
def test_payloads_orjson_would_change_are_read_exactly(raw: bytes) -> None:
    value, serializer, _ = codec.decode_payload(raw)
    assert serializer == "json"
    assert repr(value) == repr(json.loads(raw))


def test_the_c_row_maker_uses_the_python_column_codes() -> None:
    # The C enum and the column roles of the layout are one definition, checked here
    from resultkit.stores.sql.layout import Role

    assert _speedups.COLUMN_CODES, "the C extension names its column codes"
    assert {role.name: int(role) for role in Role} == _speedups.COLUMN_CODES
