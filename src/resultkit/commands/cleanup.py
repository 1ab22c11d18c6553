"""``resultkit cleanup``: delete results past their lifetime, archiving them first if asked."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..apps import resolve_target
from ..boundary import from_outside, what_failed
from ..checks.audit import check_settings
from ..durations import parse_duration
from ..errors import BackendError, CleanupError, ConfigurationError, UsageError
from ..offload import (
    ORPHAN_GRACE_S,
    SETTING,
    check_url,
    object_store,
    offload_settings,
    sweep_orphans,
)
from ..purge import BeforeDelete, PurgePlan
from ..records import MAX_BATCH_RECORDS, Kind, Record
from ..retention import RetentionPolicy, describe
from ..stores import OnConflict, Store, open_store
from ..transfer import Progress
from ..urls import mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_CLEANUP_BATCH_ROWS", "CleanupReport", "cleanup"]

#: Rows per delete transaction: small enough to stay well under a second.
DEFAULT_CLEANUP_BATCH_ROWS = 5000


@dataclass
class CleanupReport:
    """What a cleanup deleted (or, with ``dry_run``, would delete) and kept."""

    backend: str
    dry_run: bool = False
    deleted: int = 0
    would_delete: int = 0
    archived: int = 0
    ttl_fixed: int = 0
    kept: int = 0
    unreadable: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    by_task: dict[str, int] = field(default_factory=dict)
    policy: list[str] = field(default_factory=list)
    archive: str | None = None
    seconds: float = 0.0
    longest_transaction_s: float = 0.0
    batches: int = 0
    #: ``resultkit_offload``: the object prefix swept, and the orphans deleted (or that
    #: would be) and the objects kept.
    offload: str | None = None
    offload_deleted: int = 0
    offload_kept: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "would_delete": self.would_delete,
            "archived": self.archived,
            "ttl_fixed": self.ttl_fixed,
            "kept": self.kept,
            "unreadable": self.unreadable,
            "by_state": self.by_state,
            "by_task": self.by_task,
            "policy": self.policy,
            "archive": self.archive,
            "seconds": round(self.seconds, 3),
            "longest_transaction_s": round(self.longest_transaction_s, 4),
            "batches": self.batches,
            "offload": self.offload,
            "offload_deleted": self.offload_deleted,
            "offload_kept": self.offload_kept,
        }


def cleanup(
    url: str | None = None,
    *,
    app: Celery | str | None = None,
    older_than: str | float | None = None,
    policy: str | Path | RetentionPolicy | None = None,
    archive: str | Path | None = None,
    fix_missing_ttl: bool = False,
    batch_size: int = DEFAULT_CLEANUP_BATCH_ROWS,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    offload: str | None = None,
    orphan_grace: str | float = ORPHAN_GRACE_S,
) -> CleanupReport:
    """Delete the task and group results past their lifetime.

    The lifetime comes from *older_than* (every result), else the *policy*
    (a file or a :class:`RetentionPolicy`), else the app's
    ``resultkit_retention``, else ``result_expires`` / ``result_failure_expires``.
    A result stored after the cleanup started is never deleted by it.  With
    *archive*, every result is written to that gzip'd JSON-lines archive before
    it is deleted, and one that cannot be archived is kept.  With
    *fix_missing_ttl* (Redis), kept keys that have no TTL get the one the
    policy gives them.

    With offloaded results (the app's ``resultkit_offload``, or *offload*, an
    ``s3://`` or ``file://`` prefix), objects that no stored result references
    any more and that are older than *orphan_grace* (default an hour) are
    deleted after the results: those of the results just deleted, of Redis
    keys that expired, of a forget that failed half-way.  An object whose
    reference still exists is never deleted.
    """
    started = time.monotonic()
    if older_than is not None and policy is not None:
        raise UsageError("give either --older-than or --policy, not both")
    if not 1 <= batch_size <= MAX_BATCH_RECORDS:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_RECORDS:,}")
    target = resolve_target(url, app)
    if target.origin == "app":
        check_settings(target.app)
    retention = _policy(target.app, older_than, policy)
    store = open_store(target.url, target.app)
    plan = PurgePlan(retention, time.time(), batch_size, dry_run, fix_missing_ttl)
    report = CleanupReport(target.masked_url, dry_run, policy=list(describe(retention)))
    archive_store = None
    if archive is not None and not dry_run:
        archive_url = (
            str(archive) if "://" in str(archive) else f"jsonl://{Path(archive).resolve()}"
        )
        if archive_url.startswith("s3://"):
            archive_url = "jsonl+" + archive_url  # the archive format, in object storage
        archive_store = open_store(archive_url, target.app)
        # The archive outlives the objects the orphan sweep deletes: payloads inline.
        archive_store.inline_offloaded = True
        report.archive = archive_url
    by_state: Counter[str] = Counter()
    by_task: Counter[str] = Counter()
    #: Results deleted so far, whatever stops the cleanup.
    deleted = [0]
    try:
        for kind in (Kind.TASK, Kind.GROUP):
            before = None
            if archive_store is not None:
                before = _archiver(archive_store, mask_url(str(archive)))
            done = [0]

            def on_batch(count: int, kind: Kind = kind, done: list[int] = done) -> None:
                done[0] += count
                deleted[0] += count
                if progress is not None:
                    progress(Progress(kind, done[0], None))

            outcome = store.purge(kind, replace(plan, on_batch=on_batch), before)
            report.deleted += outcome.deleted
            report.archived += outcome.archived
            report.ttl_fixed += outcome.ttl_fixed
            report.kept += outcome.kept
            report.unreadable += outcome.unreadable
            report.batches += outcome.batches
            report.longest_transaction_s = max(
                report.longest_transaction_s, outcome.longest_transaction_s
            )
            by_state.update(outcome.by_state)
            by_task.update(outcome.by_task)
    except CleanupError:
        raise
    except Exception as exc:
        if not from_outside(exc):
            raise
        raise CleanupError(
            f"{what_failed(exc, store.masked_url)}. The cleanup stopped part-way after deleting "
            f"{deleted[0]:,} results{' (each archived first)' if archive_store else ''}; "
            "run the same command again to finish"
        ) from exc
    finally:
        store.close()
        if archive_store is not None:
            archive_store.close()
    offload_url = offload or _offload_url(target.app)
    if offload_url is not None:
        report.offload = offload_url
        report.offload_deleted, report.offload_kept = _sweep(
            target.url, target.app, offload_url, parse_duration(orphan_grace), dry_run
        )
    report.by_state = dict(sorted(by_state.items()))
    report.by_task = dict(by_task.most_common())
    if dry_run:
        report.would_delete = sum(by_state.values())
    report.seconds = time.monotonic() - started
    return report


def _offload_url(app: Celery) -> str | None:
    settings = offload_settings(app.conf)
    return None if settings is None else settings.url


def _sweep(url: str, app: Celery, prefix: str, grace_s: float, dry_run: bool) -> tuple[int, int]:
    """Delete the orphaned objects under *prefix*; ``(deleted, kept)``."""
    try:
        check_url(prefix)
    except ConfigurationError as exc:
        raise UsageError(str(exc).replace(SETTING, "--offload")) from None
    objects = object_store(prefix)
    store = open_store(url, app)
    try:
        return sweep_orphans(objects, store.stored_references, grace_s=grace_s, dry_run=dry_run)
    except BackendError as exc:
        raise CleanupError(
            f"{what_failed(exc)}. The results were cleaned up; the sweep of {prefix} "
            "stopped part-way: run the same command again to finish"
        ) from exc
    finally:
        store.close()


def _policy(
    app: Celery, older_than: str | float | None, policy: str | Path | RetentionPolicy | None
) -> RetentionPolicy:
    if older_than is not None:
        return RetentionPolicy.uniform(parse_duration(older_than))
    return RetentionPolicy.resolve(app, policy)


def _archiver(archive: Store, path: str) -> BeforeDelete:
    """Write a batch to the archive; return the ids now durably in it.

    ``newer``: a result stored again since an earlier cleanup archived it (a
    task run again with the same id) is archived again, not taken for the
    copy already there.  A batch the archive cannot take stops the cleanup
    before anything of it is deleted.
    """

    def before_delete(records: list[Record]) -> set[str]:
        try:
            outcome = archive.write_many(records, OnConflict.NEWER)
        except (OSError, BackendError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else what_failed(exc)
            raise CleanupError(
                f"could not write the archive {path} ({why}). The cleanup stopped before "
                "deleting any result it could not archive; make room and run the same "
                "command again"
            ) from exc
        return set(outcome.written) | set(outcome.skipped)

    return before_delete
