"""Reading the source ahead of the writer: pages selected by the filters,
passes started again when the source changed under them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..records import Filters, Kind, Record
from ..stores import Page, Store
from .writing import retrying

__all__ = ["MAX_RESCANS", "Batch", "SourceFailed", "read_ahead", "selected_by"]

#: Times one run starts a pass over a kind of record again because the source
#: changed under it (restarted, failed over) before it stops and says what may
#: be missing.
MAX_RESCANS = 3


class SourceFailed(Exception):
    """Reading the source failed; the exception's cause says why."""


@dataclass
class Batch:
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


def selected_by(filters: Filters, record: Record) -> bool:
    # Damage in the source (an archive line that is no record) is always reported; an
    # unreadable record cannot be filtered: it is reported unless a filter excludes all else.
    if record.damaged:
        return True
    return filters.empty if record.error else filters.matches(record)


def _latest(records: list[Record]) -> list[Record]:
    """*records* with only the last of several of the same id (an archive holds
    each version of a result it archived; the later supersedes the earlier)."""
    last = {record.id: at for at, record in enumerate(records)}
    if len(last) == len(records):
        return records
    return [record for at, record in enumerate(records) if last[record.id] == at]


def read_ahead(
    src: Store,
    starts: list[tuple[Kind, Any, str | None]],
    batch_size: int,
    filters: Filters,
    prepare: Callable[[list[Record]], object | None] | None,
) -> Iterator[Batch]:
    """The batches of each (kind, cursor, epoch) of *starts* in turn, each with
    its records selected by *filters* and what *prepare* makes of them.

    The next batch is read and prepared in a thread while the caller writes
    this one (from one kind's last batch to the next kind's first).  A page
    whose epoch is not the pass's was found with a cursor of another source:
    its records are kept, and the pass starts again.
    """

    def read(kind: Kind, at: Any, epoch: str | None) -> Batch:
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
            raise SourceFailed() from exc
        seconds = time.monotonic() - began
        # Without filters every record, the unreadable ones too (they are reported).
        selected = records if filters.empty else [r for r in records if selected_by(filters, r)]
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
        batch = Batch(kind, page, selected, prepared, seconds, at, epoch, done, rescan)
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
    return retrying(src, lambda: src.scan(kind, at, batch_size))
