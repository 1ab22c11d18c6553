"""``resultkit migrate``: copy stored results from one backend to another, verified."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import shlex
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import encryption
from ..boundary import from_outside, translating, what_failed
from ..checkpoint import Checkpoint, default_checkpoint_path
from ..checks.audit import check_settings
from ..choices import require_compression
from ..codec import ENCRYPTED, require_serializer
from ..compare import as_values, differences
from ..encryption import KeyRing, keyring_for, sealing_for
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
from ..urls import MASK, mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_BATCH_SIZE", "MigrationReport", "Progress", "migrate"]

#: Records read, written and checkpointed together.
DEFAULT_BATCH_SIZE = 1000
#: Problems listed in the report (all are counted).
MAX_LISTED = 1000
#: Times one run starts a pass over a kind of record again because the source
#: changed under it (restarted, failed over) before it stops and says what may
#: be missing.
MAX_RESCANS = 3
#: Pauses before each new try of a read or write that failed for a reason that
#: may pass (a lost connection, a server loading its data, a failover under
#: way, a deadlock): about 15 s in all.
RETRY_PAUSES_S = (0.1, 0.3, 1.0, 2.0, 4.0, 8.0)


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
    #: Reconciliation: every result the scan found ended as exactly one of copied,
    #: skipped, expired, failed, filtered or vanished; ``unaccounted`` counts any
    #: that did not (always 0 unless resultkit has a bug).
    scanned: int = 0
    #: Found, and left out by --state/--task/--since/--until.
    filtered: int = 0
    #: Found by the scan, and gone (expired, deleted) from the source when read.
    vanished: int = 0
    unaccounted: int = 0
    #: Passes over the source started again because it changed under the
    #: migration (a Redis restarted or failed over: its SCAN cursor meant nothing).
    rescans: int = 0
    #: Every result present in the source throughout was seen by one unbroken pass.
    complete: bool = True
    #: When not complete: results of the source (as the filters select) not in
    #: the target, counted by one more pass (None: that pass failed too).
    missing: int | None = 0
    #: The command that finishes this migration, when it must be finished.
    resume_command: str | None = None
    #: What happened that the figures do not say (a rescan, no checkpoint found).
    notes: list[str] = field(default_factory=list)

    unverified_records: list[dict[str, Any]] = field(default_factory=list)
    kept_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not (self.failed or self.mismatched or self.unverified)
            and not (self.unaccounted or self.missing)
            and self.complete
        )

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
            "scanned": self.scanned,
            "filtered": self.filtered,
            "vanished": self.vanished,
            "unaccounted": self.unaccounted,
            "rescans": self.rescans,
            "complete": self.complete,
            "missing": self.missing,
            "resume_command": self.resume_command,
            "notes": self.notes,
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
    command: str | None = None,
) -> MigrationReport:
    """Copy the task and group results of *source* into *target*.

    Without *move* the source is never modified.  Records are written in
    batches, each one transaction (or pipeline); after each batch a
    checkpoint is saved, so a crash loses nothing and *resume* continues
    after the last finished batch.  Writing is idempotent, so running the same
    migration twice is harmless.  *verify* reads every copied record back
    through Celery's backend class for the target and compares it; *move*
    deletes from the source only records verified in the target.

    A resumed run, or a run whose source changes under it, never trusts a scan
    cursor of a source that restarted or failed over since (see
    :attr:`Page.epoch`): that pass starts again, and the results already in the
    target are skipped.  The report reconciles what was scanned with what became
    of it; when the run cannot vouch that every result was seen it is not
    ``complete``, keeps its checkpoint and names the command that finishes it:
    *command* (how the caller ran this migration, passwords masked), else one
    made from these arguments.
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
    reading: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if sealing is not None:
        # Celery's backend reads the target back (--verify) with these keys; the
        # source's open what the target does not know.  Only for this call.
        ring = sealing.keys + source_keys if source_keys else sealing.keys
        reading = encryption.scoped(dataclasses.replace(sealing, keys=ring))
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
    # Masked URLs: the identity's digest names the checkpoint, and no password
    # is needed to recognise the same migration (nor changes it).
    identity = "\x00".join(
        [
            mask_url(source),
            mask_url(target),
            repr(sorted(filters.describe().items())),
            on_conflict.value,
            str(target_serializer),
            str(target_compression),
            str(move),
        ]
    )
    path = Path(checkpoint) if checkpoint else default_checkpoint_path(identity)
    try:
        state = Checkpoint.load(path, identity) if resume and not dry_run else None
    except UsageError:
        src.close()
        dst.close()
        raise
    report.resumed = state is not None
    if state is None:
        if resume and not dry_run:
            report.notes.append(
                f"no checkpoint at {path}: started from the beginning "
                "(results already in the target are skipped)"
            )
        state = Checkpoint(path, identity)
    else:
        _restore_counters(report, state.counters)
    report.checkpoint = None if dry_run else str(path)
    if command is None:
        command = _command(
            source,
            target,
            app=app,
            batch_size=batch_size,
            verify=verify,
            move=move,
            on_conflict=on_conflict,
            filters=(states, tasks, since, until),
            serializers=(source_serializer, target_serializer, target_compression),
            accept_pickle=accept_pickle,
            keys_env=(source_keys_env, target_keys_env),
            checkpoint=checkpoint,
        )
    finish = _resuming(command)
    # Each batch allocates many small containers, most of them alive until the
    # batch is written: without this, the collector rescans every long-lived
    # object (Celery, SQLAlchemy) and every record in flight over and over.
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 50 * batch_size), *threshold[1:])
    try:
        # The stores translate their own errors: an OS error left is the checkpoint's.
        with reading, _stop_on_ctrl_c() as stop, translating(str(path), "save the checkpoint"):
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
                finish,
            )
            if stop.is_set():
                raise KeyboardInterrupt
    except _SourceFailed as failed:
        cause = failed.__cause__
        assert cause is not None
        if not from_outside(cause):
            raise cause from None
        raise _stopped(cause, src.masked_url, report, dry_run, finish) from cause
    except (KeyboardInterrupt, MigrationError):
        raise
    except Exception as exc:
        if not from_outside(exc):
            raise
        raise _stopped(exc, None, report, dry_run, finish) from exc
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        src.close()
        dst.close()
    if not report.complete:
        report.resume_command = finish
    elif not dry_run:
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
    "scanned",
    "filtered",
    "vanished",
    "unaccounted",
    "rescans",
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
    finish_command: str,
) -> None:
    read_seconds = 0.0
    by_state: Counter[str] = Counter()
    kinds = [k for k in (Kind.TASK, Kind.GROUP) if k in filters.kinds]
    kinds = [k for k in kinds if k.value not in state.finished]
    # Counting is a full pass over the source: only a progress bar needs it.
    totals = {kind: src.count(kind) for kind in kinds} if progress is not None else {}
    done: Counter[Kind] = Counter()
    #: Results found by the pass under way over each kind (since it last began).
    found: Counter[Kind] = Counter()
    gave_up: list[Kind] = []
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
    starts = [(kind, state.cursors.get(kind.value), state.epochs.get(kind.value)) for kind in kinds]
    # Batches are written in order; where the target allows it, the next one is
    # written while this one commits (each in its own transaction).
    depth = 2 if dst.concurrent_writes and not report.dry_run else 1
    Writing = Future[WriteResult] | WriteResult | None
    in_flight: deque[tuple[_Batch, Writing]] = deque()

    def finish(batch: _Batch, writing: Writing) -> None:
        kind, page, selected = batch.kind, batch.page, batch.selected
        interrupted = False
        if writing is not None:
            outcome, interrupted = _outcome(writing)
            _account(report, selected, outcome)
            report.unaccounted += len(selected) - (
                len(outcome.written)
                + len(outcome.skipped)
                + len(outcome.expired)
                + len(outcome.failed)
            )
            if verify or move:
                verified, why_not = _verify(dst, selected, outcome, report)
                if move:
                    report.deleted += src.delete_many(kind, verified)
                    _note_kept(report, selected, why_not)
        report.scanned += len(page.records) + page.vanished
        report.vanished += page.vanished
        # A superseded record counts as skipped: a later copy of it is written.
        report.skipped += batch.superseded
        report.filtered += len(page.records) - len(selected) - batch.superseded
        found[kind] += len(page.records) + page.vanished
        done[kind] += len(page.records)
        if batch.rescan:
            report.rescans += 1
            found[kind] = done[kind] = 0
            if batch.gave_up:
                gave_up.append(kind)
            else:
                report.notes.append(
                    f"the source changed under the migration (it restarted or failed "
                    f"over): its {kind.value} results were scanned again from the start; "
                    "those already in the target were skipped"
                )
        if progress is not None:
            progress(Progress(kind, done[kind], totals.get(kind)))
        if not report.dry_run:
            state.cursors[kind.value] = batch.cursor
            state.epochs[kind.value] = batch.epoch
            if batch.done:
                state.finished.append(kind.value)
            state.counters = {name: getattr(report, name) for name in _COUNTERS}
            try:
                state.save()
            except OSError as exc:
                raise MigrationError(
                    f"could not save the checkpoint {state.path}: {_reason(exc)}. The "
                    f"migration stopped; the {report.copied + report.skipped:,} results "
                    "written so far are in the target. Make room (or give --checkpoint "
                    f"another place) and finish it with: {finish_command}"
                ) from exc
        if interrupted:
            raise KeyboardInterrupt

    with contextlib.ExitStack() as stack:
        writers = None
        if depth > 1:
            pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="resultkit-write")
            writers = stack.enter_context(pool)
        try:
            for batch in _prefetch(src, starts, batch_size, filters, prepare):
                read_seconds += batch.seconds
                selected = batch.selected
                writing: Writing = None
                if report.dry_run:
                    for record in selected:
                        if record.error and record.serializer != "pickle":
                            report.failed += 1
                            _note_failure(report, record, record.error)
                            continue
                        kind = batch.kind
                        by_state[record.status or ("GROUP" if kind is Kind.GROUP else "?")] += 1
                        report.bytes += len(record.raw or b"") or len(repr(record.meta))
                elif selected and writers is not None:
                    writing = writers.submit(_write, dst, selected, on_conflict, batch.prepared)
                elif selected:
                    writing = _write(dst, selected, on_conflict, batch.prepared)
                in_flight.append((batch, writing))
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
    if gave_up:
        report.complete = False
        report.missing = None
        if not report.dry_run:
            with contextlib.suppress(Exception):  # the source may be changing still
                report.missing = sum(
                    _missing(src, dst, kind, filters, batch_size) for kind in gave_up
                )
        report.notes.append(
            f"the source changed under the migration {MAX_RESCANS + 1} times (restarts or "
            f"failovers) while its {', '.join(k.value for k in gave_up)} results were "
            "scanned: results present all along may not have been seen"
        )
    if report.dry_run:
        report.by_state = dict(sorted(by_state.items()))
        copied = sum(by_state.values())
        # Writing costs about what reading does on every store measured; a rough guide.
        report.estimated_seconds = round(read_seconds * 2 + copied / 20000, 1)


def _missing(src: Store, dst: Store, kind: Kind, filters: Filters, batch_size: int) -> int:
    """How many results of *kind* the source holds (as *filters* select) that the
    target does not: one more pass, reading only ids from the target."""
    missing = 0
    for page in src.pages(kind, batch_size):
        ids = [r.id for r in page.records if filters.empty or _selected(r, filters)]
        if ids:
            missing += len(set(ids) - set(dst.read_many(kind, ids)))
    return missing


@dataclass
class _Batch:
    """One batch read from the source, and where its pass goes on."""

    kind: Kind
    #: Every record read (the records of pages that were empty after filtering too).
    page: Page
    selected: list[Record]
    prepared: object | None
    seconds: float
    #: Where the pass goes on after this batch, on the source of *epoch*.
    cursor: Any
    epoch: str | None
    #: The pass over this kind is complete: every page read on one unchanged source.
    done: bool
    #: The source changed (its epoch): the cursor meant nothing there, so the
    #: pass starts again from the beginning after this batch.
    rescan: bool = False
    #: ... once too often: the pass over this kind stops here, incomplete.
    gave_up: bool = False
    #: Records left out for a later copy of the same result in the batch.
    superseded: int = 0


def _latest(records: list[Record]) -> list[Record]:
    """*records* with only the last of several of the same id (an archive holds
    each version of a result it archived; the later supersedes the earlier)."""
    last = {record.id: at for at, record in enumerate(records)}
    if len(last) == len(records):
        return records
    return [record for at, record in enumerate(records) if last[record.id] == at]


def _prefetch(
    src: Store,
    starts: list[tuple[Kind, Any, str | None]],
    batch_size: int,
    filters: Filters,
    prepare: Callable[[list[Record]], object | None] | None,
) -> Iterator[_Batch]:
    """The batches of each (kind, cursor, epoch) of *starts* in turn, each with
    its records selected by *filters* and what *prepare* makes of them.

    The next batch is read and prepared in a thread while the caller writes
    this one (from one kind's last batch to the next kind's first).  A page
    whose epoch is not the pass's was found with a cursor of another source:
    its records are kept, and the pass starts again.
    """

    def read(kind: Kind, at: Any, epoch: str | None) -> _Batch:
        began = time.monotonic()
        records: list[Record] = []
        vanished = 0
        rescan = False
        try:
            while True:
                page = _scan(src, kind, at, batch_size)
                records.extend(page.records)
                vanished += page.vanished
                if at is not None and page.epoch != epoch:
                    rescan, at, epoch = True, None, page.epoch
                    break
                at, epoch = page.cursor, page.epoch
                # A page that matched nothing (Redis scans every key for each
                # kind): read on rather than hand over, and checkpoint, nothing.
                if records or at is None:
                    break
        except Exception as exc:
            raise _SourceFailed() from exc
        seconds = time.monotonic() - began
        # Without filters every record, the unreadable ones too (they are reported).
        selected = records if filters.empty else [r for r in records if _selected(r, filters)]
        matched = len(selected)
        selected = _latest(selected)
        prepared = None
        if prepare is not None and selected:
            try:
                prepared = prepare(selected)
            except Exception:  # writing the batch does this work again, and reports what fails
                prepared = None
        page = Page(records, at, epoch, vanished)
        done = at is None and not rescan
        batch = _Batch(kind, page, selected, prepared, seconds, at, epoch, done, rescan)
        batch.superseded = matched - len(selected)
        return batch

    queue = list(starts)
    if not queue:
        return
    rescans: Counter[Kind] = Counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resultkit-read") as pool:
        pending = pool.submit(read, *queue.pop(0))
        while True:
            batch = pending.result()
            if batch.rescan:
                rescans[batch.kind] += 1
                batch.gave_up = rescans[batch.kind] > MAX_RESCANS
            following = None
            if not (batch.done or batch.gave_up):
                following = (batch.kind, batch.cursor, batch.epoch)
            elif queue:
                following = queue.pop(0)
            if following is not None:
                pending = pool.submit(read, *following)
            yield batch
            if following is None:
                return


def _scan(src: Store, kind: Kind, at: Any, batch_size: int) -> Page:
    """``src.scan``, tried again after a failure that may pass (reads are idempotent)."""
    return _retrying(src, lambda: src.scan(kind, at, batch_size))


class _SourceFailed(Exception):
    """Reading the source failed; the exception's cause says why."""


def _stopped(
    exc: BaseException, where: str | None, report: MigrationReport, dry_run: bool, finish: str
) -> MigrationError:
    """The one-line error of a migration that a server or the system stopped part-way."""
    what = what_failed(exc, where)
    if dry_run:
        return MigrationError(f"{what}; the dry run stopped part-way (nothing was written)")
    return MigrationError(
        f"{what}. The migration stopped part-way; the {report.copied + report.skipped:,} "
        f"results written so far are in the target, nothing is lost: finish it with: {finish}"
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _command(
    source: str,
    target: str,
    *,
    app: Celery | None,
    batch_size: int,
    verify: bool,
    move: bool,
    on_conflict: OnConflict,
    filters: tuple[Sequence[str], Sequence[str], datetime | None, datetime | None],
    serializers: tuple[str | None, str | None, str | None],
    accept_pickle: bool,
    keys_env: tuple[str | None, str | None],
    checkpoint: str | Path | None,
) -> str:
    """The ``resultkit migrate`` command line of these arguments (passwords masked)."""
    words = ["resultkit", "migrate", mask_url(source), mask_url(target)]
    if app is not None:
        words += ["-A", app.main or "APP"]
    if batch_size != DEFAULT_BATCH_SIZE:
        words += ["--batch-size", str(batch_size)]
    if on_conflict is not OnConflict.SKIP:
        words += ["--on-conflict", on_conflict.value]
    states, tasks, since, until = filters
    words += [w for state in states for w in ("--state", state)]
    words += [w for task in tasks for w in ("--task", task)]
    if since is not None:
        words += ["--since", since.isoformat()]
    if until is not None:
        words += ["--until", until.isoformat()]
    for option, value in zip(
        ("--source-serializer", "--target-serializer", "--target-compression"),
        serializers,
        strict=True,
    ):
        if value is not None:
            words += [option, value or "none"]
    if accept_pickle:
        words.append("--accept-pickle")
    for option, value in zip(("--source-keys-env", "--target-keys-env"), keys_env, strict=True):
        if value is not None:
            words += [option, value]
    if checkpoint is not None:
        words += ["--checkpoint", str(checkpoint)]
    words += [flag for flag, wanted in (("--verify", verify), ("--move", move)) if wanted]
    return shlex.join(words)


def _resuming(command: str) -> str:
    """*command* with ``--resume``, as told to the user who must finish a migration."""
    if "--resume" not in shlex.split(command):
        command += " --resume"
    if MASK in command:
        command += f" (with the passwords where {MASK} is)"
    return command


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
    """Write a batch; when the batch as a whole is refused, isolate the records at fault.

    A failure that may pass (a lost connection, a deadlock) is tried again
    first: writing is idempotent, and a record is only reported failed for
    what it holds, never for the moment it was written at.
    """
    try:
        return _retrying(dst, lambda: dst.write_prepared(records, on_conflict, prepared))
    except _WHOLE_TARGET:
        raise  # not the records' fault: each one alone would fail the same way
    except Exception as batch_error:
        if dst.may_pass(batch_error):
            raise  # the target stays out of reach: stop, --resume finishes
        merged = WriteResult()
        for record in records:
            try:
                single = _retrying(dst, functools.partial(dst.write_many, [record], on_conflict))
            except Exception as exc:
                if dst.may_pass(exc):
                    raise  # the target stays out of reach: stop, --resume finishes
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


_T = TypeVar("_T")


def _retrying(store: Store, operation: Callable[[], _T]) -> _T:
    """*operation* on *store*, tried again after a failure that may pass."""
    for pause in RETRY_PAUSES_S:
        try:
            return operation()
        except Exception as exc:
            if not store.may_pass(exc):
                raise
        time.sleep(pause)
    return operation()


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
