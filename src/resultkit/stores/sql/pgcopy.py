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

import contextlib
import functools
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from ..._native import speedups
from ...codec import encode_json_tree
from ...records import Kind, Record
from ..base import OnConflict, WriteResult
from .layout import BY_NAME, INT_WIDTHS, Role, pickled
from .statements import rows_of, write_by_kind

if TYPE_CHECKING:
    from .celery import SqlStore

__all__ = [
    "SIGNATURE",
    "TRAILER",
    "CopyWriter",
    "Prepared",
    "binary_format",
    "pack_json_row",
    "pack_row",
    "pack_values",
    "row_spec",
]

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # no flags, no extension
TRAILER = struct.pack("!h", -1)

_NULL = struct.pack("!i", -1)
_EPOCH = datetime(2000, 1, 1)  # PostgreSQL's timestamps count microseconds from it

# The C row maker's column codes are layout.Role's (a test compares them).
ROW_ID, ID, TEXT, ENCODED, ENCODED_OPT, ENCODED_IF, TIMESTAMP, INT, NULL_UNLESS = (
    int(role) for role in Role
)

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
            if kind not in INT_WIDTHS:
                return None
            spec.append((ROW_ID, name, INT_WIDTHS[kind]))
            continue
        column = BY_NAME.get(name)
        if column is None or kind not in column.binary:
            return None
        limit = INT_WIDTHS[kind] if column.role is Role.INT else limits.get(name, 0)
        spec.append((int(column.role), column.meta_key, limit))
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
        if kind in INT_WIDTHS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{value!r} is not an integer, as its {kind} column needs")
            width = INT_WIDTHS[kind]
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


# --------------------------------------------------------------- the writer

#: Bytes of binary COPY rows sent at a time.
_COPY_BLOCK = 256 * 1024

#: Column types whose binary form psycopg writes from what rows hold (naive UTC datetimes).
_BINARY_TYPES = frozenset(
    {"int2", "int4", "int8", "varchar", "text", "bpchar", "bytea", "timestamp"}
)


def binary_format(types: dict[str, str], columns: Sequence[str]) -> str:
    """``" (FORMAT BINARY)"`` when every column of a COPY has a type written in binary.

    Binary COPY sends bytes as they are (text COPY doubles them in hex) and
    dates as numbers: a third less work per row than text.
    """
    if all(types.get(c) in _BINARY_TYPES for c in columns):
        return " (FORMAT BINARY)"
    return ""


@dataclass
class Prepared:
    """A batch's binary COPY rows, made ahead by :meth:`CopyWriter.prepare`."""

    kind: Kind
    record_ids: list[str]
    #: The value of each record's id column (none for tables without Celery's sequence).
    ids: list[Any]
    blocks: list[bytearray] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def fits(self, batch: Sequence[Record]) -> bool:
        """True when made of exactly these records, in this order."""
        return (
            len(batch) == len(self.record_ids)
            and all(record.id == made for record, made in zip(batch, self.record_ids, strict=True))
            and all(record.kind is self.kind for record in batch)
        )


@dataclass(frozen=True)
class _Copy:
    """Where one COPY goes: the table, its columns in order, their types, the row ids."""

    table: sa.Table
    names: list[str]
    types: dict[str, str]
    ids: Sequence[int]


class CopyWriter:
    """Batches into Celery's tables on PostgreSQL through psycopg 3's COPY.

    Two ways, chosen by the store: :meth:`write_new`, straight into the table
    (the usual migration into tables without these results), and
    :meth:`upsert`, through a temporary table and one ``INSERT ... ON
    CONFLICT``.  Rows are made by the C row maker where it can, else by the
    store's own :meth:`~resultkit.stores.sql.celery.SqlStore.row`.
    """

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        #: PostgreSQL's column types of each table, by name.
        self._types: dict[str, dict[str, str]] = {}
        #: How binary COPY rows are made, by table and column count (() for: in Python).
        self._specs: dict[tuple[str, int], Spec] = {}

    # ------------------------------------------------------------ the ways
    def prepare(self, records: Sequence[Record]) -> Prepared | None:
        """The batch's binary COPY rows and their ids, made ahead of writing, or
        None when its tables take no binary COPY (the rows are then made when written)."""
        kind = records[0].kind
        if any(record.kind is not kind for record in records):
            return None
        table = self.store.table(kind)
        assert table is not None
        columns = self.store.column_names(kind, table)
        with self.engine.connect() as conn:
            types = self.types(conn, table)
            if not binary_format(types, ["id", *columns]):
                return None
            ids = self._next_ids(conn, table, len(records))
        prepared = Prepared(kind, [r.id for r in records], ids)
        target = _Copy(table, ["id", *columns] if ids else list(columns), types, ids)
        self._blocks(prepared.blocks.append, records, target, prepared.written, prepared.failed)
        return prepared

    def write_new(self, records: Sequence[Record], prepared: object | None) -> WriteResult | None:
        """COPY straight into the tables, in one transaction; None, with nothing
        written, when a record of the batch is stored there already (then the
        caller upserts the batch instead)."""
        import psycopg

        direct = functools.partial(self._direct, prepared=prepared)
        try:
            return write_by_kind(self.engine, records, OnConflict.SKIP, direct)
        except psycopg.errors.UniqueViolation:
            return None  # the transaction rolled back: nothing of the batch was written

    def upsert(
        self,
        conn: sa.Connection,
        kind: Kind,
        batch: list[Record],
        on_conflict: OnConflict,
        outcome: WriteResult,
    ) -> None:
        """COPY the batch into a temporary table, then one upsert from it."""
        table = self.store.table(kind)
        assert table is not None
        columns = self.store.column_names(kind, table)
        preparer = self.engine.dialect.identifier_preparer
        key = "task_id" if kind is Kind.TASK else "taskset_id"
        quoted = ", ".join(preparer.quote(c) for c in columns)
        target = preparer.format_table(table)
        driver = conn.connection.driver_connection
        assert driver is not None
        sequence = self._sequence(table)
        types = self.types(conn, table)
        rows = rows_of(batch, lambda record: self.store.row(record, table), outcome)
        if not rows:
            return
        temp = preparer.quote(f"_resultkit_copy_{kind.value}")
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {temp} ON COMMIT DROP AS "
            f"SELECT {quoted} FROM {target} WITH NO DATA"
        )
        with self._copy(driver, temp, columns, types) as copy:
            for row in rows.values():
                copy.write_row(row)
        id_column, id_value = "", ""
        if sequence is not None:
            id_column = "id, "
            id_value = f"nextval('{sequence}'), "
        statement = (
            f"INSERT INTO {target} ({id_column}{quoted}) SELECT {id_value}{quoted} FROM {temp} "
            f"ON CONFLICT ({preparer.quote(key)}) "
        )
        if on_conflict is OnConflict.SKIP:
            statement += "DO NOTHING"
        else:
            assignments = ", ".join(
                f"{preparer.quote(c)} = EXCLUDED.{preparer.quote(c)}" for c in columns if c != key
            )
            statement += f"DO UPDATE SET {assignments}"
            if on_conflict is OnConflict.NEWER:
                statement += (
                    f" WHERE EXCLUDED.date_done IS NOT NULL AND ({target}.date_done IS NULL "
                    f"OR EXCLUDED.date_done > {target}.date_done)"
                )
        written = {
            r[0] for r in conn.exec_driver_sql(statement + f" RETURNING {preparer.quote(key)}")
        }
        for result_id in rows:
            (outcome.written if result_id in written else outcome.skipped).append(result_id)

    # ------------------------------------------------------------ the parts
    def types(self, conn: sa.Connection, table: sa.Table) -> dict[str, str]:
        """PostgreSQL's type of each column of *table*, by name, for a binary COPY."""
        types = self._types.get(table.name)
        if types is None:
            target = self.engine.dialect.identifier_preparer.format_table(table)
            rows = conn.exec_driver_sql(
                "SELECT a.attname, t.typname FROM pg_attribute a "
                "JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                {"table": target},
            )
            types = self._types[table.name] = {str(row[0]): str(row[1]) for row in rows}
        return types

    def _next_ids(self, conn: sa.Connection, table: sa.Table, count: int) -> list[Any]:
        """*count* ids from the table's id sequence; none when it has no sequence."""
        sequence = self._sequence(table)
        if sequence is None:
            return []
        # One row holding every id: far cheaper to fetch than one row per id.
        ids: list[Any] = conn.exec_driver_sql(
            f"SELECT array_agg(nextval('{sequence}')) FROM generate_series(1, {count})"
        ).scalar_one()
        return ids

    def _sequence(self, table: sa.Table) -> str | None:
        """The quoted name of the sequence Celery's model draws ids from, if any."""
        id_default = table.c.id.default
        if not isinstance(id_default, sa.Sequence):
            return None
        return str(self.engine.dialect.identifier_preparer.format_sequence(id_default))

    @contextlib.contextmanager
    def _copy(
        self, driver: Any, target: str, names: Sequence[str], types: dict[str, str]
    ) -> Iterator[Any]:
        """A COPY of the columns *names* into *target*: binary when every one has a
        binary form (:func:`binary_format`), text otherwise."""
        listed = ", ".join(self.engine.dialect.identifier_preparer.quote(n) for n in names)
        binary = binary_format(types, names)
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {target} ({listed}) FROM STDIN{binary}") as copy,
        ):
            if binary:
                copy.set_types([types[n] for n in names])
            yield copy

    def _direct(
        self,
        conn: sa.Connection,
        kind: Kind,
        batch: list[Record],
        on_conflict: OnConflict,
        outcome: WriteResult,
        *,
        prepared: object | None,
    ) -> None:
        """COPY straight into the table (a duplicate raises psycopg's UniqueViolation).

        The rows are those *prepared* (when made of this batch), or made just
        before they are written, so that a batch's rows are never all alive at once.
        """
        ready = prepared if isinstance(prepared, Prepared) and prepared.fits(batch) else None
        table = self.store.table(kind)
        assert table is not None
        columns = self.store.column_names(kind, table)
        driver = conn.connection.driver_connection
        assert driver is not None
        name = self.engine.dialect.identifier_preparer.format_table(table)
        types = self.types(conn, table)
        written: list[str] = []
        failed: dict[str, str] = {}
        ids = ready.ids if ready else self._next_ids(conn, table, len(batch))
        target = _Copy(table, ["id", *columns] if ids else list(columns), types, ids)
        with self._copy(driver, name, target.names, types) as copy:
            if ready is not None:
                for block in ready.blocks:
                    copy.write(block)
                written, failed = ready.written, ready.failed
            elif binary_format(types, target.names):
                self._blocks(copy.write, batch, target, written, failed)
            else:
                for at, record in enumerate(batch):
                    try:
                        row = self.store.row(record, table)
                    except Exception as exc:
                        failed[record.id] = str(exc)
                        continue
                    copy.write_row((ids[at], *row) if ids else row)
                    written.append(record.id)
        outcome.written.extend(written)
        outcome.failed.update(failed)

    def _spec(self, kind: Kind, target: _Copy) -> Spec:
        spec = self._specs.get((target.table.name, len(target.names)))
        if spec is None:
            limits = {name: limit for _, name, limit in self.store.text_limits(target.table)}
            spec = self._specs[(target.table.name, len(target.names))] = (
                row_spec(target.names, target.types, limits if kind is Kind.TASK else {}) or ()
            )
        return spec

    def _blocks(
        self,
        write: Callable[[bytearray], object],
        batch: Sequence[Record],
        target: _Copy,
        written: list[str],
        failed: dict[str, str],
    ) -> None:
        """Write *batch* as binary COPY blocks.

        A row is made in C from the record's stored JSON when it is unchanged
        and not decoded yet, else from its meta; a row C declines is made by
        the store's :meth:`row`, which also refuses what cannot be stored.
        """
        kind = batch[0].kind
        # The older layout's rows are made by the store's row(), which pickles only what
        # Celery pickled there.
        spec = () if self.store.legacy else self._spec(kind, target)
        ids = target.ids
        kinds = [target.types[n] for n in target.names]
        store = self.store
        encoder_for = store.codec.encoder_for
        legacy = store.legacy
        out = bytearray(SIGNATURE)
        for at, record in enumerate(batch):
            row_id = ids[at] if ids else None
            encode = pickled if legacy else encoder_for(record)
            # A group without a date is made by row() below, which dates it.
            undated = kind is Kind.GROUP and not (record.peek() or {}).get("date_done")
            if (
                not undated
                and encode is encode_json_tree
                and spec
                and record.undecoded
                and record.compression is None
                and record.envelope is None
                and record.raw is not None
                and pack_json_row(out, spec, record.id, record.raw, row_id)
            ):
                # Stored JSON, unchanged: the row is made from it as it is.
                written.append(record.id)
            else:
                meta = record.peek()
                # orjson itself for plain JSON: the bytes are copied into the block at once.
                fast = orjson.dumps if encode is encode_json_tree else encode
                if undated or not (
                    meta and spec and pack_row(out, spec, record.id, meta, fast, row_id)
                ):
                    try:
                        row = store.row(record, target.table)
                        out += pack_values((row_id, *row) if ids else row, kinds)
                    except Exception as exc:
                        failed[record.id] = str(exc)
                        continue
                written.append(record.id)
            if len(out) >= _COPY_BLOCK:
                write(out)
                out = bytearray()
        out += TRAILER
        write(out)
