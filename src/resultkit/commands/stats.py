"""``resultkit stats``: what is stored, counted exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..apps import resolve_target
from ..records import Kind
from ..stores import open_store

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["StatsReport", "stats"]


@dataclass
class StatsReport:
    """Counts of stored results: ``total`` task results, ``by_state``, ``groups``."""

    backend: str
    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    unreadable: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "total": self.total,
            "by_state": self.by_state,
            "groups": self.groups,
            "unreadable": self.unreadable,
        }


def stats(url: str | None = None, *, app: Celery | str | None = None) -> StatsReport:
    """Count the results stored at *url* (or *app*'s backend, or the embedded default)."""
    target = resolve_target(url, app)
    store = open_store(target.url, target.app)
    report = StatsReport(target.masked_url)
    try:
        counts = store.state_counts()
        report.groups = store.count(Kind.GROUP)
    finally:
        store.close()
    report.unreadable = counts.pop(None, 0)
    report.by_state = {state: n for state, n in sorted(counts.items()) if state is not None}
    report.total = sum(report.by_state.values()) + report.unreadable
    return report
