"""The record: one stored task or group result, independent of where it is stored.

A record carries the fields every layout can hold (status, result, traceback,
children, date_done, the extended fields), the serializer and compression its
payload was written with, and its remaining lifetime.  A store turns its
native layout into records and back; migrations, cleanups and statistics
work on records only.
"""

from __future__ import annotations

import enum
import fnmatch
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .encryption import Envelope

__all__ = [
    "EXTENDED_FIELDS",
    "MAX_BATCH_RECORDS",
    "Decoder",
    "Filters",
    "Kind",
    "Payload",
    "Record",
    "as_datetime",
    "naive_utc",
]

#: The most records one batch may hold (``--batch-size``): a batch lives in
#: memory, is one transaction, and drivers pass its size as a C integer.
MAX_BATCH_RECORDS = 1_000_000

#: Fields Celery stores only when ``result_extended`` is on.
EXTENDED_FIELDS = ("name", "args", "kwargs", "worker", "retries", "queue")


class Kind(str, enum.Enum):
    """What a record holds."""

    TASK = "task"
    GROUP = "group"


class Payload(NamedTuple):
    """What a stored payload holds, and the form it was stored in."""

    #: Celery's meta dictionary, decoded; None when it could not be (see ``error``).
    meta: dict[str, Any] | None
    #: kombu serializer name of the stored payload (``json``, ``msgpack``, ``pickle``...).
    serializer: str = "json"
    #: kombu compression name, when the payload carries Celery's compression marker.
    compression: str | None = None
    #: For a resultkit-encrypted payload: its key id, inner serializer and compression
    #: (``serializer`` then names the inner serializer, the form ``meta`` is in).
    envelope: Envelope | None = None
    #: The key id of a payload sealed under a key this process does not have.
    missing_key: str | None = None
    #: Why the payload could not be read, when it could not.
    error: str | None = None

    def holding(self, meta: dict[str, Any]) -> Payload:
        """This form of payload, holding *meta* (made once per record read: a
        tuple built directly, cheaper than ``_replace``)."""
        return tuple.__new__(Payload, (meta, *self[1:]))


#: Decodes a record's stored bytes into its payload (see :class:`Record`).
Decoder = Callable[[bytes], Payload]


class _Fields(NamedTuple):
    kind: Kind
    id: str
    #: The exact stored payload, when the source layout has one blob per result.
    raw: bytes | None
    #: When the result expires (UTC epoch seconds); None when it never does or the
    #: store does not know (SQL keeps no lifetime).
    expires_at: float | None
    #: True when the source knows the lifetime (Redis TTL): ``expires_at`` None then
    #: means "never expires" rather than "unknown".
    expires_known: bool
    #: Store-specific position, for checkpoints (e.g. a SQL primary key).
    position: Any
    #: The line of the archive the record was read from (archives only).
    line: int | None
    #: The record stands for damage where it was read (an archive line that is no
    #: record, a cut-short or corrupt gzip member): always reported as failed,
    #: whatever the filters, never written.
    damaged: bool
    #: [the payload (provisional while undecoded), its decoder (None once decoded)]
    cell: list[Any]


class Record(_Fields):
    """One stored result: immutable, made with keywords, changed with :meth:`replace`.

    ``meta`` is Celery's meta dictionary in its stored form: exceptions are
    the ``{"exc_type", "exc_message", "exc_module"}`` dictionaries Celery
    writes, ``children`` are result tuples, a group's ``result`` is its
    ``as_tuple()``.  ``meta`` is None when the payload could not be decoded,
    or was not decoded because it is pickle and pickle was not accepted; then
    ``raw`` holds the stored bytes and ``error`` says why.

    A store may leave decoding ``raw`` until ``meta`` or ``error`` is first
    read: it gives the *payload* it expects (its serializer and compression)
    and a *decode* function.  The decoded payload is then kept, once: the
    record's value never changes, only when it is computed.  :meth:`peek`
    decodes without keeping, so that a migration into a table decodes each
    payload just before its row is made, rather than a whole batch ahead.

    A tuple underneath: a migration holds thousands of records at a time,
    and a tuple is made fast and kept small.
    """

    __slots__ = ()

    def __new__(
        cls,
        kind: Kind,
        id: str,
        payload: Payload | None = None,
        *,
        decode: Decoder | None = None,
        raw: bytes | None = None,
        expires_at: float | None = None,
        expires_known: bool = False,
        position: Any = None,
        line: int | None = None,
        damaged: bool = False,
    ) -> Record:
        cell = [_UNREAD if payload is None else payload, decode]
        return tuple.__new__(
            cls, (kind, id, raw, expires_at, expires_known, position, line, damaged, cell)
        )

    def replace(self, *, payload: Payload | None = None, **changes: Any) -> Record:
        """This record with *changes* (and, given, another payload)."""
        if payload is not None:
            changes["cell"] = [payload, None]
        return self._replace(**changes)

    def __repr__(self) -> str:
        return (
            f"Record({self.kind.value} {self.id!r}, status={self.status!r}, "
            f"serializer={self.serializer!r}, compression={self.compression!r}, "
            f"error={self.error!r})"
        )

    # ------------------------------------------------------------ the payload
    # The accessors below index the tuple (``self[8]`` is ``cell``): they are read
    # several times for each of the records a migration carries.
    @property
    def payload(self) -> Payload:
        cell = self[8]
        if cell[1] is not None:
            cell[0], cell[1] = cell[1](self[2]), None
        payload: Payload = cell[0]
        return payload

    @property
    def undecoded(self) -> bool:
        """True while ``raw`` is left to decode: it is then the meta exactly as
        stored, in ``serializer`` and ``compression``, and nothing has changed it."""
        return self.cell[1] is not None

    def peek(self) -> dict[str, Any] | None:
        """``meta``, not kept when its decoding was left until it is used.

        For a single pass over many records (the rows of a migration's
        batch): their decoded payloads need not all be alive at once.  A
        payload found to be in another form than expected, or unreadable, is
        kept (as by ``meta``).
        """
        cell = self.cell
        decode = cell[1]
        if decode is None:
            meta: dict[str, Any] | None = cell[0].meta
            return meta
        found: Payload = decode(self.raw)
        expected = cell[0]
        if found.meta is None or found[1:] != expected[1:]:
            cell[0], cell[1] = found, None
        return found.meta

    @property
    def meta(self) -> dict[str, Any] | None:
        cell = self[8]
        if cell[1] is not None:
            cell[0], cell[1] = cell[1](self[2]), None
        meta: dict[str, Any] | None = cell[0][0]
        return meta

    @property
    def error(self) -> str | None:
        """Why the payload could not be read, when it could not."""
        return self.payload.error

    # The form of the payload is known before it is decoded (what the store expects).
    @property
    def serializer(self) -> str:
        serializer: str = self[8][0][1]
        return serializer

    @property
    def compression(self) -> str | None:
        compression: str | None = self[8][0][2]
        return compression

    @property
    def envelope(self) -> Envelope | None:
        envelope: Envelope | None = self[8][0][3]
        return envelope

    @property
    def missing_key(self) -> str | None:
        missing: str | None = self[8][0][4]
        return missing

    # ------------------------------------------------------------ accessors
    @property
    def sealed_key(self) -> str | None:
        """The id of the key a resultkit-encrypted payload was sealed under."""
        return self.envelope.key_id if self.envelope is not None else self.missing_key

    @property
    def status(self) -> str | None:
        meta = self.meta
        return None if meta is None else meta.get("status")

    @property
    def date_done(self) -> datetime | None:
        meta = self.meta
        return as_datetime(None if meta is None else meta.get("date_done"))

    @property
    def name(self) -> str | None:
        meta = self.meta
        return None if meta is None else meta.get("name")

    def ttl_s(self, now: float | None = None) -> float | None:
        """Seconds left to live, None when unbounded or unknown."""
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)

    def expired(self, now: float | None = None) -> bool:
        left = self.ttl_s(now)
        return left is not None and left <= 0

    # A record is a value, not a key: tuples of a list do not hash.
    __hash__ = None  # type: ignore[assignment]


_UNREAD = Payload(None)


def as_datetime(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from what stores hold (ISO text, naive UTC, aware)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError) as exc:  # past year 9999, or the platform's time_t
            raise ValueError(f"the timestamp {value!r:.40} is out of range ({exc})") from None
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


def naive_utc(value: Any) -> datetime | None:
    """A naive UTC datetime, the way Celery's SQL tables hold ``date_done``."""
    if isinstance(value, str):
        if value.endswith("+00:00"):  # what Celery writes: already UTC, drop the offset
            try:
                return datetime.fromisoformat(value[:-6])
            except ValueError:
                pass
        parsed: datetime | None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = as_datetime(value)
        if parsed is None:  # "" or blanks: no date, as as_datetime reads them
            return None
        if parsed.tzinfo is None:
            return parsed
        return parsed.astimezone(timezone.utc).replace(tzinfo=None)
    done = as_datetime(value)
    return done.astimezone(timezone.utc).replace(tzinfo=None) if done else None


@dataclass(frozen=True)
class Filters:
    """Which records an operation applies to; an empty filter matches everything."""

    states: frozenset[str] = frozenset()
    #: Glob patterns on the task name (needs ``result_extended``).
    tasks: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    kinds: frozenset[Kind] = frozenset({Kind.TASK, Kind.GROUP})

    @classmethod
    def build(
        cls,
        states: Iterable[str] = (),
        tasks: Iterable[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Filters:
        from .choices import require_state

        states = frozenset(require_state(s) for s in states)
        tasks = tuple(tasks)
        # Groups have no state and no task name: a filter on either means tasks only.
        kinds = frozenset({Kind.TASK}) if states or tasks else frozenset({Kind.TASK, Kind.GROUP})
        return cls(states, tasks, since, until, kinds)

    @property
    def empty(self) -> bool:
        return not (self.states or self.tasks or self.since or self.until)

    def matches(self, record: Record) -> bool:
        if record.kind not in self.kinds:
            return False
        if self.empty:
            return True
        if record.meta is None:
            return False
        if self.states and record.status not in self.states:
            return False
        if self.tasks:
            name = record.name
            if not name or not any(fnmatch.fnmatchcase(name, p) for p in self.tasks):
                return False
        if self.since or self.until:
            done = record.date_done
            if done is None:
                return False
            if self.since and done < self.since:
                return False
            if self.until and done >= self.until:
                return False
        return True

    def describe(self) -> Mapping[str, Any]:
        return {
            "state": sorted(self.states),
            "task": list(self.tasks),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
