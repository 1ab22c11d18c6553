"""Deciding and carrying out what a cleanup removes, for every store.

:class:`PurgePlan` holds the policy and the moment the cleanup started.  A
result is expired when ``date_done + lifetime`` is before that moment, so a
result stored while the cleanup runs is never expired by it.  Stores purge
through :meth:`Store.purge`; SQL stores translate the plan into one predicate
and delete in bounded batches on the ``date_done`` index.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from .records import Kind, Record
from .retention import RetentionPolicy

__all__ = ["PurgeOutcome", "PurgePlan"]

#: Called with each batch about to be deleted; returns the ids safe to delete
#: (e.g. those written to the archive).
BeforeDelete = Callable[[list[Record]], set[str]]


@dataclass(frozen=True)
class PurgePlan:
    policy: RetentionPolicy
    #: UTC epoch seconds at which the cleanup started.
    now: float
    batch_size: int = 1000
    dry_run: bool = False
    fix_missing_ttl: bool = False
    #: Compare with timezone-aware dates (columns declared WITH TIME ZONE).
    aware_dates: bool = False
    #: Told how many results each finished batch deleted (for a progress bar).
    on_batch: Callable[[int], None] | None = field(default=None, compare=False)

    def aware(self) -> PurgePlan:
        return replace(self, aware_dates=True)

    def lifetime(self, record: Record) -> float | None:
        if record.kind is Kind.GROUP:
            return self.policy.lifetime(None, "SUCCESS")
        return self.policy.lifetime(record.name, record.status)

    def expires_at(self, record: Record) -> float | None:
        """When *record* expires under the policy (None: never, or no date_done)."""
        lifetime = self.lifetime(record)
        done = record.date_done
        if lifetime is None or done is None:
            return None
        return done.timestamp() + lifetime

    def expired(self, record: Record) -> bool:
        at = self.expires_at(record)
        return at is not None and at <= self.now

    def cutoff(self, lifetime: float) -> datetime:
        """Naive UTC: rows done before this are older than *lifetime*."""
        moment = datetime.fromtimestamp(self.now, timezone.utc) - timedelta(seconds=lifetime)
        return moment if self.aware_dates else moment.replace(tzinfo=None)


@dataclass
class PurgeOutcome:
    deleted: int = 0
    archived: int = 0
    ttl_fixed: int = 0
    kept: int = 0
    unreadable: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    by_task: Counter[str] = field(default_factory=Counter)
    longest_transaction_s: float = 0.0
    batches: int = 0

    def count(self, record: Record) -> None:
        self.by_state[record.status or ("GROUP" if record.kind is Kind.GROUP else "?")] += 1
        if record.name:
            self.by_task[record.name] += 1

    def timed(self, started: float, plan: PurgePlan | None = None, deleted: int = 0) -> None:
        self.longest_transaction_s = max(self.longest_transaction_s, time.monotonic() - started)
        self.batches += 1
        if plan is not None and plan.on_batch is not None:
            plan.on_batch(deleted)


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
