"""COPY rows made in C, differential: from a meta's stored JSON
(``pack_json_row``, which reads the JSON itself) and from the decoded meta
(``pack_row``), against the row the SQL store makes in Python.

C may always decline (then Python makes the row); a row it makes must be the
Python row, and it must decline whatever Python refuses.  The JSON checks
``long_digits`` and ``nonfinite`` must answer as their Python twins.
"""

from __future__ import annotations

import json
import struct
import tempfile
from functools import cache
from typing import Any

from _common import agree, canon, fuzz, instrumented, require_speedups

with instrumented(__name__):
    import orjson

    from resultkit import codec
    from resultkit.records import Kind, Payload, Record
    from resultkit.stores import open_store
    from resultkit.stores.sql.pgcopy import pack_values, row_spec

ROW_ID = 41
#: PostgreSQL's types of Celery's extended task table, as the store reads them.
PG_TYPES = {
    "id": "int4",
    "task_id": "varchar",
    "status": "varchar",
    "result": "bytea",
    "traceback": "text",
    "date_done": "timestamp",
    "children": "bytea",
    "name": "varchar",
    "args": "bytea",
    "kwargs": "bytea",
    "worker": "varchar",
    "retries": "int4",
    "queue": "varchar",
    "stamps": "bytea",
}
ENCODED = {"result", "children", "args", "kwargs", "stamps"}


@cache
def target() -> tuple[Any, Any, Any, list[str], list[str]]:
    """The SQL store's task table (on SQLite: the row is made the same way),
    and the spec of its PostgreSQL twin."""
    folder = tempfile.mkdtemp(prefix="resultkit-fuzz-")
    store = open_store(f"db+sqlite:///{folder}/rows.sqlite3")
    store.ensure_tables()
    table = store.table(Kind.TASK)
    names = ["id", *store.column_names(Kind.TASK, table)]
    limits = {name: limit for _, name, limit in store.text_limits(table)}
    spec = row_spec(names, PG_TYPES, limits)
    assert spec is not None
    return store, table, spec, names, [PG_TYPES[n] for n in names]


def fields(row: bytes) -> list[bytes | None]:
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
    if at != len(row):
        raise AssertionError(f"a row of {len(row)} bytes holds {at}")
    return out


def python_row(meta: Any) -> bytes | None:
    """The row the store makes in Python; None when it refuses the record."""
    store, table, _, _, kinds = target()
    try:
        return pack_values(
            (ROW_ID, *store.row(Record(Kind.TASK, "t-1", Payload(meta)), table)), kinds
        )
    except (ValueError, TypeError):
        return None


def made(call: Any, *args: Any) -> bytes | None:
    out = bytearray(b"before")
    if not call(out, *args):
        if out != b"before":
            raise AssertionError(f"declined, but wrote {bytes(out)!r:.200}")
        return None
    if out[:6] != b"before":
        raise AssertionError("overwrote what the buffer held")
    return bytes(out[6:])


def same_rows(data: bytes, left: bytes, right: bytes | None) -> None:
    """Equal rows; the JSON columns equal as values (their text may differ in form)."""
    if right is None:
        raise AssertionError(f"C made a row of {data[:200]!r}, which Python refuses")
    names = target()[3]
    for name, a, b in zip(names, fields(left), fields(right), strict=True):
        if name in ENCODED and a is not None and b is not None:
            a, b = canon(json.loads(a)), canon(json.loads(b))
        agree(f"column {name}", data, a, b)


def check(data: bytes) -> None:
    speedups = require_speedups()
    agree("long_digits", data, speedups.long_digits(data), codec._long_digits(data))
    _, _, spec, _, _ = target()
    from_json = made(speedups.pack_json_row, spec, "t-1", data, ROW_ID)
    try:
        meta = json.loads(data)  # the standard library, as Celery's JSON reads stored text
    except (ValueError, RecursionError):
        if from_json is not None:
            raise AssertionError(
                f"C made a row of JSON Python cannot read: {data[:200]!r}"
            ) from None
        return
    agree("nonfinite", data, _nonfinite(speedups, meta), _nonfinite(codec, meta))
    if type(meta) is not dict:
        if from_json is not None:
            raise AssertionError(f"C made a row of a meta that is no object: {data[:200]!r}")
        return
    expected = python_row(meta)
    if from_json is not None:
        same_rows(data, from_json, expected)
    from_meta = made(speedups.pack_row, spec, "t-1", meta, orjson.dumps, ROW_ID)
    if from_meta is not None:
        if expected is None:
            raise AssertionError(f"C made a row of {data[:200]!r}, which Python refuses")
        agree("pack_row", data, from_meta, expected)


def _nonfinite(module: Any, tree: Any) -> Any:
    try:
        return module.nonfinite(tree) if module is not codec else codec._nonfinite(tree)
    except RecursionError:
        return "too deep"


if __name__ == "__main__":
    fuzz(check)
