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
