"""The store contract: a few primitives per layout, the bulk logic once.

A store reads and writes results in the exact layout of one Celery backend
(or an archive).  Subclasses implement the primitives — :meth:`Store.scan`,
:meth:`Store.read_many`, :meth:`Store.write_many`, :meth:`Store.delete_many` —
natively (a Redis pipeline, one SQL statement per batch); batching,
filtering and checkpoints live in the commands, over these primitives.
Capabilities are class attributes, so callers ask ``store.native_ttl``
rather than ``isinstance``.
"""

from __future__ import annotations

import enum
import functools
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from ..boundary import guarded
from ..codec import Codec, unreadable
from ..durations import expiry_seconds
from ..encryption import keyring_for
from ..errors import ResultkitError, SerializationError
from ..offload import Offloader, is_reference, resolve
from ..purge import BeforeDelete, PurgeOutcome, PurgePlan
from ..records import EXTENDED_FIELDS, Kind, Payload, Record
from ..summary import StoreFigures, Summary
from ..urls import BackendURL, Redactor, mask_url

if TYPE_CHECKING:
    from celery import Celery

    from ..query import FailureGroup, Query, ResultPage


__all__ = ["Codec", "IndexPlan", "OnConflict", "Page", "Store", "StoreSettings", "WriteResult"]

#: A store names its URL in every report (show, each page): masked once per URL.
_masked = functools.lru_cache(maxsize=64)(mask_url)


#: Task results read to judge whether a store holds ``result_extended``'s fields.
EXTENDED_SAMPLE_RECORDS = 100


class OnConflict(str, enum.Enum):
    """What to do when the target already holds a result with the same id."""

    SKIP = "skip"
    OVERWRITE = "overwrite"
    NEWER = "newer"


@dataclass
class Page:
    """One batch of records and the cursor to continue after it (None: the end)."""

    records: list[Record]
    cursor: Any
    #: What the cursors of this scan are valid for, as told by the server that
    #: answered it: a token that changes when earlier cursors stop meaning
    #: anything (a Redis server restarted or failed over: its SCAN cursor is a
    #: position in a hash table of that process).  None for stores whose
    #: cursors stay valid (SQL ids, file names, archive lines).
    epoch: str | None = None
    #: Results the scan found that were gone (expired, deleted) when read.
    vanished: int = 0


@dataclass(frozen=True)
class IndexPlan:
    """An index that helps queries: where, on what, and whether it exists."""

    name: str
    table: str
    columns: tuple[str, ...]
    exists: bool
    #: The statement that creates it.
    sql: str
    #: Which filters it serves.
    serves: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "table": self.table,
            "columns": list(self.columns),
            "exists": self.exists,
            "serves": self.serves,
            "sql": self.sql,
        }


@dataclass
class WriteResult:
    """Which ids a write stored, which it left alone, and which it could not store."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: Ids left out because their lifetime had already ended.
    expired: list[str] = field(default_factory=list)


#: The primitives whose driver and OS errors become resultkit errors (see
#: :mod:`resultkit.boundary`), with what each was doing, for the message.
GUARDED: dict[str, str] = {
    "ping": "connect",
    "check_source": "open the source",
    "scan": "read results",
    "read_many": "read results",
    "count": "count results",
    "write_many": "write results",
    "write_prepared": "write results",
    "prepare": "prepare results for writing",
    "ensure_tables": "create the result tables",
    "delete_many": "delete results",
    "delete_unchanged": "delete results",
    "set_expiry": "set result lifetimes",
    "purge": "clean up results",
    "summarize": "read results",
    "state_counts": "count results",
    "sealed_keys": "read results",
    "celery_read_many": "read results back through Celery",
    "find_page": "find results",
    "holds_extended": "read results",
    "explain_query": "explain a query",
    "failure_groups": "count failures",
    "recommended_indexes": "read the indexes",
    "create_indexes": "create indexes",
}


def _guard(cls: type) -> None:
    for name, doing in GUARDED.items():
        method = cls.__dict__.get(name)
        if callable(method) and not getattr(method, "__resultkit_guarded__", False):
            setattr(cls, name, guarded(doing, method))


@dataclass(frozen=True)
class StoreSettings:
    """What a store needs of the Celery configuration, as values: a store never
    holds (nor changes) the caller's app."""

    #: ``result_serializer``: how results are stored when nothing says otherwise.
    serializer: str = "json"
    #: ``result_expires`` in seconds (None: never).
    expires_s: float | None = 86400.0
    #: The user's Celery settings (no defaults, no ``result_backend``): what the
    #: store's own Celery backend is configured with, to read through Celery.
    celery: Mapping[str, Any] = field(default_factory=dict)
    #: Reads ask a store with lifetimes (Redis) for each one; a migration into a
    #: store that keeps none leaves them unread.
    read_lifetimes: bool = True

    @classmethod
    def from_app(cls, app: Celery | None, *, read_lifetimes: bool = True) -> StoreSettings:
        from ..apps import user_settings

        if app is None:
            return cls(read_lifetimes=read_lifetimes)
        conf = app.conf
        return cls(
            serializer=conf.result_serializer or "json",
            expires_s=expiry_seconds(conf.result_expires),
            celery=user_settings(app),
            read_lifetimes=read_lifetimes,
        )

    def setting(self, name: str, default: Any = None) -> Any:
        """One of the user's Celery settings."""
        return self.celery.get(name, default)


class Store(ABC):
    """Results stored in one layout (see the module docstring).

    Every primitive of :data:`GUARDED`, in this class and each subclass, raises
    driver and OS errors as resultkit errors naming the store's masked URL.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard(cls)

    #: Short name of the layout, for messages.
    layout: ClassVar[str] = "store"
    #: The store keeps a lifetime per result (Redis TTL).
    native_ttl: ClassVar[bool] = False
    #: Write offloaded results inline (fetched) rather than carry their references.
    inline_offloaded: bool = False
    #: Offload task results above its threshold while writing (``migrate --offload``).
    offloader: Offloader | None = None
    #: Each result is one blob in Celery's meta form, which can be copied as is.
    meta_blobs: ClassVar[bool] = False
    #: Records can be deleted (archives are append-only).
    deletable: ClassVar[bool] = True
    #: Celery has a backend class that reads this layout (for ``--verify``).
    celery_readable: ClassVar[bool] = True
    #: Settings of the apps made to read this layout through Celery (see celery_backend_for).
    celery_reader_settings: ClassVar[dict[str, Any]] = {}
    #: Meta fields a task result keeps in this layout (when Celery wrote them): the
    #: query layer resolves a filter on a field it lacks another way, or refuses it.
    query_fields: ClassVar[frozenset[str]] = frozenset({*EXTENDED_FIELDS, "group_id", "parent_id"})
    #: ``find``'s pages run in ``date_done`` order from one to the next (False: each
    #: page is sorted, the pages follow the store's own order; Redis).
    ordered_pages: ClassVar[bool] = True

    def __init__(
        self, url: BackendURL, settings: StoreSettings, codec: Codec | None = None
    ) -> None:
        #: Where the results are, parsed once.
        self.location = url
        self.url = url.raw
        self.settings = settings
        #: Knows the URL's password in every form a driver may print it.
        self.redactor = Redactor()
        self.redactor.add_url(self.url)
        self.codec = codec or Codec(
            hint=settings.serializer, keys=keyring_for(dict(settings.celery))
        )
        #: Celery's backends for this store, by (serializer, extended).
        self._celery_backends: dict[tuple[str, bool, bool], Any] = {}

    @functools.cached_property
    def celery_app(self) -> Celery:
        """A Celery app of the store's own, on its URL with the user's settings."""
        from ..apps import app_for_url

        return app_for_url(self.url, **self.settings.celery)

    # ----------------------------------------------------------- properties
    @property
    def masked_url(self) -> str:
        return _masked(self.url)

    @property
    def expires_s(self) -> float | None:
        """``result_expires`` in seconds (None: never)."""
        return self.settings.expires_s

    @property
    def read_lifetimes(self) -> bool:
        return self.settings.read_lifetimes

    # ----------------------------------------------------------- primitives
    def ping(self) -> None:  # noqa: B027 - stores without a server have nothing to reach
        """Reach the server (and log in), or raise why not; nothing for files."""

    def check_source(self) -> None:
        """Make sure there is something to read here: a source that does not exist
        (an archive file, a folder) is a usage error, not an empty source."""
        self.ping()

    @abstractmethod
    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        """Return up to about *limit* records of *kind* after *cursor* (None: the start)."""

    @abstractmethod
    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        """Return the records of *ids* that exist."""

    @abstractmethod
    def write_many(self, records: Sequence[Record], on_conflict: OnConflict) -> WriteResult:
        """Store *records* all at once or not at all (one transaction or pipeline)."""

    def transient(self, exc: BaseException) -> bool:
        """True when the driver error *exc* says an operation may succeed if tried
        again (a lost connection, a server loading its data or failing over, a
        deadlock).  Stores override this; callers use :meth:`may_pass`."""
        return False

    def may_pass(self, exc: BaseException) -> bool:
        """True when an operation that raised *exc* may succeed if tried again.

        The primitives raise resultkit errors translated from the driver's
        (:mod:`resultkit.boundary`); the driver error behind one decides.
        Reads, and a migration's writes, are idempotent: a migration tries
        them again.
        """
        seen: BaseException | None = exc
        for _ in range(8):  # the translated error, its cause, the driver's own cause...
            if seen is None:
                return False
            if self.transient(seen):
                return True
            seen = seen.__cause__
        return False

    @property
    def concurrent_writes(self) -> bool:
        """True when two batches may be written at once, from two threads, each
        in its own transaction."""
        return False

    def ensure_tables(self) -> None:  # noqa: B027 - an optional step, nothing by default
        """Create what writing here needs (tables) when it is missing; safe to call
        from two threads at once.  Nothing, for stores that need nothing made."""

    def prepare(self, records: Sequence[Record], on_conflict: OnConflict) -> object | None:
        """Do ahead, possibly in another thread, the work of writing *records*
        that needs neither the target's transaction nor the previous batch
        written; None when there is none.  Give the result to :meth:`write_prepared`.
        """
        return None

    def write_prepared(
        self, records: Sequence[Record], on_conflict: OnConflict, prepared: object | None
    ) -> WriteResult:
        """:meth:`write_many`, with what :meth:`prepare` made of the same records."""
        return self.write_many(records, on_conflict)

    @abstractmethod
    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        """Delete the results of *ids*; return how many existed."""

    def count(self, kind: Kind) -> int:
        """How many records of *kind* are stored (exact)."""
        total = 0
        for page in self.pages(kind, 1000):
            total += len(page.records)
        return total

    def purge(
        self, kind: Kind, plan: PurgePlan, before_delete: BeforeDelete | None = None
    ) -> PurgeOutcome:
        """Delete the results of *kind* the plan says are expired (see :mod:`resultkit.purge`).

        Records that cannot be read are kept: nothing is deleted that was not judged.
        """
        out = PurgeOutcome()
        for page in self.pages(kind, plan.batch_size):
            expired: list[Record] = []
            fixes: list[tuple[Record, float]] = []
            for record in page.records:
                if record.meta is None:
                    out.unreadable += 1
                    out.kept += 1
                elif plan.expired(record):
                    expired.append(record)
                    out.count(record)
                else:
                    out.kept += 1
                    at = self._missing_ttl(record, plan)
                    if at is not None:
                        fixes.append((record, at))
            if plan.dry_run:
                out.ttl_fixed += len(fixes)
                continue
            if fixes:
                out.ttl_fixed += self.set_expiry(kind, fixes)
            if expired:
                allowed = before_delete(expired) if before_delete else {r.id for r in expired}
                if before_delete:
                    out.archived += len(allowed)
                chosen = [r for r in expired if r.id in allowed]
                out.kept += len(expired) - len(chosen)
                started = time.monotonic()
                deleted = self.delete_unchanged(kind, chosen)
                out.deleted += deleted
                out.timed(started, plan, deleted)
        return out

    def _missing_ttl(self, record: Record, plan: PurgePlan) -> float | None:
        """When a key without a TTL should expire, if it should be given one."""
        if not (plan.fix_missing_ttl and self.native_ttl and record.expires_known):
            return None
        if record.expires_at is not None:
            return None
        lifetime = plan.lifetime(record)
        if lifetime is None:
            return None
        done = record.date_done
        return (done.timestamp() if done else plan.now) + lifetime

    def delete_unchanged(self, kind: Kind, records: Sequence[Record]) -> int:
        """Delete *records*, unless they changed since they were read (where the store can tell)."""
        return self.delete_many(kind, [r.id for r in records])

    def set_expiry(self, kind: Kind, items: Sequence[tuple[Record, float]]) -> int:
        """Give records without a lifetime one (stores with native TTL)."""
        return 0

    def figures(self, plan: PurgePlan) -> StoreFigures | None:
        """The metrics' figures counted natively (an aggregate query), or None: the
        store has no such query and ``/metrics`` takes them from a ``stats`` scan."""
        return None

    def counts_by_day(self, since: datetime) -> dict[str, int]:
        """Task results done on each UTC day from *since* (``YYYY-MM-DD``: count),
        streamed; SQL stores count with a GROUP BY."""
        floor = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
        counts: dict[str, int] = {}
        for page in self.pages(Kind.TASK, 5000):
            for record in page.records:
                done = record.date_done
                if done is None:
                    continue
                moment = done if done.tzinfo else done.replace(tzinfo=timezone.utc)
                if moment < floor:
                    continue
                day = moment.astimezone(timezone.utc).date().isoformat()
                counts[day] = counts.get(day, 0) + 1
        return counts

    def summarize(self, plan: PurgePlan) -> Summary:
        """Counts, ages and sizes of every task result (exact: reads them all)."""
        summary = Summary(no_ttl=0 if self.native_ttl else None)
        for page in self.pages(Kind.TASK, 5000):
            for record in page.records:
                summary.add(
                    result_id=record.id,
                    status=record.status,
                    name=record.name,
                    done=record.date_done,
                    size=len(record.raw) if record.raw is not None else len(repr(record.meta)),
                    plan=plan,
                    no_ttl=self.native_ttl and record.expires_known and record.expires_at is None,
                    sealed_key=record.sealed_key,
                )
        return summary

    def sealed_keys(self) -> Counter[str]:
        """resultkit-encrypted task results by the id of the key that sealed them."""
        counts: Counter[str] = Counter()
        for page in self.pages(Kind.TASK, 5000):
            counts.update(r.sealed_key for r in page.records if r.sealed_key)
        return counts

    def state_counts(self) -> dict[str | None, int]:
        """Task results by state (None: records whose payload cannot be read), exact."""
        counts: dict[str | None, int] = {}
        for page in self.pages(Kind.TASK, 5000):
            for record in page.records:
                counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def celery_read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Read *ids* through Celery's own backend class, as an application would.

        Celery decodes with the serializer it is configured with, so each result
        is read by a backend configured for the serializer it was written with;
        a result Celery cannot decode is ``{"unreadable": why}``.
        """
        from kombu.exceptions import ContentDisallowed, DecodeError

        backend = self.celery_app.backend
        stored = self.read_many(kind, ids) if kind is Kind.TASK and self.meta_blobs else {}
        out: dict[str, dict[str, Any]] = {}
        for result_id in ids:
            if kind is Kind.TASK:
                record = stored.get(result_id)
                if record is not None:
                    backend = self.celery_backend_for(record.raw, serializer=record.serializer)
                try:
                    meta = backend.get_task_meta(result_id, cache=False)
                except (DecodeError, ContentDisallowed, ValueError, TypeError) as exc:
                    out[result_id] = {"unreadable": f"{type(exc).__name__}: {exc}"}
                    continue
                if meta.get("status") != "PENDING" or meta.get("date_done"):
                    out[result_id] = meta
            else:
                group_record = self.read_many(kind, [result_id]).get(result_id)
                if group_record is not None:
                    backend = self.celery_backend_for(
                        group_record.raw, serializer=group_record.serializer
                    )
                group = backend.restore_group(result_id, cache=False)
                if group is not None:
                    # Keep the member ids only: result objects left alive until
                    # interpreter exit try to unsubscribe from a dead connection.
                    out[result_id] = {"result": [member.id for member in group.results]}
        return out

    @property
    def extended_fields(self) -> tuple[str, ...]:
        """Extended fields this layout keeps (compared by ``--verify``)."""
        return EXTENDED_FIELDS

    @property
    def keeps_children(self) -> bool:
        """Whether this layout keeps a task's children (compared by ``--verify`` if so)."""
        return True

    def celery_backend_for(
        self, payload: Any = None, *, extended: bool = True, serializer: str | None = None
    ) -> Any:
        """Celery's backend for this store, configured for the serializer *payload* uses.

        Celery decodes with the serializer it is configured with, so a store
        holding results of several serializers (after a transcode, or mixed
        workers) is read by one backend per serializer.
        """
        from ..apps import app_for_url
        from ..codec import sniff_serializer
        from ..compression import split_compression

        serializer = serializer or self.codec.hint
        offloaded = is_reference(payload)
        if offloaded:
            try:
                payload = resolve(payload)
            except ResultkitError:
                payload = None
        if isinstance(payload, (bytes, bytearray, memoryview)):
            try:
                body, _ = split_compression(bytes(payload))
                serializer = sniff_serializer(body, self.codec.hint)
            except SerializationError:
                pass
        key = (serializer, extended, offloaded)
        cache = self._celery_backends
        if key not in cache:
            settings = {
                **self.settings.celery,
                "result_serializer": serializer,
                "result_accept_content": [serializer],
                "result_extended": extended,
                **self.celery_reader_settings,
            }
            backend = app_for_url(self.url, **settings).backend
            if offloaded:
                # Celery's own class, given the bytes it would have stored inline: the
                # object behind each reference (what resultkit's backends read).
                decode = backend.decode
                backend.decode = lambda stored: decode(resolve(stored))
            cache[key] = backend
        return cache[key]

    def stored_references(self, ids: Sequence[str]) -> list[bytes]:
        """The offload references stored for these task ids (inline results left out),
        for the orphan sweep; stores override it to read no payload."""
        found = self.read_many(Kind.TASK, ids)
        return [r.raw for r in found.values() if isinstance(r.raw, bytes) and is_reference(r.raw)]

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections."""

    # ------------------------------------------------------------- queries
    def holds_extended(self) -> bool | None:
        """True when the task results hold ``result_extended``'s fields (task names),
        False when they do not, None when there is no readable result to tell.

        Judged on the first results of a scan: a store whose results were written
        partly with and partly without the setting is judged by those.
        """
        seen = False
        page = self.scan(Kind.TASK, None, EXTENDED_SAMPLE_RECORDS)
        for record in page.records:
            meta = record.meta
            if meta is None:
                continue
            if meta.get("name") is not None:
                return True
            seen = True
        return False if seen else None

    def prepare_query(self, query: Query) -> tuple[Query, list[str]]:
        """*query* as this store answers it, and notes for the user.

        Refuses (:class:`~resultkit.errors.UsageError`) a filter on a field the
        results here do not hold; turns ``--root`` (and ``--group``/``--parent``
        where results keep no group or parent id) into the ids of the results
        that the group, parent or root records name.
        """
        from ..query import prepare_query

        return prepare_query(self, query)

    def find_page(self, query: Query, position: Mapping[str, Any] | None, limit: int) -> ResultPage:
        """One page of *query*'s results after *position* (a cursor's content).

        The default streams every result through :meth:`Query.matches` and keeps
        the best *limit* in a heap: exact order, memory bounded by *limit*, and
        each page reads the whole store (right for files and archives). Stores
        that can filter and order natively override it.
        """
        from ..query import stream_page

        return stream_page(self, query, position, limit)

    def failure_groups(self, query: Query) -> list[FailureGroup] | None:
        """Failures *query* selects, grouped by task name and exception type, when the
        store can count them natively; None: the caller tallies :func:`select`."""
        return None

    def explain_query(self, query: Query, limit: int) -> list[str]:
        """How this store answers *query*: its plan, in lines for people."""
        return [
            f"{self.layout}: reads every result in the store's order and keeps the "
            f"best {limit} matches (no index; memory bounded by the page)"
        ]

    def recommended_indexes(self) -> list[IndexPlan]:
        """Indexes that would make queries faster here (none for stores without indexes)."""
        return []

    def create_indexes(self) -> list[str]:
        """Create the recommended indexes that are missing; return their names."""
        return []

    def select_records(
        self, query: Query, batch_size: int, *, damaged: bool = False
    ) -> Iterator[Record]:
        """Every result *query* selects, in the store's own order, streamed; with
        *damaged*, also the records this store could not read (``Record.damaged``)."""
        from ..query import stream_matches

        yield from stream_matches(self, query, batch_size, damaged=damaged)

    # ------------------------------------------------------------- helpers
    def pages(self, kind: Kind, batch_size: int, cursor: Any = None) -> Iterator[Page]:
        """Every page of *kind*, from *cursor* on."""
        while True:
            page = self.scan(kind, cursor, batch_size)
            yield page
            if page.cursor is None:
                return
            cursor = page.cursor

    def record_from_payload(
        self,
        kind: Kind,
        result_id: str,
        payload: bytes | None,
        *,
        expires_at: float | None = None,
        expires_known: bool = False,
        position: Any = None,
        line: int | None = None,
    ) -> Record:
        """Decode a Celery meta blob into a record; a bad payload becomes a record with an error."""
        raw = bytes(payload) if payload is not None else None
        return Record(
            kind,
            result_id,
            self.payload_of(raw),
            raw=raw,
            expires_at=expires_at,
            expires_known=expires_known,
            position=position,
            line=line,
        )

    def payload_of(self, raw: bytes | None) -> Payload:
        """What a stored Celery meta blob holds; a bad one is a payload with an error."""
        if raw is None:
            return Payload(None, error="empty payload")
        try:
            meta, form = self.codec.read(raw)
        except SerializationError as exc:
            return unreadable(exc)
        if not isinstance(meta, dict):
            why = f"the payload is a {type(meta).__name__}, not Celery's result meta"
            return form._replace(error=why)
        return form.holding(meta)

    def reusable_raw(self, record: Record) -> bytes | None:
        """The record's stored bytes, when they can be written here unchanged.

        Only meta-blob layouts take them, only without a transcode, and never a
        blob that failed to decode (that is bad data) unless it is pickle that
        was not decoded on purpose: pickle is copied, never unpickled.
        """
        if not self.meta_blobs or record.raw is None or self.codec.transcodes(record):
            return None
        if self.inline_offloaded and is_reference(record.raw):
            return None
        if record.peek() is None and record.serializer != "pickle":
            return None
        return record.raw

    def lifetime_for(self, record: Record, now: float | None = None) -> float | None:
        """When a record written here should expire: kept from a store that knows,
        otherwise ``date_done + result_expires`` (None: never)."""
        if record.expires_known:
            return record.expires_at
        expires = self.expires_s
        done = record.date_done
        if expires is None:
            return None
        if done is None:
            return (time.time() if now is None else now) + expires
        return done.timestamp() + expires


_guard(Store)
