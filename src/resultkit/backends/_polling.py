"""Waiting for many results at once, shared by resultkit's backends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError

__all__ = ["follow_parents", "poll_many"]


def poll_many(
    task_ids: Iterable[str],
    fetch_ready: Callable[[list[str]], dict[str, dict[str, Any]]],
    wait: Callable[[list[str], float | None], None],
    *,
    timeout: float | None = None,
    on_message: Any = None,
    on_interval: Any = None,
    max_iterations: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(task_id, meta)`` as results become ready; raise Celery's TimeoutError.

    *fetch_ready* returns the metas of the ready ones among the ids it is given
    (one round of reads); *wait* pauses before the next round, given the ids
    still pending and the deadline.
    """
    pending = list(dict.fromkeys(task_ids))
    deadline = None if timeout is None else time.monotonic() + timeout
    iterations = 0
    while pending:
        ready = fetch_ready(pending)
        for task_id, meta in ready.items():
            if on_message is not None:
                on_message(meta)
            yield task_id, meta
        pending = [task_id for task_id in pending if task_id not in ready]
        if not pending:
            return
        iterations += 1
        if max_iterations and iterations >= max_iterations:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise CeleryTimeoutError("The operation timed out.")
        if on_interval:
            on_interval()
        wait(pending, deadline)


def follow_parents(results: Iterable[Any], on_interval: Any = None) -> Any:
    """*on_interval*, first raising the error of a failed parent of any of *results*.

    ``AsyncResult.get()`` re-raises a parent's error while it waits; a native
    join (``get_many``) sees only the ids it waits for, so the members of a
    group after a failed chain step would wait for ever.  This gives the join
    the same check, once per polling round, over every distinct ancestor.
    """
    ancestors: dict[str, Any] = {}
    for result in results:
        node = getattr(result, "parent", None)
        while node is not None and node.id not in ancestors:
            ancestors[node.id] = node
            node = getattr(node, "parent", None)
    if not ancestors:
        return on_interval
    oldest_first = list(reversed(ancestors.values()))

    def check() -> None:
        for node in oldest_first:
            node.maybe_throw()
        if on_interval is not None:
            on_interval()

    return check
