"""Queries answered by SQL: the filters as a WHERE clause, keyset pages on
``(date_done, id)``, the indexes that serve them, and the database's plan.

Every filter with an exact SQL form (ids, states, dates, worker and task name
globs, queue) is a predicate the database evaluates, with an index where one
exists.  Filters on serialized values (args, kwargs, the exception in the
result) are a ``LIKE`` prefilter on the stored JSON text where that is sound,
and are confirmed in Python by :meth:`Query.matches`: pages stay exact, and
the work per page is what the prefilter leaves.

Rows without a ``date_done`` (a state Celery does not date, copied from a
key-value store) come after every dated row, newest first, as in
:meth:`Query.sort_key`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from ...errors import UsageError
from ...query import (
    MAX_READ_BY_ID,
    FailureGroup,
    Query,
    ResultPage,
    encode_cursor,
    exception_of,
    json_fragments,
)
from ...records import Kind, Record
from ..base import IndexPlan

if TYPE_CHECKING:
    from .tables import TableStore

__all__ = [
    "Ready",
    "SqlQuery",
    "read_one",
    "ready",
    "run",
    "sql_failure_groups",
    "sql_find_page",
    "sql_select",
]

T = TypeVar("T")

#: Rows read per round trip while a page is filled through a prefilter.
PREFILTER_BATCH_ROWS = 500
#: LIKE's escape character: one that no SQL dialect treats specially in a literal.
_LIKE_ESCAPE = "!"


def _like_text(text: str) -> str:
    """*text* with LIKE's wildcards (and the escape character) escaped."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def glob_to_like(pattern: str) -> str | None:
    """The LIKE pattern of a glob using only ``*`` and ``?``; None for one with ``[...]``."""
    if "[" in pattern:
        return None
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(_like_text(char))
    return "".join(out)


def _binary(column: sa.ColumnElement[Any]) -> bool:
    try:
        return column.type.python_type is bytes
    except NotImplementedError:
        return False


def _holds(store: TableStore, column: sa.ColumnElement[Any], fragment: str) -> Any:
    """SQL true when *column*'s stored text holds *fragment* (bytes compared as bytes)."""
    dialect = store.engine.dialect.name
    binary = _binary(column)
    needle: Any = fragment.encode() if binary else fragment
    literal = sa.literal(needle, sa.LargeBinary if binary else sa.Text)
    if dialect == "postgresql":
        if binary:
            return sa.func.position(literal.op("IN")(column)) > 0
        return sa.func.strpos(column, literal) > 0
    if dialect in ("mysql", "mariadb"):
        return sa.func.locate(literal, column) > 0
    return sa.func.instr(column, literal) > 0


def _json_or(store: TableStore, column: sa.ColumnElement[Any], opener: str, held: Any) -> Any:
    """*held*, for values stored as JSON text (their first character is *opener*); true
    for values stored otherwise (msgpack, pickle, compressed, encrypted), which
    Python decides: the prefilter never drops a row it cannot read."""
    binary = _binary(column)
    first = sa.func.substr(column, 1, 1)
    opener_literal = sa.literal(
        opener.encode() if binary else opener, sa.LargeBinary if binary else sa.Text
    )
    return sa.or_(column.is_(None), first != opener_literal, held)


@dataclass
class SqlQuery:
    """A query as SQL on one task table: the WHERE clause and what Python must confirm."""

    table: sa.Table
    where: list[sa.ColumnElement[bool]]
    #: The filters SQL did not decide exactly (None: SQL decides the whole query).
    residual: Query | None
    date: sa.Column[Any]
    row_id: sa.Column[Any]

    @classmethod
    def of(cls, store: TableStore, query: Query) -> SqlQuery | None:
        """The SQL of *query* on *store*'s task table; None when the table does not exist."""
        table = store.table(Kind.TASK)
        if table is None:
            return None
        c = table.c
        dialect = store.engine.dialect.name
        # MySQL compares text without case (its default collations), SQLite's LIKE
        # ignores ASCII case: there SQL narrows, and Python decides.
        exact_text = dialect not in ("mysql", "mariadb")
        exact_like = dialect == "postgresql"
        where: list[Any] = []
        left: dict[str, Any] = {}
        task_id = c[store.id_columns[Kind.TASK]]
        name = store._name(table)
        if query.ids is not None:
            if len(query.ids) > MAX_READ_BY_ID:
                left["ids"] = query.ids
            else:
                where.append(task_id.in_(sorted(query.ids)))
                if not exact_text:
                    left["ids"] = query.ids
        if query.id_prefix:
            where.append(task_id.like(_like_text(query.id_prefix) + "%", escape=_LIKE_ESCAPE))
            if not exact_like:
                left["id_prefix"] = query.id_prefix
        if query.states:
            where.append(c.status.in_(sorted(query.states)))
            if not exact_text:
                left["states"] = query.states
        if query.tasks:
            likes = [glob_to_like(p) for p in query.tasks]
            if name is not None and dialect == "sqlite":
                where.append(sa.or_(*(name.op("GLOB")(p) for p in query.tasks)))
            elif name is not None and all(like is not None for like in likes):
                where.append(sa.or_(*(name.like(lk, escape=_LIKE_ESCAPE) for lk in likes if lk)))
                if not exact_like:
                    left["tasks"] = query.tasks
            else:
                left["tasks"] = query.tasks
        aware = store.aware_dates
        if query.since:
            where.append(c.date_done >= _when(query.since, aware))
        if query.until:
            where.append(c.date_done < _when(query.until, aware))
        if query.worker:
            like = glob_to_like(query.worker)
            if "worker" in c and like is not None:
                where.append(c.worker.like(like, escape=_LIKE_ESCAPE))
            if "worker" not in c or like is None or not exact_like:
                left["worker"] = query.worker
        if query.queue:
            if "queue" in c:
                where.append(c.queue == query.queue)
            if "queue" not in c or not exact_text:
                left["queue"] = query.queue
        for field in ("group", "parent", "root"):
            if getattr(query, field):
                left[field] = getattr(query, field)  # resolved into ids before, normally
        args_names = store.args_columns(table)
        if query.exception:
            left["exception"] = query.exception
            short = query.exception.rsplit(".", 1)[-1]
            fragment = json.dumps(short)
            if fragment.isascii():
                where.append(_json_or(store, c.result, "{", _holds(store, c.result, fragment)))
        if query.args:
            left["args"] = query.args
            if args_names is not None:
                args, kwargs = (c[n] for n in args_names)
                for value in query.args:
                    for fragment in json_fragments(value) or ():
                        where.append(
                            sa.or_(
                                _json_or(store, args, "[", _holds(store, args, fragment)),
                                _json_or(store, kwargs, "{", _holds(store, kwargs, fragment)),
                            )
                        )
        if query.kwargs:
            left["kwargs"] = query.kwargs
            if args_names is not None:
                kwargs = c[args_names[1]]
                for key, value in query.kwargs:
                    key_fragment = json.dumps(key)
                    wanted = [key_fragment] if key_fragment.isascii() else []
                    wanted += json_fragments(value) or []
                    for fragment in wanted:
                        where.append(_json_or(store, kwargs, "{", _holds(store, kwargs, fragment)))
        residual = _residual(query, left)
        return cls(table, where, residual, c.date_done, c.id)

    def select(self) -> sa.Select[Any]:
        return sa.select(self.table).where(*self.where)


@contextlib.contextmanager
def reading(store: TableStore) -> Iterator[sa.Connection]:
    """A connection for the reads of queries, in autocommit (no transaction opened,
    none rolled back).

    The store keeps one, so that page after page skips the pool's checkout and
    its pre-ping (a round trip each) and the server's prepared statements stay;
    a thread that finds it in use gets a pooled connection of its own. A
    statement that fails closes it: the next page opens another (a server
    restarted meanwhile costs that one page, see :func:`retried`).
    """
    lock = store.reader_lock
    if not lock.acquire(blocking=False):
        with store.engine.connect() as own:
            yield own.execution_options(isolation_level="AUTOCOMMIT")
        return
    try:
        conn = store.reader
        if conn is None or conn.closed or conn.invalidated:
            conn = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            store.reader = conn
        try:
            yield conn
        except BaseException:
            store.reader = None
            with contextlib.suppress(Exception):
                conn.close()
            raise
    finally:
        lock.release()


#: Statements a store keeps ready to run (one per query, phase and batch shape);
#: past this many, it starts afresh.
MAX_READY_STATEMENTS = 256


@dataclass(frozen=True)
class Ready:
    """A statement built and compiled once, run again with other values."""

    statement: sa.Select[Any]
    #: The names of the columns it selects, in order.
    columns: tuple[str, ...]
    #: Its SQL in the driver's own form, when neither its parameters nor its rows
    #: need SQLAlchemy's type processing on this dialect (PostgreSQL through
    #: psycopg): it then runs on the driver's cursor. None: through SQLAlchemy.
    text: str | None = None
    #: The values the statement holds (its filters), by parameter name.
    fixed: Mapping[str, Any] | None = None
    #: The parameters in the order of a positional paramstyle (None: by name).
    order: tuple[str, ...] | None = None


def ready(
    store: TableStore, key: Any, build: Callable[[], sa.Select[Any]], raw: Any = None
) -> Ready:
    """The statement of *key*, built by *build* and compiled the first time only
    (*raw*: the driver's connection, which writes literals in the server's form)."""
    cache = store.ready_statements
    found = cache.get(key)
    if found is None:
        if len(cache) >= MAX_READY_STATEMENTS:
            cache.clear()
        found = cache[key] = _prepare(store, build(), raw)
    return found


def _prepare(store: TableStore, statement: sa.Select[Any], raw: Any) -> Ready:
    dialect = store.engine.dialect
    columns = tuple(column.name for column in statement.selected_columns)
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    binds = compiled.binds.values()
    processed = any(
        bind.type.dialect_impl(dialect).bind_processor(dialect) is not None for bind in binds
    ) or any(
        column.type.dialect_impl(dialect).result_processor(dialect, None) is not None
        for column in statement.selected_columns
    )
    if processed:
        return Ready(statement, columns)
    order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    text, fixed = str(compiled), dict(compiled.params)
    if dialect.driver == "psycopg" and order is None:
        text, fixed = _inlined(text, fixed, raw)
    return Ready(statement, columns, text, fixed, order)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _inlined(text: str, fixed: dict[str, Any], raw: Any) -> tuple[str, dict[str, Any]]:
    """*text* with the query's own values written in as literals by psycopg (the
    cursor's stay parameters): PostgreSQL then plans with the values, as for the
    statement a person writes, and runs a page in about half the time."""
    import psycopg.sql

    def literal(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("rk_"):
            return match.group(0)
        # Still a pyformat statement: its percent signs are doubled.
        return psycopg.sql.Literal(fixed[name]).as_string(raw).replace("%", "%%")

    return _PLACEHOLDER.sub(literal, text), {k: v for k, v in fixed.items() if k.startswith("rk_")}


def run(
    store: TableStore,
    conn: sa.Connection,
    key: Any,
    build: Callable[[], sa.Select[Any]],
    values: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The rows of the statement of *key* (see :func:`ready`) with *values* bound,
    each as a dict of its columns (far cheaper to read than SQLAlchemy's rows)."""
    raw = conn.connection.dbapi_connection
    prepared = ready(store, key, build, raw)
    if prepared.text is None or prepared.fixed is None:
        result = conn.execute(prepared.statement, dict(values))
        columns = tuple(result.keys())
        return [dict(zip(columns, row, strict=True)) for row in result.all()]
    merged = {**prepared.fixed, **values}
    params: Any = merged
    if prepared.order is not None:
        params = tuple(merged[name] for name in prepared.order)
    assert raw is not None, "a connection in use has its driver's connection"
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(prepared.text, params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
    except Exception as exc:
        raise _wrapped(store, conn, raw, prepared.text, params, exc) from exc
    columns = prepared.columns  # as many as each row has: the statement selects them
    return [dict(zip(columns, row)) for row in rows]  # noqa: B905 (zip's check costs per row)


def _wrapped(
    store: TableStore, conn: sa.Connection, raw: Any, text: str, params: Any, exc: Exception
) -> Exception:
    """*exc* of the driver as SQLAlchemy raises it (what the callers translate), the
    connection invalidated when the driver lost it."""
    dialect = store.engine.dialect
    base = dialect.loaded_dbapi.Error
    if not isinstance(exc, base):
        return exc
    lost = dialect.is_disconnect(exc, raw, None)
    if lost:
        conn.invalidate(exc)
    wrapped: Exception = sa.exc.DBAPIError.instance(
        text, params, exc, base, connection_invalidated=lost, dialect=dialect
    )
    return wrapped


def _sql_of(store: TableStore, query: Query) -> SqlQuery | None:
    """:meth:`SqlQuery.of`, made once per query and store (a missing table is asked again)."""
    key = ("sql", query)
    cache = store.ready_queries
    found = cache.get(key)
    if found is None:
        found = SqlQuery.of(store, query)
        if found is None:
            return None
        if len(cache) >= MAX_READY_STATEMENTS:
            cache.clear()
        cache[key] = found
    return found


def retried(store: TableStore, read: Callable[[], T]) -> T:
    """*read*, tried once more on a fresh connection when the kept one was found
    dead (a server restarted, an idle connection closed by a proxy)."""
    try:
        return read()
    except sa.exc.DBAPIError as exc:
        if not (exc.connection_invalidated or store.transient(exc)):
            raise
    return read()


def _when(value: datetime, aware: bool) -> datetime:
    utc = value.astimezone(timezone.utc)
    return utc if aware else utc.replace(tzinfo=None)


def _residual(query: Query, left: Mapping[str, Any]) -> Query | None:
    """The part of *query* that SQL did not decide exactly (None: none)."""
    if not left:
        return None
    return replace(Query(kinds=query.kinds), **left)


# ------------------------------------------------------------------ pages
def _key(done: Any, row_id: Any) -> dict[str, Any]:
    text = done.isoformat() if isinstance(done, datetime) else None
    return {"d": text, "i": row_id}


def _position(position: Mapping[str, Any] | None) -> tuple[datetime | None, Any, bool]:
    """(date_done, row id, in the undated part) of a cursor; (None, None, False) at the start."""
    if position is None:
        return None, None, False
    try:
        done = position["d"]
        row_id = int(position["i"])
        parsed = datetime.fromisoformat(done) if done is not None else None
    except (KeyError, TypeError, ValueError):
        raise UsageError("--cursor: this cursor is damaged; start over without --cursor") from None
    return parsed, row_id, parsed is None


#: The names the cursor's values are bound to in a page's statements.
_AT_DONE, _AT_ID = "rk_at_done", "rk_at_id"
_AFTER_DONE, _AFTER_ID = "rk_after_done", "rk_after_id"


def _shapes(newest: bool, position: Mapping[str, Any] | None) -> list[str]:
    """The phases of the rest of a page walk, in order: dated rows, then undated
    ones (newest first), or the other way round; "... after" ones start after
    the cursor (see :func:`_phase`)."""
    done, _, undated = _position(position)
    if undated:
        return ["undated after"] if newest else ["undated after", "dated"]
    if done is not None:
        return ["dated after", "undated"] if newest else ["dated after"]
    return ["dated", "undated"] if newest else ["undated", "dated"]


def _phase(sql: SqlQuery, newest: bool, shape: str) -> sa.Select[Any]:
    """The statement of one phase of :func:`_shapes`, the cursor's values bound by
    name (:func:`_position_values`): the same statement for every page."""
    date, rid = sql.date, sql.row_id
    at_done = sa.bindparam(_AT_DONE, None, type_=date.type)
    at_id = sa.bindparam(_AT_ID, None, type_=rid.type)
    after = shape.endswith(" after")
    if shape.startswith("undated"):
        nulls = sql.select().where(date.is_(None))
        if newest:
            nulls = nulls.order_by(rid.desc())
            return nulls.where(rid < at_id) if after else nulls
        nulls = nulls.order_by(rid.asc())
        return nulls.where(rid > at_id) if after else nulls
    dated = sql.select().where(date.is_not(None))
    if newest:
        dated = dated.order_by(date.desc(), rid.desc())
        if after:
            dated = dated.where(sa.or_(date < at_done, sa.and_(date == at_done, rid < at_id)))
        return dated
    dated = dated.order_by(date.asc(), rid.asc())
    if after:
        dated = dated.where(sa.or_(date > at_done, sa.and_(date == at_done, rid > at_id)))
    return dated


def _position_values(position: Mapping[str, Any] | None) -> dict[str, Any]:
    done, row_id, _ = _position(position)
    return {_AT_DONE: done, _AT_ID: row_id}


def sql_find_page(
    store: TableStore, query: Query, position: Mapping[str, Any] | None, limit: int
) -> ResultPage:
    """One page of *query* on *store*'s task table (see the module docstring)."""
    return retried(store, lambda: _find_page(store, query, position, limit))


def _find_page(
    store: TableStore, query: Query, position: Mapping[str, Any] | None, limit: int
) -> ResultPage:
    sql = _sql_of(store, query)
    if sql is None:
        return ResultPage([], None, 0)
    found: list[tuple[Record | None, dict[str, Any]]] = []
    scanned = 0
    newest = not query.oldest_first
    batch = limit + 1 if sql.residual is None else max(PREFILTER_BATCH_ROWS, limit + 1)
    at = _position_values(position)
    with reading(store) as conn:
        for shape in _shapes(newest, position):
            after: Any = None
            while len(found) <= limit:
                values = dict(at)
                since: str | None = None
                if after is not None:
                    values[_AFTER_DONE], values[_AFTER_ID] = after["date_done"], after["id"]
                    since = "dated" if after["date_done"] is not None else "undated"
                key = ("page", query, newest, shape, since, batch)
                rows = run(
                    store,
                    conn,
                    key,
                    functools.partial(_batch, sql, shape, batch, since, newest),
                    values,
                )
                scanned += len(rows)
                for row in rows:
                    if sql.residual is None and len(found) == limit:
                        found.append((None, row))  # only says a next page exists
                        break
                    record = store._record(Kind.TASK, row)
                    if sql.residual is None or sql.residual.matches(record):
                        found.append((record, row))
                        if len(found) > limit:
                            break
                if len(rows) < batch:
                    break
                after = rows[-1]
            if len(found) > limit:
                break
    records = [record for record, _ in found[:limit] if record is not None]
    cursor = None
    if len(found) > limit:
        last = found[limit - 1][1]
        cursor = encode_cursor(query, store.layout, _key(last["date_done"], last["id"]))
    return ResultPage(records, cursor, scanned)


def _batch(
    sql: SqlQuery, shape: str, batch: int, after: str | None, newest: bool
) -> sa.Select[Any]:
    """The statement of phase *shape*, *batch* rows of it, continued after the previous
    batch's last row (*after*: whether that row was "dated" or "undated"; None for the
    first batch)."""
    stmt = _phase(sql, newest, shape).limit(batch)
    if after is None:
        return stmt
    date, rid = sql.date, sql.row_id
    done = sa.bindparam(_AFTER_DONE, None, type_=date.type)
    row_id = sa.bindparam(_AFTER_ID, None, type_=rid.type)
    if after == "undated":
        return stmt.where(rid < row_id if newest else rid > row_id)
    if newest:
        return stmt.where(sa.or_(date < done, sa.and_(date == done, rid < row_id)))
    return stmt.where(sa.or_(date > done, sa.and_(date == done, rid > row_id)))


def read_one(store: TableStore, kind: Kind, table: sa.Table, result_id: str) -> Record | None:
    """The record of *result_id* (``show``'s read), by a statement kept ready, on the
    kept read connection."""
    column = table.c[store.id_columns[kind]]

    def build() -> sa.Select[Any]:
        return sa.select(table).where(column == sa.bindparam("rk_id", None, type_=column.type))

    def read() -> list[dict[str, Any]]:
        with reading(store) as conn:
            return run(
                store,
                conn,
                ("one", kind, table.name, table.schema),
                lambda: sa.select(table).where(
                    column == sa.bindparam("rk_id", None, type_=column.type)
                ),
                {"rk_id": result_id},
            )

    rows = retried(store, read)
    return store._record(kind, rows[0]) if rows else None


def sql_select(store: TableStore, query: Query, batch_size: int) -> Iterator[Record]:
    """Every task row *query* selects, by primary key, a batch per round trip."""
    sql = SqlQuery.of(store, query)
    if sql is not None:
        yield from _walk(store, sql, batch_size)


def _walk(store: TableStore, sql: SqlQuery, batch_size: int) -> Iterator[Record]:
    last: Any = None
    while True:
        stmt = sql.select().order_by(sql.row_id).limit(batch_size)
        if last is not None:
            stmt = stmt.where(sql.row_id > last)
        with reading(store) as conn:
            result = conn.execute(stmt)
            columns = tuple(result.keys())
            rows = [dict(zip(columns, row, strict=True)) for row in result.all()]
        for row in rows:
            record = store._record(Kind.TASK, row)
            if sql.residual is None or sql.residual.matches(record):
                yield record
        if len(rows) < batch_size:
            return
        last = rows[-1]["id"]


# ------------------------------------------------------------------ failures
def exception_type_sql(store: TableStore, column: sa.Column[Any]) -> sa.ColumnElement[Any] | None:
    """SQL reading ``exc_type`` out of a stored JSON result (NULL for any other), where
    the database has regular expressions (PostgreSQL, MySQL/MariaDB; not SQLite)."""
    dialect = store.engine.dialect.name
    if dialect == "postgresql":
        # encode(..., 'escape') never fails, whatever the bytes (pickle, msgpack).
        text = sa.func.encode(column, "escape") if _binary(column) else column
        # Only JSON quotes the key so: msgpack and pickle hold it without quotes.
        return sa.func.substring(text, '"exc_type": ?"([A-Za-z0-9_.]*)"')
    if dialect in ("mysql", "mariadb"):
        found = sa.func.regexp_substr(column, '"exc_type": ?"[A-Za-z0-9_.]*"')
        picked = sa.func.regexp_replace(found, '^"exc_type": ?"|"$', "")
        return sa.case((sa.func.substr(column, 1, 1) == "{", picked), else_=None)
    return None


def sql_failure_groups(store: TableStore, query: Query) -> list[FailureGroup] | None:
    """Failures grouped by name and exception type, counted by the database; None
    when it cannot read the type out of the stored result (SQLite) or must confirm
    filters in Python: the caller then tallies :func:`sql_select`."""
    sql = SqlQuery.of(store, query)
    if sql is None:
        return []
    name = store._name(sql.table)
    exc_type = exception_type_sql(store, sql.table.c.result)
    if sql.residual is not None or exc_type is None or name is None:
        return None
    c = sql.table.c
    grouped = (
        sa.select(
            name.label("name"),
            exc_type.label("exc_type"),
            sa.func.count().label("n"),
            sa.func.min(c.date_done).label("first"),
            sa.func.max(c.date_done).label("last"),
            sa.func.max(c.id).label("latest"),
        )
        .where(*sql.where)
        .group_by(name, exc_type)
    )
    groups: dict[tuple[Any, Any], FailureGroup] = {}
    with reading(store) as conn:
        rows = conn.execute(grouped).all()
        examples: dict[Any, Record] = {}
        latest = [row.latest for row in rows if row.exc_type is not None]
        for start in range(0, len(latest), 1000):
            result = conn.execute(
                sa.select(sql.table).where(c.id.in_(latest[start : start + 1000]))
            )
            columns = tuple(result.keys())
            for row in result.all():
                mapping = dict(zip(columns, row, strict=True))
                examples[mapping["id"]] = store._record(Kind.TASK, mapping)
    unread = False
    for row in rows:
        if row.exc_type is None:
            unread = True  # not JSON, or no exception: decoded in Python below
            continue
        example = examples.get(row.latest)
        meta = example.meta if example is not None else None
        exception = exception_of(meta.get("result")) if meta else None
        key = (row.name, exception[0] if exception else row.exc_type)
        group = groups.setdefault(key, FailureGroup(*key))
        group.count += int(row.n)
        first, last = _iso(row.first), _iso(row.last)
        if first and (group.first_seen is None or first < group.first_seen):
            group.first_seen = first
        if last and (group.last_seen is None or last >= group.last_seen):
            group.last_seen = last
            group.example_id = example.id if example is not None else ""
            group.example_message = exception[1] if exception else ""
    if unread:
        rest = SqlQuery(sql.table, [*sql.where, exc_type.is_(None)], None, sql.date, sql.row_id)
        for record in _walk(store, rest, PREFILTER_BATCH_ROWS):
            meta = record.meta or {}
            exception = exception_of(meta.get("result"))
            key = (meta.get("name"), exception[0] if exception else None)
            group = groups.setdefault(key, FailureGroup(*key))
            group.count += 1
            done = record.date_done
            text = done.astimezone(timezone.utc).isoformat() if done else None
            if text and (group.first_seen is None or text < group.first_seen):
                group.first_seen = text
            if text and (group.last_seen is None or text >= group.last_seen):
                group.last_seen = text
                group.example_id = record.id
                group.example_message = exception[1] if exception else ""
    return list(groups.values())


def _iso(value: Any) -> str | None:
    if not isinstance(value, datetime):
        return None
    moment: datetime = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


# ------------------------------------------------------------------ indexes
#: (suffix, columns, the filters it serves), the indexes find recommends on a task table.
RECOMMENDED: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("done", ("date_done", "id"), "the order of pages, --since/--until"),
    ("status_done", ("status", "date_done", "id"), "--state (and failures)"),
    ("name_done", ("{name}", "date_done", "id"), "--task"),
)


def recommended_indexes(store: TableStore) -> list[IndexPlan]:
    """The indexes that serve find's pages on *store*'s task table, and which exist."""
    table = store.table(Kind.TASK)
    if table is None:
        return []
    name_column = store.name_column if store._name(table) is not None else None
    inspector = sa.inspect(store.engine)
    existing = [
        tuple(index.get("column_names") or ())
        for index in inspector.get_indexes(table.name, schema=table.schema)
    ]
    plans = []
    for suffix, columns, serves in RECOMMENDED:
        if "{name}" in columns:
            if name_column is None:
                continue
            columns = tuple(name_column if c == "{name}" else c for c in columns)
        index_name = f"ix_rk_{table.name}_{suffix}"[:60]
        # An index whose leading columns are these serves as well (Django's date_done
        # index serves the order; a (date_done, id) one is not needed beside it).
        exists = any(found[: len(columns)] == columns for found in existing) or any(
            found[: len(columns) - 1] == columns[:-1] and columns[-1] == "id" for found in existing
        )
        index = sa.Index(index_name, *(table.c[c] for c in columns))
        ddl = str(sa.schema.CreateIndex(index).compile(dialect=store.engine.dialect))
        plans.append(IndexPlan(index_name, table.name, columns, exists, ddl, serves))
    return plans


def create_indexes(store: TableStore) -> list[str]:
    """Create the recommended indexes that are missing; their names."""
    table = store.table(Kind.TASK)
    made = []
    for plan in recommended_indexes(store):
        if plan.exists or table is None:
            continue
        index = sa.Index(plan.name, *(table.c[c] for c in plan.columns))
        with store.engine.begin() as conn:
            index.create(conn, checkfirst=True)
        made.append(plan.name)
    return made


def explain(store: TableStore, query: Query, limit: int) -> list[str]:
    """The database's plan for the first page of *query*, and what Python confirms."""
    sql = SqlQuery.of(store, query)
    if sql is None:
        return ["the task table does not exist: there is nothing to find"]
    newest = not query.oldest_first
    statement = _phase(sql, newest, _shapes(newest, None)[0]).limit(limit + 1)
    dialect = store.engine.dialect
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    prefix = {"sqlite": "EXPLAIN QUERY PLAN "}.get(dialect.name, "EXPLAIN ")
    params: Any = compiled.params
    if compiled.positiontup is not None:
        params = tuple(compiled.params[name] for name in compiled.positiontup)
    with reading(store) as conn:
        rows = conn.exec_driver_sql(prefix + str(compiled), params).all()
    lines = [" | ".join("" if v is None else str(v) for v in row) for row in rows]
    if dialect.name in ("mysql", "mariadb") and rows:
        keys = rows[0]._mapping
        lines = [
            f"table {keys.get('table')}: key {keys.get('key')} (type {keys.get('type')}, "
            f"rows {keys.get('rows')}, {keys.get('Extra')})"
        ]
    if sql.residual is not None:
        confirmed = ", ".join(
            k
            for k, v in sql.residual.describe().items()
            if v not in (None, [], "newest-first") and k not in ("kind", "order")
        )
        lines.append(f"then confirmed in Python: {confirmed}")
    return lines
