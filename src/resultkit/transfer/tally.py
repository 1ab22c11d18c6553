"""What a transfer counts, and what it lists of the records it could not carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..records import Kind, Record
from ..stores import WriteResult

__all__ = ["COUNTERS", "MAX_LISTED", "Progress", "Tally"]

#: Problems listed in a report (all are counted).
MAX_LISTED = 1000

#: The counters a checkpoint keeps, so that a resumed run reports the whole run.
COUNTERS = (
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


@dataclass
class Progress:
    """What a progress callback is told after each batch."""

    kind: Kind
    done: int
    total: int | None


@dataclass(kw_only=True)
class Tally:
    """The counts of a transfer: every result its scan found ends as exactly one
    of copied, skipped, expired, failed, filtered or vanished."""

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
    scanned: int = 0
    #: Found, and left out by --state/--task/--since/--until.
    filtered: int = 0
    #: Found by the scan, and gone (expired, deleted) from the source when read.
    vanished: int = 0
    #: Found, and none of the above: always 0 unless resultkit has a bug.
    unaccounted: int = 0
    #: Passes over the source started again because it changed under the
    #: transfer (a Redis restarted or failed over: its SCAN cursor meant nothing).
    rescans: int = 0
    #: Every result present in the source throughout was seen by one unbroken pass.
    complete: bool = True
    #: When not complete: results of the source (as the filters select) not in
    #: the target, counted by one more pass (None: that pass failed too).
    missing: int | None = 0
    #: What happened that the figures do not say (a rescan, no checkpoint found).
    notes: list[str] = field(default_factory=list)
    #: Dry run: records that would be copied, by state, and their payload bytes.
    by_state: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    estimated_seconds: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    unverified_records: list[dict[str, Any]] = field(default_factory=list)
    kept_records: list[dict[str, Any]] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def restore(self, counters: dict[str, int]) -> None:
        """Take up the counts a checkpoint kept of the run it resumes."""
        for name in COUNTERS:
            setattr(self, name, int(counters.get(name, 0)))

    def account(self, records: list[Record], outcome: WriteResult) -> None:
        """Count what became of a written batch; list the records that failed."""
        self.copied += len(outcome.written)
        self.skipped += len(outcome.skipped)
        self.expired += len(outcome.expired)
        self.failed += len(outcome.failed)
        self.unaccounted += len(records) - (
            len(outcome.written) + len(outcome.skipped) + len(outcome.expired) + len(outcome.failed)
        )
        if outcome.failed:
            by_id = {r.id: r for r in records}
            for result_id, error in outcome.failed.items():
                self.note_failure(by_id[result_id], error)

    def note_failure(self, record: Record, error: str) -> None:
        if len(self.failures) < MAX_LISTED:
            failure: dict[str, Any] = {"id": record.id, "kind": record.kind.value, "error": error}
            if record.line is not None:
                failure["line"] = record.line  # where in the archive it was read
            self.failures.append(failure)

    def note_unverified(self, record: Record, reason: str) -> None:
        self.unverified += 1
        if len(self.unverified_records) < MAX_LISTED:
            self.unverified_records.append(
                {"id": record.id, "kind": record.kind.value, "reason": reason}
            )

    def note_mismatch(self, record: Record, fields: list[str]) -> None:
        self.mismatched += 1
        if len(self.mismatches) < MAX_LISTED:
            self.mismatches.append({"id": record.id, "kind": record.kind.value, "fields": fields})

    def note_kept(self, records: list[Record], why_not: dict[str, str]) -> None:
        """--move: count the records left in the source, with why each stayed."""
        for record in records:
            reason = why_not.get(record.id)
            if reason is None:
                continue
            self.kept += 1
            if len(self.kept_records) < MAX_LISTED:
                self.kept_records.append(
                    {"id": record.id, "kind": record.kind.value, "reason": reason}
                )
