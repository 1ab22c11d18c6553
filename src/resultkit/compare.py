"""Compare a source record with what Celery reads back from the target."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from .records import EXTENDED_FIELDS, Kind, Record, as_datetime

__all__ = ["as_values", "celery_exception", "differences"]

#: MySQL's DATETIME keeps whole seconds; dates closer than this are equal.
DATE_TOLERANCE = timedelta(seconds=1)


def _plain(value: Any) -> Any:
    """Lists for tuples, recursively, exceptions as (type, args), kombu's JSON type
    tags as the values they stand for (resultkit-json's are read by
    :func:`as_values`), NaN as a value equal to itself."""
    if isinstance(value, BaseException):
        return ("exception", type(value).__name__, _plain(list(value.args)))
    if isinstance(value, dict):
        if value.keys() == {"__type__", "__value__"}:
            from .codec import materialize

            return _plain(materialize(value))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return _NAN  # a NaN equals the NaN it was copied from
    return value


@functools.cache
def _celery_backend(serializer: str) -> Any:
    """A Celery backend that only decodes, for :func:`celery_exception`."""
    from celery import Celery
    from celery.backends.base import BaseBackend

    app = Celery("resultkit-compare", set_as_current=False)
    app.conf.update(result_serializer=serializer, result_accept_content=[serializer])
    return BaseBackend(app, serializer=serializer)


def celery_exception(value: Any, serializer: str = "json") -> Any:
    """The exception Celery makes of a stored one (``exc_type``, ``exc_message``,
    ``exc_module``), exactly as ``AsyncResult.result`` does: a class it cannot
    import becomes one of the same name, an exception whose constructor refuses
    its arguments becomes ``Exception("<class>(args)")``.  An exception object
    (as Celery's backend or pickle gives it) goes through the same function."""
    if value is None:
        return None
    try:
        return _celery_backend(serializer).exception_to_python(value)
    except Exception as exc:  # Celery refuses it (e.g. exc_type names no exception)
        return ("undecodable exception", type(exc).__name__, _plain(value))


def _as_celery_reads(meta: dict[str, Any], serializer: str) -> dict[str, Any]:
    """*meta* with its result decoded as Celery decodes it for the application."""
    from celery import states

    if meta.get("status") in states.EXCEPTION_STATES and meta.get("result") is not None:
        return {**meta, "result": celery_exception(meta["result"], serializer)}
    return meta


_NAN = ("nan",)


def _group_members(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    results = getattr(value, "results", None)
    if results is not None:
        return [r.id for r in results]
    try:
        return [item[0][0] for item in value[1]]
    except (TypeError, IndexError, KeyError):
        return None


def as_values(record: Record) -> dict[str, Any]:
    """The record's meta, with resultkit-json's tagged values turned into Python values."""
    meta = record.meta or {}
    if record.serializer == "resultkit-json":
        from .codec import materialize

        return dict(materialize(meta, "resultkit-json"))
    return meta


def differences(
    record: Record,
    target_meta: dict[str, Any] | None,
    fields: tuple[str, ...] = EXTENDED_FIELDS,
    *,
    children: bool = True,
) -> list[str]:
    """Names of the fields that differ between *record* and *target_meta* (empty: equal).

    *fields* are the extended fields and *children* whether the children are
    compared: those the target's layout keeps (Celery 5.4-5.6's tables have
    no ``children`` column).
    """
    if target_meta is None:
        return ["missing"]
    if "unreadable" in target_meta:
        return [f"unreadable ({target_meta['unreadable'][:200]})"]
    source = as_values(record)
    if record.kind is Kind.TASK:
        # Both sides as the application reads them: Celery's own exception decoding,
        # whatever each layout stores (a dict, or the exception Celery's backend made).
        serializer = "pickle" if record.serializer == "pickle" else "json"
        source = _as_celery_reads(source, serializer)
        target_meta = _as_celery_reads(target_meta, serializer)
    if record.kind is Kind.GROUP:
        if _group_members(source.get("result")) != _group_members(target_meta.get("result")):
            return ["members"]
        return []
    diffs = []
    for name in ("status", "traceback"):
        if source.get(name) != target_meta.get(name):
            diffs.append(name)
    if _plain(source.get("result")) != _plain(target_meta.get("result")):
        diffs.append("result")
    if children and _plain(source.get("children") or []) != _plain(
        target_meta.get("children") or []
    ):
        diffs.append("children")
    left, right = as_datetime(source.get("date_done")), as_datetime(target_meta.get("date_done"))
    if (left is None) != (right is None) or (
        left is not None and right is not None and abs(left - right) > DATE_TOLERANCE
    ):
        diffs.append("date_done")
    for name in fields:
        if source.get(name) is not None and _plain(source.get(name)) != _plain(
            target_meta.get(name)
        ):
            diffs.append(name)
    return diffs
