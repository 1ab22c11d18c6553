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

from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

__all__ = ["ChordLedger", "insert_or_update"]

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
