"""Writing a batch into the target: tried again while a failure may pass, and
narrowed to the records at fault when the batch as a whole is refused."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import AccessDenied, BackendUnavailable, MigrationError, MissingDatabase, StorageFull
from ..records import Record
from ..stores import OnConflict, Store, WriteResult

__all__ = ["RETRY_PAUSES_S", "WHOLE_TARGET", "first_line", "retrying", "write_batch"]

#: Pauses before each new try of a read or write that failed for a reason that
#: may pass (a lost connection, a server loading its data, a failover under
#: way, a deadlock): about 15 s in all.
RETRY_PAUSES_S = (0.1, 0.3, 1.0, 2.0, 4.0, 8.0)

#: Errors of the target as a whole (it is down, refuses this user, is full):
#: each record alone would fail the same way.
WHOLE_TARGET = (BackendUnavailable, AccessDenied, MissingDatabase, StorageFull)

_T = TypeVar("_T")


def retrying(store: Store, operation: Callable[[], _T]) -> _T:
    """*operation* on *store*, tried again after a failure that may pass."""
    for pause in RETRY_PAUSES_S:
        try:
            return operation()
        except Exception as exc:
            if not store.may_pass(exc):
                raise
        time.sleep(pause)
    return operation()


def write_batch(
    dst: Store, records: list[Record], on_conflict: OnConflict, prepared: object | None = None
) -> WriteResult:
    """Write a batch; when the batch as a whole is refused, isolate the records at fault.

    A failure that may pass (a lost connection, a deadlock) is tried again
    first: writing is idempotent, and a record is only reported failed for
    what it holds, never for the moment it was written at.
    """
    try:
        return retrying(dst, lambda: dst.write_prepared(records, on_conflict, prepared))
    except WHOLE_TARGET:
        raise
    except Exception as batch_error:
        if dst.may_pass(batch_error):
            raise  # the target stays out of reach: stop, --resume finishes
        merged = _one_by_one(dst, records, on_conflict)
        # Every record refused the same way, one by one too: the target is at fault, not
        # the records (a record that fails alone, or for its own reason, is reported).
        refusals = set(merged.failed.values())
        if len(records) > 1 and len(merged.failed) == len(records) and len(refusals) == 1:
            raise MigrationError(
                f"the target refused a whole batch: {first_line(batch_error)}. Nothing of this "
                "batch was written; fix the target and run again with --resume"
            ) from batch_error
        return merged


def _one_by_one(dst: Store, records: list[Record], on_conflict: OnConflict) -> WriteResult:
    merged = WriteResult()
    for record in records:
        try:
            single = retrying(dst, functools.partial(dst.write_many, [record], on_conflict))
        except Exception as exc:
            if dst.may_pass(exc):
                raise  # the target stays out of reach: stop, --resume finishes
            merged.failed[record.id] = f"{type(exc).__name__}: {first_line(exc)}"
            continue
        merged.written += single.written
        merged.skipped += single.skipped
        merged.expired += single.expired
        merged.failed.update(single.failed)
    return merged


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
