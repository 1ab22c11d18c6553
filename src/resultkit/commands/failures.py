"""``resultkit failures``: failed results grouped by task and exception type."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timezone
from typing import TYPE_CHECKING, Any

from ..query import FailureGroup, Query, select
from ._lookup import exception_of, opened

if TYPE_CHECKING:
    from celery import Celery

    from ..apps import Target
    from ..stores import Store

__all__ = ["FailureGroup", "FailuresReport", "failures"]


@dataclass
class FailuresReport:
    """Groups, most failures first."""

    backend: str
    query: dict[str, Any]
    groups: list[FailureGroup] = field(default_factory=list)
    total: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "query": self.query,
            "total": self.total,
            "groups": [g.as_dict() for g in self.groups],
            "notes": self.notes,
            "seconds": round(self.seconds, 4),
        }


def failures(
    url: str | None = None,
    *,
    app: Celery | str | None = None,
    query: Query | None = None,
    accept_pickle: bool = False,
    reuse: tuple[Target, Store] | None = None,
) -> FailuresReport:
    """Failed task results at *url* (or *app*'s backend) grouped by task name and
    exception type: count, first and last seen, the latest one's id and message.

    Without a ``--state`` filter, failures are results in state FAILURE.

    *reuse*: a target and its store already open (``resultkit serve`` keeps
    them), used and left open instead of opening the store anew.
    """
    started = time.monotonic()
    query = query or Query.build()
    if not query.states:
        query = replace(query, states=frozenset({"FAILURE"}))
    with opened(url, app, accept_pickle=accept_pickle, reuse=reuse) as (target, store):
        report = FailuresReport(target.masked_url, dict(query.describe()))
        summary = store.failure_groups(query)
        if summary is None:
            summary = _tally(select(store, query))
        report.groups = sorted(summary, key=lambda g: (-g.count, g.name or "", g.exception or ""))
    report.total = sum(g.count for g in report.groups)
    report.seconds = time.monotonic() - started
    return report


def _tally(records: Any) -> list[FailureGroup]:
    groups: dict[tuple[str | None, str | None], FailureGroup] = {}
    latest: dict[tuple[str | None, str | None], Any] = {}
    for record in records:
        meta = record.meta or {}
        exception = exception_of(meta.get("result"))
        key = (meta.get("name"), exception[0] if exception else None)
        group = groups.get(key)
        if group is None:
            group = groups[key] = FailureGroup(*key)
        group.count += 1
        done = record.date_done
        text = done.astimezone(timezone.utc).isoformat() if done else None
        if text and (group.first_seen is None or text < group.first_seen):
            group.first_seen = text
        if group.last_seen is None or (text and text >= group.last_seen) or key not in latest:
            if text:
                group.last_seen = text
            latest[key] = record
            group.example_id = record.id
            group.example_message = exception[1] if exception else ""
    return list(groups.values())
