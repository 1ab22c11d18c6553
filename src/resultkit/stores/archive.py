"""Archives: gzip'd JSON-lines files (``jsonl:///path/archive.jsonl.gz``).

An archive is a store like any other, so ``resultkit migrate jsonl://...``
restores one.  The format is documented in ``docs/archive-format.md``: one
JSON object per line, with the result's meta readable as JSON when it was
written as uncompressed JSON, and the exact payload in base64 otherwise.

Archives are append-only.  Each batch is appended as one gzip member and
fsync'd, so a crash of the writer can only leave a partial last member, which
the next writer cuts off before appending (that batch was never acknowledged,
so its results were never deleted from their backend).

Reading is loud about damage: a member that is cut short, fails its CRC or
holds invalid deflate data, and every line that is not a record of a known
format version with an id, becomes a *damaged* record carrying its line
number, which a migration counts as failed.  The lines of a member are handed
on only once its CRC has been checked (up to :data:`MEMBER_BUFFER_BYTES`),
and reading resumes at the next intact member after a damaged one.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import gzip
import os
import zlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from ..codec import NOT_READ, encode_payload, exact_json
from ..compression import split_compression
from ..errors import ConfigurationError, DamagedArchive, UsageError
from ..records import Kind, Payload, Record, as_datetime
from .base import OnConflict, Page, Store, WriteResult
from .redis import RedisStore

__all__ = ["FORMAT_VERSION", "ArchiveStore"]

FORMAT_VERSION = 1
#: Compressed bytes read at a time.
READ_CHUNK_BYTES = 1 << 20
#: Decompressed bytes of one gzip member held back until its CRC is checked; a
#: larger member (one gzip stream over a whole file) is handed on as it is read.
MEMBER_BUFFER_BYTES = 64 << 20
_GZIP_MAGIC = b"\x1f\x8b"
#: The start of a gzip member: magic and the deflate method.
_MEMBER_START = b"\x1f\x8b\x08"


@dataclass
class _Item:
    """One line of the archive, or a place where it is damaged."""

    #: The line's number (1-based); for damage, the first line it affects.
    line: int
    data: bytes | None = None
    #: Why the archive is damaged here (``data`` is then None).
    damage: str | None = None
    #: ``cut`` (a partial last member), ``not-gzip`` (at the very start), or ``damaged``.
    damage_kind: str = ""
    #: Where the member holding the damage starts in the file.
    offset: int = 0


@dataclass(frozen=True)
class _SeekPoint:
    """Where an intact gzip member starts: its first item's index and line, and its offset."""

    item: int
    line: int
    offset: int


class _Walker:
    """Read the members of an archive in turn, from a member start (see :meth:`items`)."""

    def __init__(self, handle: BinaryIO, start: _SeekPoint, points: list[_SeekPoint]) -> None:
        self.handle = handle
        self.item = start.item
        self.line = start.line
        self.offset = start.offset
        self.points = points
        self.buffer = b""

    def _fill(self, need: int = 1) -> bool:
        while len(self.buffer) < need:
            more = self.handle.read(READ_CHUNK_BYTES)
            if not more:
                return bool(self.buffer)
            self.buffer += more
        return True

    def _emit(self, item: _Item) -> _Item:
        self.item += 1
        return item

    def items(self) -> Iterator[_Item]:
        self.handle.seek(self.offset)
        resyncing = False
        while self._fill(2):
            if not self.buffer.startswith(_GZIP_MAGIC):
                if self.offset == 0:
                    yield self._emit(
                        _Item(
                            1,
                            damage=f"not a gzip file (it starts with {self.buffer[:8]!r})",
                            damage_kind="not-gzip",
                        )
                    )
                    return
                if not resyncing:
                    yield self._emit(
                        _Item(
                            self.line + 1,
                            damage=f"after line {self.line}: bytes that are no gzip member; "
                            "the lines they held, if any, are lost",
                            damage_kind="damaged",
                            offset=self.offset,
                        )
                    )
                resyncing = True
                if not self._resync():
                    return
                continue
            outcome = yield from self._member(resyncing)
            if outcome == "ok":
                resyncing = False
            elif outcome == "damaged":
                resyncing = True
                if not self._resync():
                    return
            else:  # cut short: the end of the file
                return

    def _member(self, resyncing: bool) -> Generator[_Item, None, str]:
        """Read one member; return ``ok``, ``damaged`` (then resync) or ``cut`` (the end)."""
        start = _SeekPoint(self.item, self.line, self.offset)
        inflater = zlib.decompressobj(wbits=31)
        held: list[bytes] = []
        held_bytes = 0
        flushed = 0
        tail = b""
        while True:
            data = self.buffer
            try:
                out = inflater.decompress(data)
            except zlib.error as exc:
                # Whatever this member consumed may hide the next one: look again from its start.
                self.offset = start.offset
                if resyncing and not held and not flushed:
                    return "damaged"  # a false start inside damaged data: look further
                first = start.line + 1
                lost = len(held) + (1 if tail else 0)
                if "check" in str(exc):
                    why = (
                        f"a damaged gzip member from line {first}: it fails its integrity "
                        f"check ({exc}), so none of its lines is restored ({lost} as read, "
                        "which may themselves be wrong)"
                    )
                else:
                    why = (
                        f"a damaged gzip member from line {first} ({exc}): its lines are lost "
                        f"({lost + flushed} read before the damage, how many after is unknown)"
                    )
                if flushed:
                    why += f"; {flushed} of its lines were read before the damage was found"
                self.line += lost
                yield self._emit(
                    _Item(first, damage=why, damage_kind="damaged", offset=start.offset)
                )
                return "damaged"
            used = len(data) - len(inflater.unused_data) if inflater.eof else len(data)
            self.offset += used
            self.buffer = inflater.unused_data if inflater.eof else b""
            if out:
                parts = (tail + out).split(b"\n")
                tail = parts.pop()
                held += parts
                held_bytes += len(out)
                if held_bytes > MEMBER_BUFFER_BYTES:
                    flushed += len(held)
                    yield from self._lines(held)
                    held, held_bytes = [], 0
            if inflater.eof:
                if tail:
                    held.append(tail)
                if not flushed:
                    at = bisect.bisect_left(self.points, start.item, key=lambda p: p.item)
                    if at == len(self.points) or self.points[at].item != start.item:
                        self.points.insert(at, start)
                yield from self._lines(held)
                return "ok"
            if not self.buffer and not self._fill():
                # The file ends inside this member.
                yield from self._lines(held)
                yield self._emit(
                    _Item(
                        self.line + 1,
                        damage=(
                            f"the archive is truncated: it ends inside a gzip member after line "
                            f"{self.line} (a crash while writing, or an incomplete copy); "
                            "the lines after that one in the member are lost, how many is "
                            "unknown (a crash of resultkit's own writer loses only a batch "
                            "it never deleted from its backend)"
                        ),
                        damage_kind="cut",
                        offset=start.offset,
                    )
                )
                return "cut"

    def _lines(self, lines: list[bytes]) -> Iterator[_Item]:
        for data in lines:
            self.line += 1
            yield self._emit(_Item(self.line, data))

    def _resync(self) -> bool:
        """Move to the next member start after the current offset; False at the end."""
        position = self.offset + 1
        self.handle.seek(position)
        self.buffer = b""
        carry = b""
        while True:
            chunk = self.handle.read(READ_CHUNK_BYTES)
            if not chunk:
                return False
            window = carry + chunk
            found = window.find(_MEMBER_START)
            if found != -1:
                self.offset = position - len(carry) + found
                self.handle.seek(self.offset)
                return True
            carry = window[-2:]
            position += len(chunk)


class ArchiveStore(Store):
    layout = "archive"
    native_ttl = True
    meta_blobs = True
    deletable = False
    celery_readable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        path = self.location.path
        if not path:
            raise ConfigurationError(
                "an archive URL needs a path: jsonl:///var/backups/results.jsonl.gz"
            )
        self.path = path
        self._index: dict[tuple[Kind, str], Any] | None = None
        #: Where intact members start, learnt while reading (pages then seek to them).
        self._points: list[_SeekPoint] = []

    # ------------------------------------------------------------- reading
    def check_source(self) -> None:
        """The archive must exist and be gzip (an empty file is an empty archive)."""
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(2)
        except FileNotFoundError:
            raise UsageError(
                f"the archive {self.path} does not exist: give the path of an archive written "
                "by resultkit (jsonl:///ABSOLUTE/PATH.jsonl.gz)"
            ) from None
        except IsADirectoryError:
            raise UsageError(f"{self.path} is a folder, not an archive file") from None
        if head and head != _GZIP_MAGIC:
            raise UsageError(
                f"{self.path} is not a gzip'd archive (it starts with {head!r}): give the "
                ".jsonl.gz file resultkit wrote; a plain JSON-lines file can be compressed "
                "with gzip first"
            )

    def _exists(self) -> bool:
        return os.path.exists(self.path)

    def _reader(self) -> BinaryIO:
        """The archive's bytes, to read (and seek in)."""
        return open(self.path, "rb")

    def _truncate(self, offset: int) -> None:
        """Cut the archive at *offset* (a partial last member)."""
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            os.fsync(handle.fileno())

    def _items(self, start: int = 0) -> Iterator[_Item]:
        """The lines of the archive and its damage, from the *start*-th item on."""
        if not self._exists():
            return
        at = bisect.bisect_right(self._points, start, key=lambda p: p.item) - 1
        point = self._points[at] if at >= 0 else _SeekPoint(0, 0, 0)
        with self._reader() as handle:
            walker = _Walker(handle, point, self._points)
            skip = start - point.item
            for item in walker.items():
                if skip > 0:
                    skip -= 1
                    continue
                yield item

    def _record(self, item: _Item) -> Record | None:
        """The record of one line; a damaged record for damage and for what is no record."""
        if item.data is None:
            return _damaged(Kind.TASK, f"(line {item.line})", item.line, str(item.damage))
        line = item.data.strip()
        if not line:
            return None
        where = f"line {item.line}"
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return _damaged(Kind.TASK, f"({where})", item.line, f"not valid JSON ({exc})")
        if not isinstance(data, dict):
            return _damaged(Kind.TASK, f"({where})", item.line, "not a JSON object")
        try:
            kind = Kind(data.get("kind"))
        except ValueError:
            kind = None
        result_id = data.get("id")
        named = str(result_id) if isinstance(result_id, (str, int)) and result_id != "" else None
        label = named or f"({where})"
        version = data.get("v")
        if version is None:
            return _damaged(kind or Kind.TASK, label, item.line, "no format version ('v')")
        if version != FORMAT_VERSION:
            return _damaged(
                kind or Kind.TASK,
                label,
                item.line,
                f"format version {version!r} is not one this resultkit reads "
                f"({FORMAT_VERSION}): upgrade celery-resultkit to restore it",
            )
        if kind is None:
            return _damaged(
                Kind.TASK, label, item.line, f"unknown kind {data.get('kind')!r} (task or group)"
            )
        if named is None:
            return _damaged(kind, label, item.line, "no id")
        if "meta" in data:
            raw = encode_payload(data["meta"], "json") if data["meta"] is not None else None
        else:
            try:
                raw = base64.b64decode(data.get("payload") or "", validate=True)
            except ValueError:
                return _damaged(kind, named, item.line, "the archived payload is not base64")
        record = self.record_from_payload(
            kind,
            named,
            raw,
            expires_at=data.get("expires_at"),
            expires_known=bool(data.get("expires_known")),
            line=item.line,
        )
        if record.meta is None and data.get("serializer"):
            return record.replace(payload=record.payload._replace(serializer=data["serializer"]))
        return record

    def _records(self, start: int = 0) -> Iterator[tuple[int, Record | None]]:
        for index, item in enumerate(self._items(start), start=start + 1):
            yield index, self._record(item)

    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        start = int(cursor or 0)
        records: list[Record] = []
        for position, record in self._records(start):
            if record is not None and record.kind is kind:
                records.append(record.replace(position=position))
            if len(records) >= limit:
                return Page(records, position)
        return Page(records, None)

    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        wanted = set(ids)
        out: dict[str, Record] = {}
        for _, record in self._records():
            if (
                record is not None
                and not record.damaged
                and record.kind is kind
                and record.id in wanted
            ):
                out[record.id] = record  # a later line supersedes an earlier one
        return out

    # ------------------------------------------------------------- writing
    def _load_index(self) -> dict[tuple[Kind, str], Any]:
        """What the archive holds, by kind and id; a partial last member left by a crash
        is cut off first, and damage anywhere else refuses the append."""
        if self._index is None:
            index: dict[tuple[Kind, str], Any] = {}
            cut: _Item | None = None
            for item in self._items():
                if item.damage is not None:
                    if item.damage_kind == "cut":
                        cut = item
                        continue
                    raise DamagedArchive(
                        f"cannot append to the archive {self.path}: "
                        + (
                            "it is not a gzip'd archive (damaged, or not an archive at all)"
                            if item.damage_kind == "not-gzip"
                            else f"it is damaged at line {item.line} ({item.damage})"
                        ),
                        "appending could hide or lose what follows: restore it with resultkit "
                        f"migrate jsonl://{self.path} TARGET, which reports the damage, and "
                        "archive to a new file",
                        "damaged",
                    )
                record = self._record(item)
                if record is not None and not record.damaged:
                    index[(record.kind, record.id)] = record.date_done
            if cut is not None:
                self._truncate(cut.offset)
                self._points = [p for p in self._points if p.offset < cut.offset]
            self._index = index
        return self._index

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
        return len({r.id for page in self.pages(kind, 5000) for r in page.records if not r.damaged})


def _damaged(kind: Kind, result_id: str, line: int, why: str) -> Record:
    """The record that stands for a damaged place of an archive: failed, never written."""
    return Record(
        kind, result_id, Payload(None, error=f"line {line}: {why}"), line=line, damaged=True
    )


def _inline_meta(body: bytes) -> Any:
    """A JSON meta as the archive line's ``meta``, when JSON holds it exactly;
    None for NaN, infinities and integers past 64 bits (orjson would change
    them), which go as the base64 payload instead."""
    meta = exact_json(body)
    return None if meta is NOT_READ else meta
