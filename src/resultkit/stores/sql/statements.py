"""SQL primitives shared by the stores that keep results in tables (Celery's, django's)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from ...records import Kind, Record, as_datetime
from ..base import OnConflict, WriteResult

__all__ = [
    "IN_CHUNK_ROWS",
    "create_missing",
    "delete_ids",
    "read_ids",
    "rows_of",
    "state_counts",
    "transient_error",
    "upsert_rows",
    "write_by_kind",
]

#: Ids per IN (...) list: bounded, whatever the batch size.
IN_CHUNK_ROWS = 1000


#: SQLSTATE classes and codes of errors that pass when tried again: a lost
#: connection (08), a server shutting down or a terminated session (57P0x),
#: a serialization failure or a deadlock.
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01")
#: MySQL/MariaDB: server gone away, connection lost, deadlock, lock wait timeout.
_TRANSIENT_MYSQL_ERRORS = frozenset({2006, 2013, 1213, 1205})


def transient_error(engine: sa.Engine, exc: BaseException) -> bool:
    """True when *exc* may pass if the transaction is tried again: a connection
    lost or terminated, a deadlock, a database locked for a moment."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or exc.orig is None:
            return bool(exc.connection_invalidated)
        exc = exc.orig
    dbapi = engine.dialect.loaded_dbapi
    if not isinstance(exc, getattr(dbapi, "Error", ())):
        return False
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if state:
        return str(state).startswith(_TRANSIENT_SQLSTATES)
    if not isinstance(exc, getattr(dbapi, "OperationalError", ())):
        return False
    name = engine.dialect.name
    if name == "postgresql":
        return True  # no SQLSTATE: the driver lost the connection itself
    if name in ("mysql", "mariadb"):
        return bool(exc.args) and exc.args[0] in _TRANSIENT_MYSQL_ERRORS
    return name == "sqlite" and "locked" in str(exc)


#: PostgreSQL advisory lock key and MySQL lock name held while resultkit
#: creates tables: one process creates them, the others then find them.
_CREATE_LOCK_KEY = 0x7265_7375_6C74_6B74  # "resultkt"
_CREATE_LOCK_NAME = "resultkit.create_tables"
#: How long a process waits for another one creating the tables (MySQL).
CREATE_LOCK_TIMEOUT_S = 60
#: Another process's CREATE may not be visible at once (SQLite's own locking).
_CREATE_RECHECK_PAUSES_S = (0.05, 0.2, 0.5, 1.0)


def create_missing(engine: sa.Engine, tables: Sequence[sa.Table]) -> None:
    """Create the *tables* (with their sequences and indexes) that do not exist;
    safe when several processes do it at once.

    PostgreSQL and MySQL serialize the creators with a lock of the server's
    (advisory lock, GET_LOCK); whoever comes second finds the tables made.
    Where there is no such lock (SQLite), a creation that fails because
    another process made the table first is checked and accepted.
    """
    try:
        with engine.connect() as conn, _creation_lock(conn):
            for table in tables:
                table.create(conn, checkfirst=True)
            conn.commit()
    except sa.exc.DBAPIError:
        for pause in _CREATE_RECHECK_PAUSES_S:
            if _all_exist(engine, tables):
                return
            time.sleep(pause)
        raise


def _all_exist(engine: sa.Engine, tables: Sequence[sa.Table]) -> bool:
    inspector = sa.inspect(engine)
    return all(inspector.has_table(t.name, schema=t.schema) for t in tables)


@contextlib.contextmanager
def _creation_lock(conn: sa.Connection) -> Iterator[None]:
    """Hold the server's lock for table creation on *conn*'s session."""
    name = conn.dialect.name
    if name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _CREATE_LOCK_KEY})
        try:
            yield
        finally:
            conn.rollback()  # an aborted transaction would refuse the unlock
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _CREATE_LOCK_KEY})
            conn.commit()
    elif name in ("mysql", "mariadb"):
        lock = {"name": _CREATE_LOCK_NAME, "timeout": CREATE_LOCK_TIMEOUT_S}
        got = conn.execute(sa.text("SELECT GET_LOCK(:name, :timeout)"), lock).scalar()
        try:
            yield
        finally:
            if got == 1:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": _CREATE_LOCK_NAME})
    else:
        yield


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i : i + IN_CHUNK_ROWS]) for i in range(0, len(ids), IN_CHUNK_ROWS)]


def read_ids(
    engine: sa.Engine,
    table: sa.Table,
    column: Any,
    ids: Sequence[str],
    to_record: Callable[[Any], Record],
) -> dict[str, Record]:
    """The records of *ids* (those that exist), read in bounded IN lists."""
    out: dict[str, Record] = {}
    with engine.connect() as conn:
        for chunk in _chunks(ids):
            for row in conn.execute(sa.select(table).where(column.in_(chunk))):
                record = to_record(row)
                out[record.id] = record
    return out


def delete_ids(engine: sa.Engine, table: sa.Table, column: Any, ids: Sequence[str]) -> int:
    """Delete the rows of *ids* in one transaction; return how many existed."""
    deleted = 0
    with engine.begin() as conn:
        for chunk in _chunks(ids):
            deleted += conn.execute(sa.delete(table).where(column.in_(chunk))).rowcount
    return deleted


def state_counts(engine: sa.Engine, status: Any) -> dict[str | None, int]:
    """Rows by state, with one GROUP BY."""
    query = sa.select(status, sa.func.count()).group_by(status)
    with engine.connect() as conn:
        return {state: int(n) for state, n in conn.execute(query)}


WriteKind = Callable[[sa.Connection, Kind, list[Record], OnConflict, WriteResult], None]


def write_by_kind(
    engine: sa.Engine, records: Sequence[Record], on_conflict: OnConflict, write_kind: WriteKind
) -> WriteResult:
    """Write tasks and groups in one transaction, each kind by *write_kind*."""
    outcome = WriteResult()
    by_kind: dict[Kind, list[Record]] = {}
    for record in records:
        by_kind.setdefault(record.kind, []).append(record)
    with engine.begin() as conn:
        for kind, batch in by_kind.items():
            write_kind(conn, kind, batch, on_conflict, outcome)
    return outcome


Row = TypeVar("Row")


def rows_of(
    batch: list[Record], to_row: Callable[[Record], Row], outcome: WriteResult
) -> dict[str, Row]:
    """Rows by id; a record that cannot become a row is counted as failed, with why."""
    rows: dict[str, Row] = {}
    for record in batch:
        try:
            rows[record.id] = to_row(record)
        except Exception as exc:
            outcome.failed[record.id] = str(exc)
    return rows


def upsert_rows(
    conn: sa.Connection,
    table: sa.Table,
    column: Any,
    rows: dict[str, dict[str, Any]],
    on_conflict: OnConflict,
    outcome: WriteResult,
) -> None:
    """Insert new rows and, per *on_conflict*, update existing ones, in the caller's transaction."""
    key = column.name
    existing: dict[str, Any] = {}
    for chunk in _chunks(list(rows)):
        query = sa.select(column, table.c.date_done).where(column.in_(chunk))
        existing.update({r[0]: as_datetime(r[1]) for r in conn.execute(query)})
    inserts = [row for rid, row in rows.items() if rid not in existing]
    updates = []
    for rid, row in rows.items():
        if rid not in existing:
            continue
        new = as_datetime(row["date_done"])
        if on_conflict is OnConflict.OVERWRITE or (
            on_conflict is OnConflict.NEWER
            and new is not None
            and (existing[rid] is None or new > existing[rid])
        ):
            updates.append(row)
        else:
            outcome.skipped.append(rid)
    if inserts:
        conn.execute(sa.insert(table), inserts)
    if updates:
        columns = [c for c in updates[0] if c != key]
        statement = (
            sa.update(table)
            .where(column == sa.bindparam("_key"))
            .values({c: sa.bindparam(c) for c in columns})
        )
        conn.execute(statement, [{**row, "_key": row[key]} for row in updates])
    outcome.written.extend(row[key] for row in inserts + updates)
