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
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

import sqlalchemy as sa

from ...codec import content_type_of, encode_payload, serializer_of, unreadable
from ...errors import SerializationError
from ...records import Kind, Payload, Record, as_datetime
from ..base import OnConflict, WriteResult
from .layout import DJANGO_OPTIONAL_COLUMNS, DJANGO_TASK_TABLE, django_tables
from .statements import create_missing, rows_of, upsert_rows, write_by_kind
from .tables import TableStore

__all__ = ["DjangoStore"]

_BINARY = {"pickle", "msgpack", "resultkit-msgpack", "resultkit-encrypted"}


def _from_repr(value: Any) -> Any:
    """django-celery-results stores ``argsrepr``; give back the value when it is a literal."""
    if not isinstance(value, str):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
    return list(parsed) if isinstance(parsed, tuple) else parsed


class DjangoStore(TableStore):
    """django-celery-results' tables, without Django."""

    layout = "django-celery-results"
    celery_readable = False
    id_columns = {Kind.TASK: "task_id", Kind.GROUP: "group_id"}
    name_column = "task_name"
    aware_dates = True
    base64_results = True
    #: No queue, retries, group or parent id columns.
    query_fields: ClassVar[frozenset[str]] = frozenset({"name", "args", "kwargs", "worker"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.location.sqlalchemy_url
        assert url is not None, "django+ names a SQLAlchemy URL"
        self.sqlalchemy_url = url
        self.engine = sa.create_engine(self.sqlalchemy_url, pool_pre_ping=True)
        self.tables = django_tables(sa.MetaData())
        self._present: bool | None = None

    @property
    def extended_fields(self) -> tuple[str, ...]:
        return ("name", "args", "kwargs", "worker")

    def args_columns(self, table: sa.Table) -> tuple[str, str] | None:
        return ("task_args", "task_kwargs")

    def present(self) -> bool:
        """True when the tables exist; then :attr:`tables` has the columns they have."""
        if self._present is None:
            inspector = sa.inspect(self.engine)
            self._present = inspector.has_table(DJANGO_TASK_TABLE)
            if self._present:
                # Tables of an older release (2.5 has no date_started) are read as they are.
                names = {column["name"] for column in inspector.get_columns(DJANGO_TASK_TABLE)}
                absent = DJANGO_OPTIONAL_COLUMNS - names
                if absent:
                    self.tables = django_tables(sa.MetaData(), frozenset(absent))
        return self._present

    def table(self, kind: Kind) -> sa.Table | None:
        return self.tables[kind] if self.present() else None

    def ensure_tables(self) -> None:
        if not self.present():
            create_missing(self.engine, self.tables[Kind.TASK].metadata.sorted_tables)
            self._present = True

    # ------------------------------------------------------------ decoding
    def _decode(self, text: Any, encoding: str) -> tuple[Any, Payload | None]:
        """Decode one column: its value, and the form it was stored in (None: empty)."""
        if text is None or text == "":
            return None, None
        payload = base64.b64decode(text) if encoding == "binary" else str(text).encode("utf-8")
        return self.codec.read(payload)

    def _record(self, kind: Kind, m: Mapping[str, Any]) -> Record:
        result_id = m["task_id"] if kind is Kind.TASK else m["group_id"]
        encoding = m["content_encoding"]
        form = Payload(None, serializer_of(m["content_type"]))
        try:
            result, found = self._decode(m["result"], encoding)
            form = found or form
            if kind is Kind.GROUP:
                meta = {"result": result, "date_done": as_datetime(m["date_done"])}
                return Record(kind, result_id, form.holding(meta), position=m["id"])
            extra = self._decode(m["meta"], encoding)[0] or {}
            args = self._decode(m["task_args"], encoding)[0]
            kwargs = self._decode(m["task_kwargs"], encoding)[0]
        except SerializationError as exc:
            return Record(kind, result_id, unreadable(exc, form), position=m["id"])
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
        return Record(kind, result_id, form.holding(meta), position=m["id"])

    # ------------------------------------------------------------ encoding
    def _encode(self, value: Any, record: Record) -> tuple[str, str, str]:
        serializer, _ = self.codec.target_format(record)
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
            del row["date_started"]  # django-celery-results 2.5's table has none
        return row

    # ---------------------------------------------------------- writing
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
        table = self.tables[kind]
        rows = rows_of(batch, self._row, outcome)
        upsert_rows(conn, table, self._id_column(kind, table), rows, on_conflict, outcome)
