"""The figures of a SQL table from aggregate queries: the database does the counting."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from ...purge import PurgePlan
from ...summary import AGE_BUCKETS, LARGEST_COUNT, StoreFigures, Summary

__all__ = ["sealed_key_counts", "sql_figures", "sql_summary"]


def sql_summary(
    engine: Any,
    table: Any,
    id_column: Any,
    status: Any,
    name: Any,
    result: Any,
    plan: PurgePlan,
    expired: Any,
    *,
    base64_text: bool = False,
) -> Summary:
    """The figures of a SQL table, from aggregate queries (sizes: every row's length)."""
    import sqlalchemy as sa

    summary = Summary()
    date = table.c.date_done
    ages = [(label, bound) for label, bound in AGE_BUCKETS if bound != float("inf")]
    bucket = sa.case(
        (date.is_(None), "no date"),
        *((date >= plan.cutoff(bound), label) for label, bound in ages),
        else_=AGE_BUCKETS[-1][0],
    )
    size = sa.func.coalesce(sa.func.length(result), 0)
    with engine.connect() as conn:
        columns = [status] + ([name] if name is not None else [])
        for row in conn.execute(sa.select(*columns, sa.func.count()).group_by(*columns)):
            summary.by_state[row[0] or "?"] += row[-1]
            if name is not None and row[1]:
                summary.by_task[row[1]] += row[-1]
        for label, count in conn.execute(sa.select(bucket, sa.func.count()).group_by(bucket)):
            summary.ages[label] += count
        summary.sizes = [int(n) for n in conn.scalars(sa.select(size))]
        summary.bytes = sum(summary.sizes)
        largest = sa.select(size, id_column, name if name is not None else sa.null())
        for n, result_id, task in conn.execute(largest.order_by(size.desc()).limit(LARGEST_COUNT)):
            summary.largest.append((int(n), result_id, task))
        summary.past_lifetime = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(expired)
        ).scalar_one()
        summary.sealed = sealed_key_counts(conn, result, base64_text=base64_text)
    return summary


def sql_figures(
    engine: Any, table: Any, status: Any, name: Any, result: Any, expired: Any
) -> StoreFigures:
    """The metrics' figures of a SQL table in one GROUP BY scan: counts by state and
    task, bytes (the lengths ``sql_summary`` adds up), the oldest ``date_done`` and the
    results past their lifetime; the database does it all, no row comes to Python."""
    import sqlalchemy as sa

    figures = StoreFigures()
    columns = [status] + ([name] if name is not None else [])
    size = sa.func.coalesce(sa.func.length(result), 0)
    query = sa.select(
        *columns,
        sa.func.count(),
        sa.func.sum(size),
        sa.func.min(table.c.date_done),
        sa.func.sum(sa.case((expired, 1), else_=0)),
    ).group_by(*columns)
    with engine.connect() as conn:
        for row in conn.execute(query):
            count, size_sum, oldest, past = row[-4:]
            figures.by_state[row[0] or "?"] += count
            if name is not None and row[1]:
                figures.by_task[row[1]] += count
            figures.bytes += int(size_sum or 0)
            figures.past_lifetime += int(past or 0)
            if oldest is not None:
                if isinstance(oldest, str):  # SQLite's min() of a DATETIME column is text
                    oldest = datetime.fromisoformat(oldest)
                moment = oldest if oldest.tzinfo else oldest.replace(tzinfo=timezone.utc)
                if figures.oldest is None or moment < figures.oldest:
                    figures.oldest = moment
    return figures


def sealed_key_counts(conn: Any, result: Any, *, base64_text: bool = False) -> Counter[str]:
    """resultkit-encrypted payloads in a result column, by key id (read from their headers).

    *base64_text*: the column holds binary payloads as base64 text (django-celery-results).
    """
    import base64

    import sqlalchemy as sa

    from ...encryption import MAGIC, key_id_of

    width = 12 if base64_text else len(MAGIC) + 4  # 9 bytes are 12 base64 characters
    magic: Any = base64.b64encode(MAGIC + b"\0\0\0")[:6].decode() if base64_text else MAGIC
    head = sa.func.substr(result, 1, width)
    query = (
        sa.select(head, sa.func.count())
        .where(sa.func.substr(result, 1, len(magic)) == magic)
        .group_by(head)
    )
    counts: Counter[str] = Counter()
    for prefix, count in conn.execute(query):
        raw = base64.b64decode(prefix) if base64_text else bytes(prefix)
        key_id = key_id_of(raw)
        if key_id:
            counts[key_id] += count
    return counts
