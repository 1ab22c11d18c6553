"""``resultkit stats``: what is stored, by state, task, age and size."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..apps import resolve_target
from ..checks.audit import check_settings
from ..encryption import keyring_for, undecryptable
from ..offload import object_store, offload_settings
from ..purge import PurgePlan
from ..records import Kind
from ..retention import RetentionPolicy
from ..stores import open_store

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["StatsReport", "stats"]


@dataclass
class StatsReport:
    """``total`` and ``by_state`` are exact; ``details`` holds the rest (see docs/stats)."""

    backend: str
    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    unreadable: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "total": self.total,
            "by_state": self.by_state,
            "groups": self.groups,
            "unreadable": self.unreadable,
            **self.details,
            "seconds": round(self.seconds, 3),
        }


def stats(
    url: str | None = None,
    *,
    app: Celery | str | None = None,
    policy: str | Path | RetentionPolicy | None = None,
    offload: str | None = None,
) -> StatsReport:
    """Describe the results stored at *url* (or *app*'s backend, or the embedded default).

    ``past_lifetime`` counts results the retention *policy* (default: the app's
    ``resultkit_retention``, else ``result_expires``) says should be gone.
    With offloaded results (the app's ``resultkit_offload``, or *offload*),
    ``offloaded`` gives the prefix, its objects (one per offloaded result, plus
    orphans not yet swept) and their bytes.
    """
    started = time.monotonic()
    target = resolve_target(url, app)
    if target.origin == "app":
        check_settings(target.app)
    retention = RetentionPolicy.resolve(target.app, policy)
    store = open_store(target.url, target.app)
    report = StatsReport(target.masked_url)
    try:
        summary = store.summarize(PurgePlan(retention, time.time()))
        report.groups = store.count(Kind.GROUP)
    finally:
        store.close()
    report.unreadable = summary.unreadable
    report.by_state = dict(sorted(summary.by_state.items()))
    report.total = sum(report.by_state.values()) + report.unreadable
    report.details = summary.as_dict()
    if summary.sealed:
        keys = keyring_for(target.app.conf)
        report.details["undecryptable"] = undecryptable(summary.sealed, keys)
    prefix = offload
    if prefix is None:
        settings = offload_settings(target.app.conf)
        prefix = None if settings is None else settings.url
    if prefix is not None:
        objects = size = 0
        for _name, _modified, length in object_store(prefix).list():
            objects += 1
            size += length
        report.details["offloaded"] = {"url": prefix, "objects": objects, "bytes": size}
    report.seconds = time.monotonic() - started
    return report
