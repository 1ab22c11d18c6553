"""Archives: gzip'd JSON-lines files (``jsonl:///path/archive.jsonl.gz``).

An archive is a store like any other, so ``resultkit migrate jsonl://...``
restores one.  The format is documented in ``docs/archive-format.md``: one
JSON object per line, with the result's meta readable as JSON when it was
written as uncompressed JSON, and the exact payload in base64 otherwise.

Archives are append-only.  Each batch is appended as one gzip member and
fsync'd, so a crash can only leave a partial last member, which the next
writer cuts off before appending (that batch was never acknowledged).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import orjson

from ..codec import NOT_READ, encode_payload, exact_json
from ..compression import split_compression
from ..errors import ConfigurationError
from ..records import Kind, Record, as_datetime
from .base import OnConflict, Page, Store, WriteResult
from .redis import RedisStore

__all__ = ["FORMAT_VERSION", "ArchiveStore"]

FORMAT_VERSION = 1


class ArchiveStore(Store):
    layout = "archive"
    native_ttl = True
    meta_blobs = True
    deletable = False
    celery_readable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        path = self.url.partition("://")[2]
        if not path:
            raise ConfigurationError(
                "an archive URL needs a path: jsonl:///var/backups/results.jsonl.gz"
            )
        self.path = path
        self._index: dict[tuple[Kind, str], Any] | None = None

    # ------------------------------------------------------------- reading
    def _lines(self) -> Iterator[bytes]:
        if not os.path.exists(self.path):
            return
        with gzip.open(self.path, "rb") as handle:
            try:
                yield from handle
            except EOFError:
                return  # a partial last member: that batch was never acknowledged

    def _record(self, line: bytes) -> Record | None:
        line = line.strip()
        if not line:
            return None
        try:
            data = orjson.loads(line)
            kind = Kind(data["kind"])
            result_id = str(data["id"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return Record(Kind.TASK, "?", None, error="a line of the archive is not valid JSON")
        if "meta" in data:
            raw = encode_payload(data["meta"], "json") if data["meta"] is not None else None
        else:
            try:
                raw = base64.b64decode(data.get("payload") or "", validate=True)
            except ValueError:
                return Record(kind, result_id, None, error="the archived payload is not base64")
        record = self.record_from_payload(kind, result_id, raw, expires_at=data.get("expires_at"))
        record.expires_known = bool(data.get("expires_known"))
        if record.meta is None and data.get("serializer"):
            record.serializer = data["serializer"]
        return record

    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        start = int(cursor or 0)
        records: list[Record] = []
        consumed = 0
        for consumed, line in enumerate(islice(self._lines(), start, None), start=1):
            record = self._record(line)
            if record is not None and record.kind is kind:
                record.position = start + consumed
                records.append(record)
            if len(records) >= limit:
                return Page(records, start + consumed)
        return Page(records, None)

    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        wanted = set(ids)
        out: dict[str, Record] = {}
        for line in self._lines():
            record = self._record(line)
            if record is not None and record.kind is kind and record.id in wanted:
                out[record.id] = record  # a later line supersedes an earlier one
        return out

    # ------------------------------------------------------------- writing
    def _load_index(self) -> dict[tuple[Kind, str], Any]:
        if self._index is None:
            self._repair_tail()
            self._index = {}
            for line in self._lines():
                record = self._record(line)
                if record is not None:
                    self._index[(record.kind, record.id)] = record.date_done
        return self._index

    def _repair_tail(self) -> None:
        """Cut off a partial last gzip member left by a crash."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as handle:
            data = handle.read()
        good = 0
        while good < len(data):
            inflater = zlib.decompressobj(wbits=31)
            try:
                inflater.decompress(data[good:])
            except zlib.error:
                break
            if not inflater.eof:
                break
            good = len(data) - len(inflater.unused_data)
        if good < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())

    def line_for(self, record: Record) -> bytes:
        """The archive line of *record* (see docs/archive-format.md)."""
        line: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "kind": record.kind.value,
            "id": record.id,
            "serializer": record.serializer,
            "compression": record.compression,
            "expires_at": record.expires_at,
            "expires_known": record.expires_known,
        }
        if record.meta is not None:
            done = record.date_done
            line["date_done"] = done.isoformat() if done else None
            line["status"] = record.status
        raw = self.reusable_raw(record)
        if raw is not None:
            payload = raw
        elif record.meta is not None:
            payload = self.codec.encode(RedisStore.meta_for(record), record)
        else:
            raise ValueError(record.error or "the record has no readable payload")
        body, compression = split_compression(payload)
        serializer, _ = self.codec.target_format(record)
        meta = _inline_meta(body) if compression is None and serializer == "json" else None
        if meta is not None:
            line["meta"] = meta
        else:
            line["payload"] = base64.b64encode(payload).decode("ascii")
        return orjson.dumps(line) + b"\n"

    def write_many(self, records: Sequence[Record], on_conflict: OnConflict) -> WriteResult:
        outcome = WriteResult()
        index = self._load_index()
        chunk: list[bytes] = []
        accepted: list[Record] = []
        for record in records:
            key = (record.kind, record.id)
            if key in index:
                old = index[key]
                new = record.date_done
                replace = on_conflict is OnConflict.OVERWRITE or (
                    on_conflict is OnConflict.NEWER
                    and new is not None
                    and (old is None or new > as_datetime(old))  # type: ignore[operator]
                )
                if not replace:
                    outcome.skipped.append(record.id)
                    continue
            try:
                chunk.append(self.line_for(record))
            except Exception as exc:
                outcome.failed[record.id] = str(exc)
                continue
            accepted.append(record)
        if chunk:
            self._append(gzip.compress(b"".join(chunk), compresslevel=6))
            for record in accepted:
                index[(record.kind, record.id)] = record.date_done
                outcome.written.append(record.id)
        return outcome

    def _append(self, member: bytes) -> None:
        """Append one gzip member durably (file and, for a new file, its folder
        entry fsync'd), or not at all: a failed write (a full disk) is cut off,
        so the archive stays whole."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        created = not os.path.exists(self.path)
        # Unbuffered: nothing of a failed write is left to be flushed after the cut.
        handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.lseek(handle, 0, os.SEEK_END)
            try:
                view = memoryview(member)
                while view:
                    view = view[os.write(handle, view) :]
                os.fsync(handle)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(handle, start)
                raise
        finally:
            os.close(handle)
        if created:
            descriptor = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        raise ConfigurationError("archives are append-only: nothing can be deleted from them")

    def purge(self, kind: Kind, plan: Any, before_delete: Any = None) -> Any:
        raise ConfigurationError("archives are append-only: clean up the backend, not its archive")

    def count(self, kind: Kind) -> int:
        return len({r.id for page in self.pages(kind, 5000) for r in page.records})


def _inline_meta(body: bytes) -> Any:
    """A JSON meta as the archive line's ``meta``, when JSON holds it exactly;
    None for NaN, infinities and integers past 64 bits (orjson would change
    them), which go as the base64 payload instead."""
    meta = exact_json(body)
    return None if meta is NOT_READ else meta
