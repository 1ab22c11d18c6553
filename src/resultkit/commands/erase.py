"""``resultkit erase``: delete every result of a subject, for data-protection requests.

An erasure deletes exactly the results its query matched: each batch the
query selects is archived first when asked (a result the archive did not take
is not deleted), then deleted by id — and, where the store can tell
(:meth:`Store.delete_unchanged <resultkit.stores.base.Store.delete_unchanged>`),
only if it has not changed since it was read.  A result a worker stored again
meanwhile is read again: still matching, it goes through the same steps;
no longer matching, it is left alone.  Results stored while the erasure runs
are deleted when the query finds them matching, and never otherwise.

Each run appends one line to the audit log the caller names: who (the
operating-system user), when, the masked store URL, the filters and the
counts.  Never any result data: no argument, keyword argument, result,
traceback or task id.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .. import __version__
from ..apps import resolve_target
from ..boundary import from_outside, translating, what_failed
from ..codec import Codec
from ..encryption import keyring_for
from ..errors import BackendError, EraseError, UsageError
from ..offload import delete_referenced, is_reference
from ..query import Query, batched, once_each, select
from ..records import MAX_BATCH_RECORDS, Kind, Record
from ..stores import OnConflict, Store, StoreSettings, open_store
from ..transfer import Progress
from ..urls import mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_ERASE_BATCH_RECORDS", "EraseReport", "append_audit_entry", "erase"]

#: Results archived and deleted at a time (each batch one short transaction).
DEFAULT_ERASE_BATCH_RECORDS = 500
#: Times a result that changed while it was erased, and still matches, is tried again.
_ROUNDS = 3


@dataclass
class EraseReport:
    """What an erasure matched, deleted and archived (``dry_run``: deleted nothing)."""

    backend: str
    dry_run: bool
    filters: dict[str, Any]
    matched: int = 0
    deleted: int = 0
    archived: int = 0
    #: Matched, but changed or gone before it could be deleted: left as it is.
    changed: int = 0
    #: Offloaded payloads (``resultkit_offload``) deleted from object storage with
    #: the references the erasure deleted.
    objects_deleted: int = 0
    by_task: dict[str, int] = field(default_factory=dict)
    by_state: dict[str, int] = field(default_factory=dict)
    archive: str | None = None
    audit_log: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "dry_run": self.dry_run,
            "filters": self.filters,
            "matched": self.matched,
            "deleted": self.deleted,
            "archived": self.archived,
            "changed": self.changed,
            "objects_deleted": self.objects_deleted,
            "by_task": self.by_task,
            "by_state": self.by_state,
            "archive": self.archive,
            "audit_log": self.audit_log,
            "seconds": round(self.seconds, 3),
        }


def erase(
    url: str | None = None,
    *,
    query: Query,
    app: Celery | str | None = None,
    dry_run: bool = False,
    yes: bool = False,
    everything: bool = False,
    archive: str | Path | None = None,
    audit_log: str | Path | None = None,
    batch_size: int = DEFAULT_ERASE_BATCH_RECORDS,
    accept_pickle: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> EraseReport:
    """Delete the task results *query* matches (with *dry_run*, only count them).

    One of *dry_run* and *yes* must be given.  An empty query is refused
    unless *everything* says that every result is meant.  With *archive*, each
    result is written to that gzip'd JSON-lines archive before it is deleted,
    and one the archive did not take is kept.  With *audit_log*, one JSON line
    is appended to that file when the run ends, whether it succeeded or not
    (the file is opened first: an erasure that could not be audited does not
    start).  Pickle payloads are decoded, to be matched, only with
    *accept_pickle*.
    """
    started = time.monotonic()
    if dry_run == yes:
        raise UsageError(
            "give --dry-run to count what would be erased, or --yes to erase it"
            if not dry_run
            else "give either --dry-run or --yes, not both"
        )
    if query.empty and not everything:
        raise UsageError(
            "erase needs a filter (--kwarg user_id=42, --arg VALUE, --task GLOB...); "
            "to erase every result, pass --all"
        )
    if not 1 <= batch_size <= MAX_BATCH_RECORDS:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_RECORDS:,}")
    target = resolve_target(url, app)
    settings = StoreSettings.from_app(target.app)
    codec = Codec(
        hint=settings.serializer,
        accept_pickle=accept_pickle,
        keys=keyring_for(dict(settings.celery)),
    )
    store = open_store(target.url, target.app, codec)
    if not store.deletable:
        store.close()
        raise UsageError(
            f"{target.masked_url} is an archive, and archives are append-only: erase cannot "
            "remove results from one.  Restore it into a store (resultkit migrate "
            "jsonl:///ARCHIVE TARGET), erase there, export a new archive, and delete the old "
            "file; resultkit find shows what an archive holds"
        )
    # Task results only: a group result holds no arguments, and erasing a group's
    # record would not erase its members.
    query = replace(query, kinds=frozenset({Kind.TASK}))
    report = EraseReport(target.masked_url, dry_run, dict(query.describe()))
    audit = _open_audit_log(audit_log) if audit_log is not None else None
    report.audit_log = str(audit_log) if audit_log is not None else None
    archive_store: Store | None = None
    failure: str | None = None
    try:
        store.check_source()
        if archive is not None and not dry_run:
            archive_url = (
                str(archive) if "://" in str(archive) else f"jsonl://{Path(archive).resolve()}"
            )
            if archive_url.startswith("jsonl://"):
                _create_private(archive_url[len("jsonl://") :])
            archive_store = open_store(archive_url, target.app)
            # The archive outlives the objects this erasure deletes: payloads inline.
            archive_store.inline_offloaded = True
            report.archive = mask_url(archive_url)
        total = None
        if progress is not None and not dry_run:
            # Counted first, for a progress bar with an ETA (a dry run is its own count).
            total = sum(1 for _ in once_each(select(store, query, batch_size=batch_size)))
            progress(Progress(Kind.TASK, 0, total))
        _run(store, query, archive_store, report, batch_size, progress, total)
    except BaseException as exc:
        # The error's class only: a driver's message may quote the statement's values.
        failure = type(exc).__name__ if isinstance(exc, Exception) else "interrupted"
        if isinstance(exc, Exception) and from_outside(exc):
            archived = " (each archived first)" if archive_store is not None else ""
            raise EraseError(
                f"{what_failed(exc, store.masked_url)}. The erasure stopped part-way after "
                f"deleting {report.deleted:,} of the {report.matched:,} results matched so "
                f"far{archived}; run the same command again to finish"
            ) from exc
        raise
    finally:
        store.close()
        if archive_store is not None:
            archive_store.close()
        report.seconds = time.monotonic() - started
        if audit is not None:
            _append_audit(audit, report, failure)
    return report


def _run(
    store: Store,
    query: Query,
    archive: Store | None,
    report: EraseReport,
    batch_size: int,
    progress: Callable[[Progress], None] | None,
    total: int | None = None,
) -> None:
    for batch in batched(once_each(select(store, query, batch_size=batch_size)), batch_size):
        report.matched += len(batch)
        for record in batch:
            task = record.name or "?"
            report.by_task[task] = report.by_task.get(task, 0) + 1
            state = record.status or "?"
            report.by_state[state] = report.by_state.get(state, 0) + 1
        if report.dry_run:
            continue
        _erase_batch(store, query, archive, report, batch)
        if progress is not None:
            progress(Progress(Kind.TASK, report.matched, max(total or 0, report.matched)))
    report.by_task = dict(sorted(report.by_task.items(), key=lambda item: (-item[1], item[0])))
    report.by_state = dict(sorted(report.by_state.items()))


def _erase_batch(
    store: Store, query: Query, archive: Store | None, report: EraseReport, batch: list[Record]
) -> None:
    """Archive (when asked) and delete the unchanged results of *batch*.

    A result that changed between its read and its delete (a worker stored it
    again) is read again: if it still matches, it goes through the same steps
    (archived as it is now, then deleted if unchanged), a few times at most;
    if it no longer matches, it is left as it is (``changed``).
    """
    archived: set[str] = set()
    pending = batch
    for _ in range(_ROUNDS):
        chosen = pending
        if archive is not None:
            taken = _archive(archive, pending, report.archive or "")
            archived |= taken
            chosen = [r for r in pending if r.id in taken]
        deleted = store.delete_unchanged(Kind.TASK, chosen) if chosen else 0
        report.deleted += deleted
        if deleted:
            report.objects_deleted += _delete_objects(store, chosen)
        if deleted >= len(pending):
            pending = []
            break
        fresh = store.read_many(Kind.TASK, [r.id for r in pending])
        again = [r for r in fresh.values() if query.matches(r)]
        report.changed += len(pending) - deleted - len(again)
        pending = again
        if not pending:
            break
    report.changed += len(pending)
    report.archived += len(archived)


def _delete_objects(store: Store, records: list[Record]) -> int:
    """Delete the offloaded payloads of *records* whose references are no longer
    stored (deleted now, or replaced by a newer store): nothing references them.

    Each store of an offloaded result writes an object of its own (a random
    suffix), so an object is never shared with a newer result of the same id.
    """
    offloaded = [r for r in records if isinstance(r.raw, bytes) and is_reference(r.raw)]
    if not offloaded:
        return 0
    now = store.read_many(Kind.TASK, [r.id for r in offloaded])
    deleted = 0
    for record in offloaded:
        current = now.get(record.id)
        if current is None or current.raw != record.raw:
            deleted += delete_referenced(record.raw)
    return deleted


def _archive(archive: Store, records: list[Record], where: str) -> set[str]:
    """Write *records* to the archive; return the ids now durably in it."""
    try:
        outcome = archive.write_many(records, OnConflict.NEWER)
    except (OSError, BackendError) as exc:
        raise EraseError(
            f"could not write the archive {where} ({what_failed(exc)}). The erasure stopped "
            "before deleting any result it could not archive; make room and run the same "
            "command again"
        ) from exc
    return set(outcome.written) | set(outcome.skipped)


# ------------------------------------------------------------------ the audit log
def _open_audit_log(path: str | Path) -> int:
    """Open the audit log for appending (created, owner-only, when missing)."""
    where = str(path)
    with translating(where, "open the audit log"):
        if os.path.isdir(where):
            raise UsageError(f"--audit-log {where} is a folder: give the path of a file")
        return os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def _create_private(path: str) -> None:
    """Create a missing archive file readable by its owner only (an empty file is
    an empty archive): it will hold the personal data being erased."""
    with translating(path, "create the archive"), contextlib.suppress(FileExistsError):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no name
        return f"uid {os.getuid()}"


def audit_line(report: EraseReport, failure: str | None = None) -> bytes:
    """The audit log's line for *report*: who, when, where, which filters, how many.

    Built from the report's counts and filters only, never from a record: no
    result data can reach it.
    """
    entry: dict[str, Any] = {
        "event": "erase",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "who": _who(),
        "host": socket.gethostname(),
        "store": report.backend,
        # The filters given (the empty ones left out: an auditor reads what was asked).
        "filters": {
            k: v for k, v in report.filters.items() if v not in (None, [], "") and k != "order"
        },
        "dry_run": report.dry_run,
        "matched": report.matched,
        "deleted": report.deleted,
        "archived": report.archived,
        "changed": report.changed,
        "archive": report.archive,
        "ok": failure is None,
        "resultkit": __version__,
    }
    if failure is not None:
        entry["error"] = failure
    return orjson.dumps(entry) + b"\n"


def append_audit_entry(path: str | Path, event: str, fields: dict[str, Any]) -> None:
    """Append one audit line for another write (``event``: export, retry...): who,
    when, where, then *fields* (filters and counts, never result data)."""
    entry: dict[str, Any] = {
        "event": event,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "who": _who(),
        "host": socket.gethostname(),
        **fields,
        "resultkit": __version__,
    }
    handle = _open_audit_log(path)
    try:
        with translating(str(path), "write the audit log"):
            os.write(handle, orjson.dumps(entry, default=str) + b"\n")
            os.fsync(handle)
    finally:
        os.close(handle)


def _append_audit(handle: int, report: EraseReport, failure: str | None) -> None:
    try:
        with translating(report.audit_log or "the audit log", "write the audit log"):
            os.write(handle, audit_line(report, failure))
            os.fsync(handle)
    finally:
        os.close(handle)
