"""``resultkit migrate``: copy stored results from one backend to another, verified."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..apps import check_settings
from ..boundary import translating
from ..checkpoint import Checkpoint, default_checkpoint_path
from ..choices import require_compression
from ..codec import ENCRYPTED, require_serializer
from ..compare import as_values, differences
from ..encryption import KeyRing, configure, keyring_for, sealing_for
from ..errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    MigrationError,
    MissingDatabase,
    StorageFull,
    UsageError,
)
from ..records import MAX_BATCH_RECORDS, Filters, Kind, Record
from ..stores import Codec, OnConflict, Page, Store, WriteResult, open_store
from ..urls import mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_BATCH_SIZE", "MigrationReport", "Progress", "migrate"]

#: Records read, written and checkpointed together.
DEFAULT_BATCH_SIZE = 1000
#: Problems listed in the report (all are counted).
MAX_LISTED = 1000


@dataclass
class Progress:
    """What a progress callback is told after each batch."""

    kind: Kind
    done: int
    total: int | None


@dataclass
class MigrationReport:
    """The outcome of a migration (or of a dry run)."""

    source: str
    target: str
    dry_run: bool = False
    copied: int = 0
    skipped: int = 0
    expired: int = 0
    failed: int = 0
    verified: int = 0
    mismatched: int = 0
    #: Copied, but not compared: their payload is not decoded (pickle without
    #: --accept-pickle), so there is nothing to compare it with.
    unverified: int = 0
    deleted: int = 0
    #: With --move: records left in the source, and why (``kept_records``).
    kept: int = 0
    seconds: float = 0.0
    resumed: bool = False
    checkpoint: str | None = None
    #: Dry run: records that would be copied, by state, and their payload bytes.
    by_state: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    estimated_seconds: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    unverified_records: list[dict[str, Any]] = field(default_factory=list)
    kept_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.mismatched or self.unverified)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "ok": self.ok,
            "source": self.source,
            "target": self.target,
            "dry_run": self.dry_run,
            "copied": self.copied,
            "skipped": self.skipped,
            "expired": self.expired,
            "failed": self.failed,
            "verified": self.verified,
            "mismatched": self.mismatched,
            "unverified": self.unverified,
            "deleted": self.deleted,
            "kept": self.kept,
            "seconds": round(self.seconds, 3),
            "resumed": self.resumed,
            "checkpoint": self.checkpoint,
            "failures": self.failures,
            "mismatches": self.mismatches,
            "unverified_records": self.unverified_records,
            "kept_records": self.kept_records,
        }
        if self.dry_run:
            out.update(
                by_state=self.by_state, bytes=self.bytes, estimated_seconds=self.estimated_seconds
            )
        return out


def migrate(
    source: str,
    target: str,
    *,
    app: Celery | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    resume: bool = False,
    verify: bool = False,
    move: bool = False,
    on_conflict: OnConflict | str = OnConflict.SKIP,
    states: Sequence[str] = (),
    tasks: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    source_serializer: str | None = None,
    target_serializer: str | None = None,
    target_compression: str | None = None,
    accept_pickle: bool = False,
    source_keys_env: str | None = None,
    target_keys_env: str | None = None,
    checkpoint: str | Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> MigrationReport:
    """Copy the task and group results of *source* into *target*.

    Without *move* the source is never modified.  Records are written in
    batches, each one transaction (or pipeline); after each batch a
    checkpoint is saved, so a crash loses nothing and *resume* continues
    after the last finished batch.  Writing is idempotent, so running the same
    migration twice is harmless.  *verify* reads every copied record back
    through Celery's backend class for the target and compares it; *move*
    deletes from the source only records verified in the target.
    """
    started = time.monotonic()
    on_conflict = OnConflict(on_conflict)
    if not 1 <= batch_size <= MAX_BATCH_RECORDS:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_RECORDS:,}")
    if source == target:
        raise UsageError("the source and the target are the same: nothing to migrate")
    if app is not None:
        check_settings(app)
    filters = Filters.build(states, tasks, since, until)
    if target_compression:
        require_compression(target_compression, "--target-compression")
    for name in filter(None, (source_serializer, target_serializer)):
        if name != ENCRYPTED:  # it needs keys: checked with them below
            require_serializer(name)
    hint = source_serializer or (app.conf.result_serializer if app is not None else "json")
    conf = app.conf if app is not None else None
    source_keys = _keys(conf, source_keys_env, "--source-keys-env")
    target_keys = _keys(conf, target_keys_env, "--target-keys-env")
    sealing = sealing_for(conf, target_keys)
    if target_serializer == ENCRYPTED and sealing is None:
        raise UsageError(
            "--target-serializer resultkit-encrypted needs the target's keys: "
            "--target-keys-env VAR, or resultkit_encryption_keys in the app"
        )
    if sealing is not None:
        # Celery's backend reads the target back (--verify) with these keys; the
        # source's open what the target does not know.
        configure(sealing.keys + source_keys if source_keys else sealing.keys, conf=conf)
    src = open_store(source, app, Codec(hint=hint, accept_pickle=accept_pickle, keys=source_keys))
    if target_serializer is None and app is not None and source_serializer is not None:
        target_serializer = app.conf.result_serializer
    dst = open_store(
        target,
        app,
        Codec(
            serializer=target_serializer,
            compression=target_compression,
            accept_pickle=accept_pickle,
            hint=target_serializer or hint,
            keys=target_keys,
            sealing=sealing,
        ),
    )
    src.read_lifetimes = dst.native_ttl  # SQL tables, files: no lifetime to keep
    # Both ends answer (and the source exists) before anything is read or written.
    src.check_source()
    dst.ping()
    if move and not src.deletable:
        raise UsageError(
            f"--move cannot delete from {src.masked_url}: {src.layout}s are append-only"
        )
    report = MigrationReport(mask_url(source), mask_url(target), dry_run=dry_run)
    identity = "\x00".join(
        [
            source,
            target,
            repr(sorted(filters.describe().items())),
            on_conflict.value,
            str(target_serializer),
            str(target_compression),
            str(move),
        ]
    )
    path = Path(checkpoint) if checkpoint else default_checkpoint_path(identity)
    state = Checkpoint.load(path, identity) if resume and not dry_run else None
    report.resumed = state is not None
    if state is None:
        state = Checkpoint(path, identity)
    else:
        _restore_counters(report, state.counters)
    report.checkpoint = None if dry_run else str(path)
    # Each batch allocates many small containers, most of them alive until the
    # batch is written: without this, the collector rescans every long-lived
    # object (Celery, SQLAlchemy) and every record in flight over and over.
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 50 * batch_size), *threshold[1:])
    try:
        # The stores translate their own errors: an OS error left is the checkpoint's.
        with _stop_on_ctrl_c() as stop, translating(str(path), "save the checkpoint"):
            _run(
                src,
                dst,
                report,
                state,
                filters,
                batch_size,
                on_conflict,
                verify,
                move,
                progress,
                stop,
            )
            if stop.is_set():
                raise KeyboardInterrupt
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        src.close()
        dst.close()
    if not dry_run:
        state.remove()
    report.seconds = time.monotonic() - started
    return report


_COUNTERS = (
    "copied",
    "skipped",
    "expired",
    "failed",
    "verified",
    "mismatched",
    "unverified",
    "deleted",
    "kept",
)


def _restore_counters(report: MigrationReport, counters: dict[str, int]) -> None:
    for name in _COUNTERS:
        setattr(report, name, int(counters.get(name, 0)))


def _run(
    src: Store,
    dst: Store,
    report: MigrationReport,
    state: Checkpoint,
    filters: Filters,
    batch_size: int,
    on_conflict: OnConflict,
    verify: bool,
    move: bool,
    progress: Callable[[Progress], None] | None,
    stop: threading.Event,
) -> None:
    read_seconds = 0.0
    by_state: Counter[str] = Counter()
    kinds = [k for k in (Kind.TASK, Kind.GROUP) if k in filters.kinds]
    kinds = [k for k in kinds if k.value not in state.finished]
    # Counting is a full pass over the source: only a progress bar needs it.
    totals = {kind: src.count(kind) for kind in kinds} if progress is not None else {}
    done: Counter[Kind] = Counter()
    prepare = None
    if not report.dry_run:
        # Before the reading thread starts: making tables imports modules, which
        # two threads must not do at once.
        try:
            dst.ensure_tables()
        except BackendError:
            raise  # says what failed, where and what to do already
        except Exception as exc:
            raise MigrationError(
                f"could not prepare the target: {_first_line(exc)}. Nothing was written; "
                "fix the target and run again"
            ) from exc
        prepare = functools.partial(dst.prepare, on_conflict=on_conflict)
    starts = [(kind, state.cursors.get(kind.value)) for kind in kinds]
    # Batches are written in order; where the target allows it, the next one is
    # written while this one commits (each in its own transaction).
    depth = 2 if dst.concurrent_writes and not report.dry_run else 1
    Writing = Future[WriteResult] | WriteResult | None
    in_flight: deque[tuple[Kind, Page, list[Record], Writing]] = deque()

    def finish(kind: Kind, page: Page, selected: list[Record], writing: Writing) -> None:
        interrupted = False
        if writing is not None:
            outcome, interrupted = _outcome(writing)
            _account(report, selected, outcome)
            if verify or move:
                verified, why_not = _verify(dst, selected, outcome, report)
                if move:
                    report.deleted += src.delete_many(kind, verified)
                    _note_kept(report, selected, why_not)
        done[kind] += len(page.records)
        if progress is not None:
            progress(Progress(kind, done[kind], totals.get(kind)))
        if not report.dry_run:
            state.cursors[kind.value] = page.cursor
            if page.cursor is None:
                state.finished.append(kind.value)
            state.counters = {name: getattr(report, name) for name in _COUNTERS}
            state.save()
        if interrupted:
            raise KeyboardInterrupt

    with contextlib.ExitStack() as stack:
        writers = None
        if depth > 1:
            pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="resultkit-write")
            writers = stack.enter_context(pool)
        try:
            for kind, page, selected, prepared, seconds in _prefetch(
                src, starts, batch_size, filters, prepare
            ):
                read_seconds += seconds
                writing: Writing = None
                if report.dry_run:
                    for record in selected:
                        if record.error and record.serializer != "pickle":
                            report.failed += 1
                            _note_failure(report, record, record.error)
                            continue
                        by_state[record.status or ("GROUP" if kind is Kind.GROUP else "?")] += 1
                        report.bytes += len(record.raw or b"") or len(repr(record.meta))
                elif selected and writers is not None:
                    writing = writers.submit(_write, dst, selected, on_conflict, prepared)
                elif selected:
                    writing = _write(dst, selected, on_conflict, prepared)
                in_flight.append((kind, page, selected, writing))
                if len(in_flight) >= depth:
                    finish(*in_flight.popleft())
                if stop.is_set():
                    break  # Ctrl-C: stop after the batches under way
            while in_flight:
                finish(*in_flight.popleft())
        except KeyboardInterrupt:
            # Batches being written are committed by their threads anyway:
            # count and checkpoint them, so that --resume does not redo them.
            while in_flight:
                finish(*in_flight.popleft())
            raise
    if report.dry_run:
        report.by_state = dict(sorted(by_state.items()))
        copied = sum(by_state.values())
        # Writing costs about what reading does on every store measured; a rough guide.
        report.estimated_seconds = round(read_seconds * 2 + copied / 20000, 1)


def _prefetch(
    src: Store,
    starts: list[tuple[Kind, Any]],
    batch_size: int,
    filters: Filters,
    prepare: Callable[[list[Record]], object | None] | None,
) -> Iterator[tuple[Kind, Page, list[Record], object | None, float]]:
    """The pages of each (kind, cursor) of *starts* in turn, each with its records
    selected by *filters* and what *prepare* makes of them.

    The next page is read and prepared in a thread while the caller writes
    this one (from one kind's last page to the next kind's first).
    """

    def read(kind: Kind, at: Any) -> tuple[Kind, Page, list[Record], object | None, float]:
        began = time.monotonic()
        page = src.scan(kind, at, batch_size)
        while not page.records and page.cursor is not None:
            # A page that matched nothing (Redis scans every key for each kind):
            # read on rather than hand over, and checkpoint, nothing.
            page = src.scan(kind, page.cursor, batch_size)
        seconds = time.monotonic() - began
        if filters.empty:  # every record, the unreadable ones too (they are reported)
            selected = list(page.records)
        else:
            selected = [r for r in page.records if _selected(r, filters)]
        prepared = None
        if prepare is not None and selected:
            try:
                prepared = prepare(selected)
            except Exception:  # writing the batch does this work again, and reports what fails
                prepared = None
        return kind, page, selected, prepared, seconds

    queue = list(starts)
    if not queue:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resultkit-read") as pool:
        pending = pool.submit(read, *queue.pop(0))
        while True:
            kind, page, selected, prepared, seconds = pending.result()
            following = (kind, page.cursor) if page.cursor is not None else None
            if following is None and queue:
                following = queue.pop(0)
            if following is not None:
                pending = pool.submit(read, *following)
            yield kind, page, selected, prepared, seconds
            if following is None:
                return


@contextlib.contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """An event that Ctrl-C sets: the migration then stops after the batches
    under way are written and checkpointed, and raises KeyboardInterrupt.

    A second Ctrl-C raises at once; batches being written by their threads
    are still waited for and checkpointed, as they commit anyway.  Only where
    Python's own handler is in place, in the main thread; elsewhere Ctrl-C is
    what it was.
    """
    stop = threading.Event()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield stop
        return

    def ask(number: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, ask)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _outcome(writing: Future[WriteResult] | WriteResult) -> tuple[WriteResult, bool]:
    """A batch's outcome, and whether Ctrl-C was pressed meanwhile: a batch
    written by its own thread is committed anyway, so it is waited for."""
    if not isinstance(writing, Future):
        return writing, False
    interrupted = False
    while True:
        try:
            return writing.result(), interrupted
        except KeyboardInterrupt:
            interrupted = True


def _selected(record: Record, filters: Filters) -> bool:
    # Damage in the source (an archive line that is no record) is always reported; an
    # unreadable record cannot be filtered: it is reported unless a filter excludes all else.
    if record.damaged:
        return True
    return filters.empty if record.error else filters.matches(record)


def _write(
    dst: Store, records: list[Record], on_conflict: OnConflict, prepared: object | None = None
) -> WriteResult:
    """Write a batch; when the batch as a whole is refused, isolate the records at fault."""
    try:
        return dst.write_prepared(records, on_conflict, prepared)
    except _WHOLE_TARGET:
        raise  # not the records' fault: each one alone would fail the same way
    except Exception as batch_error:
        merged = WriteResult()
        for record in records:
            try:
                single = dst.write_many([record], on_conflict)
            except Exception as exc:
                merged.failed[record.id] = f"{type(exc).__name__}: {_first_line(exc)}"
                continue
            merged.written += single.written
            merged.skipped += single.skipped
            merged.expired += single.expired
            merged.failed.update(single.failed)
        # Every record refused the same way, one by one too: the target is at fault, not
        # the records (a record that fails alone, or for its own reason, is reported).
        refusals = set(merged.failed.values())
        if len(records) > 1 and len(merged.failed) == len(records) and len(refusals) == 1:
            raise MigrationError(
                f"the target refused a whole batch: {_first_line(batch_error)}. Nothing of this "
                "batch was written; fix the target and run again with --resume"
            ) from batch_error
        return merged


#: Errors of the target as a whole (it is down, refuses this user, is full).
_WHOLE_TARGET = (BackendUnavailable, AccessDenied, MissingDatabase, StorageFull)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _account(report: MigrationReport, records: list[Record], outcome: WriteResult) -> None:
    report.copied += len(outcome.written)
    report.skipped += len(outcome.skipped)
    report.expired += len(outcome.expired)
    report.failed += len(outcome.failed)
    if outcome.failed:
        by_id = {r.id: r for r in records}
        for result_id, error in outcome.failed.items():
            _note_failure(report, by_id[result_id], error)


def _note_failure(report: MigrationReport, record: Record, error: str) -> None:
    if len(report.failures) < MAX_LISTED:
        failure: dict[str, Any] = {"id": record.id, "kind": record.kind.value, "error": error}
        if record.line is not None:
            failure["line"] = record.line  # where in the archive it was read
        report.failures.append(failure)


def _verify(
    dst: Store, records: list[Record], outcome: WriteResult, report: MigrationReport
) -> tuple[list[str], dict[str, str]]:
    """Read the batch back from the target and compare; return the ids verified
    equal, and why each other record of the batch was not."""
    present = set(outcome.written) | set(outcome.skipped)
    why_not = {rid: f"failed: {error}" for rid, error in outcome.failed.items()}
    for rid in outcome.expired:
        why_not[rid] = (
            "expired: its lifetime was over, so it was not copied (its own expiry, or "
            "resultkit cleanup, removes it)"
        )
    candidates = []
    for record in records:
        if record.id not in present:
            why_not.setdefault(record.id, "failed: not copied")
        elif record.meta is None:
            reason = _unverifiable(record)
            why_not[record.id] = f"not verified: {reason}"
            report.unverified += 1
            if len(report.unverified_records) < MAX_LISTED:
                report.unverified_records.append(
                    {"id": record.id, "kind": record.kind.value, "reason": reason}
                )
        else:
            candidates.append(record)
    if not candidates:
        return [], why_not
    kind = candidates[0].kind
    ids = [r.id for r in candidates]
    fields = dst.extended_fields
    if dst.celery_readable:
        seen = dst.celery_read_many(kind, ids)
    else:
        seen = {i: as_values(r) for i, r in dst.read_many(kind, ids).items() if r.meta is not None}
    verified = []
    for record in candidates:
        diffs = differences(record, seen.get(record.id), fields)
        if diffs:
            report.mismatched += 1
            why_not[record.id] = f"mismatched: {', '.join(diffs)} differ in the target"
            if len(report.mismatches) < MAX_LISTED:
                report.mismatches.append(
                    {"id": record.id, "kind": record.kind.value, "fields": diffs}
                )
        else:
            report.verified += 1
            verified.append(record.id)
    return verified, why_not


def _unverifiable(record: Record) -> str:
    """Why a copied record cannot be compared with its copy."""
    if record.serializer == "pickle":
        return (
            "a pickle payload, copied as it is but never decoded without --accept-pickle "
            "(pass it, if you trust everyone who can write results, to verify it)"
        )
    return f"its payload is not decoded here ({record.error or 'unreadable'})"


def _note_kept(report: MigrationReport, records: list[Record], why_not: dict[str, str]) -> None:
    """--move: count the records left in the source, with why each stayed."""
    for record in records:
        reason = why_not.get(record.id)
        if reason is None:
            continue
        report.kept += 1
        if len(report.kept_records) < MAX_LISTED:
            report.kept_records.append(
                {"id": record.id, "kind": record.kind.value, "reason": reason}
            )


def _keys(conf: Any, env: str | None, option: str) -> KeyRing | None:
    """The keys named by *option* (an environment variable), else the app's or the default's."""
    if env is None:
        return keyring_for(conf)
    if not os.environ.get(env, "").strip():
        raise UsageError(f"{option} {env}: that environment variable is not set or empty")
    return KeyRing.from_settings(None, env=env)  # the variable named, not the app's setting
