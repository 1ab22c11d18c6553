"""The primitives every store of results in two tables (tasks, groups) shares:
Celery's tables and django-celery-results' tables are read, counted, purged,
summarized and deleted from by this one class."""

from __future__ import annotations

import contextlib
import functools
import threading
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from ...purge import BeforeDelete, PurgeOutcome, PurgePlan
from ...records import Kind, Record
from ...summary import StoreFigures, Summary
from ..base import IndexPlan, Page, Store
from . import find
from .purge import purge_table, sql_expired
from .statements import delete_ids, read_ids, state_counts, transient_error
from .summary import sealed_key_counts, sql_figures, sql_summary

if TYPE_CHECKING:
    from ...query import FailureGroup, Query, ResultPage

__all__ = ["TableStore"]

#: Rows locked, compared and deleted by one statement of :meth:`TableStore.delete_unchanged`.
_DELETE_CHUNK_ROWS = 1000
#: Rows one conditional DELETE names, each with every column's value (bound parameters).
_DELETE_ROWS_PER_STATEMENT = 50


class TableStore(Store):
    """Results as rows of a task table and a group table, keyed by an ``id``
    column in the order they were written."""

    #: The column holding the result's id, per kind.
    id_columns: ClassVar[Mapping[Kind, str]]
    #: The task table's column holding the task's name (when the table has it).
    name_column: ClassVar[str] = "name"
    #: Dates are stored with their time zone (compared as aware datetimes).
    aware_dates: ClassVar[bool] = False
    #: Binary payloads are stored as base64 text.
    base64_results: ClassVar[bool] = False

    engine: sa.Engine
    #: Set once a task row with a name is seen (see holds_extended).
    _holds_extended: bool = False
    #: The connection queries read through, kept between pages (see find.reading).
    reader: sa.Connection | None = None

    @functools.cached_property
    def reader_lock(self) -> threading.Lock:
        return threading.Lock()

    @functools.cached_property
    def ready_statements(self) -> dict[Any, find.Ready]:
        """Statements built and compiled once (see find.ready)."""
        return {}

    @functools.cached_property
    def ready_queries(self) -> dict[Any, find.SqlQuery]:
        """Queries made into SQL once (see find._sql_of)."""
        return {}

    @abstractmethod
    def table(self, kind: Kind) -> sa.Table | None:
        """The table of *kind*, or None when it does not exist (yet)."""

    @abstractmethod
    def _record(self, kind: Kind, row: Mapping[str, Any]) -> Record:
        """The record of one row (its columns by name)."""

    # ------------------------------------------------------------ columns
    def _id_column(self, kind: Kind, table: sa.Table) -> sa.Column[Any]:
        return table.c[self.id_columns[kind]]

    def _name(self, table: sa.Table) -> sa.Column[Any] | None:
        return table.c.get(self.name_column)

    def _plan(self, plan: PurgePlan) -> PurgePlan:
        return plan.aware() if self.aware_dates else plan

    def _row_record(self, kind: Kind, row: Any) -> Record:
        return self._record(kind, row._mapping)

    # ------------------------------------------------------------ primitives
    def transient(self, exc: BaseException) -> bool:
        return transient_error(self.engine, exc)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

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
        return Page(records, records[-1].position if len(rows) == limit else None)

    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        table = self.table(kind)
        if table is None or not ids:
            return {}
        if len(ids) == 1:  # show's read: a statement kept ready, on the kept connection
            record = find.read_one(self, kind, table, ids[0])
            return {} if record is None else {record.id: record}
        column = self._id_column(kind, table)
        return read_ids(self.engine, table, column, ids, lambda r: self._row_record(kind, r))

    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        table = self.table(kind)
        if table is None or not ids:
            return 0
        return delete_ids(self.engine, table, self._id_column(kind, table), ids)

    def delete_unchanged(self, kind: Kind, records: Sequence[Record]) -> int:
        """Delete each row only if it still holds what was read.

        The rows are read again (locked ``FOR UPDATE`` where the database can)
        and compared with the records; those still the same are deleted by a
        statement that names every column's value as just read, so a row a
        worker rewrites between the two (SQLite takes no row lock) is left
        alone.  A record that could not be read (a pickle not accepted) is
        compared by what could be read of it.
        """
        table = self.table(kind)
        wanted = {r.id: r.meta for r in records}
        if table is None or not wanted:
            return 0
        column = self._id_column(kind, table)
        ids = list(wanted)
        deleted = 0
        with self.engine.begin() as conn:
            for at in range(0, len(ids), _DELETE_CHUNK_ROWS):
                chunk = ids[at : at + _DELETE_CHUNK_ROWS]
                rows = conn.execute(sa.select(table).where(column.in_(chunk)).with_for_update())
                same = [
                    row._mapping
                    for row in rows
                    if self._row_record(kind, row).meta == wanted[row._mapping[column.name]]
                ]
                for start in range(0, len(same), _DELETE_ROWS_PER_STATEMENT):
                    each = [
                        sa.and_(
                            *(
                                table.c[name].is_(None) if value is None else table.c[name] == value
                                for name, value in mapping.items()
                            )
                        )
                        for mapping in same[start : start + _DELETE_ROWS_PER_STATEMENT]
                    ]
                    deleted += conn.execute(sa.delete(table).where(sa.or_(*each))).rowcount
        return deleted

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
            self._plan(plan),
            status=table.c.status if task else None,
            name=self._name(table) if task else None,
            to_record=lambda row: self._row_record(kind, row),
            before_delete=before_delete,
        )

    def sealed_keys(self) -> Counter[str]:
        """Key ids of encrypted results, read from the result column's first bytes."""
        table = self.table(Kind.TASK)
        if table is None:
            return Counter()
        with self.engine.connect() as conn:
            return sealed_key_counts(conn, table.c.result, base64_text=self.base64_results)

    def summarize(self, plan: PurgePlan) -> Summary:
        """Exact figures from aggregates: the database does the counting."""
        table = self.table(Kind.TASK)
        if table is None:
            return Summary()
        plan = self._plan(plan)
        name = self._name(table)
        return sql_summary(
            self.engine,
            table,
            table.c.task_id,
            table.c.status,
            name,
            table.c.result,
            plan,
            sql_expired(plan, table.c.date_done, table.c.status, name),
            base64_text=self.base64_results,
        )

    def figures(self, plan: PurgePlan) -> StoreFigures:
        """The metrics' figures in one aggregate query (see :func:`sql_figures`)."""
        table = self.table(Kind.TASK)
        if table is None:
            return StoreFigures(groups=self.count(Kind.GROUP))
        plan = self._plan(plan)
        name = self._name(table)
        figures = sql_figures(
            self.engine,
            table,
            table.c.status,
            name,
            table.c.result,
            sql_expired(plan, table.c.date_done, table.c.status, name),
        )
        figures.groups = self.count(Kind.GROUP)
        return figures

    def counts_by_day(self, since: datetime) -> dict[str, int]:
        """Task results done on each day from *since*: one GROUP BY date(date_done)."""
        table = self.table(Kind.TASK)
        if table is None:
            return {}
        utc = since.astimezone(timezone.utc) if since.tzinfo else since
        floor = utc if self.aware_dates else utc.replace(tzinfo=None)
        day = sa.func.date(table.c.date_done)
        query = sa.select(day, sa.func.count()).where(table.c.date_done >= floor).group_by(day)
        with self.engine.connect() as conn:
            return {str(d): int(n) for d, n in conn.execute(query) if d is not None}

    # ------------------------------------------------------------ queries
    def args_columns(self, table: sa.Table) -> tuple[str, str] | None:
        """The columns holding the task's args and kwargs (None: the table has none)."""
        return ("args", "kwargs") if "args" in table.c and "kwargs" in table.c else None

    def holds_extended(self) -> bool | None:
        """Whether the task rows hold task names: the column, then one row that has one."""
        if self._holds_extended:
            return True  # task names, once stored, stay: asked once per store
        table = self.table(Kind.TASK)
        if table is None:
            return None
        name = self._name(table)
        if name is None:
            return False
        with find.reading(self) as conn:
            named = conn.execute(sa.select(table.c.id).where(name.is_not(None)).limit(1)).first()
            if named is not None:
                self._holds_extended = True
                return True
            any_row = conn.execute(sa.select(table.c.id).limit(1)).first()
        return False if any_row is not None else None

    def find_page(self, query: Query, position: Mapping[str, Any] | None, limit: int) -> ResultPage:
        if query.kinds != frozenset({Kind.TASK}):
            return super().find_page(query, position, limit)  # groups: streamed
        return find.sql_find_page(self, query, position, limit)

    def select_records(
        self, query: Query, batch_size: int, *, damaged: bool = False
    ) -> Iterator[Record]:
        # A row is always read (an unreadable payload is a record with an error,
        # never a damaged one), so *damaged* changes nothing here.
        if Kind.TASK in query.kinds:
            yield from find.sql_select(self, query, batch_size)
        if Kind.GROUP in query.kinds:
            groups = replace(query, kinds=frozenset({Kind.GROUP}))
            yield from super().select_records(groups, batch_size, damaged=damaged)

    def failure_groups(self, query: Query) -> list[FailureGroup] | None:
        if query.kinds != frozenset({Kind.TASK}):
            return None
        return find.sql_failure_groups(self, query)

    def explain_query(self, query: Query, limit: int) -> list[str]:
        if query.kinds != frozenset({Kind.TASK}):
            return super().explain_query(query, limit)
        return find.explain(self, query, limit)

    def recommended_indexes(self) -> list[IndexPlan]:
        return find.recommended_indexes(self)

    def create_indexes(self) -> list[str]:
        return find.create_indexes(self)

    def state_counts(self) -> dict[str | None, int]:
        table = self.table(Kind.TASK)
        return {} if table is None else state_counts(self.engine, table.c.status)

    def close(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()
        self.engine.dispose()
