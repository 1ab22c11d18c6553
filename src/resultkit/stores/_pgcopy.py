"""Rows of a PostgreSQL binary COPY, made by resultkit itself.

psycopg's ``write_row`` adapts every value through its dumpers: a few
microseconds a row, as much as making the row.  Celery's tables hold only
text, bytes, integers and one timestamp, whose binary forms are simple, so
the SQL store writes whole blocks in the binary COPY format
(https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4):
the signature, then per row a 16-bit field count and each field as a 32-bit
length (-1 for NULL) and its bytes, then the trailer.

:data:`pack_row` (the C extension's) makes a row straight from a record's
meta for the columns a :func:`row_spec` describes, and declines (returns
False) any value it does not write itself; the store then makes that row in
Python with :func:`pack_values`, which is also used for every row when the
extension is not built.  :data:`pack_json_row` makes the same row from the
meta's stored JSON, for a record not decoded yet: the encoded columns take
their values' JSON text as stored, with no Python objects made for them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .._native import speedups

__all__ = ["SIGNATURE", "TRAILER", "pack_json_row", "pack_row", "pack_values", "row_spec"]

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # no flags, no extension
TRAILER = struct.pack("!h", -1)

_NULL = struct.pack("!i", -1)
_EPOCH = datetime(2000, 1, 1)  # PostgreSQL's timestamps count microseconds from it
_INT_WIDTHS = {"int2": 2, "int4": 4, "int8": 8}
_TEXT = frozenset({"varchar", "text", "bpchar"})

# Column codes of a row spec: the C row maker's (_speedups.COLUMN_CODES), checked by a test.
ROW_ID, ID, TEXT, ENCODED, ENCODED_OPT, ENCODED_IF, TIMESTAMP, INT, NULL_UNLESS = range(9)

#: What each of Celery's columns holds, and the PostgreSQL types it is written
#: as here: (code, types).  Any other type makes the whole row in Python.
_ROLES: dict[str, tuple[int, frozenset[str]]] = {
    "task_id": (ID, _TEXT),
    "taskset_id": (ID, _TEXT),
    "status": (TEXT, _TEXT),
    "traceback": (TEXT, _TEXT),
    "name": (TEXT, _TEXT),
    "worker": (TEXT, _TEXT),
    "queue": (TEXT, _TEXT),
    "result": (ENCODED, frozenset({"bytea"})),
    "children": (ENCODED_IF, frozenset({"bytea"})),
    "args": (ENCODED_OPT, frozenset({"bytea"})),
    "kwargs": (ENCODED_OPT, frozenset({"bytea"})),
    "stamps": (NULL_UNLESS, frozenset({"bytea"})),
    "date_done": (TIMESTAMP, frozenset({"timestamp"})),
    "retries": (INT, frozenset(_INT_WIDTHS)),
}
#: The meta key a column is read from, where it is not the column's name.
_KEYS = {"stamps": "stamped_headers"}

Spec = tuple[tuple[int, str, int], ...]


def row_spec(columns: Sequence[str], types: dict[str, str], limits: dict[str, int]) -> Spec | None:
    """The spec :data:`pack_row` makes rows of *columns* by, or None when one of
    them is of a type it does not write (then every row is made in Python).

    *types* are the columns' PostgreSQL types, *limits* the lengths of the
    text columns that have one (a longer text is declined, so that Python
    reports it).  An ``id`` column takes the row id given to :data:`pack_row`.
    """
    spec = []
    for name in columns:
        kind = types.get(name, "")
        if name == "id":
            if kind not in _INT_WIDTHS:
                return None
            spec.append((ROW_ID, name, _INT_WIDTHS[kind]))
            continue
        code, accepted = _ROLES.get(name, (-1, frozenset()))
        if kind not in accepted:
            return None
        limit = _INT_WIDTHS[kind] if code == INT else limits.get(name, 0)
        spec.append((code, _KEYS.get(name, name), limit))
    return tuple(spec)


def pack_values(values: Sequence[Any], types: Sequence[str]) -> bytes:
    """One binary COPY row of *values*, each written as its column's type.

    Raises ValueError for a value that the column's type cannot hold.
    """
    parts = [struct.pack("!h", len(values))]
    for value, kind in zip(values, types, strict=True):
        if value is None:
            parts.append(_NULL)
            continue
        if kind in _INT_WIDTHS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{value!r} is not an integer, as its {kind} column needs")
            width = _INT_WIDTHS[kind]
            try:
                data = value.to_bytes(width, "big", signed=True)
            except OverflowError:
                raise ValueError(f"{value} does not fit its {kind} column") from None
        elif kind == "timestamp":
            if not isinstance(value, datetime) or value.tzinfo is not None:
                raise ValueError(f"{value!r} is not a naive UTC datetime")
            data = struct.pack("!q", (value - _EPOCH) // _MICROSECOND)
        elif isinstance(value, str):
            data = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        else:
            raise ValueError(f"{type(value).__name__} value for a {kind} column")
        parts.append(struct.pack("!i", len(data)))
        parts.append(data)
    return b"".join(parts)


def _pack_row_declined(
    out: bytearray, spec: Spec, record_id: str, meta: dict[str, Any], encode: Any, row_id: Any
) -> bool:
    return False  # without the C extension every row is made in Python


def _pack_json_row_declined(
    out: bytearray, spec: Spec, record_id: str, raw: bytes, row_id: Any
) -> bool:
    return False


_MICROSECOND = datetime(2000, 1, 1, 0, 0, 0, 1) - _EPOCH

pack_row: Callable[[bytearray, Spec, str, dict[str, Any], Any, Any], bool]
pack_json_row: Callable[[bytearray, Spec, str, bytes, Any], bool]
if speedups is not None:
    pack_row, pack_json_row = speedups.pack_row, speedups.pack_json_row
else:
    pack_row, pack_json_row = _pack_row_declined, _pack_json_row_declined
