"""``resultkit find``: the stored results a query selects, a page at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..query import DEFAULT_FIND_LIMIT, Query
from ..query import find as find_page
from ._lookup import opened, row_of

if TYPE_CHECKING:
    from celery import Celery

    from ..apps import Target
    from ..stores import Store

__all__ = ["FindReport", "find"]


@dataclass
class FindReport:
    """One page of results; ``cursor`` is None on the last page."""

    backend: str
    query: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None
    #: Stored results read to make the page.
    scanned: int = 0
    notes: list[str] = field(default_factory=list)
    #: How the store answers the query (``--explain``): its plan, the indexes it uses.
    plan: list[str] | None = None
    #: Indexes that would help, and whether each exists (``--explain``, ``--create-indexes``).
    indexes: list[dict[str, Any]] | None = None
    #: Indexes made by ``--create-indexes``.
    created: list[str] | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend,
            "query": self.query,
            "results": self.results,
            "cursor": self.cursor,
            "scanned": self.scanned,
            "notes": self.notes,
        }
        if self.plan is not None:
            out["plan"] = self.plan
        if self.indexes is not None:
            out["indexes"] = self.indexes
        if self.created is not None:
            out["created"] = self.created
        out["seconds"] = round(self.seconds, 4)
        return out


def find(
    url: str | None = None,
    *,
    app: Celery | str | None = None,
    query: Query | None = None,
    limit: int = DEFAULT_FIND_LIMIT,
    cursor: str | None = None,
    accept_pickle: bool = False,
    explain: bool = False,
    create_indexes: bool = False,
    reuse: tuple[Target, Store] | None = None,
) -> FindReport:
    """One page of the results *query* selects at *url* (or *app*'s backend), newest first.

    *explain* adds how the store answers (its query plan) and the indexes that
    would help; *create_indexes* creates those that are missing, and finds
    nothing (a separate, deliberate step: creating an index on a big table
    takes time and locks).

    *reuse*: a target and its store already open (``resultkit serve`` keeps
    them), used and left open instead of opening the store anew.
    """
    started = time.monotonic()
    query = query or Query.build()
    with opened(url, app, accept_pickle=accept_pickle, reuse=reuse) as (target, store):
        report = FindReport(target.masked_url, dict(query.describe()))
        if create_indexes:
            report.created = store.create_indexes()
            report.indexes = [plan.as_dict() for plan in store.recommended_indexes()]
            report.seconds = time.monotonic() - started
            return report
        page = find_page(store, query, limit=limit, cursor=cursor)
        report.results = [row_of(record) for record in page.records]
        report.cursor = page.cursor
        report.scanned = page.scanned
        report.notes = page.notes
        if explain:
            report.plan = store.explain_query(query, limit)
            report.indexes = [plan.as_dict() for plan in store.recommended_indexes()]
    report.seconds = time.monotonic() - started
    return report
