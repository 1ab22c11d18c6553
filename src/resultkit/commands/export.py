"""``resultkit export``: the results a query selects, as an archive or a CSV file.

The archive is the ``jsonl://`` format of :mod:`resultkit.stores.archive`
(``resultkit migrate jsonl:///PATH TARGET`` restores it); each result keeps
its stored bytes (serializer, compression, encryption), so pickle is copied,
never decoded.  The CSV file has one row per result, for people and
spreadsheets.  Either is written to a temporary file beside the target and
renamed over it at the end: the target path never holds a half-written file.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..apps import resolve_target
from ..boundary import translating
from ..errors import SerializationError, UsageError
from ..query import Query, batched, once_each, select
from ..records import MAX_BATCH_RECORDS, Kind, Record
from ..stores import OnConflict, open_store
from ..transfer import Progress

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_EXPORT_BATCH_RECORDS",
    "MAX_DAMAGED_EXAMPLES",
    "ExportReport",
    "export",
]

#: Results written at a time (one gzip member of the archive).
DEFAULT_EXPORT_BATCH_RECORDS = 1000

ExportFormat = Literal["jsonl", "csv"]

#: The columns of a CSV export, in order.  ``args``, ``kwargs`` and ``result``
#: are JSON text; ``error`` says why a result's payload could not be read.
CSV_COLUMNS = (
    "task_id",
    "kind",
    "status",
    "name",
    "date_done",
    "worker",
    "queue",
    "retries",
    "args",
    "kwargs",
    "result",
    "traceback",
    "parent_id",
    "group_id",
    "error",
)

#: Suffixes that choose the format when ``format`` is not given.
_SUFFIXES: tuple[tuple[str, ExportFormat], ...] = (
    (".jsonl.gz", "jsonl"),
    (".gz", "jsonl"),
    (".csv", "csv"),
)


@dataclass
class ExportReport:
    """What an export wrote, and where."""

    backend: str
    path: str
    format: ExportFormat
    exported: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: Records the source could not read at all (an archive's damaged lines): not
    #: exported, and not known to match the filters or not.
    damaged: int = 0
    #: Where the first of them are, and why (at most ``MAX_DAMAGED_EXAMPLES``).
    damaged_examples: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every record of the source was either exported or filtered out."""
        return self.damaged == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "path": self.path,
            "format": self.format,
            "exported": self.exported,
            "complete": self.complete,
            "damaged": self.damaged,
            "damaged_examples": self.damaged_examples,
            "by_state": self.by_state,
            "filters": self.filters,
            "seconds": round(self.seconds, 3),
        }


#: Damaged records an export names in its report (it counts them all).
MAX_DAMAGED_EXAMPLES = 10


def export(
    url: str | None = None,
    *,
    to: str | Path,
    app: Celery | str | None = None,
    query: Query | None = None,
    format: ExportFormat | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_EXPORT_BATCH_RECORDS,
    progress: Callable[[Progress], None] | None = None,
) -> ExportReport:
    """Write the results *query* selects (default: every task and group result) to *to*.

    The format is *format*, else the path's suffix (``.jsonl.gz`` or ``.gz``:
    an archive; ``.csv``: CSV).  An existing file is replaced only with
    *overwrite*; either way nothing appears under *to* until the export is
    complete, and a failed export leaves no file behind.
    """
    started = time.monotonic()
    if not 1 <= batch_size <= MAX_BATCH_RECORDS:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_RECORDS:,}")
    path = _target_path(to)
    chosen = _format(path, format)
    if path.is_dir():
        raise UsageError(f"--to {path} is a folder: give the path of the file to write")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists: choose another path, or pass --overwrite")
    if not path.parent.is_dir():
        raise UsageError(f"the folder {path.parent} does not exist: create it first")
    query = query or Query.build()
    if query.empty:  # everything: the groups too, so that the archive restores whole
        query = replace(query, kinds=frozenset(Kind))
    target = resolve_target(url, app)
    store = open_store(target.url, target.app)
    report = ExportReport(target.masked_url, str(path), chosen, filters=dict(query.describe()))
    try:
        store.check_source()
        total = None
        if progress is not None:
            # Counted first, for a progress bar with an ETA (a terminal only).
            total = sum(1 for _ in once_each(select(store, query, batch_size=batch_size)))
            progress(Progress(Kind.TASK, 0, total))
        selected = select(store, query, batch_size=batch_size, damaged=True)
        batches = batched(once_each(_set_aside_damaged(selected, report)), batch_size)
        writer = _write_archive if chosen == "jsonl" else _write_csv
        by_state: dict[str, int] = {}

        def counted(batch: list[Record]) -> None:
            report.exported += len(batch)
            for record in batch:
                state = record.status or ("GROUP" if record.kind is Kind.GROUP else "?")
                by_state[state] = by_state.get(state, 0) + 1
            if progress is not None:
                progress(Progress(Kind.TASK, report.exported, max(total or 0, report.exported)))

        _atomically(path, lambda temp: writer(temp, batches, counted, target.app))
        report.by_state = dict(sorted(by_state.items()))
    finally:
        store.close()
    report.seconds = time.monotonic() - started
    return report


def _target_path(to: str | Path) -> Path:
    text = str(to)
    if text.startswith("jsonl://"):
        text = text[len("jsonl://") :]
    elif "://" in text:
        raise UsageError(f"--to {text}: give a file path (or jsonl:///PATH), not a URL")
    if not text:
        raise UsageError("--to needs the path of the file to write")
    return Path(text).expanduser().absolute()


def _format(path: Path, given: str | None) -> ExportFormat:
    if given is not None:
        if given not in ("jsonl", "csv"):
            raise UsageError(f"--format {given}: choose jsonl or csv")
        return "jsonl" if given == "jsonl" else "csv"
    name = path.name.lower()
    for suffix, chosen in _SUFFIXES:
        if name.endswith(suffix):
            return chosen
    raise UsageError(
        f"cannot tell the format from {path.name!r}: end the path with .jsonl.gz (an archive "
        "migrate restores) or .csv, or pass --format jsonl|csv"
    )


def _set_aside_damaged(records: Iterable[Record], report: ExportReport) -> Iterator[Record]:
    """The records that can be exported; the damaged ones counted in *report*, never
    dropped silently (the export then exits 1 and says where they are)."""
    for record in records:
        if not record.damaged:
            yield record
            continue
        report.damaged += 1
        if len(report.damaged_examples) < MAX_DAMAGED_EXAMPLES:
            report.damaged_examples.append(record.error or record.id)


def _atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run *write* on a temporary file beside *path*, then rename it to *path*
    (durably: file and folder fsync'd); on any failure, remove the temporary file."""
    with translating(str(path), "write the export"):
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(handle)
    temp = Path(name)
    try:
        write(temp)
        with translating(str(path), "write the export"):
            descriptor = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.chmod(temp, 0o600)  # results may hold personal data: the owner's only
            os.replace(temp, path)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _write_archive(
    temp: Path,
    batches: Iterable[list[Record]],
    counted: Callable[[list[Record]], None],
    app: Any,
) -> None:
    archive = open_store(f"jsonl://{temp}", app)
    # An export stands on its own: offloaded payloads are written inline, never as
    # references to objects that cleanup or erase may delete later.
    archive.inline_offloaded = True
    try:
        for batch in batches:
            outcome = archive.write_many(batch, OnConflict.OVERWRITE)
            if outcome.failed:
                result_id, why = next(iter(outcome.failed.items()))
                raise SerializationError(
                    f"result {result_id} cannot be archived ({why}), so the archive would "
                    "be incomplete: nothing was exported; leave it out with filters, or "
                    "export as CSV, which names it in its error column"
                )
            counted(batch)
    finally:
        archive.close()


def _write_csv(
    temp: Path,
    batches: Iterable[list[Record]],
    counted: Callable[[list[Record]], None],
    app: Any,
) -> None:
    with translating(str(temp), "write the export"), open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for batch in batches:
            writer.writerows(csv_row(record) for record in batch)
            counted(batch)


def csv_row(record: Record) -> list[str]:
    """The CSV row of *record* (see :data:`CSV_COLUMNS`)."""
    meta = record.meta or {}
    done = record.date_done if record.meta is not None else None
    group = record.kind is Kind.GROUP

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    def as_json(value: Any) -> str:
        if value is None:
            return ""
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()

    return [
        record.id,
        record.kind.value,
        text(meta.get("status") if not group else None),
        text(meta.get("name")),
        done.isoformat() if done else "",
        text(meta.get("worker")),
        text(meta.get("queue")),
        text(meta.get("retries")),
        as_json(meta.get("args")),
        as_json(meta.get("kwargs")),
        as_json(meta.get("result")),
        text(meta.get("traceback")),
        text(meta.get("parent_id")),
        text(meta.get("group_id")),
        text(record.error),
    ]
