"""Waiting for many results at once, shared by resultkit's backends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError

__all__ = ["poll_many"]


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
