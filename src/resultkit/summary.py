"""What ``resultkit stats`` reports, and how a store's records add up to it."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .figures import percentiles
from .purge import PurgePlan

__all__ = ["AGE_BUCKETS", "StoreFigures", "Summary"]

#: Age histogram buckets: (label, upper bound in seconds).
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("<1h", 3600),
    ("1h-1d", 86400),
    ("1d-7d", 7 * 86400),
    ("7d-30d", 30 * 86400),
    (">30d", float("inf")),
)
#: Largest results listed.
LARGEST_COUNT = 5


_UNKNOWN = object()


@dataclass
class StoreFigures:
    """The figures ``/metrics`` exports, counted natively by a store (one aggregate
    query, no result read): the same numbers ``stats`` gives for them."""

    by_state: Counter[str] = field(default_factory=Counter)
    by_task: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    #: The date of the oldest dated result (UTC).
    oldest: datetime | None = None
    #: Results the retention policy says should already be gone.
    past_lifetime: int = 0
    groups: int = 0


def age_bucket_at(stamp: float | None, now: float) -> str:
    """The age bucket of a result done at epoch *stamp*."""
    if stamp is None:
        return "no date"
    age = now - stamp
    for label, bound in AGE_BUCKETS:
        if age < bound:
            return label
    return AGE_BUCKETS[-1][0]


@dataclass
class Summary:
    """Counts and sizes of the task results in a store."""

    by_state: Counter[str] = field(default_factory=Counter)
    by_task: Counter[str] = field(default_factory=Counter)
    ages: Counter[str] = field(default_factory=Counter)
    sizes: list[int] = field(default_factory=list)
    largest: list[tuple[int, str, str | None]] = field(default_factory=list)
    bytes: int = 0
    unreadable: int = 0
    #: Keys with no TTL (stores with native TTL only).
    no_ttl: int | None = None
    #: Results the retention policy says should already be gone.
    past_lifetime: int = 0
    #: resultkit-encrypted results by the id of the key that sealed them.
    sealed: Counter[str] = field(default_factory=Counter)
    #: Figures computed from a sample rather than every result.
    estimated: list[str] = field(default_factory=list)
    _lifetimes: dict[tuple[str | None, str], Any] = field(default_factory=dict, repr=False)

    def add(
        self,
        *,
        result_id: str,
        status: str | None,
        name: str | None,
        done: datetime | None,
        size: int,
        plan: PurgePlan,
        no_ttl: bool = False,
        sealed_key: str | None = None,
    ) -> None:
        """Count one task result (*sealed_key*: the key id, when it is encrypted)."""
        if sealed_key:
            self.sealed[sealed_key] += 1
        if status is None:
            self.unreadable += 1
        else:
            self.by_state[status] += 1
        if name:
            self.by_task[name] += 1
        stamp = done.timestamp() if done is not None else None
        self.ages[age_bucket_at(stamp, plan.now)] += 1
        self.sizes.append(size)
        self.bytes += size
        if len(self.largest) < LARGEST_COUNT:
            heapq.heappush(self.largest, (size, result_id, name))
        elif size > self.largest[0][0]:
            heapq.heapreplace(self.largest, (size, result_id, name))
        if no_ttl:
            self.no_ttl = (self.no_ttl or 0) + 1
        if status is not None and stamp is not None:
            key = (name, status)
            lifetime = self._lifetimes.get(key, _UNKNOWN)
            if lifetime is _UNKNOWN:
                lifetime = self._lifetimes[key] = plan.policy.lifetime(name, status)
            if lifetime is not None and stamp + lifetime <= plan.now:
                self.past_lifetime += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_task": dict(self.by_task.most_common()),
            "age": {label: self.ages.get(label, 0) for label, _ in AGE_BUCKETS}
            | ({"no date": self.ages["no date"]} if self.ages.get("no date") else {}),
            "sizes": percentiles(self.sizes),
            "largest": [
                {"id": i, "bytes": size, "task": name}
                for size, i, name in sorted(self.largest, reverse=True)
            ],
            "bytes": self.bytes,
            "no_ttl": self.no_ttl,
            "past_lifetime": self.past_lifetime,
            "estimated": self.estimated,
        } | ({"encrypted_by_key": dict(self.sealed.most_common())} if self.sealed else {})
