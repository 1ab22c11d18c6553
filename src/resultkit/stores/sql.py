"""Results in Celery's SQL tables (PostgreSQL, MySQL/MariaDB, SQLite).

The tables are Celery's ``celery_taskmeta`` and ``celery_tasksetmeta``, with
the names and schemas of ``database_table_names`` and
``database_table_schemas``.  Existing tables are reflected, so every layout
Celery 5.4 to 5.7 created is read and written as it is: with or without the
extended columns, and the older layout whose ``result`` column holds a pickle
and which has no ``children`` column.  Missing tables are created from
Celery's own model definitions.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import defer

from .._celery_compat import decode_stored_result, pickle_group, unpickle_group
from ..codec import NOT_READ, PickleRefused, encode_json_tree, json_at_once
from ..errors import SerializationError
from ..purge import BeforeDelete, PurgeOutcome, PurgePlan, purge_table, sql_expired
from ..records import EXTENDED_FIELDS, Kind, Record, as_datetime, naive_utc
from ..summary import Summary, sealed_key_counts, sql_summary
from ._pgcopy import SIGNATURE, TRAILER, Spec, pack_json_row, pack_row, pack_values, row_spec
from ._sql import (
    IN_CHUNK_ROWS,
    create_missing,
    delete_ids,
    read_ids,
    rows_of,
    state_counts,
    transient_error,
    upsert_rows,
    write_by_kind,
)
from .base import OnConflict, Page, Store, WriteResult

__all__ = ["SqlStore", "celery_table_names"]


def celery_table_names(conf: Any) -> dict[Kind, tuple[str | None, str]]:
    """(schema, table) of Celery's task and group tables, from the app's settings."""
    names = conf.database_table_names or {}
    schemas = conf.database_table_schemas or {}
    return {
        Kind.TASK: (schemas.get("task"), names.get("task", "celery_taskmeta")),
        Kind.GROUP: (schemas.get("group"), names.get("group", "celery_tasksetmeta")),
    }


def _pickle(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_group(value: Any) -> bytes:
    return _pickle(None) if value is None else pickle_group(value)  # type: ignore[return-value]


class SqlStore(Store):
    layout = "sql"
    # Reading must leave the tables as they are: Celery 5.5+ creates them when its
    # backend is made, and 5.7 also adds its newer columns to existing ones.
    celery_reader_settings: ClassVar[dict[str, Any]] = {"database_create_tables_at_setup": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.url.split("+", 1)[1] if self.url.startswith(("db+", "database+")) else self.url
        url = url.split("+", 1)[1] if url.startswith("resultkit-db+") else url
        self.sqlalchemy_url = url
        options = dict(self.app.conf.database_engine_options or {})
        options.setdefault("pool_pre_ping", True)
        self.engine = sa.create_engine(url, **options)
        self.names = celery_table_names(self.app.conf)
        self._tables: dict[Kind, sa.Table | None] = {}
        #: Held while the tables are made (a migration's reading thread may make them too).
        self._creating = threading.Lock()
        self._limits: dict[str, tuple[tuple[int, str, int], ...]] = {}
        self._layouts: dict[str, tuple[bool, tuple[str, ...], bool]] = {}
        #: PostgreSQL's column types of each table, by name (for binary COPY).
        self._types: dict[str, dict[str, str]] = {}
        #: How binary COPY rows are made, by table and column count (() for: in Python).
        self._specs: dict[tuple[str, int], Spec] = {}

    def transient(self, exc: BaseException) -> bool:
        return transient_error(self.engine, exc)

    # -------------------------------------------------------------- tables
    def table(self, kind: Kind) -> sa.Table | None:
        """The reflected table of *kind*, or None when it does not exist."""
        if kind not in self._tables:
            self._tables[kind] = self._reflect(kind)
        return self._tables[kind]

    def _reflect(self, kind: Kind) -> sa.Table | None:
        """The table as it is: its columns and, when the database has it, Celery's id sequence.

        Only the columns are read (full reflection costs ten catalog queries
        more), and Celery's models are not needed for a table that exists.
        """
        schema, name = self.names[kind]
        inspector = sa.inspect(self.engine)
        if not inspector.has_table(name, schema=schema):
            return None
        sequence_name = "task_id_sequence" if kind is Kind.TASK else "taskset_id_sequence"
        has_sequence = self.engine.dialect.supports_sequences and inspector.has_sequence(
            sequence_name, schema=schema
        )
        columns = []
        for column in inspector.get_columns(name, schema=schema):
            if column["name"] == "id":
                if has_sequence:
                    # Celery's model draws ids from this sequence (no server default).
                    sequence = sa.Sequence(sequence_name, schema=schema)
                    columns.append(sa.Column("id", column["type"], sequence, primary_key=True))
                else:
                    columns.append(
                        sa.Column("id", column["type"], primary_key=True, autoincrement=True)
                    )
            else:
                columns.append(sa.Column(column["name"], column["type"]))
        return sa.Table(name, sa.MetaData(), *columns, schema=schema)

    def _model_table(self, kind: Kind) -> sa.Table:
        from celery.backends.database.models import TaskExtended, TaskSet

        schema, name = self.names[kind]
        source = TaskExtended.__table__ if kind is Kind.TASK else TaskSet.__table__
        table: sa.Table = source.to_metadata(sa.MetaData(), schema=schema, name=name)
        id_default = table.c.id.default
        if isinstance(id_default, sa.Sequence):
            id_default.schema = schema
        return table

    def ensure_tables(self) -> None:
        """Create the tables (Celery's extended layout, with the date_done index) if missing."""
        with self._creating:
            missing = [kind for kind in (Kind.TASK, Kind.GROUP) if self.table(kind) is None]
            if missing:
                create_missing(self.engine, [self._model_table(kind) for kind in missing])
                for kind in missing:
                    self._tables.pop(kind, None)

    @property
    def legacy(self) -> bool:
        """True for the older layout: a pickled ``result`` and no ``children`` column."""
        table = self.table(Kind.TASK)
        return table is not None and not self._layout(table)[0]

    @property
    def extended(self) -> bool:
        table = self.table(Kind.TASK)
        return table is not None and "name" in table.c

    @property
    def extended_fields(self) -> tuple[str, ...]:
        return EXTENDED_FIELDS if self.extended else ()

    # ---------------------------------------------------------- decoding
    def _decode_column(
        self, value: Any, record: Record | None = None
    ) -> tuple[Any, str, str | None]:
        """Decode one column; with *record*, note the payload's format on it."""
        payload = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value
        tree = json_at_once(payload, self.codec.hint)  # without the layers below: per column
        if tree is not NOT_READ:
            return tree, self.codec.hint, None
        try:
            if record is not None:
                decoded = self.codec.decode_into(payload, record)
                return decoded, record.serializer, record.compression
            return self.codec.decode(payload)
        except PickleRefused:
            raise
        except SerializationError:
            if self.legacy and isinstance(payload, bytes) and payload[:1] == b"\x80":
                if not self.codec.accept_pickle:
                    raise PickleRefused() from None
                return pickle.loads(payload), "pickle", None
            raise

    def _record(self, kind: Kind, row: Any) -> Record:
        """The record of one row (a Row, or a plain dict of its columns)."""
        mapping = row if isinstance(row, dict) else row._asdict()
        if kind is Kind.GROUP:
            record = Record(Kind.GROUP, mapping["taskset_id"], None, position=mapping["id"])
            try:
                payload = mapping["result"]
                if self.legacy and bytes(payload or b"")[:1] == b"\x80":
                    # The older layout pickles the GroupResult object; its tuple is what
                    # every other layout stores, in the app's serializer.
                    if not self.codec.accept_pickle:
                        raise PickleRefused()
                    value, record.serializer = unpickle_group(bytes(payload)), self.codec.hint
                else:
                    value, record.serializer, record.compression = self._decode_column(
                        payload, record
                    )
                record.meta = {"result": value, "date_done": as_datetime(mapping["date_done"])}
            except SerializationError as exc:
                record.error = str(exc)
            return record
        record = Record(Kind.TASK, mapping["task_id"], None, position=mapping["id"])
        meta: dict[str, Any] = {
            "task_id": mapping["task_id"],
            "status": mapping["status"],
            "traceback": mapping["traceback"],
            "date_done": as_datetime(mapping["date_done"]),
            "children": None,
        }
        try:
            result = mapping["result"]
            if result is not None:
                meta["result"], record.serializer, record.compression = self._decode_column(
                    result, record
                )
                if self.legacy and record.serializer == "pickle":
                    # The old PickleType column pickled every result, whatever the
                    # app's serializer; the result itself was never "a pickle result".
                    record.serializer = self.codec.hint
            else:
                meta["result"] = None
            if mapping.get("children") is not None:
                meta["children"] = self._decode_column(mapping["children"])[0]
            if "name" in mapping:
                for name in EXTENDED_FIELDS:
                    value = mapping.get(name)
                    if name in ("args", "kwargs") and value is not None:
                        value = self._decode_column(value)[0]
                    meta[name] = value
        except SerializationError as exc:
            record.error = str(exc)
            if isinstance(exc, PickleRefused):
                record.serializer = "pickle"
            return record
        record.meta = meta
        return record

    # ---------------------------------------------------------- encoding
    def _encoder(self, record: Record) -> Callable[[Any], bytes]:
        """The function that encodes this record's values for a column."""
        if not self.legacy:
            return self.codec.encoder_for(record)
        return _pickle_group if record.kind is Kind.GROUP else _pickle

    def _layout(self, table: sa.Table) -> tuple[bool, tuple[str, ...], bool]:
        """Which optional columns the table has: children, extended fields, stamps."""
        layout = self._layouts.get(table.name)
        if layout is None:
            names = set(table.c.keys())
            layout = self._layouts[table.name] = (
                "children" in names,
                tuple(n for n in EXTENDED_FIELDS if n in names),
                "stamps" in names,
            )
        return layout

    def _columns(self, kind: Kind, table: sa.Table) -> tuple[str, ...]:
        """The columns :meth:`_row` fills, in the order of its values."""
        if kind is Kind.GROUP:
            return ("taskset_id", "result", "date_done")
        has_children, extended, has_stamps = self._layout(table)
        return (
            "task_id",
            "status",
            "result",
            "traceback",
            "date_done",
            *(("children",) if has_children else ()),
            *extended,
            *(("stamps",) if has_stamps else ()),
        )

    def _row(self, record: Record, table: sa.Table) -> tuple[Any, ...]:
        """The values of *record* for :meth:`_columns` (a tuple: rows are many)."""
        meta = record.meta
        if meta is None:
            raise ValueError(record.error or "the record has no readable payload")
        get = meta.get
        done = naive_utc(get("date_done"))
        if record.kind is Kind.GROUP:
            # Celery's Redis backend keeps no date in a group: without one, the row would
            # never expire. It gets the time it is copied, as Celery's own SQL backend
            # dates a group by the time it is saved.
            return (record.id, self._encoder(record)(get("result")), done or _utc_now())
        has_children, extended, has_stamps = self._layout(table)
        encode = self.codec.encoder_for(record)
        # Without a children column, the task table is the older layout: its result column
        # pickles the value, while args and kwargs are in the app's serializer all the same.
        encode_result = encode if has_children else _pickle
        row = [record.id, get("status"), encode_result(get("result")), get("traceback"), done]
        if has_children:
            children = get("children")
            row.append(encode(children) if children else None)
        for name in extended:
            value = get(name)
            row.append(encode(value) if value is not None and name in _ENCODED else value)
        if has_stamps:
            stamped = get("stamped_headers")
            row.append(
                encode({"stamped_headers": stamped, "stamps": {h: get(h) for h in stamped}})
                if stamped
                else None
            )
        self._check_sizes(row, table)
        return tuple(row)

    def _text_limits(self, table: sa.Table) -> tuple[tuple[int, str, int], ...]:
        """(index in a task row, name, length) of each task column of limited length."""
        limits = self._limits.get(table.name)
        if limits is None:
            lengths = {
                c.name: int(c.type.length)
                for c in table.columns
                if isinstance(c.type, sa.String) and c.type.length
            }
            columns = self._columns(Kind.TASK, table)
            limits = self._limits[table.name] = tuple(
                (at, name, lengths[name]) for at, name in enumerate(columns) if name in lengths
            )
        return limits

    def _check_sizes(self, row: list[Any], table: sa.Table) -> None:
        """Refuse a task row whose text is longer than its column (the record fails alone)."""
        for at, name, length in self._text_limits(table):
            value = row[at]
            if value.__class__ is str and len(value) > length:
                raise ValueError(
                    f"{name} is {len(value)} characters, longer than the {length} of "
                    f"{table.name}.{name}"
                )

    # ----------------------------------------------------------- primitives
    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def _id_column(self, kind: Kind, table: sa.Table) -> sa.Column[Any]:
        return table.c.task_id if kind is Kind.TASK else table.c.taskset_id

    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        table = self.table(kind)
        if table is None:
            return Page([], None)
        query = sa.select(table).order_by(table.c.id).limit(limit)
        if cursor is not None:
            query = query.where(table.c.id > cursor)
        with self.engine.connect() as conn:
            result = conn.execute(query)
            columns = tuple(result.keys())
            rows = result.all()
        # Plain dicts: far cheaper to read than SQLAlchemy's row mappings.
        records = [self._record(kind, dict(zip(columns, row, strict=True))) for row in rows]
        next_cursor = records[-1].position if len(rows) == limit else None
        return Page(records, next_cursor)

    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        table = self.table(kind)
        if table is None or not ids:
            return {}
        return read_ids(
            self.engine, table, self._id_column(kind, table), ids, lambda r: self._record(kind, r)
        )

    def write_many(self, records: Sequence[Record], on_conflict: OnConflict) -> WriteResult:
        return self.write_prepared(records, on_conflict, None)

    def write_prepared(
        self, records: Sequence[Record], on_conflict: OnConflict, prepared: object | None
    ) -> WriteResult:
        if not records:
            return WriteResult()
        self.ensure_tables()
        if self._copies and on_conflict is OnConflict.SKIP:
            # Straight into the table, the usual case of a migration.  When a
            # record is stored already (or meanwhile, by a worker), that
            # transaction rolls back and the batch is upserted instead.
            direct = functools.partial(self._write_kind, prepared=prepared, direct=True)
            with contextlib.suppress(_Conflict):
                return write_by_kind(self.engine, records, on_conflict, direct)
        return write_by_kind(self.engine, records, on_conflict, self._write_kind)

    @property
    def _copies(self) -> bool:
        """True on PostgreSQL through psycopg 3: batches are written with COPY."""
        return self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg"

    @property
    def concurrent_writes(self) -> bool:
        """PostgreSQL: one batch's COPY streams while the one before commits."""
        return self._copies

    def prepare(self, records: Sequence[Record], on_conflict: OnConflict) -> object | None:
        """PostgreSQL: the batch's binary COPY rows and their ids, made ahead.

        Writing a batch then sends them and waits for PostgreSQL to store them,
        while the next batch is read and prepared.  Only for the usual
        migration into tables without these records (``skip``), and tables of
        types that binary COPY writes; anything else is made when written.
        """
        if not records or on_conflict is not OnConflict.SKIP or not self._copies:
            return None
        kind = records[0].kind
        if any(record.kind is not kind for record in records):
            return None
        self.ensure_tables()
        table = self.table(kind)
        assert table is not None
        columns = self._columns(kind, table)
        with self.engine.connect() as conn:
            types = self._binary_types(conn, table)
            if not _binary(types, ["id", *columns]):
                return None
            ids = self._next_ids(conn, table, len(records))
        prepared = _Prepared(kind, [r.id for r in records], ids)
        names = ["id", *columns] if ids else columns
        self._copy_blocks(
            prepared.blocks.append,
            records,
            table,
            names,
            types,
            ids,
            prepared.written,
            prepared.failed,
        )
        return prepared

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

    def _write_kind(
        self,
        conn: sa.Connection,
        kind: Kind,
        batch: list[Record],
        on_conflict: OnConflict,
        outcome: WriteResult,
        *,
        prepared: object | None = None,
        direct: bool = False,
    ) -> None:
        table = self.table(kind)
        assert table is not None
        id_column = self._id_column(kind, table)
        columns = self._columns(kind, table)
        if direct:
            ready = prepared if isinstance(prepared, _Prepared) and prepared.fits(batch) else None
            self._copy_direct(conn, table, columns, batch, outcome, ready)
            return
        if self._copies:
            self._copy_upsert(conn, kind, table, columns, batch, on_conflict, outcome)
            return
        rows = rows_of(batch, lambda record: self._row(record, table), outcome)
        if not rows:
            return
        named = {rid: dict(zip(columns, row, strict=True)) for rid, row in rows.items()}
        upsert_rows(conn, table, id_column, named, on_conflict, outcome)

    def _binary_types(self, conn: sa.Connection, table: sa.Table) -> dict[str, str]:
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

    def _copy_upsert(
        self,
        conn: sa.Connection,
        kind: Kind,
        table: sa.Table,
        columns: Sequence[str],
        batch: list[Record],
        on_conflict: OnConflict,
        outcome: WriteResult,
    ) -> None:
        """PostgreSQL: COPY the batch into a temporary table, then one upsert from it."""
        preparer = self.engine.dialect.identifier_preparer
        key = "task_id" if kind is Kind.TASK else "taskset_id"
        quoted = ", ".join(preparer.quote(c) for c in columns)
        target = preparer.format_table(table)
        driver = conn.connection.driver_connection
        assert driver is not None
        sequence = self._sequence(table)
        types = self._binary_types(conn, table)
        rows = rows_of(batch, lambda record: self._row(record, table), outcome)
        if not rows:
            return
        temp = preparer.quote(f"_resultkit_copy_{kind.value}")
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {temp} ON COMMIT DROP AS "
            f"SELECT {quoted} FROM {target} WITH NO DATA"
        )
        with self._copy_into(driver, temp, columns, types) as copy:
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

    @contextlib.contextmanager
    def _copy_into(
        self, driver: Any, target: str, names: Sequence[str], types: dict[str, str]
    ) -> Iterator[Any]:
        """A COPY of the columns *names* into *target*: binary when every one has a
        binary form (:func:`_binary`), text otherwise."""
        listed = ", ".join(self.engine.dialect.identifier_preparer.quote(n) for n in names)
        binary = _binary(types, names)
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {target} ({listed}) FROM STDIN{binary}") as copy,
        ):
            if binary:
                copy.set_types([types[n] for n in names])
            yield copy

    def _copy_direct(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        batch: list[Record],
        outcome: WriteResult,
        prepared: _Prepared | None,
    ) -> None:
        """COPY straight into the table; raise :class:`_Conflict` when a record of
        the batch is stored already (the transaction is then unusable).

        The common case of a migration into a new table, at COPY speed.  The
        rows are those *prepared*, or made just before they are written, so
        that a batch's rows are never all alive at once.
        """
        import psycopg

        driver = conn.connection.driver_connection
        assert driver is not None
        target = self.engine.dialect.identifier_preparer.format_table(table)
        types = self._binary_types(conn, table)
        written: list[str] = []
        failed: dict[str, str] = {}
        try:
            ids = prepared.ids if prepared else self._next_ids(conn, table, len(batch))
            names = ["id", *columns] if ids else columns
            with self._copy_into(driver, target, names, types) as copy:
                if prepared is not None:
                    for block in prepared.blocks:
                        copy.write(block)
                    written, failed = prepared.written, prepared.failed
                elif _binary(types, names):
                    self._copy_blocks(copy.write, batch, table, names, types, ids, written, failed)
                else:
                    write = copy.write_row
                    for at, record in enumerate(batch):
                        try:
                            row = self._row(record, table)
                        except Exception as exc:
                            failed[record.id] = str(exc)
                            continue
                        write((ids[at], *row) if ids else row)
                        written.append(record.id)
        except psycopg.errors.UniqueViolation as exc:
            raise _Conflict() from exc
        outcome.written.extend(written)
        outcome.failed.update(failed)

    def _copy_blocks(
        self,
        write: Callable[[bytearray], object],
        batch: Sequence[Record],
        table: sa.Table,
        names: Sequence[str],
        types: dict[str, str],
        ids: Sequence[int],
        written: list[str],
        failed: dict[str, str],
    ) -> None:
        """Write *batch* as binary COPY blocks (:mod:`._pgcopy`).

        A row is made in C from the record's stored JSON when it is unchanged
        and not decoded yet, else from its meta; a row C declines is made by
        :meth:`_row` here, which also refuses what cannot be stored.
        """
        kind = batch[0].kind
        spec = self._specs.get((table.name, len(names)))
        if spec is None:
            limits = {name: limit for _, name, limit in self._text_limits(table)}
            spec = self._specs[(table.name, len(names))] = (
                row_spec(names, types, limits if kind is Kind.TASK else {}) or ()
            )
        kinds = [types[n] for n in names]
        encoder_for = self.codec.encoder_for
        legacy = self.legacy
        if legacy:
            # The older layout's rows are made by _row, which pickles only what Celery pickled.
            spec = ()
        out = bytearray(SIGNATURE)
        for at, record in enumerate(batch):
            row_id = ids[at] if ids else None
            encode = self._encoder(record) if legacy else encoder_for(record)
            # A group without a date is made by _row below, which dates it.
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
                        row = self._row(record, table)
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

    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        table = self.table(kind)
        if table is None or not ids:
            return 0
        return delete_ids(self.engine, table, self._id_column(kind, table), ids)

    def count(self, kind: Kind) -> int:
        table = self.table(kind)
        if table is None:
            return 0
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def purge(
        self, kind: Kind, plan: PurgePlan, before_delete: BeforeDelete | None = None
    ) -> PurgeOutcome:
        table = self.table(kind)
        if table is None:
            return PurgeOutcome()
        task = kind is Kind.TASK
        return purge_table(
            self.engine,
            table,
            plan,
            status=table.c.status if task else None,
            name=table.c.name if task and "name" in table.c else None,
            to_record=lambda row: self._record(kind, row),
            before_delete=before_delete,
        )

    def sealed_keys(self) -> Counter[str]:
        """Key ids of encrypted results, read from the result column's first bytes."""
        table = self.table(Kind.TASK)
        if table is None:
            return Counter()
        with self.engine.connect() as conn:
            return sealed_key_counts(conn, table.c.result)

    def summarize(self, plan: PurgePlan) -> Summary:
        """Exact figures from aggregates: the database does the counting."""
        table = self.table(Kind.TASK)
        if table is None:
            return Summary()
        name = table.c.name if "name" in table.c else None
        return sql_summary(
            self.engine,
            table,
            table.c.task_id,
            table.c.status,
            name,
            table.c.result,
            plan,
            sql_expired(plan, table.c.date_done, table.c.status, name),
        )

    def state_counts(self) -> dict[str | None, int]:
        table = self.table(Kind.TASK)
        return {} if table is None else state_counts(self.engine, table.c.status)

    def celery_read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Read through Celery's DatabaseBackend: its session, its model, its decoding."""
        if kind is Kind.GROUP:
            return super().celery_read_many(kind, ids)
        # Celery reads the extended columns only with result_extended on.
        backend = self.celery_backend_for(None, extended=self.extended)
        session = backend.ResultSession(session_manager=_reading_sessions())
        # Columns of a newer Celery's model that this (older) table lacks are not read;
        # Celery's to_dict() takes them as None.
        table = self.table(Kind.TASK)
        absent = [
            defer(getattr(backend.task_cls, name), raiseload=True)
            for name in ("children", "stamps")
            if hasattr(backend.task_cls, name) and table is not None and name not in table.c
        ]
        out: dict[str, dict[str, Any]] = {}
        try:
            for start in range(0, len(ids), IN_CHUNK_ROWS):
                chunk = list(ids[start : start + IN_CHUNK_ROWS])
                query = session.query(backend.task_cls).filter(backend.task_cls.task_id.in_(chunk))
                if absent:
                    query = query.options(*absent)
                for task in query:
                    data = task.to_dict()
                    reader = self.celery_backend_for(data["result"], extended=self.extended)
                    try:
                        data["result"] = decode_stored_result(reader, data["result"])
                        for name in ("args", "kwargs", "children"):
                            if data.get(name) is not None:
                                data[name] = reader.decode(data[name])
                    except Exception as exc:
                        out[task.task_id] = {"unreadable": f"{type(exc).__name__}: {exc}"}
                        continue
                    data.pop("stamps", None)
                    out[task.task_id] = reader.meta_from_decoded(data)
        finally:
            session.close()
        return out

    def close(self) -> None:
        self.engine.dispose()


def _reading_sessions() -> Any:
    """Celery's session manager, told that the tables are ready.

    Celery 5.7 adds its newer columns (``children``, ``stamps``) to the tables
    it opens first; reading a source to verify it must leave its tables as
    they are (workers of an older Celery may still write to them).
    """
    from celery.backends.database.session import SessionManager

    manager = SessionManager()
    manager.prepared = True
    return manager


def _utc_now() -> datetime:
    """Now, as Celery's SQL tables hold dates: naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


#: Extended fields Celery stores encoded (the others are plain columns).
_ENCODED = frozenset({"args", "kwargs"})

#: Bytes of binary COPY rows sent at a time.
_COPY_BLOCK = 256 * 1024

#: Column types whose binary form psycopg writes from what rows hold (naive UTC datetimes).
_BINARY_TYPES = frozenset(
    {"int2", "int4", "int8", "varchar", "text", "bpchar", "bytea", "timestamp"}
)


def _binary(types: dict[str, str], columns: Sequence[str]) -> str:
    """``" (FORMAT BINARY)"`` when every column of a COPY has a type written in binary.

    Binary COPY sends bytes as they are (text COPY doubles them in hex) and
    dates as numbers: a third less work per row than text.
    """
    if all(types.get(c) in _BINARY_TYPES for c in columns):
        return " (FORMAT BINARY)"
    return ""


class _Conflict(Exception):
    """A record of a batch copied straight into its table is stored there already."""


@dataclass
class _Prepared:
    """A batch's binary COPY rows, made ahead by :meth:`SqlStore.prepare`."""

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
