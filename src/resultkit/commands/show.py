"""``resultkit show``: everything stored about one result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..query import member_ids
from ..records import Kind, Record
from ..retention import RetentionPolicy
from ._lookup import exception_of, opened

if TYPE_CHECKING:
    from celery import Celery

    from ..apps import Target
    from ..stores import Store

from ..stores import Store

__all__ = ["ShowReport", "describe_result", "show"]


@dataclass
class ShowReport:
    """One stored result; ``found`` is False when the store holds none with that id."""

    backend: str
    task_id: str
    found: bool = False
    kind: str | None = None
    #: Every field of the stored meta, decoded (exceptions as Celery stores them).
    fields: dict[str, Any] = field(default_factory=dict)
    #: The exception, for a failure: ``{"type", "message"}``.
    exception: dict[str, str] | None = None
    #: The children this task sent, with their states (None: not stored).
    children: list[dict[str, Any]] = field(default_factory=list)
    #: The group the task belongs to, and its members with their states.
    group: dict[str, Any] | None = None
    #: Seconds left before the result expires (None: never, or unknown; see ``lifetime``).
    lifetime_s: float | None = None
    #: How the lifetime is known: "ttl" (the store's own), "policy" (date_done and the
    #: retention policy or result_expires, applied by cleanup), "never", "unknown".
    lifetime: str = "unknown"
    serializer: str | None = None
    compression: str | None = None
    #: The key id of an encrypted result, and whether this process could open it.
    sealed: dict[str, Any] | None = None
    #: Why the payload was not decoded (pickle without --accept-pickle, a missing key...).
    unreadable: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "task_id": self.task_id,
            "found": self.found,
            "kind": self.kind,
            "status": self.fields.get("status"),
            "name": self.fields.get("name"),
            "date_done": self.fields.get("date_done"),
            "fields": self.fields,
            "exception": self.exception,
            "children": self.children,
            "group": self.group,
            "lifetime_s": None if self.lifetime_s is None else round(self.lifetime_s, 1),
            "lifetime": self.lifetime,
            "serializer": self.serializer,
            "compression": self.compression,
            "sealed": self.sealed,
            "unreadable": self.unreadable,
            "seconds": round(self.seconds, 4),
        }


def show(
    task_id: str,
    url: str | None = None,
    *,
    app: Celery | str | None = None,
    accept_pickle: bool = False,
    reuse: tuple[Target, Store] | None = None,
) -> ShowReport:
    """Everything *url* (or *app*'s backend) stores about *task_id* (a task, or a group).

    Encrypted results are opened with the app's ``resultkit_encryption_keys``
    (or ``RESULTKIT_ENCRYPTION_KEYS``); without the key they are shown sealed,
    with the key's id.  Pickle is decoded only with *accept_pickle*.

    *reuse*: a target and its store already open (``resultkit serve`` keeps
    them), used and left open instead of opening the store anew.
    """
    started = time.monotonic()
    with opened(url, app, accept_pickle=accept_pickle, reuse=reuse) as (target, store):
        report = describe_result(store, task_id, RetentionPolicy.resolve(target.app))
        report.backend = target.masked_url
    report.seconds = time.monotonic() - started
    return report


def describe_result(store: Store, task_id: str, policy: RetentionPolicy) -> ShowReport:
    """What :func:`show` reports, from a store already open (a task, else a group)."""
    report = ShowReport(store.masked_url, task_id)
    record = store.read_many(Kind.TASK, [task_id]).get(task_id)
    if record is None:
        record = store.read_many(Kind.GROUP, [task_id]).get(task_id)
    if record is not None:
        _describe(report, store, record, policy)
    return report


def _describe(report: ShowReport, store: Store, record: Record, policy: RetentionPolicy) -> None:
    report.found = True
    report.kind = record.kind.value
    report.serializer = record.serializer
    report.compression = record.compression
    if record.sealed_key:
        report.sealed = {"key_id": record.sealed_key, "opened": record.meta is not None}
    meta = record.meta
    if meta is None:
        report.unreadable = record.error
        _lifetime(report, record, policy)
        return
    report.fields = {
        key: value.isoformat() if hasattr(value, "isoformat") else value
        for key, value in meta.items()
    }
    if record.kind is Kind.GROUP:
        members = member_ids(meta.get("result"))
        report.group = {"group_id": record.id, "members": _states(store, members)}
        _lifetime(report, record, policy)
        return
    exception = exception_of(meta.get("result"))
    if exception:
        report.exception = {"type": exception[0], "message": exception[1]}
    report.children = _states(store, member_ids(meta.get("children")))
    group_id = meta.get("group_id")
    if isinstance(group_id, str):
        group = store.read_many(Kind.GROUP, [group_id]).get(group_id)
        members = member_ids(group.meta.get("result")) if group and group.meta else []
        report.group = {
            "group_id": group_id,
            "stored": group is not None,
            "members": _states(store, members),
        }
    _lifetime(report, record, policy)


def _states(store: Store, ids: list[str]) -> list[dict[str, Any]]:
    """Each id with its state (None: no result stored)."""
    found = store.read_many(Kind.TASK, ids) if ids else {}
    out = []
    for rid in ids:
        member = found.get(rid)
        out.append({"task_id": rid, "status": member.status if member is not None else None})
    return out


def _lifetime(report: ShowReport, record: Record, policy: RetentionPolicy) -> None:
    if record.expires_known:
        left = record.ttl_s()
        report.lifetime = "never" if left is None else "ttl"
        report.lifetime_s = left
        return
    done = record.date_done if record.meta is not None else None
    if done is None:
        return
    name = record.name if record.kind is Kind.TASK else None
    status = record.status if record.kind is Kind.TASK else "SUCCESS"
    lifetime = policy.lifetime(name, status)
    if lifetime is None:
        report.lifetime = "never"
        return
    report.lifetime = "policy"
    report.lifetime_s = done.timestamp() + lifetime - time.time()
