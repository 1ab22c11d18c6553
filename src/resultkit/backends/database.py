"""``resultkit-db``: a drop-in SQL result backend, many times faster than Celery's.

``result_backend = "resultkit-db+postgresql+psycopg://user@host/db"`` (also
``+mysql+pymysql://`` and ``+sqlite:///``).  Same tables and columns as
Celery's :class:`~celery.backends.database.DatabaseBackend` — names and schemas
from ``database_table_names`` / ``database_table_schemas``, plain or extended —
so either backend reads what the other wrote.  What changes:

- one pooled engine per process (``database_engine_options`` apply to it),
  disposed and rebuilt in a forked child;
- one round trip per store: a dialect upsert that keeps Celery's rule that a
  stored SUCCESS is never replaced by a later state;
- group joins read every pending member in one query per batch;
- on PostgreSQL, ``AsyncResult.get()`` wakes on ``LISTEN``/``NOTIFY`` the moment
  a result is stored (polling remains the fallback); elsewhere it polls every
  ``resultkit_poll_interval`` seconds (default 0.05);
- chords count their finished parts in rows (see :mod:`._chords`) instead of
  polling with ``celery.chord_unlock``: nested groups, chords of chords and
  redelivered tasks count exactly as on Redis;
- ``cleanup()`` deletes in bounded batches, with the retention policy.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, NamedTuple

import sqlalchemy as sa
from celery import states
from celery.backends.database import DatabaseBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.utils.encoding import ensure_bytes
from sqlalchemy.orm.exc import StaleDataError

from .. import offload
from .._celery_compat import (
    CELERY_CALLS_RETRY_HOOK,
    bytes_table,
    ensure_retryable,
    model_pickles_results,
    pickle_group,
    pickle_result,
)
from ..errors import ConfigurationError
from ..purge import PurgePlan
from ..records import Kind
from ..retention import RetentionPolicy
from ..stores.sql.layout import Column, columns_of, row_values
from ..stores.sql.purge import purge_table
from ..stores.sql.statements import create_missing
from ._chords import ChordLedger, SqlChords, insert_or_update
from ._polling import follow_parents, poll_many, wait_for_one

__all__ = ["NOTIFY_CHANNEL", "ResultkitDatabaseBackend", "poll_interval_s"]

#: PostgreSQL channel that carries the id of every stored ready result.
NOTIFY_CHANNEL = "resultkit_results"
#: Polling interval when no notification arrives (seconds).
DEFAULT_POLL_INTERVAL_S = 0.05
#: Ids per query when joining a group.
JOIN_BATCH_IDS = 1000

logger = logging.getLogger("resultkit.db")

#: What Celery 5.7's SQL backend retries (older releases retry nothing by default).
_RETRYABLE = (
    sa.exc.DatabaseError,
    sa.exc.InterfaceError,
    sa.exc.InvalidRequestError,
    StaleDataError,
)


def poll_interval_s(conf: Any) -> float:
    """``resultkit_poll_interval`` in seconds (default :data:`DEFAULT_POLL_INTERVAL_S`);
    :class:`ConfigurationError` for anything but a positive number."""
    value = conf.get("resultkit_poll_interval")
    if value is None:
        return DEFAULT_POLL_INTERVAL_S
    try:
        if isinstance(value, bool) or float(value) <= 0:
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"resultkit_poll_interval = {value!r} is not a positive number of seconds "
            f"(default {DEFAULT_POLL_INTERVAL_S})"
        ) from None
    return float(value)


class _Doomed(NamedTuple):
    task_id: str
    reference: offload.Reference


class ResultkitDatabaseBackend(SqlChords, DatabaseBackend):  # type: ignore[misc]
    """Celery's SQL result backend with a pooled engine, upserts and fast waiting."""

    supports_native_join = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._engine: sa.Engine | None = None
        self._engine_pid = 0
        self._lock = threading.Lock()
        self._listeners = threading.local()
        self._tables_ready = False
        self._statements: dict[Any, Any] = {}
        self._initialising = True
        super().__init__(*args, **kwargs)
        self._initialising = False
        #: Celery 5.4-5.6: the result columns pickle the value (5.7: the app's serializer).
        self.pickles_results = model_pickles_results(self.task_cls)
        self._task_table = bytes_table(self.task_cls.__table__)
        self._group_table = bytes_table(self.taskset_cls.__table__)
        if not hasattr(DatabaseBackend, "_ensure_retryable"):
            # Celery 5.7's defaults for its SQL backend, which older releases did not retry.
            conf = self.app.conf
            if not conf.value_set_for("result_backend_always_retry"):
                self.always_retry = True
            if not conf.value_set_for("result_backend_max_retries"):
                self.max_retries = 3
        self.retention = RetentionPolicy.from_app(self.app)
        conf = self.app.conf
        self.poll_interval = poll_interval_s(conf)
        group_schema = (conf.database_table_schemas or {}).get("group")
        self.chords = ChordLedger(sa.MetaData(), group_schema)
        #: ``resultkit_offload``: result columns above the threshold live in object storage.
        self.offloader = offload.Offloader.from_conf(conf)

    # ------------------------------------------------------------- engine
    @property
    def engine(self) -> sa.Engine:
        """This process's pooled engine (a forked child builds its own)."""
        pid = os.getpid()
        if self._engine is None or self._engine_pid != pid:
            with self._lock:
                if self._engine is None or self._engine_pid != pid:
                    if self._engine is not None:
                        # The parent's connections belong to the parent: drop, never close.
                        self._engine.dispose(close=False)
                    options = dict(self.engine_options)
                    if not self.app.conf.value_set_for("database_engine_options"):
                        # Celery's default pings before every checkout, a round trip per
                        # operation; lost connections are retried instead (see
                        # on_backend_retryable_error).
                        options.pop("pool_pre_ping", None)
                    # Every operation is one statement: autocommit saves the BEGIN and
                    # COMMIT round trips, there is nothing to roll back on return, and
                    # each read sees what is committed (what READ COMMITTED is asked for).
                    options["isolation_level"] = "AUTOCOMMIT"
                    options.setdefault("pool_reset_on_return", None)
                    self._engine = sa.create_engine(self.url, **options)
                    self._statements = {}
                    self._engine_pid = pid
                    self._tables_ready = False
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _ready_tables(self) -> None:
        if not self._tables_ready:
            tables = [self.task_cls.__table__, self.taskset_cls.__table__, *self.chords.tables]
            # Every process of a prefork worker comes here with its first result.
            create_missing(self.engine, tables)
            self._tables_ready = True

    def _create_tables(self) -> None:
        # Tables are created on first use, with this process's pooled engine.
        if not getattr(self, "_initialising", False):
            ensure_retryable(self, self._ready_tables)

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        """SQLAlchemy's retryable errors, and the driver's own on the direct store path."""
        if super().exception_safe_to_retry(exc) or isinstance(
            exc, (*_RETRYABLE, offload.ObjectStoreUnavailable)
        ):
            return True
        dbapi = self.engine.dialect.loaded_dbapi
        retryable = tuple(
            getattr(dbapi, name)
            for name in ("OperationalError", "InterfaceError")
            if hasattr(dbapi, name)
        )
        return bool(retryable) and isinstance(exc, retryable)

    def _drop_lost_connections(self, exc: Exception) -> None:
        """Before Celery 5.6 its retry loops (``store_result``, ``get_task_meta``) call
        no hook: a retryable error drops the pool here, before Celery tries again."""
        if not CELERY_CALLS_RETRY_HOOK and self.always_retry and self.exception_safe_to_retry(exc):
            self.on_backend_retryable_error(exc)

    def on_backend_retryable_error(self, exc: Exception) -> None:
        # A lost connection poisons the pool: start again with fresh ones.
        if self._engine is not None:
            self._engine.dispose()
        parent = getattr(super(), "on_backend_retryable_error", None)  # Celery 5.6+
        if parent is not None:
            parent(exc)

    @property
    def task_table(self) -> sa.Table:
        """Celery's task table, its result column as the bytes it holds."""
        return self._task_table

    @property
    def group_table(self) -> sa.Table:
        """Celery's group table, its result column as the bytes it holds."""
        return self._group_table

    def _stored(self, value: Any) -> bytes | None:
        """A result as the installed Celery's result column holds it."""
        if self.pickles_results:
            return pickle_result(value)
        return ensure_bytes(self.encode(value))  # type: ignore[no-any-return]

    def _decode_stored(self, payload: Any) -> Any:
        """A result column's value as the installed Celery reads it."""
        payload = offload.resolve(payload)
        if self.pickles_results:
            # Celery 5.4-5.6 unpickle the column, whatever the app's serializer.
            return None if payload is None else pickle.loads(payload)
        return self._decode_stored_result(payload)

    # -------------------------------------------------------------- store
    def _row(
        self, task_id: str, result: Any, state: str, traceback: Any, request: Any
    ) -> dict[str, Any]:
        meta = self._get_result_meta(
            result=self._stored(result),
            state=state,
            traceback=traceback,
            request=request,
            format_date=False,
            encode=True,
        )
        # Celery encoded the result, args and kwargs already; children and stamps not.
        meta["date_done"] = meta.get("date_done") or datetime.now(timezone.utc)
        columns = self._columns
        values = row_values(task_id, meta, columns, self._encode_once)
        row = {column.name: value for column, value in zip(columns, values, strict=True)}
        if self.offloader is not None:
            # The object first: a row only ever references a written object.
            row["result"] = self.offloader.offload(task_id, row.get("result"))
        return row

    @functools.cached_property
    def _columns(self) -> tuple[Column, ...]:
        return columns_of(Kind.TASK, set(self.task_table.c.keys()))

    def _encode_once(self, value: Any) -> bytes:
        """A column's bytes: encoded by Celery already, or encoded here."""
        return value if isinstance(value, bytes) else ensure_bytes(self.encode(value))

    def _upsert(self, columns: tuple[str, ...], notify: bool) -> Any:
        """One statement: insert, or update unless the stored state is SUCCESS (built once)."""
        key = ("upsert", columns, notify)
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = self._build_upsert(columns, notify)
        return statement

    def _build_upsert(self, columns: tuple[str, ...], notify: bool) -> Any:
        table = self.task_table
        values: dict[str, Any] = {c: sa.bindparam(c) for c in columns}
        id_default = table.c.id.default
        if isinstance(id_default, sa.Sequence) and self.engine.dialect.supports_sequences:
            values["id"] = id_default.next_value()
        updates = [c for c in columns if c != "task_id"]
        if self.dialect in ("postgresql", "sqlite"):
            from sqlalchemy.dialects.postgresql import insert as pg_insert
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            insert = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(table)
            statement = insert.values(values)
            statement = statement.on_conflict_do_update(
                index_elements=[table.c.task_id],
                set_={c: statement.excluded[c] for c in updates},
                where=sa.or_(table.c.status.is_(None), table.c.status != states.SUCCESS),
            )
            if notify:
                written = statement.returning(table.c.task_id).cte("written")
                return sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, written.c.task_id))
            return statement
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        upsert = mysql_insert(table).values(values)
        keep = table.c.status == states.SUCCESS
        # Assignments run left to right: the status column goes last, so every
        # IF() still sees the state that was stored before this write.
        assignments = [
            (c, sa.func.IF(keep, table.c[c], upsert.inserted[c])) for c in updates if c != "status"
        ]
        assignments.append(("status", sa.func.IF(keep, table.c.status, upsert.inserted.status)))
        return upsert.on_duplicate_key_update(assignments)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        try:
            return self._store_one(task_id, result, state, traceback, request)
        except Exception as exc:
            self._drop_lost_connections(exc)
            raise

    def _store_one(
        self, task_id: str, result: Any, state: str, traceback: Any, request: Any
    ) -> Any:
        self._ready_tables()
        row = self._row(task_id, result, state, traceback, request)
        notify = self.dialect == "postgresql" and state in states.READY_STATES
        statement = self._upsert(tuple(row), notify)
        if self.engine.dialect.driver == "psycopg":
            # The hot path: the compiled statement straight to the pooled driver
            # connection (psycopg prepares it after a few uses).
            sql, constants = self._direct_sql(statement, row)
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                try:
                    cursor.execute(sql, {**constants, **row})
                finally:
                    cursor.close()
            finally:
                connection.close()
            return result
        with self.engine.connect() as conn:
            conn.execute(statement, row)
        return result

    # --------------------------------------------------------------- read
    def _meta_from_row(self, mapping: Any) -> dict[str, Any]:
        data = {k: mapping[k] for k in mapping if k != "id"}
        data["result"] = self._decode_stored(data.get("result"))
        for name in ("args", "kwargs", "children"):
            if data.get(name) is not None:
                data[name] = self.decode(data[name])
        raw_stamps = data.pop("stamps", None)
        if raw_stamps is not None:
            try:
                info = self.decode(raw_stamps)
                data["stamped_headers"] = info.get("stamped_headers")
                data.update(info.get("stamps") or {})
            except Exception:  # stamps are informational; Celery ignores bad ones too
                pass
        if not self.extended_result:
            for name in ("name", "args", "kwargs", "worker", "retries", "queue"):
                data.pop(name, None)
        return self.meta_from_decoded(data)  # type: ignore[no-any-return]

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        try:
            return self._read_one(task_id)
        except Exception as exc:
            self._drop_lost_connections(exc)
            raise

    def _read_one(self, task_id: str) -> dict[str, Any]:
        self._ready_tables()
        statement = self._statements.get("get")
        if statement is None:
            table = self.task_table
            statement = self._statements["get"] = sa.select(table).where(
                table.c.task_id == sa.bindparam("task_id")
            )
        if self.engine.dialect.driver == "psycopg":
            mapping = self._fetch_direct(statement, {"task_id": task_id})
        else:
            with self.engine.connect() as conn:
                row = conn.execute(statement, {"task_id": task_id}).first()
            mapping = None if row is None else dict(row._mapping)
        if mapping is None:
            return {"status": states.PENDING, "result": None, "task_id": task_id}
        return self._meta_from_row(mapping)

    def _direct_sql(self, statement: Any, names: Any) -> tuple[str, dict[str, Any]]:
        """The SQL of a statement and its constant parameters, compiled once."""
        compiled = self._statements.get(("sql", statement))
        if compiled is None:
            done = statement.compile(dialect=self.engine.dialect)
            constants = {k: v for k, v in done.params.items() if k not in names}
            compiled = self._statements[("sql", statement)] = (str(done), constants)
        return compiled

    def _fetch_direct(self, statement: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run a one-row SELECT on the pooled driver connection; the row as a mapping."""
        sql, constants = self._direct_sql(statement, params)
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, {**constants, **params})
                row = cursor.fetchone()
                names = [column[0] for column in cursor.description or ()]
            finally:
                cursor.close()
        finally:
            connection.close()
        return None if row is None else dict(zip(names, row, strict=True))

    def _fetch_ready(self, task_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Metas of the given ids that are in a ready state, one query per batch."""
        self._ready_tables()
        table = self.task_table
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(task_ids), JOIN_BATCH_IDS):
                chunk = task_ids[start : start + JOIN_BATCH_IDS]
                query = sa.select(table).where(
                    table.c.task_id.in_(chunk), table.c.status.in_(sorted(states.READY_STATES))
                )
                for row in conn.execute(query):
                    out[row.task_id] = self._meta_from_row(row._mapping)
        return out

    def iter_native(
        self,
        result: Any,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
    ) -> Iterator[tuple[str, Any]]:
        """Celery's native join, raising a failed parent's error as ``get()`` does."""
        on_interval = follow_parents([result, *result.results], on_interval)
        return super().iter_native(  # type: ignore[no-any-return]
            result, timeout, interval, no_ack, on_message, on_interval
        )

    def get_many(
        self,
        task_ids: Any,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
        max_iterations: int | None = None,
        READY_STATES: Any = states.READY_STATES,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(task_id, meta)`` as members become ready, reading them in bulk."""
        pending = []
        for task_id in dict.fromkeys(task_ids):
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in READY_STATES:
                yield task_id, cached
            else:
                pending.append(task_id)

        def fetch_ready(ids: list[str]) -> dict[str, dict[str, Any]]:
            ready: dict[str, dict[str, Any]] = ensure_retryable(self, self._fetch_ready, ids)
            self._cache.update(ready)
            return ready

        yield from poll_many(
            pending,
            fetch_ready,
            lambda ids, deadline: self._wait(ids, deadline, min(interval, self.poll_interval)),
            timeout=timeout,
            on_message=on_message,
            on_interval=on_interval,
            max_iterations=max_iterations,
        )

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Any = None,
    ) -> dict[str, Any]:
        """Wait for one result: woken by NOTIFY on PostgreSQL, polling elsewhere."""
        self._ensure_not_eager()
        return wait_for_one(
            lambda: self.get_task_meta(task_id, cache=False),
            lambda deadline: self._wait([task_id], deadline, min(interval, self.poll_interval)),
            timeout,
            on_interval,
        )

    def _wait(self, task_ids: list[str], deadline: float | None, interval: float) -> None:
        """Sleep until a notification names one of *task_ids*, *interval* passes, or time's up."""
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise CeleryTimeoutError("The operation timed out.")
        pause = interval if deadline is None else max(0.0, min(interval, deadline - now))
        listener = self._listener()
        if listener is None:
            time.sleep(pause)
            return
        wanted = set(task_ids)
        try:
            for notify in listener.notifies(timeout=pause, stop_after=None):
                if notify.payload in wanted:
                    return
        except Exception:
            self._listeners.conn = None  # fall back to polling; reconnect next time

    def _listener(self) -> Any:
        """A LISTENing psycopg 3 connection for this thread (None elsewhere)."""
        if self.engine.dialect.name != "postgresql" or self.engine.dialect.driver != "psycopg":
            return None
        conn = getattr(self._listeners, "conn", None)
        if (
            conn is not None
            and getattr(self._listeners, "pid", 0) == os.getpid()
            and not conn.closed
        ):
            return conn
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        try:
            conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error:
            return None
        self._listeners.conn, self._listeners.pid = conn, os.getpid()
        return conn

    # -------------------------------------------------------------- groups
    def _save_group(self, group_id: str, result: Any) -> Any:
        self._ready_tables()
        table = self.group_table
        prepared = self.prepare_value(result)
        value = pickle_group(prepared) if self.pickles_results else self._stored(prepared)
        values: dict[str, Any] = {
            "taskset_id": group_id,
            "result": value,
            "date_done": datetime.now(timezone.utc).replace(tzinfo=None),
        }
        id_default = table.c.id.default
        if isinstance(id_default, sa.Sequence) and self.engine.dialect.supports_sequences:
            values["id"] = id_default.next_value()
        # A reapplied chord saves its header again under the same id.
        update = {"result": value, "date_done": values["date_done"]}
        with self.engine.connect() as conn:
            insert_or_update(conn, table, values, keys=["taskset_id"], update=update)
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        self._ready_tables()
        from celery.result import result_from_tuple

        table = self.group_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.taskset_id == group_id)).first()
        if row is None:
            return None
        value = self._decode_stored(row.result)
        return {
            "taskset_id": row.taskset_id,
            "date_done": row.date_done,
            "result": None if value is None else result_from_tuple(value, self.app),
        }

    def _delete_group(self, group_id: str) -> None:
        table = self.group_table
        with self.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.taskset_id == group_id))

    def _forget(self, task_id: str) -> None:
        table = self.task_table
        with self.engine.begin() as conn:
            stored = conn.execute(
                sa.select(table.c.result).where(table.c.task_id == task_id)
            ).scalar()
            conn.execute(sa.delete(table).where(table.c.task_id == task_id))
        # The row goes first: a failure here leaves an orphan that cleanup sweeps,
        # never a reference without its object.
        offload.delete_referenced(stored)

    def offload_references(self, task_ids: list[str]) -> list[bytes]:
        """The offload references stored for *task_ids* (inline results are left out)."""
        table = self.task_table
        marker = sa.func.substr(table.c.result, 1, len(offload.MARKER))
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.result).where(
                    table.c.task_id.in_(task_ids), marker == offload.MARKER
                )
            )
            return [bytes(row[0]) for row in rows]

    # ------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Delete results past their lifetime, in bounded batches (the retention policy);
        with ``resultkit_offload``, their objects after them."""
        plan = PurgePlan(self.retention, time.time(), batch_size=5000)
        doomed = self._expired_references(plan) if self.offloader is not None else []
        for table, status, name in (
            (
                self.task_table,
                self.task_table.c.status,
                self.task_table.c.name if "name" in self.task_table.c else None,
            ),
            (self.group_table, None, None),
        ):
            purge_table(
                self.engine,
                table,
                plan,
                status=status,
                name=name,
                to_record=lambda row: row,
                before_delete=None,
            )
        # Finished (or abandoned) chords go with their groups' lifetime.
        lifetime = self.retention.lifetime(None, "SUCCESS")
        if lifetime is not None:
            with self.engine.connect() as conn:
                self.chords.purge(conn, plan.cutoff(lifetime))
        if doomed:
            # The rows went first; an object goes once no row references it (a row
            # stored again meanwhile references a new object, never this one).
            alive = {
                ref.url
                for ref in map(
                    offload.parse_reference,
                    self.offload_references(sorted({ref.task_id for ref in doomed})),
                )
                if ref is not None
            }
            for ref in doomed:
                if ref.reference.url not in alive:
                    offload.delete_referenced(ref.reference.encode())

    def _expired_references(self, plan: PurgePlan) -> list[_Doomed]:
        """The offload references of the task rows that the purge is about to delete."""
        from ..stores.sql.purge import sql_expired

        table = self.task_table
        name = table.c.name if "name" in table.c else None
        marker = sa.func.substr(table.c.result, 1, len(offload.MARKER))
        query = sa.select(table.c.task_id, table.c.result).where(
            sql_expired(plan, table.c.date_done, table.c.status, name), marker == offload.MARKER
        )
        doomed = []
        with self.engine.connect() as conn:
            for task_id, payload in conn.execute(query):
                reference = offload.parse_reference(bytes(payload))
                if reference is not None:
                    doomed.append(_Doomed(task_id, reference))
        return doomed
