"""Results in Celery's stored form, as a worker with result_extended writes them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from resultkit.records import Kind, Payload, Record

#: The retention policy of the issue, used across the tests.
RETENTION_POLICY = {
    "rules": [
        {"task": "audit.*", "expires": None},
        {"task": "reports.*", "state": "SUCCESS", "expires": "7d"},
        {"state": "FAILURE", "expires": "30d"},
    ],
    "default": "1h",
}
TRACEBACK = 'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: bad input 42\n'
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def task(
    task_id: str,
    status: str = "SUCCESS",
    result: Any = None,
    *,
    done: datetime | None = None,
    name: str = "proj.tasks.add",
    traceback: str | None = None,
    children: list[Any] | None = None,
    expires_in: float | None = None,
) -> Record:
    meta = {
        "task_id": task_id,
        "status": status,
        "result": {"sum": 3, "items": ["a", "é", None], "nested": {"x": 1.5}}
        if result is None and status == "SUCCESS"
        else result,
        "traceback": traceback,
        "children": children,
        "date_done": done or NOW,
        "name": name,
        "args": [1, 2],
        "kwargs": {"k": "v"},
        "worker": "celery@host1",
        "retries": 0,
        "queue": "celery",
    }
    if expires_in is None:
        return Record(Kind.TASK, task_id, Payload(meta))
    expires_at = NOW.timestamp() + expires_in
    return Record(Kind.TASK, task_id, Payload(meta), expires_at=expires_at, expires_known=True)


def failure(task_id: str, **kwargs: Any) -> Record:
    return task(
        task_id,
        "FAILURE",
        {"exc_type": "ValueError", "exc_message": ["bad input 42"], "exc_module": "builtins"},
        traceback=TRACEBACK,
        **kwargs,
    )


def group(group_id: str, members: list[str]) -> Record:
    as_tuple = [[group_id, None], [[[m, None], None] for m in members]]
    return Record(Kind.GROUP, group_id, Payload({"result": as_tuple, "date_done": NOW}))


def standard_set(prefix: str = "t") -> list[Record]:
    """Successes, a failure with a traceback, a parent with children, a group."""
    records = [task(f"{prefix}-ok-{i}", done=NOW - timedelta(minutes=i)) for i in range(5)]
    records.append(failure(f"{prefix}-fail"))
    records.append(task(f"{prefix}-parent", children=[[[f"{prefix}-ok-0", None], None]]))
    records.append(task(f"{prefix}-retry", "RETRY", None, name="proj.tasks.flaky"))
    records.append(group(f"{prefix}-group", [f"{prefix}-ok-0", f"{prefix}-ok-1"]))
    return records
