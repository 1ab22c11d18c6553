"""Order statistics, one definition for every figure resultkit prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["percentile", "percentiles"]

N = TypeVar("N", int, float)


def percentile(samples: Sequence[N], q: float) -> N:
    """The *q*-th percentile (0-100) of *samples* by the nearest-rank method: a
    value that was measured, never one interpolated between two.  0 for none."""
    if not samples:
        return 0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def percentiles(samples: Sequence[N]) -> dict[str, N]:
    """p50, p95, p99 and the maximum of *samples* (all 0 for none)."""
    return {
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
        "max": max(samples) if samples else 0,
    }
