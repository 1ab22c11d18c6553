"""Results in Celery's filesystem backend (``file:///folder``).

One file per result, named like the Redis key (``celery-task-meta-<id>``,
``celery-taskset-meta-<id>``) and holding the same serialized meta.  Files
are written to a temporary name and renamed, so a reader never sees half a
result, and their modification time is set to ``date_done``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..errors import SerializationError, UsageError
from ..records import Kind, Record
from .base import OnConflict, Page, Store, WriteResult
from .redis import RedisStore

__all__ = ["FilesystemStore"]

_PREFIX = {Kind.TASK: "celery-task-meta-", Kind.GROUP: "celery-taskset-meta-"}


class FilesystemStore(Store):
    layout = "filesystem"
    meta_blobs = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        path = self.location.path
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        self.folder = path

    def check_source(self) -> None:
        """The folder must exist: a missing one is a typo, not an empty source."""
        if not os.path.isdir(self.folder):
            raise UsageError(
                f"the folder {self.folder} does not exist (or is not a folder): give the "
                "folder of Celery's filesystem backend, file:///ABSOLUTE/PATH"
            )

    def path(self, kind: Kind, result_id: str) -> str:
        """The file of a result; ValueError for an id that cannot be a file name here."""
        if not result_id or "/" in result_id or "\x00" in result_id:
            raise ValueError(
                f"the id {result_id!r} cannot be a file name (it is empty, or holds '/' or NUL)"
            )
        return os.path.join(self.folder, _PREFIX[kind] + result_id)

    def _names(self, kind: Kind) -> list[str]:
        prefix = _PREFIX[kind]
        try:
            with os.scandir(self.folder) as entries:
                return sorted(e.name for e in entries if e.name.startswith(prefix))
        except FileNotFoundError:
            return []

    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        names = [n for n in self._names(kind) if cursor is None or n > cursor]
        chosen = names[:limit]
        prefix_len = len(_PREFIX[kind])
        found = self.read_many(kind, [n[prefix_len:] for n in chosen]).values()
        records = [record.replace(position=_PREFIX[kind] + record.id) for record in found]
        return Page(records, chosen[-1] if len(names) > limit else None)

    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        out: dict[str, Record] = {}
        for result_id in ids:
            try:
                path = self.path(kind, result_id)
            except ValueError:
                continue  # no file can hold it
            try:
                with open(path, "rb") as handle:
                    payload = handle.read()
                    modified = os.fstat(handle.fileno()).st_mtime
            except FileNotFoundError:
                continue
            record = self.record_from_payload(kind, result_id, payload)
            if kind is Kind.GROUP and record.meta is not None and not record.meta.get("date_done"):
                # Celery stores no date in a group; its own cleanup goes by the file's age.
                record.meta["date_done"] = datetime.fromtimestamp(modified, timezone.utc)
            out[result_id] = record
        return out

    def write_many(self, records: Sequence[Record], on_conflict: OnConflict) -> WriteResult:
        """Write each record to a temporary file, then rename them all into place.

        A record that cannot be a file (its id is no file name, its date no date,
        its payload unreadable) fails alone; an error of the folder itself (no
        space, no permission) stops the batch.
        """
        outcome = WriteResult()
        os.makedirs(self.folder, exist_ok=True)
        staged: list[tuple[Record, str, str, float | None]] = []
        try:
            for record in records:
                try:
                    target = self.path(record.kind, record.id)
                    if os.path.exists(target) and not self._replaces(record, target, on_conflict):
                        outcome.skipped.append(record.id)
                        continue
                    payload = self._payload(record)
                    stamp = _stamp(record)
                except (ValueError, TypeError, SerializationError) as exc:
                    outcome.failed[record.id] = str(exc)
                    continue
                fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".resultkit-")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                staged.append((record, temp, target, stamp))
            for record, temp, target, stamp in staged:
                os.replace(temp, target)
                if stamp is not None:
                    os.utime(target, (stamp, stamp))
                outcome.written.append(record.id)
        finally:
            for _, temp, _, _ in staged:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        return outcome

    def _replaces(self, record: Record, target: str, on_conflict: OnConflict) -> bool:
        if on_conflict is OnConflict.OVERWRITE:
            return True
        if on_conflict is OnConflict.SKIP:
            return False
        with open(target, "rb") as handle:
            current = self.record_from_payload(record.kind, record.id, handle.read())
        new, old = record.date_done, current.date_done
        return new is not None and (old is None or new > old)

    def _payload(self, record: Record) -> bytes:
        raw = self.reusable_raw(record)
        if raw is not None:
            return raw
        if record.meta is None:
            raise ValueError(record.error or "the record has no readable payload")
        return self.codec.encode(RedisStore.meta_for(record), record)

    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        deleted = 0
        for result_id in ids:
            with contextlib.suppress(FileNotFoundError, ValueError):
                os.unlink(self.path(kind, result_id))
                deleted += 1
        return deleted

    def delete_unchanged(self, kind: Kind, records: Sequence[Record]) -> int:
        """Delete each file only if it still holds the bytes read.

        The file is first renamed aside (atomic: whatever it holds then is what
        is judged) and compared; a file rewritten meanwhile is put back, unless
        a still newer one has taken its name since, which is then kept.
        """
        deleted = 0
        for record in records:
            if record.raw is None:
                continue
            try:
                path = self.path(kind, record.id)
            except ValueError:
                continue
            # A name no scan takes for a result (results' names start with celery-).
            aside = os.path.join(self.folder, f".resultkit-erasing-{uuid.uuid4().hex}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue  # gone already
            with open(aside, "rb") as handle:
                same = handle.read() == record.raw
            if same:
                os.unlink(aside)
                deleted += 1
                continue
            with contextlib.suppress(FileExistsError):  # a newer file took the name: it stays
                os.link(aside, path)
            os.unlink(aside)
        return deleted

    def count(self, kind: Kind) -> int:
        return len(self._names(kind))


def _stamp(record: Record) -> float | None:
    """The modification time a result's file gets: its date_done (Celery's cleanup
    goes by it), None to leave the time of writing."""
    try:
        done = record.date_done
    except ValueError as exc:
        raise ValueError(f"its date_done is not a date: {exc}") from None
    return done.timestamp() if done is not None else None
