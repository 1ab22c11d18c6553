"""Results in django-celery-results' tables, read and written without Django.

URL: ``django+<SQLAlchemy URL>``, e.g.
``django+postgresql+psycopg://app@db/site``.  The tables are
``django_celery_results_taskresult`` and ``django_celery_results_groupresult``
as its migrations create them; the result is stored as text with its
``content_type`` and ``content_encoding`` (base64 for binary serializers),
children in the ``meta`` column, and args/kwargs as their ``repr``.
"""

from __future__ import annotations

import ast
import base64
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ..codec import PickleRefused, content_type_of, serializer_of
from ..errors import SerializationError
from ..purge import BeforeDelete, PurgeOutcome, PurgePlan, purge_table, sql_expired
from ..records import Kind, Record, as_datetime
from ..summary import Summary, sealed_key_counts, sql_summary
from ._sql import (
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

__all__ = ["DjangoStore"]

TASK_TABLE = "django_celery_results_taskresult"
GROUP_TABLE = "django_celery_results_groupresult"
_BINARY = {"pickle", "msgpack", "resultkit-msgpack", "resultkit-encrypted"}


#: Columns that only some releases' migrations make: ``date_started`` came in 2.6.
_OPTIONAL_COLUMNS = frozenset({"date_started"})


def _tables(metadata: sa.MetaData, absent: frozenset[str] = frozenset()) -> dict[Kind, sa.Table]:
    """The tables as the newest migrations make them, less the optional columns *absent*."""
    when = sa.DateTime(timezone=True)
    task = sa.Table(
        TASK_TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(255), nullable=False, unique=True),
        sa.Column("periodic_task_name", sa.String(255), nullable=True),
        sa.Column("task_name", sa.String(255), nullable=True),
        sa.Column("task_args", sa.Text, nullable=True),
        sa.Column("task_kwargs", sa.Text, nullable=True),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("worker", sa.String(100), nullable=True),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("content_encoding", sa.String(64), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("date_created", when, nullable=False),
        *(() if "date_started" in absent else (sa.Column("date_started", when, nullable=True),)),
        sa.Column("date_done", when, nullable=False, index=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("meta", sa.Text, nullable=True),
    )
    group = sa.Table(
        GROUP_TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.String(255), nullable=False, unique=True),
        sa.Column("date_created", when, nullable=False),
        sa.Column("date_done", when, nullable=False, index=True),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("content_encoding", sa.String(64), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
    )
    return {Kind.TASK: task, Kind.GROUP: group}


def _from_repr(value: Any) -> Any:
    """django-celery-results stores ``argsrepr``; give back the value when it is a literal."""
    if not isinstance(value, str):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
    return list(parsed) if isinstance(parsed, tuple) else parsed


class DjangoStore(Store):
    layout = "django-celery-results"
    celery_readable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sqlalchemy_url = self.url.split("+", 1)[1]
        self.engine = sa.create_engine(self.sqlalchemy_url, pool_pre_ping=True)
        self.tables = _tables(sa.MetaData())
        self._present: bool | None = None

    def transient(self, exc: BaseException) -> bool:
        return transient_error(self.engine, exc)

    @property
    def extended_fields(self) -> tuple[str, ...]:
        return ("name", "args", "kwargs", "worker")

    def present(self) -> bool:
        """True when the tables exist; then :attr:`tables` has the columns they have."""
        if self._present is None:
            inspector = sa.inspect(self.engine)
            self._present = inspector.has_table(TASK_TABLE)
            if self._present:
                # Tables of an older release (2.5 has no date_started) are read as they are.
                names = {column["name"] for column in inspector.get_columns(TASK_TABLE)}
                absent = _OPTIONAL_COLUMNS - names
                if absent:
                    self.tables = _tables(sa.MetaData(), frozenset(absent))
        return self._present

    def ensure_tables(self) -> None:
        if not self.present():
            create_missing(self.engine, self.tables[Kind.TASK].metadata.sorted_tables)
            self._present = True

    def _id_column(self, kind: Kind) -> sa.Column[Any]:
        table = self.tables[kind]
        return table.c.task_id if kind is Kind.TASK else table.c.group_id

    # ------------------------------------------------------------ decoding
    def _decode(
        self, text: Any, content_type: str, encoding: str, record: Record | None = None
    ) -> Any:
        """Decode one column; with *record*, note the payload's format on it."""
        if text is None or text == "":
            return None
        payload = base64.b64decode(text) if encoding == "binary" else str(text).encode("utf-8")
        if record is not None:
            return self.codec.decode_into(payload, record)
        value, _, _ = self.codec.decode(payload)
        return value

    def _record(self, kind: Kind, row: Any) -> Record:
        m = row._mapping
        serializer = serializer_of(m["content_type"])
        result_id = m["task_id"] if kind is Kind.TASK else m["group_id"]
        record = Record(kind, result_id, None, serializer=serializer, position=m["id"])
        try:
            result = self._decode(m["result"], m["content_type"], m["content_encoding"], record)
            if kind is Kind.GROUP:
                record.meta = {"result": result, "date_done": as_datetime(m["date_done"])}
                return record
            extra = self._decode(m["meta"], m["content_type"], m["content_encoding"]) or {}
            args = self._decode(m["task_args"], m["content_type"], m["content_encoding"])
            kwargs = self._decode(m["task_kwargs"], m["content_type"], m["content_encoding"])
        except SerializationError as exc:
            record.error = str(exc)
            if isinstance(exc, PickleRefused):
                record.serializer = "pickle"
            return record
        meta = dict(extra) if isinstance(extra, dict) else {}
        meta.update(
            task_id=result_id,
            status=m["status"],
            result=result,
            traceback=m["traceback"],
            children=meta.get("children"),
            date_done=as_datetime(m["date_done"]),
            name=m["task_name"],
            args=_from_repr(args),
            kwargs=_from_repr(kwargs),
            worker=m["worker"],
            retries=None,
            queue=None,
        )
        if m["periodic_task_name"]:
            meta["periodic_task_name"] = m["periodic_task_name"]
        record.meta = meta
        return record

    # ------------------------------------------------------------ encoding
    def _encode(self, value: Any, record: Record) -> tuple[str, str, str]:
        serializer, _ = self.codec.target_format(record)
        from ..codec import encode_payload

        payload = encode_payload(
            value,
            serializer,
            None,
            source_serializer=record.serializer,
            sealing=self.codec.sealing,
        )
        if serializer in _BINARY:
            return content_type_of(serializer), "binary", base64.b64encode(payload).decode()
        return content_type_of(serializer), "utf-8", payload.decode("utf-8")

    def _row(self, record: Record) -> dict[str, Any]:
        if record.meta is None:
            raise ValueError(record.error or "the record has no readable payload")
        meta = record.meta
        done = as_datetime(meta.get("date_done")) or datetime.now(timezone.utc)
        content_type, encoding, result = self._encode(meta.get("result"), record)
        if record.kind is Kind.GROUP:
            return {
                "group_id": record.id,
                "date_created": done,
                "date_done": done,
                "content_type": content_type,
                "content_encoding": encoding,
                "result": result,
            }
        args, kwargs = meta.get("args"), meta.get("kwargs")
        row = {
            "task_id": record.id,
            "periodic_task_name": meta.get("periodic_task_name"),
            "task_name": meta.get("name"),
            "task_args": None
            if args is None
            else self._encode(args if isinstance(args, str) else repr(tuple(args)), record)[2],
            "task_kwargs": None
            if kwargs is None
            else self._encode(kwargs if isinstance(kwargs, str) else repr(kwargs), record)[2],
            "status": meta.get("status") or "PENDING",
            "worker": meta.get("worker"),
            "content_type": content_type,
            "content_encoding": encoding,
            "result": result,
            "date_created": done,
            "date_started": None,
            "date_done": done,
            "traceback": meta.get("traceback"),
            "meta": self._encode({"children": meta.get("children") or []}, record)[2],
        }
        if "date_started" not in self.tables[Kind.TASK].c:
            del row["date_started"]
        return row

    # ---------------------------------------------------------- primitives
    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        if not self.present():
            return Page([], None)
        table = self.tables[kind]
        query = sa.select(table).order_by(table.c.id).limit(limit)
        if cursor is not None:
            query = query.where(table.c.id > cursor)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        records = [self._record(kind, row) for row in rows]
        return Page(records, records[-1].position if len(rows) == limit else None)

    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        if not self.present() or not ids:
            return {}
        return read_ids(
            self.engine,
            self.tables[kind],
            self._id_column(kind),
            ids,
            lambda row: self._record(kind, row),
        )

    def write_many(self, records: Sequence[Record], on_conflict: OnConflict) -> WriteResult:
        if not records:
            return WriteResult()
        self.ensure_tables()
        return write_by_kind(self.engine, records, on_conflict, self._write_kind)

    def _write_kind(
        self,
        conn: sa.Connection,
        kind: Kind,
        batch: list[Record],
        on_conflict: OnConflict,
        outcome: WriteResult,
    ) -> None:
        table, column = self.tables[kind], self._id_column(kind)
        rows = rows_of(batch, self._row, outcome)
        upsert_rows(conn, table, column, rows, on_conflict, outcome)

    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        if not self.present() or not ids:
            return 0
        return delete_ids(self.engine, self.tables[kind], self._id_column(kind), ids)

    def count(self, kind: Kind) -> int:
        if not self.present():
            return 0
        with self.engine.connect() as conn:
            table = self.tables[kind]
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def purge(
        self, kind: Kind, plan: PurgePlan, before_delete: BeforeDelete | None = None
    ) -> PurgeOutcome:
        if not self.present():
            return PurgeOutcome()
        table = self.tables[kind]
        task = kind is Kind.TASK
        return purge_table(
            self.engine,
            table,
            plan.aware(),
            status=table.c.status if task else None,
            name=table.c.task_name if task else None,
            to_record=lambda row: self._record(kind, row),
            before_delete=before_delete,
        )

    def sealed_keys(self) -> Counter[str]:
        """Key ids of encrypted results, read from the base64 result column's first bytes."""
        if not self.present():
            return Counter()
        with self.engine.connect() as conn:
            return sealed_key_counts(conn, self.tables[Kind.TASK].c.result, base64_text=True)

    def summarize(self, plan: PurgePlan) -> Summary:
        if not self.present():
            return Summary()
        table = self.tables[Kind.TASK]
        return sql_summary(
            self.engine,
            table,
            table.c.task_id,
            table.c.status,
            table.c.task_name,
            table.c.result,
            plan.aware(),
            sql_expired(plan.aware(), table.c.date_done, table.c.status, table.c.task_name),
            base64_text=True,
        )

    def state_counts(self) -> dict[str | None, int]:
        if not self.present():
            return {}
        return state_counts(self.engine, self.tables[Kind.TASK].c.status)

    def close(self) -> None:
        self.engine.dispose()
