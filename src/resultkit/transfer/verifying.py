"""Reading a written batch back from the target and comparing it with the source."""

from __future__ import annotations

from ..compare import as_values, differences
from ..records import Record
from ..stores import Store, WriteResult
from .tally import Tally

__all__ = ["verify"]


def verify(
    dst: Store, records: list[Record], outcome: WriteResult, tally: Tally
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
            tally.note_unverified(record, reason)
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
        diffs = differences(record, seen.get(record.id), fields, children=dst.keeps_children)
        if diffs:
            tally.note_mismatch(record, diffs)
            why_not[record.id] = f"mismatched: {', '.join(diffs)} differ in the target"
        else:
            tally.verified += 1
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
