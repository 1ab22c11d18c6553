"""Chords on SQL: which header parts have finished, and who runs the body.

Celery's own ``db+`` backend polls with ``celery.chord_unlock``; Redis counts
parts in keys.  ``resultkit-db`` keeps the same facts in two tables, so that
nested groups, chords of chords and redelivered tasks count exactly as they
do on Redis:

``resultkit_chord``
    one row per chord: the header's size as Celery announces it
    (``set_chord_size``, which counts the tasks of nested groups), parts added
    later (``add_to_chord``), and the claim of the worker that runs the body.
``resultkit_chord_part``
    one row per finished header task, keyed by (chord, task id, index in the
    header), so a task delivered twice is counted once.

The part that completes the header claims the chord with one conditional
UPDATE; only that worker joins the header and sends the body.  A claim older
than the claim lifetime can be taken over (its worker died), and a finished
chord is marked ``done`` so that a late duplicate never sends the body again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import GroupResult, allow_join_result

from .._celery_compat import ensure_retryable

__all__ = ["ChordLedger", "SqlChords", "insert_or_update"]

#: States of a chord row.
OPEN, CLAIMED, DONE = "open", "claimed", "done"
#: A header task with no index (a chord built by hand) is counted at this index.
NO_INDEX = -1


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def insert_or_update(
    conn: sa.Connection,
    table: sa.Table,
    values: dict[str, Any],
    *,
    keys: list[str] | None = None,
    update: dict[str, Any] | None = None,
) -> None:
    """INSERT *values*; when a row with the same *keys* (default: the primary key)
    exists, UPDATE it with *update* instead, or leave it as it is when there is none."""
    key_names = keys or [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
        statement = statement.values(values)
        if update:
            statement = statement.on_conflict_do_update(index_elements=key_names, set_=update)
        else:
            statement = statement.on_conflict_do_nothing(index_elements=key_names)
    else:
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        statement = mysql_insert(table).values(values)
        # Without an update, assign a key column to itself: a no-op on a duplicate.
        statement = statement.on_duplicate_key_update(
            update or {key_names[0]: table.c[key_names[0]]}
        )
    conn.execute(statement)


class ChordLedger:
    """The two chord tables of one schema, and the statements that keep them."""

    def __init__(self, metadata: sa.MetaData, schema: str | None) -> None:
        self.chords = sa.Table(
            "resultkit_chord",
            metadata,
            sa.Column("group_id", sa.String(155), primary_key=True),
            #: Header tasks to wait for (nested groups counted), once Celery says.
            sa.Column("size", sa.Integer, nullable=True),
            #: Tasks added to the chord while it runs (``Task.add_to_chord``).
            sa.Column("extra", sa.Integer, nullable=False),
            sa.Column("state", sa.String(8), nullable=False),
            sa.Column("claim", sa.String(32), nullable=True),
            sa.Column("claimed_at", sa.DateTime, nullable=True),
            #: Last change: the chord is removed by cleanup once this is old.
            sa.Column("date_done", sa.DateTime, nullable=False, index=True),
            schema=schema,
        )
        self.parts = sa.Table(
            "resultkit_chord_part",
            metadata,
            sa.Column("group_id", sa.String(155), primary_key=True),
            sa.Column("task_id", sa.String(155), primary_key=True),
            sa.Column("group_index", sa.Integer, primary_key=True, autoincrement=False),
            schema=schema,
        )

    @property
    def tables(self) -> list[sa.Table]:
        return [self.chords, self.parts]

    # ------------------------------------------------------------ statements
    def _fresh(self, group_id: str, now: datetime, size: int | None = None) -> dict[str, Any]:
        return {
            "group_id": group_id,
            "size": size,
            "extra": 0,
            "state": OPEN,
            "claim": None,
            "claimed_at": None,
            "date_done": now,
        }

    def reset(self, conn: sa.Connection, group_id: str) -> None:
        """Start counting a chord afresh (a reapplied chord keeps its id)."""
        now = _now()
        conn.execute(sa.delete(self.parts).where(self.parts.c.group_id == group_id))
        fresh = self._fresh(group_id, now)
        insert_or_update(
            conn, self.chords, fresh, update={k: v for k, v in fresh.items() if k != "group_id"}
        )

    def set_size(self, conn: sa.Connection, group_id: str, size: int) -> None:
        """Record the header's size, nested groups counted (Celery's ``set_chord_size``)."""
        now = _now()
        insert_or_update(
            conn,
            self.chords,
            self._fresh(group_id, now, size),
            update={"size": size, "date_done": now},
        )

    def add(self, conn: sa.Connection, group_id: str) -> None:
        """One more part to wait for (``add_to_chord``)."""
        now = _now()
        row = self._fresh(group_id, now)
        row["extra"] = 1
        update = {"extra": self.chords.c.extra + 1, "date_done": now}
        insert_or_update(conn, self.chords, row, update=update)

    def record_part(
        self, conn: sa.Connection, group_id: str, task_id: str, index: int | None
    ) -> tuple[int, int | None, int, str]:
        """Count one finished header task; return (parts finished, size, extra, state)."""
        now = _now()
        insert_or_update(conn, self.chords, self._fresh(group_id, now))
        state = conn.execute(
            sa.select(self.chords.c.state).where(self.chords.c.group_id == group_id)
        ).scalar_one()
        if state != DONE:  # a late duplicate of a finished chord leaves nothing behind
            part = {
                "group_id": group_id,
                "task_id": task_id,
                "group_index": NO_INDEX if index is None else int(index),
            }
            insert_or_update(conn, self.parts, part)
        finished = sa.select(sa.func.count()).where(self.parts.c.group_id == group_id)
        row = conn.execute(
            sa.select(
                finished.scalar_subquery(),
                self.chords.c.size,
                self.chords.c.extra,
                self.chords.c.state,
            ).where(self.chords.c.group_id == group_id)
        ).one()
        return int(row[0]), row[1], int(row[2]), str(row[3])

    def claim(
        self, conn: sa.Connection, group_id: str, size: int, token: str, stale_after_s: float
    ) -> bool:
        """Take the chord for this worker when every part has finished.

        One UPDATE: whichever part's worker commits its count last sees every
        part, and the row lock lets only one claim succeed.  A claim older than
        *stale_after_s* is taken over (the worker that held it is gone).
        """
        now = _now()
        chords, parts = self.chords, self.parts
        finished = sa.select(sa.func.count()).where(parts.c.group_id == group_id).scalar_subquery()
        statement = (
            sa.update(chords)
            .where(
                chords.c.group_id == group_id,
                sa.or_(
                    chords.c.state == OPEN,
                    sa.and_(
                        chords.c.state == CLAIMED,
                        chords.c.claimed_at < now - timedelta(seconds=stale_after_s),
                    ),
                ),
                finished >= sa.func.coalesce(chords.c.size, size) + chords.c.extra,
            )
            .values(state=CLAIMED, claim=token, claimed_at=now, date_done=now)
        )
        return bool(conn.execute(statement).rowcount == 1)

    def finish(self, conn: sa.Connection, group_id: str, token: str) -> None:
        """The body was sent (or failed): forget the parts, keep a ``done`` marker."""
        chords = self.chords
        done = conn.execute(
            sa.update(chords)
            .where(chords.c.group_id == group_id, chords.c.claim == token)
            .values(state=DONE, claim=None, date_done=_now())
        )
        if done.rowcount:
            conn.execute(sa.delete(self.parts).where(self.parts.c.group_id == group_id))

    def purge(self, conn: sa.Connection, before: datetime) -> int:
        """Delete chords last changed before *before*, with their parts."""
        chords, parts = self.chords, self.parts
        old = sa.select(chords.c.group_id).where(chords.c.date_done < before)
        conn.execute(sa.delete(parts).where(parts.c.group_id.in_(old.scalar_subquery())))
        return int(conn.execute(sa.delete(chords).where(chords.c.date_done < before)).rowcount)


# --------------------------------------------------------------- the backend half

#: A chord's claim lasts at least this long (seconds) before another worker may
#: take it over; otherwise twice ``result_chord_join_timeout``, as on Redis.
CHORD_CLAIM_MIN_S = 5.0

logger = logging.getLogger("resultkit.db")


def _chord_error(message: str, cause: BaseException) -> ChordError:
    """A ChordError that keeps the exception behind it as its cause."""
    error = ChordError(message)
    error.__cause__ = cause
    return error


class SqlChords:
    """The chord methods of ``resultkit-db``: a mixin over Celery's backend,
    keeping the facts in a :class:`ChordLedger` (``self.chords``).

    The backend gives ``engine``, ``_ready_tables`` and Celery's own
    ``app``, ``ensure_chords_allowed`` and ``chord_error_from_stack``.
    """

    app: Any
    chords: ChordLedger

    @property
    def engine(self) -> sa.Engine:
        raise NotImplementedError

    def _ready_tables(self) -> None:
        raise NotImplementedError

    ensure_chords_allowed: Any
    chord_error_from_stack: Any

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        """Save the header (its shape, for the final join) and start counting afresh."""
        self.ensure_chords_allowed()
        header_result = self.app.GroupResult(*header_result_args)
        header_result.save(backend=self)
        self._ready_tables()
        with self.engine.connect() as conn:
            self.chords.reset(conn, header_result.id)

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Celery announces the header's size, the tasks of nested groups counted."""
        self._ready_tables()
        with self.engine.connect() as conn:
            self.chords.set_size(conn, group_id, chord_size)

    def add_to_chord(self, group_id: str, result: Any) -> None:
        self._ready_tables()
        with self.engine.connect() as conn:
            self.chords.add(conn, group_id)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> Any:
        """Count a finished header task; the one that completes the header sends the body."""
        group_id, task_id = request.group, request.id
        if not group_id or not task_id:
            return None
        self._ready_tables()
        finished, size, extra, chord_state = ensure_retryable(
            self, self._record_part, group_id, task_id, request.group_index
        )
        if chord_state == "done":
            return None
        callback = maybe_signature(request.chord, app=self.app)
        deps = None
        if size is None:
            # Celery did not announce the size: the request's, else the header's length.
            size = (request.chord or {}).get("chord_size")
            if size is None:
                deps, failure = self._header(group_id)
                if deps is None:
                    return self.chord_error_from_stack(callback, failure)
                size = len(deps)
        if finished < size + extra:
            return None
        token = uuid.uuid4().hex
        join_timeout = self.app.conf.result_chord_join_timeout
        stale_after = max(CHORD_CLAIM_MIN_S, 2 * float(join_timeout or CHORD_CLAIM_MIN_S))
        with self.engine.connect() as conn:
            if not self.chords.claim(conn, group_id, size, token, stale_after):
                return None
        try:
            return self._run_body(group_id, callback, deps, join_timeout)
        finally:
            with self.engine.connect() as conn:
                self.chords.finish(conn, group_id, token)

    def _record_part(
        self, group_id: str, task_id: str, index: int | None
    ) -> tuple[int, int | None, int, str]:
        with self.engine.connect() as conn:
            return self.chords.record_part(conn, group_id, task_id, index)

    def _header(self, group_id: str) -> tuple[Any, ChordError | None]:
        """The chord's saved header, or the error to fail the body with."""
        try:
            deps = GroupResult.restore(group_id, backend=self)
        except Exception as exc:  # a broken row must fail the chord, not the worker
            logger.exception("Chord %r raised: %r", group_id, exc)
            return None, _chord_error(f"Cannot restore group: {exc!r}", exc)
        if deps is None:
            return None, ChordError(f"GroupResult {group_id} no longer exists")
        return deps, None

    def _run_body(self, group_id: str, callback: Any, deps: Any, join_timeout: Any) -> Any:
        """Join the header (every part has finished) and send the body with its values."""
        if deps is None:
            deps, failure = self._header(group_id)
            if deps is None:
                return self.chord_error_from_stack(callback, failure)
        join = deps.join_native if deps.supports_native_join else deps.join
        try:
            with allow_join_result():
                values = join(timeout=join_timeout, propagate=True)
        except Exception as exc:
            try:
                culprit = next(deps._failed_join_report())
                reason = f"Dependency {culprit.id} raised {exc!r}"
            except StopIteration:
                reason = repr(exc)
            logger.error("Chord %r raised: %s", group_id, reason)
            return self.chord_error_from_stack(callback, _chord_error(reason, exc))
        publish = getattr(self.app.amqp, "_retry_publish", None)  # Celery 5.6+
        try:
            if publish is not None:
                publish(callback.delay, values)
            else:
                callback.delay(values)
        except Exception as exc:
            logger.exception("Chord %r raised: %r", group_id, exc)
            return self.chord_error_from_stack(
                callback, _chord_error(f"Callback error: {exc!r}", exc)
            )
        return None
