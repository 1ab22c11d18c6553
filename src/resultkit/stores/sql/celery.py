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

import functools
import pickle
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import defer

from ..._celery_compat import decode_stored_result, pickle_group, unpickle_group
from ...codec import (
    JSON_FAMILY,
    JSON_OPENERS,
    NOT_READ,
    PickleRefused,
    encode_payload,
    json_at_once,
    long_digits,
    materialize,
    unreadable,
)
from ...errors import SerializationError
from ...offload import MARKER
from ...records import EXTENDED_FIELDS, Kind, Payload, Record, as_datetime
from ..base import OnConflict, WriteResult
from .layout import Column, celery_table_names, columns_of, pickled, row_values
from .pgcopy import CopyWriter
from .statements import IN_CHUNK_ROWS, create_missing, rows_of, upsert_rows, write_by_kind
from .tables import TableStore

__all__ = ["SqlStore", "celery_table_names"]

_UNSERIALIZED = Payload(None)


@functools.lru_cache(maxsize=8)
def _json_form(hint: str) -> Payload:
    """The form of a result read as JSON: made once, not for each row."""
    return Payload(None, hint)


def _json_column(value: Any) -> Any:
    """A column's bytes read as a JSON object or array when orjson reads them
    exactly (what :func:`json_at_once` does, without its checks of the hint);
    :data:`NOT_READ` for anything else."""
    if type(value) is not bytes or value[:1] not in JSON_OPENERS or long_digits(value):
        return NOT_READ
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return NOT_READ


#: Why a row of the older layout is not decoded without ``accept_pickle`` (one line).
PICKLED_LAYOUT = (
    "this table has the layout of Celery 5.6 or older, whose result column holds a pickle"
)


def _pickle_group(value: Any) -> bytes:
    return pickled(None) if value is None else pickle_group(value)  # type: ignore[return-value]


class SqlStore(TableStore):
    """Celery's own tables, as its ``db+`` backend and ``resultkit-db`` keep them."""

    layout = "sql"
    id_columns = {Kind.TASK: "task_id", Kind.GROUP: "taskset_id"}
    # Reading must leave the tables as they are: Celery 5.5+ creates them when its
    # backend is made, and 5.7 also adds its newer columns to existing ones.
    celery_reader_settings: ClassVar[dict[str, Any]] = {"database_create_tables_at_setup": False}
    # Celery's tables keep no group or parent id: the query layer reads them from the
    # group's row and the parent's children.
    query_fields: ClassVar[frozenset[str]] = frozenset(EXTENDED_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.location.sqlalchemy_url
        assert url is not None, "an SQL location has a SQLAlchemy URL"
        self.sqlalchemy_url = url
        options = dict(self.settings.setting("database_engine_options") or {})
        options.setdefault("pool_pre_ping", True)
        self.engine = sa.create_engine(url, **options)
        self.names = celery_table_names(self.settings.celery)
        self._tables: dict[Kind, sa.Table | None] = {}
        #: Held while the tables are made (a migration's reading thread may make them too).
        self._creating = threading.Lock()
        self._limits: dict[str, tuple[tuple[int, str, int], ...]] = {}
        self._columns: dict[tuple[Kind, str], tuple[Column, ...]] = {}
        #: PostgreSQL through psycopg 3: batches are written with COPY.
        self._copier: CopyWriter | None = None
        if self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg":
            self._copier = CopyWriter(self)

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
        return table is not None and "children" not in table.c

    @property
    def keeps_children(self) -> bool:
        """The older layout has no ``children`` column: Celery 5.4-5.6 do not keep them."""
        return not self.legacy

    @property
    def extended(self) -> bool:
        table = self.table(Kind.TASK)
        return table is not None and "name" in table.c

    @property
    def extended_fields(self) -> tuple[str, ...]:
        return EXTENDED_FIELDS if self.extended else ()

    # ---------------------------------------------------------- decoding
    def _decode_column(self, value: Any) -> tuple[Any, Payload]:
        """Decode one column: its value, and the form it was stored in."""
        payload = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value
        tree = json_at_once(payload, self.codec.hint)  # without the layers below: per column
        if tree is not NOT_READ:
            return tree, Payload(None, self.codec.hint)
        try:
            return self.codec.read(payload)
        except PickleRefused:
            if self.legacy:
                raise PickleRefused(PICKLED_LAYOUT) from None
            raise
        except SerializationError:
            if self.legacy and isinstance(payload, bytes) and payload[:1] == b"\x80":
                if not self.codec.accept_pickle:
                    raise PickleRefused(PICKLED_LAYOUT) from None
                return pickle.loads(payload), Payload(None, "pickle")
            raise

    def _record(self, kind: Kind, mapping: Mapping[str, Any]) -> Record:
        """The record of one row (its columns by name)."""
        position = mapping["id"]
        if kind is Kind.GROUP:
            group_id = mapping["taskset_id"]
            try:
                payload = mapping["result"]
                if self.legacy and bytes(payload or b"")[:1] == b"\x80":
                    # The older layout pickles the GroupResult object; its tuple is what
                    # every other layout stores, in the app's serializer.
                    if not self.codec.accept_pickle:
                        raise PickleRefused(PICKLED_LAYOUT)
                    value, form = unpickle_group(bytes(payload)), Payload(None, self.codec.hint)
                else:
                    value, form = self._decode_column(payload)
            except SerializationError as exc:
                return Record(Kind.GROUP, group_id, unreadable(exc), position=position)
            meta = {"result": value, "date_done": as_datetime(mapping["date_done"])}
            return Record(Kind.GROUP, group_id, form.holding(meta), position=position)
        task_id = mapping["task_id"]
        form = _UNSERIALIZED
        done = mapping["date_done"]
        task: dict[str, Any] = {
            "task_id": task_id,
            "status": mapping["status"],
            "traceback": mapping["traceback"],
            "date_done": (
                done.replace(tzinfo=timezone.utc)
                if type(done) is datetime and done.tzinfo is None
                else as_datetime(done)
            ),
            "children": None,
        }
        # A page of find decodes three columns of fifty rows: JSON, the common
        # case, is read here at once; anything else through _decode_column.
        quick = self.codec.hint in JSON_FAMILY
        try:
            result = mapping["result"]
            if result is not None:
                tree = _json_column(result) if quick else NOT_READ
                if tree is not NOT_READ:
                    task["result"], form = tree, _json_form(self.codec.hint)
                else:
                    task["result"], form = self._decode_column(result)
                    if self.legacy and form.serializer == "pickle":
                        # The old PickleType column pickled every result, whatever the
                        # app's serializer; the result itself was never "a pickle result".
                        form = form._replace(serializer=self.codec.hint)
                        if self.codec.hint == "resultkit-json":
                            # Records of that serializer hold its tree (type tags, marked
                            # strings), never the Python values: made of them here.
                            task["result"] = orjson.loads(
                                encode_payload(
                                    task["result"], "resultkit-json", source_serializer="pickle"
                                )
                            )
            else:
                task["result"] = None
            children = mapping.get("children")
            if children is not None:
                tree = _json_column(children) if quick else NOT_READ
                task["children"] = (
                    tree if tree is not NOT_READ else self._decode_column(children)[0]
                )
            if "name" in mapping:
                get = mapping.get
                for name in EXTENDED_FIELDS:
                    value = get(name)
                    if value is not None and (name == "args" or name == "kwargs"):
                        tree = _json_column(value) if quick else NOT_READ
                        value = tree if tree is not NOT_READ else self._decode_column(value)[0]
                    task[name] = value
        except SerializationError as exc:
            return Record(Kind.TASK, task_id, unreadable(exc, form), position=position)
        return Record(Kind.TASK, task_id, form.holding(task), position=position)

    # ---------------------------------------------------------- encoding
    def columns(self, kind: Kind, table: sa.Table) -> tuple[Column, ...]:
        """The columns a row of *table* fills, in the order of :meth:`row`'s values."""
        key = (kind, table.name)
        columns = self._columns.get(key)
        if columns is None:
            columns = self._columns[key] = columns_of(kind, set(table.c.keys()))
        return columns

    def column_names(self, kind: Kind, table: sa.Table) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns(kind, table))

    def row(self, record: Record, table: sa.Table) -> tuple[Any, ...]:
        """The values of *record* for :meth:`columns` (a tuple: rows are many)."""
        meta = record.meta
        if meta is None:
            raise ValueError(record.error or "the record has no readable payload")
        encode = self.codec.encoder_for(record)
        # Without a children column, the table is the older layout (Celery 5.4-5.6): its
        # result column pickles the value (a group: as Celery's GroupResult), while args
        # and kwargs are in the app's serializer all the same.
        encode_result = None
        if self.legacy:
            if record.kind is Kind.GROUP:
                encode_result = _pickle_group
            elif record.serializer in JSON_FAMILY:
                # A JSON tree: pickled as the values its type tags stand for, as the
                # application gets them from Celery (a Decimal, not its tag).
                serializer = record.serializer
                encode_result = lambda value: pickled(materialize(value, serializer))  # noqa: E731
            else:
                encode_result = pickled
        columns = self.columns(record.kind, table)
        row = row_values(record.id, meta, columns, encode, encode_result)
        if record.kind is Kind.TASK:
            if self.offloader is not None:
                # The object first: the row is written after it, by the caller.
                at = next(i for i, column in enumerate(columns) if column.name == "result")
                row[at] = self.offloader.offload(record.id, row[at])
            self._check_sizes(row, table)
        return tuple(row)

    def text_limits(self, table: sa.Table) -> tuple[tuple[int, str, int], ...]:
        """(index in a task row, name, length) of each task column of limited length."""
        limits = self._limits.get(table.name)
        if limits is None:
            lengths = {
                c.name: int(c.type.length)
                for c in table.columns
                if isinstance(c.type, sa.String) and c.type.length
            }
            columns = self.column_names(Kind.TASK, table)
            limits = self._limits[table.name] = tuple(
                (at, name, lengths[name]) for at, name in enumerate(columns) if name in lengths
            )
        return limits

    def _check_sizes(self, row: list[Any], table: sa.Table) -> None:
        """Refuse a task row whose text is longer than its column (the record fails alone)."""
        for at, name, length in self.text_limits(table):
            value = row[at]
            if value.__class__ is str and len(value) > length:
                raise ValueError(
                    f"{name} is {len(value)} characters, longer than the {length} of "
                    f"{table.name}.{name}"
                )

    # ----------------------------------------------------------- writing
    def write_many(self, records: Sequence[Record], on_conflict: OnConflict) -> WriteResult:
        return self.write_prepared(records, on_conflict, None)

    def write_prepared(
        self, records: Sequence[Record], on_conflict: OnConflict, prepared: object | None
    ) -> WriteResult:
        """The one way a batch is written: in one transaction, with each record
        inserted, or kept or replaced as *on_conflict* says when it is there.

        On PostgreSQL, a migration's usual batch (``skip``) is copied straight
        into the tables; when one of its records is stored there already (or
        meanwhile, by a worker) nothing of it is written that way, and the
        batch is upserted instead.
        """
        if not records:
            return WriteResult()
        self.ensure_tables()
        if self._copy is not None and on_conflict is OnConflict.SKIP:
            outcome = self._copy.write_new(records, prepared)
            if outcome is not None:
                return outcome
        return write_by_kind(self.engine, records, on_conflict, self._upsert)

    def _upsert(
        self,
        conn: sa.Connection,
        kind: Kind,
        batch: list[Record],
        on_conflict: OnConflict,
        outcome: WriteResult,
    ) -> None:
        if self._copy is not None:
            self._copy.upsert(conn, kind, batch, on_conflict, outcome)
            return
        table = self.table(kind)
        assert table is not None
        names = self.column_names(kind, table)
        rows = rows_of(batch, lambda record: self.row(record, table), outcome)
        if rows:
            named = {rid: dict(zip(names, row, strict=True)) for rid, row in rows.items()}
            upsert_rows(conn, table, self._id_column(kind, table), named, on_conflict, outcome)

    def stored_references(self, ids: Sequence[str]) -> list[bytes]:
        """The result columns of *ids* that hold offload references (SQL reads no other)."""
        table = self.table(Kind.TASK)
        if table is None or not ids:
            return []
        head = sa.func.substr(table.c.result, 1, len(MARKER))
        query = sa.select(table.c.result).where(
            self._id_column(Kind.TASK, table).in_(list(ids)), head == MARKER
        )
        with self.engine.connect() as conn:
            return [bytes(value) for value in conn.scalars(query)]

    @property
    def _copy(self) -> CopyWriter | None:
        """The binary COPY writer, unless results are offloaded while written: COPY
        makes its rows from the stored JSON (in C), without :meth:`row`."""
        return self._copier if self.offloader is None else None

    @property
    def concurrent_writes(self) -> bool:
        """PostgreSQL: one batch's COPY streams while the one before commits."""
        return self._copy is not None

    def prepare(self, records: Sequence[Record], on_conflict: OnConflict) -> object | None:
        """PostgreSQL: the batch's binary COPY rows and their ids, made ahead.

        Writing a batch then sends them and waits for PostgreSQL to store them,
        while the next batch is read and prepared.  Only for the usual
        migration into tables without these records (``skip``), and tables of
        types that binary COPY writes; anything else is made when written.
        """
        if not records or on_conflict is not OnConflict.SKIP or self._copy is None:
            return None
        self.ensure_tables()
        return self._copy.prepare(records)

    def celery_read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Read through Celery's DatabaseBackend: its session, its model, its decoding."""
        if kind is Kind.GROUP:
            return super().celery_read_many(kind, ids)
        # Celery reads the extended columns only with result_extended on: a
        # backend of its own, configured so, rather than a flag flipped on the app.
        backend = self.celery_backend_for(extended=self.extended)
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
