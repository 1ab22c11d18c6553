"""What ``find``, ``show`` and ``failures`` share: the store opened to read with the
app's keys, and a result as a row of plain values."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..apps import Target, resolve_target
from ..codec import Codec
from ..encryption import keyring_for
from ..query import exception_of
from ..records import Kind, Record
from ..stores import Store, open_store

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["exception_of", "open_for_reading", "opened", "row_of"]


def open_for_reading(target: Target, *, accept_pickle: bool = False) -> Store:
    """The target's store, able to open what the app's keys open (the caller closes it)."""
    conf = target.app.conf
    codec = Codec(
        hint=conf.result_serializer or "json",
        accept_pickle=accept_pickle,
        keys=keyring_for(conf),
    )
    return open_store(target.url, target.app, codec)


@contextmanager
def opened(
    url: str | None,
    app: Celery | str | None,
    *,
    accept_pickle: bool = False,
    reuse: tuple[Target, Store] | None = None,
) -> Iterator[tuple[Target, Store]]:
    """The target and its store, able to open what the app's keys open; closed after.

    *reuse*: a target and its store already open (a server's): used as they
    are, and left open.
    """
    if reuse is not None:
        yield reuse
        return
    target = resolve_target(url, app)
    store = open_for_reading(target, accept_pickle=accept_pickle)
    try:
        yield target, store
    finally:
        store.close()


def row_of(record: Record) -> dict[str, Any]:
    """One result as plain values: the keys ``find`` prints (``--json`` keeps every one)."""
    meta = record.meta or {}
    done = record.date_done if record.meta is not None else None
    exception = exception_of(meta.get("result"))
    row: dict[str, Any] = {
        "task_id": record.id,
        "kind": record.kind.value,
        "status": meta.get("status") if record.kind is Kind.TASK else None,
        "name": meta.get("name"),
        "date_done": done.isoformat() if done else None,
        "worker": meta.get("worker"),
        "queue": meta.get("queue"),
        "retries": meta.get("retries"),
        "group_id": meta.get("group_id"),
        "parent_id": meta.get("parent_id"),
        "args": meta.get("args"),
        "kwargs": meta.get("kwargs"),
        "exception": exception[0] if exception else None,
        "message": exception[1] if exception else None,
    }
    if record.meta is None:
        row["unreadable"] = record.error
        if record.sealed_key:
            row["sealed_key"] = record.sealed_key
    return row
