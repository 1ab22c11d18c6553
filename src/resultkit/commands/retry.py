"""``resultkit retry``: send stored tasks again, by their stored name, arguments and queue.

A result holds what sending its task again needs only when the worker stored
it with ``result_extended`` on: the task's name, ``args``, ``kwargs`` and the
queue it was delivered through (its routing key).  Retry reads those from the
result backend of the app and sends a new task through the app's broker
(``app.send_task``), with a new id; the old result is left as it is.  Every
result selected is checked before anything is sent: one that cannot be sent
stops the run before the first message.  Pickle is decoded only when the
caller accepts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..apps import resolve_target
from ..boundary import translating
from ..codec import Codec
from ..encryption import keyring_for
from ..errors import RetryError, UsageError
from ..query import Query, select
from ..records import Kind, Record
from ..stores import StoreSettings, open_store
from ..transfer import Progress
from ..urls import mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_RETRY_MAX_TASKS", "RetriedTask", "RetryReport", "retry"]

#: The most tasks one retry sends unless told otherwise: a filter that matches
#: more is more likely a mistake than a plan.
DEFAULT_RETRY_MAX_TASKS = 10_000


@dataclass(frozen=True)
class RetriedTask:
    """One stored task, and the new task sent for it (None in a dry run)."""

    task_id: str
    name: str
    queue: str | None
    new_task_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "name": self.name,
            "queue": self.queue,
            "new_task_id": self.new_task_id,
        }


@dataclass
class RetryReport:
    """The tasks a retry sent again (with ``dry_run``: would send)."""

    backend: str
    broker: str
    dry_run: bool
    filters: dict[str, Any]
    tasks: list[RetriedTask] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(1 for task in self.tasks if task.new_task_id is not None)

    @property
    def mapping(self) -> dict[str, str]:
        """Old task id → new task id, for what was sent."""
        return {t.task_id: t.new_task_id for t in self.tasks if t.new_task_id is not None}

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "broker": self.broker,
            "dry_run": self.dry_run,
            "filters": self.filters,
            "matched": len(self.tasks),
            "sent": self.sent,
            "mapping": self.mapping,
            "tasks": [task.as_dict() for task in self.tasks],
            "seconds": round(self.seconds, 3),
        }


def retry(
    app: Celery | str | None,
    *,
    task_id: str | None = None,
    query: Query | None = None,
    dry_run: bool = False,
    yes: bool = False,
    queue: str | None = None,
    accept_pickle: bool = False,
    max_tasks: int = DEFAULT_RETRY_MAX_TASKS,
    progress: Callable[[Progress], None] | None = None,
) -> RetryReport:
    """Send again the task of *task_id*, or of every result *query* selects.

    Needs the Celery *app* (its result backend to read, its broker to send
    through).  A filter may select many tasks: it needs *yes* (or *dry_run*);
    one task id does not.  *queue* sends every task to that queue instead of
    the one it was stored with.
    """
    started = time.monotonic()
    if app is None:
        raise UsageError(
            "retry needs -A APP: the app's broker sends the tasks again, and its "
            "result backend holds what to send"
        )
    given_query = query is not None and not query.empty
    if (task_id is None) == (not given_query):
        raise UsageError(
            "give either a TASK_ID or filters (--state FAILURE, --task GLOB...), not both"
            if task_id is not None
            else "give a TASK_ID, or filters saying which results to retry (--state FAILURE...)"
        )
    if task_id is None and not (dry_run or yes):
        raise UsageError(
            "filters may select many tasks: give --dry-run to see which, or --yes to send them"
        )
    if dry_run and yes:
        raise UsageError("give either --dry-run or --yes, not both")
    target = resolve_target(None, app)
    if not target.url:
        raise UsageError(f"the app {target.label} has no result_backend: nothing to retry from")
    settings = StoreSettings.from_app(target.app)
    codec = Codec(
        hint=settings.serializer,
        accept_pickle=accept_pickle,
        keys=keyring_for(dict(settings.celery)),
    )
    store = open_store(target.url, target.app, codec)
    chosen = query or Query.build()
    report = RetryReport(
        target.masked_url,
        mask_url(str(target.app.conf.broker_url or "")),
        dry_run,
        dict(chosen.describe()) if task_id is None else {"id": [task_id]},
    )
    try:
        store.check_source()
        if task_id is not None:
            found = store.read_many(Kind.TASK, [task_id]).get(task_id)
            if found is None:
                raise RetryError(
                    f"no result with id {task_id} in {target.masked_url}: check the id "
                    "(resultkit find lists stored results), or the app's result backend"
                )
            records = [found]
        else:
            records = []
            seen: set[str] = set()
            for record in select(store, chosen):
                if record.id in seen:
                    continue
                seen.add(record.id)
                records.append(record)
                if len(records) > max_tasks:
                    raise UsageError(
                        f"the filters select more than {max_tasks:,} tasks: narrow them "
                        "(--since, --task...), or raise the limit (--max-tasks)"
                    )
    finally:
        store.close()
    plans = [_plan(record, accept_pickle) for record in records]
    for record, (name, args, kwargs, stored_queue) in zip(records, plans, strict=True):
        send_to = queue or stored_queue
        new_id = None
        if not dry_run:
            try:
                with translating(report.broker, "send the task"):
                    sent = target.app.send_task(name, args=args, kwargs=kwargs, queue=send_to)
            except RetryError:
                raise
            except Exception as exc:
                if report.sent:
                    done = ", ".join(f"{old} -> {new}" for old, new in report.mapping.items())
                    raise RetryError(
                        f"{exc}; {report.sent} of {len(records)} tasks were sent before "
                        f"({done}): run again with the ids not sent yet"
                    ) from exc
                raise
            new_id = sent.id
        report.tasks.append(RetriedTask(record.id, name, send_to, new_id))
        if progress is not None:
            progress(Progress(Kind.TASK, len(report.tasks), len(records)))
    report.seconds = time.monotonic() - started
    return report


def _plan(record: Record, accept_pickle: bool) -> tuple[str, list[Any], dict[str, Any], str | None]:
    """The name, args, kwargs and queue to send *record*'s task with, or why it cannot be."""
    meta = record.meta
    if meta is None:
        if record.serializer == "pickle" and not accept_pickle:
            raise RetryError(
                f"result {record.id} is stored as pickle, which resultkit does not decode "
                "unless asked: pass --accept-pickle if you trust everyone who can write "
                "to this backend"
            )
        raise RetryError(f"result {record.id} cannot be read ({record.error}); nothing was sent")
    name = meta.get("name")
    if not name or "args" not in meta or "kwargs" not in meta:
        raise RetryError(
            f"result {record.id} was stored without its task's name and arguments: "
            "Celery keeps them only with result_extended = True in the app that ran it; "
            "nothing was sent (turn it on for the tasks you may want to retry)"
        )
    args, kwargs = meta.get("args"), meta.get("kwargs")
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise RetryError(
            f"result {record.id} holds its arguments in a form that cannot be sent again "
            f"(args {type(args).__name__}, kwargs {type(kwargs).__name__}); nothing was sent"
        )
    stored_queue = meta.get("queue")
    return str(name), list(args), dict(kwargs), stored_queue if stored_queue else None
