"""Purging SQL tables: the retention policy as one predicate on the ``date_done``
index, deleted in short transactions (archived first when asked)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...purge import BeforeDelete, PurgeOutcome, PurgePlan
from ...records import Record

__all__ = ["glob_to_like", "purge_table", "sql_expired"]


def glob_to_like(pattern: str) -> str:
    """An fnmatch glob as a SQL LIKE pattern (escape character ``\\``)."""
    out = []
    for char in pattern:
        if char in "\\%_":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def sql_expired(plan: PurgePlan, date: Any, status: Any, name: Any) -> Any:
    """The SQL predicate for "expired under the plan", first matching rule winning.

    *name* may be None (no task-name column): rules on task names then never match.
    """
    import sqlalchemy as sa

    def matches(tasks: tuple[str, ...], states: frozenset[str]) -> Any:
        parts = []
        if states:
            parts.append(sa.and_(status.is_not(None), status.in_(sorted(states))))
        if tasks:
            if name is None:
                return sa.false()
            parts.append(
                sa.and_(
                    name.is_not(None),
                    sa.or_(*(name.like(glob_to_like(t), escape="\\") for t in tasks)),
                )
            )
        return sa.and_(*parts) if parts else sa.true()

    branches = []
    earlier: list[Any] = []
    for rule in plan.policy.rules:
        match = matches(rule.tasks, rule.states)
        if rule.expires is not None:
            branches.append(
                sa.and_(match, *(sa.not_(e) for e in earlier), date < plan.cutoff(rule.expires))
            )
        earlier.append(match)
    rest = [sa.not_(e) for e in earlier]
    if plan.policy.failure_default_set:
        failure = sa.and_(status.is_not(None), status == "FAILURE")
        if plan.policy.failure_default is not None:
            branches.append(
                sa.and_(failure, *rest, date < plan.cutoff(plan.policy.failure_default))
            )
        rest.append(sa.not_(failure))
    if plan.policy.default is not None:
        branches.append(sa.and_(*rest, date < plan.cutoff(plan.policy.default)))
    if not branches:
        return sa.false()
    lifetimes = [life for life in plan.policy.lifetimes if life is not None]
    # An overall bound lets the planner use the date_done index for a range scan.
    return sa.and_(date < plan.cutoff(min(lifetimes)), sa.or_(*branches))


def sql_purge(
    engine: Any,
    table: Any,
    predicate: Any,
    plan: PurgePlan,
    *,
    status: Any,
    name: Any,
    to_record: Callable[[Any], Record],
    before_delete: BeforeDelete | None,
) -> PurgeOutcome:
    """Delete the rows matching *predicate* in short transactions of ``plan.batch_size`` rows.

    Each batch selects ids through the ``date_done`` index and deletes them in
    the same transaction, re-checking the predicate, so a row a worker updates
    meanwhile is left alone.  With *before_delete* (an archive), full rows are
    read first, and only the ids it returns are deleted.
    """
    import sqlalchemy as sa

    out = PurgeOutcome()
    columns = [c for c in (status, name) if c is not None]
    with engine.connect() as conn:
        if columns:
            query = sa.select(*columns, sa.func.count()).where(predicate).group_by(*columns)
            for row in conn.execute(query):
                state = row[0] if status is not None else "GROUP"
                out.by_state[state or "?"] += row[-1]
                if name is not None and row[1]:
                    out.by_task[row[1]] += row[-1]
        else:
            groups = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(predicate)
            ).scalar_one()
            if groups:
                out.by_state["GROUP"] += groups
    if plan.dry_run:
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        out.kept = total - sum(out.by_state.values())
        return out
    if before_delete is None:
        after = None
        while True:
            started = time.monotonic()
            with engine.begin() as conn:
                found, deleted, after = _delete_batch(
                    conn, table, predicate, plan.batch_size, after
                )
            out.timed(started, plan, deleted)
            out.deleted += deleted
            if found == 0:
                break
    else:
        cursor = None
        while True:
            started = time.monotonic()
            with engine.begin() as conn:
                query = (
                    sa.select(table).where(predicate).order_by(table.c.id).limit(plan.batch_size)
                )
                if cursor is not None:
                    query = query.where(table.c.id > cursor)
                rows = conn.execute(query).all()
                if not rows:
                    break
                cursor = rows[-1]._mapping["id"]
                records = {row._mapping["id"]: to_record(row) for row in rows}
                allowed = before_delete(list(records.values()))
                out.archived += len(allowed)
                ids = [pk for pk, record in records.items() if record.id in allowed]
                deleted = 0
                if ids:
                    deleted = conn.execute(
                        sa.delete(table).where(table.c.id.in_(ids)).where(predicate)
                    ).rowcount
                    out.deleted += deleted
            out.timed(started, plan, deleted)
    with engine.connect() as conn:
        out.kept = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    return out


def _delete_batch(
    conn: Any, table: Any, predicate: Any, limit: int, after: Any
) -> tuple[int, int, Any]:
    """Delete up to *limit* matching rows with ids above *after*.

    Returns how many rows were chosen, how many were deleted, and the last id.

    Walking the primary key forwards never revisits the index entries of rows
    already deleted (which stay until VACUUM), so every batch costs the same.
    """
    import sqlalchemy as sa

    condition = predicate if after is None else sa.and_(predicate, table.c.id > after)
    chosen = sa.select(table.c.id).where(condition).order_by(table.c.id).limit(limit)
    if conn.dialect.name in ("mysql", "mariadb"):
        # MySQL refuses a subquery on the table it deletes from: fetch the ids first.
        ids = list(conn.scalars(chosen))
        if not ids:
            return 0, 0, after
        deleted = conn.execute(sa.delete(table).where(table.c.id.in_(ids)).where(predicate))
        return len(ids), int(deleted.rowcount), ids[-1]
    if conn.dialect.name == "postgresql":
        # "= ANY(ARRAY(...))" makes PostgreSQL look the ids up in the primary key;
        # "IN (subquery)" plans a hash join over a scan of the whole table.
        match = table.c.id == sa.any_(sa.func.array(chosen.scalar_subquery()))
    else:
        match = table.c.id.in_(chosen.scalar_subquery())
    statement = sa.delete(table).where(match).returning(table.c.id)
    ids = list(conn.scalars(statement))
    return len(ids), len(ids), max(ids) if ids else after


def purge_table(
    engine: Any,
    table: Any,
    plan: PurgePlan,
    *,
    status: Any,
    name: Any,
    to_record: Callable[[Any], Record],
    before_delete: BeforeDelete | None,
) -> PurgeOutcome:
    """Purge a task table (*status* given) or a group table (*status* None)."""
    import sqlalchemy as sa

    date = table.c.date_done
    if status is None:
        lifetime = plan.policy.lifetime(None, "SUCCESS")
        predicate = sa.false() if lifetime is None else date < plan.cutoff(lifetime)
    else:
        predicate = sql_expired(plan, date, status, name)
    return sql_purge(
        engine,
        table,
        predicate,
        plan,
        status=status,
        name=name,
        to_record=to_record,
        before_delete=before_delete,
    )
