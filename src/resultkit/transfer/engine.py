"""The transfer loop: read ahead, write (two batches in flight where the target
allows it), verify, delete from the source when moving, checkpoint, report."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import BackendError, MigrationError
from ..records import Filters, Kind
from ..stores import OnConflict, Store, WriteResult
from . import reading
from .reading import Batch, read_ahead, selected_by
from .tally import Progress, Tally
from .verifying import verify
from .writing import first_line, write_batch

__all__ = ["Transfer", "TransferOptions", "stop_on_ctrl_c"]

_Writing = Future[WriteResult] | WriteResult | None


@dataclass(frozen=True)
class TransferOptions:
    """What a transfer carries, and how."""

    filters: Filters
    batch_size: int
    on_conflict: OnConflict = OnConflict.SKIP
    verify: bool = False
    #: Delete from the source each record verified in the target.
    move: bool = False
    #: Read and count only: nothing is written, nothing checkpointed.
    dry_run: bool = False


class Transfer:
    """Carry the results of *src* into *dst*, counting into *tally*.

    After each batch the *checkpoint* is saved (its cursors, epochs and the
    tally's counters), so that a run started again from it goes on where this
    one stopped.  *finish_command* is what the user is told to run when a
    checkpoint cannot be saved.
    """

    def __init__(
        self,
        src: Store,
        dst: Store,
        options: TransferOptions,
        tally: Tally,
        checkpoint: Checkpoint,
        *,
        finish_command: str,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.src, self.dst, self.options, self.tally = src, dst, options, tally
        self.checkpoint = checkpoint
        self.finish_command = finish_command
        self.progress = progress
        self._by_state: Counter[str] = Counter()
        self._done: Counter[Kind] = Counter()
        self._gave_up: list[Kind] = []
        self._totals: dict[Kind, int | None] = {}

    def run(self, stop: threading.Event) -> None:
        """Transfer every kind the filters select, stopping after the batches
        under way once *stop* is set."""
        options, tally = self.options, self.tally
        kinds = [k for k in (Kind.TASK, Kind.GROUP) if k in options.filters.kinds]
        kinds = [k for k in kinds if k.value not in self.checkpoint.finished]
        # Counting is a full pass over the source: only a progress bar needs it.
        if self.progress is not None:
            self._totals = {kind: self.src.count(kind) for kind in kinds}
        prepare = None if options.dry_run else self._prepare_target()
        starts = [
            (kind, self.checkpoint.cursors.get(kind.value), self.checkpoint.epochs.get(kind.value))
            for kind in kinds
        ]
        read_seconds = self._pump(starts, prepare, stop)
        if self._gave_up:
            self._count_missing()
        if options.dry_run:
            tally.by_state = dict(sorted(self._by_state.items()))
            copied = sum(self._by_state.values())
            # Writing costs about what reading does on every store measured; a rough guide.
            tally.estimated_seconds = round(read_seconds * 2 + copied / 20000, 1)

    def _prepare_target(self) -> Callable[[list[Any]], object | None]:
        # Before the reading thread starts: making tables imports modules, which
        # two threads must not do at once.
        try:
            self.dst.ensure_tables()
        except BackendError:
            raise  # says what failed, where and what to do already
        except Exception as exc:
            raise MigrationError(
                f"could not prepare the target: {first_line(exc)}. Nothing was written; "
                "fix the target and run again"
            ) from exc
        return functools.partial(self.dst.prepare, on_conflict=self.options.on_conflict)

    def _pump(
        self,
        starts: list[tuple[Kind, Any, str | None]],
        prepare: Callable[[list[Any]], object | None] | None,
        stop: threading.Event,
    ) -> float:
        """Read, write and finish every batch; return the seconds spent reading."""
        options = self.options
        read_seconds = 0.0
        # Batches are written in order; where the target allows it, the next one is
        # written while this one commits (each in its own transaction).
        depth = 2 if self.dst.concurrent_writes and not options.dry_run else 1
        in_flight: deque[tuple[Batch, _Writing]] = deque()
        with contextlib.ExitStack() as stack:
            writers = None
            if depth > 1:
                pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="resultkit-write")
                writers = stack.enter_context(pool)
            batches = read_ahead(self.src, starts, options.batch_size, options.filters, prepare)
            try:
                for batch in batches:
                    read_seconds += batch.seconds
                    writing: _Writing = None
                    if options.dry_run:
                        self._count_dry(batch)
                    elif batch.selected:
                        args = (self.dst, batch.selected, options.on_conflict, batch.prepared)
                        writing = (
                            writers.submit(write_batch, *args) if writers else write_batch(*args)
                        )
                    in_flight.append((batch, writing))
                    if len(in_flight) >= depth:
                        self._finish(*in_flight.popleft())
                    if stop.is_set():
                        break  # Ctrl-C: stop after the batches under way
                while in_flight:
                    self._finish(*in_flight.popleft())
            except KeyboardInterrupt:
                # Batches being written are committed by their threads anyway:
                # count and checkpoint them, so that a resumed run does not redo them.
                while in_flight:
                    self._finish(*in_flight.popleft())
                raise
        return read_seconds

    def _count_dry(self, batch: Batch) -> None:
        tally = self.tally
        for record in batch.selected:
            if record.error and record.serializer != "pickle":
                tally.failed += 1
                tally.note_failure(record, record.error)
                continue
            group = batch.kind is Kind.GROUP
            self._by_state[record.status or ("GROUP" if group else "?")] += 1
            tally.bytes += len(record.raw or b"") or len(repr(record.meta))

    def _finish(self, batch: Batch, writing: _Writing) -> None:
        """Account for a written batch, verify and move it, and checkpoint."""
        tally, options = self.tally, self.options
        kind, page, selected = batch.kind, batch.page, batch.selected
        interrupted = False
        if writing is not None:
            outcome, interrupted = _outcome(writing)
            tally.account(selected, outcome)
            if options.verify or options.move:
                verified, why_not = verify(self.dst, selected, outcome, tally)
                if options.move:
                    tally.deleted += self.src.delete_many(kind, verified)
                    tally.note_kept(selected, why_not)
        tally.scanned += len(page.records) + page.vanished
        tally.vanished += page.vanished
        # A superseded record counts as skipped: a later copy of it is written.
        tally.skipped += batch.superseded
        tally.filtered += len(page.records) - len(selected) - batch.superseded
        self._done[kind] += len(page.records)
        if batch.rescan:
            tally.rescans += 1
            self._done[kind] = 0
            if batch.gave_up:
                self._gave_up.append(kind)
            else:
                tally.notes.append(
                    f"the source changed under the migration (it restarted or failed "
                    f"over): its {kind.value} results were scanned again from the start; "
                    "those already in the target were skipped"
                )
        if self.progress is not None:
            self.progress(Progress(kind, self._done[kind], self._totals.get(kind)))
        if not options.dry_run:
            self._save(batch)
        if interrupted:
            raise KeyboardInterrupt

    def _save(self, batch: Batch) -> None:
        state, tally = self.checkpoint, self.tally
        state.cursors[batch.kind.value] = batch.cursor
        state.epochs[batch.kind.value] = batch.epoch
        if batch.done:
            state.finished.append(batch.kind.value)
        state.counters = tally.counters()
        try:
            state.save()
        except OSError as exc:
            raise MigrationError(
                f"could not save the checkpoint {state.path}: {exc.strerror or exc}. The "
                f"migration stopped; the {tally.copied + tally.skipped:,} results "
                "written so far are in the target. Make room (or give --checkpoint "
                f"another place) and finish it with: {self.finish_command}"
            ) from exc

    def _count_missing(self) -> None:
        """The source changed once too often: the run is not complete, and one
        more pass counts what the target lacks (when the source lets it)."""
        tally = self.tally
        tally.complete = False
        tally.missing = None
        if not self.options.dry_run:
            with contextlib.suppress(Exception):  # the source may be changing still
                tally.missing = sum(self._missing(kind) for kind in self._gave_up)
        tally.notes.append(
            f"the source changed under the migration {reading.MAX_RESCANS + 1} times "
            f"(restarts or failovers) while its {', '.join(k.value for k in self._gave_up)} "
            "results were scanned: results present all along may not have been seen"
        )

    def _missing(self, kind: Kind) -> int:
        """How many results of *kind* the source holds (as the filters select) that
        the target does not: one more pass, reading only ids from the target."""
        filters: Filters = self.options.filters
        missing = 0
        for page in self.src.pages(kind, self.options.batch_size):
            ids = [r.id for r in page.records if filters.empty or selected_by(filters, r)]
            if ids:
                missing += len(set(ids) - set(self.dst.read_many(kind, ids)))
        return missing


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


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[threading.Event]:
    """An event that Ctrl-C sets: a transfer then stops after the batches under
    way are written and checkpointed, and raises KeyboardInterrupt.

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
