"""Waiting for many results at once, shared by resultkit's backends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from celery import states
from celery.exceptions import TimeoutError as CeleryTimeoutError

__all__ = ["FAILED_PARENT_GRACE_S", "follow_parents", "poll_many", "wait_for_one"]


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


#: How long a join waits for its members after a parent of theirs failed before it
#: raises that parent's error itself (seconds).  The worker that stored the failure
#: fails the rest of the chain right after (Celery's ``_fail_chain``); waiting this
#: long lets the join raise the member's own error, as Celery's Redis join does.
FAILED_PARENT_GRACE_S = 2.0


def follow_parents(
    results: Iterable[Any], on_interval: Any = None, grace_s: float = FAILED_PARENT_GRACE_S
) -> Any:
    """*on_interval*, also raising the error of a failed parent of any of *results*.

    ``AsyncResult.get()`` re-raises a parent's error while it waits; a native
    join (``get_many``) sees only the ids it waits for, so the members of a
    group after a failed chain step would wait for ever.  This gives the join
    the same check, once per polling round, over every distinct ancestor; the
    error is raised once the members have had *grace_s* seconds to be failed
    by the worker, so that a member that is failed in time is what the join
    reports (Celery's ``test_header_failure_fails_the_chords_after_it``).
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
    failed_since: float | None = None

    def check() -> None:
        nonlocal failed_since
        for node in oldest_first:
            try:
                node.maybe_throw()
            except Exception:
                now = time.monotonic()
                if failed_since is None:
                    failed_since = now
                if now - failed_since >= grace_s:
                    raise
                break
        if on_interval is not None:
            on_interval()

    return check


def wait_for_one(
    get_meta: Callable[[], dict[str, Any]],
    pause: Callable[[float | None], None],
    timeout: float | None,
    on_interval: Any,
) -> dict[str, Any]:
    """A backend's ``wait_for``: read the result until it is ready, *pause* (given
    the deadline) between reads.  A failed result is first checked against its
    parents (``on_interval``): ``AsyncResult.get()`` must raise a failed parent's
    error, however fast its consequence was stored (a chord body failed by its
    header, a chain's next task)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        meta = get_meta()
        if meta.get("status") in states.PROPAGATE_STATES and on_interval:
            on_interval()
        if meta.get("status") in states.READY_STATES:
            return meta
        if on_interval:
            on_interval()
        pause(deadline)
