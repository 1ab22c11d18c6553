"""The query layer: which stored results a question selects, in what order, a page at a time.

A :class:`Query` extends :class:`~resultkit.records.Filters` (what ``migrate``
and ``cleanup`` filter on) with every filter of ``find``, ``export``,
``erase`` and ``retry``; :meth:`Query.matches` is the reference semantics,
evaluated in Python on one record.  Stores answer queries through
:meth:`Store.find_page <resultkit.stores.base.Store.find_page>`: by default
by streaming their pages through :meth:`Query.matches` (the filesystem
backend, archives); SQL stores with indexed SQL, Redis with a script run per
SCAN batch.  Whatever a store does natively, it returns what
:meth:`Query.matches` would.

Two entry points::

    page = find(store, query, limit=50)             # one page, newest first
    page = find(store, query, limit=50, cursor=page.cursor)
    for record in select(store, query): ...         # every match, store order

Cursors are opaque strings, valid for the query and the store they came from.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .records import Filters, Kind, Record

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = [
    "DEFAULT_FIND_LIMIT",
    "EXTENDED_FILTERS",
    "MAX_FIND_LIMIT",
    "FailureGroup",
    "Query",
    "ResultPage",
    "decode_cursor",
    "encode_cursor",
    "exception_of",
    "find",
    "json_fragments",
    "member_ids",
    "position_of",
    "prepare_query",
    "select",
    "value_matches",
]

#: Results one page holds unless told otherwise (``--limit``).
DEFAULT_FIND_LIMIT = 50
#: The most results one page may hold.
MAX_FIND_LIMIT = 10_000
#: Filters that read fields Celery stores only with ``result_extended`` on:
#: the Query attribute, and the option that sets it.
EXTENDED_FILTERS: Mapping[str, str] = {
    "tasks": "--task",
    "args": "--arg",
    "kwargs": "--kwarg",
    "worker": "--worker",
    "queue": "--queue",
}
#: Integers below this are written the same way by every JSON encoder (no exponent).
_PLAIN_INTEGER_BELOW = 10**15
#: The version of the cursor format.
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class Query(Filters):
    """Which results to select, and in what order; an empty query selects every task result.

    Every filter given must hold (AND); a filter with several values (states,
    task globs) holds when one of them does.  ``since`` is inclusive,
    ``until`` exclusive, both on ``date_done``.
    """

    #: Only these result ids (exact).
    ids: frozenset[str] | None = None
    #: Only ids that start with this.
    id_prefix: str | None = None
    #: The worker's host name (``celery@host``); a glob.
    worker: str | None = None
    #: The queue (routing key) the task was delivered through; exact.
    queue: str | None = None
    #: The group the task belongs to (Celery's ``group_id``).
    group: str | None = None
    #: The task that sent this one (Celery's ``parent_id``).
    parent: str | None = None
    #: The first task of the workflow (``root_id``).  Celery stores no root id
    #: with a result: stores resolve it by following each parent's children.
    root: str | None = None
    #: The exception's type name (``ValueError``) or dotted name (``builtins.ValueError``).
    exception: str | None = None
    #: Values that args or kwargs must hold, at any depth (each one).
    args: tuple[str, ...] = ()
    #: ``(key, value)`` pairs that kwargs must hold at the top level (each one).
    kwargs: tuple[tuple[str, str], ...] = ()
    #: Oldest first (default: newest first), by ``date_done`` then id.
    oldest_first: bool = False

    # ------------------------------------------------------------ making
    @classmethod
    def build(
        cls,
        states: Iterable[str] = (),
        tasks: Iterable[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        ids: Iterable[str] | None = None,
        id_prefix: str | None = None,
        worker: str | None = None,
        queue: str | None = None,
        group: str | None = None,
        parent: str | None = None,
        root: str | None = None,
        exception: str | None = None,
        args: Iterable[str] = (),
        kwargs: Iterable[str | tuple[str, str]] = (),
        kinds: Iterable[Kind] = (Kind.TASK,),
        oldest_first: bool = False,
    ) -> Query:
        """A query from user input: states checked against Celery's, ``KEY=VALUE``
        pairs split; anything wrong is a :class:`~resultkit.errors.UsageError`."""
        from .choices import require_state

        if since and until and since >= until:
            raise UsageError("--since must be before --until: nothing is done in between")
        pairs = tuple(_pair(item) for item in kwargs)
        chosen = frozenset(kinds)
        if not chosen:
            raise UsageError("a query needs at least one kind of result (task, group)")
        return cls(
            states=frozenset(require_state(s) for s in states),
            tasks=tuple(tasks),
            since=since,
            until=until,
            kinds=chosen,
            ids=None if ids is None else frozenset(ids),
            id_prefix=id_prefix or None,
            worker=worker or None,
            queue=queue or None,
            group=group or None,
            parent=parent or None,
            root=root or None,
            exception=exception or None,
            args=tuple(args),
            kwargs=pairs,
            oldest_first=oldest_first,
        )

    # ------------------------------------------------------------ reading
    @property
    def empty(self) -> bool:
        """True when no filter narrows the selection (kinds and order aside)."""
        return super().empty and not (
            self.ids is not None
            or self.id_prefix
            or self.worker
            or self.queue
            or self.group
            or self.parent
            or self.root
            or self.exception
            or self.args
            or self.kwargs
        )

    @property
    def needs_extended(self) -> tuple[str, ...]:
        """The options given that need ``result_extended`` (``--task``, ``--arg``...)."""
        return tuple(option for name, option in EXTENDED_FILTERS.items() if getattr(self, name))

    @functools.cached_property
    def needs_meta(self) -> bool:
        """True when a filter reads more than the id and the kind."""
        return not replace(self, ids=None, id_prefix=None).empty

    def matches(self, record: Record) -> bool:
        """True when *record* is selected: the reference semantics of every store."""
        if record.kind not in self.kinds:
            return False
        rid = record.id
        if self.ids is not None and rid not in self.ids:
            return False
        if self.id_prefix and not rid.startswith(self.id_prefix):
            return False
        if not self.needs_meta:
            return True
        meta = record.meta
        if meta is None:
            return False  # unreadable, or pickle not accepted: nothing is known of it
        if not super().matches(record):
            return False
        if self.worker and not _glob(meta.get("worker"), self.worker):
            return False
        if self.queue and meta.get("queue") != self.queue:
            return False
        if self.group and meta.get("group_id") != self.group:
            return False
        if self.parent and meta.get("parent_id") != self.parent:
            return False
        if self.root and meta.get("root_id") != self.root:
            return False
        if self.exception and not exception_matches(meta.get("result"), self.exception):
            return False
        for wanted in self.args:
            if not (
                value_matches(meta.get("args"), wanted) or value_matches(meta.get("kwargs"), wanted)
            ):
                return False
        if self.kwargs:
            stored = meta.get("kwargs")
            if not isinstance(stored, dict):
                return False
            for key, wanted in self.kwargs:
                if key not in stored or not _scalar_matches(stored[key], wanted):
                    return False
        return True

    def sort_key(self, record: Record) -> tuple[float, str]:
        """The record's place in the order of results: ``(date_done, id)``, ascending;
        a result without a date comes before every dated one."""
        done = record.date_done
        return (done.timestamp() if done else -math.inf, record.id)

    def describe(self) -> Mapping[str, Any]:
        """The filters given, as JSON (what an audit line or a report names)."""
        out: dict[str, Any] = dict(super().describe())
        extra: dict[str, Any] = {
            "id": sorted(self.ids) if self.ids is not None else None,
            "id_prefix": self.id_prefix,
            "worker": self.worker,
            "queue": self.queue,
            "group": self.group,
            "parent": self.parent,
            "root": self.root,
            "exception": self.exception,
            "arg": list(self.args),
            "kwarg": [f"{k}={v}" for k, v in self.kwargs],
            "kind": sorted(k.value for k in self.kinds),
            "order": "oldest-first" if self.oldest_first else "newest-first",
        }
        out.update(extra)
        return out

    def fingerprint(self) -> str:
        """A short digest of the query: a cursor is valid only for the query that made it."""
        return _fingerprint(self)


@functools.lru_cache(maxsize=64)
def _fingerprint(query: Query) -> str:
    # Made for every page (its cursor, and the one it was given): once per query.
    text = json.dumps(query.describe(), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class FailureGroup:
    """Failures of one task name with one exception type."""

    name: str | None
    exception: str | None
    count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    #: The most recent failure of the group: its id and exception message.
    example_id: str = ""
    example_message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exception": self.exception,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "example_id": self.example_id,
            "example_message": self.example_message,
        }


@dataclass
class ResultPage:
    """One page of a query's results and the cursor to the next (None: the last page)."""

    records: list[Record]
    cursor: str | None
    #: Stored results read to make this page (the work it took).
    scanned: int = 0
    #: What the user should know about how the page was made (a filter the store
    #: answers by following group or parent records, an index that would help).
    notes: list[str] = field(default_factory=list)


def find(
    store: Store,
    query: Query,
    *,
    limit: int = DEFAULT_FIND_LIMIT,
    cursor: str | None = None,
) -> ResultPage:
    """One page of the results *query* selects in *store*, newest first (unless the
    query says oldest first), after *cursor*.

    A store whose work per call is bounded (Redis) may return fewer than *limit*
    results, even none, with a cursor to continue: the last page is the one whose
    cursor is None.  Raises :class:`~resultkit.errors.UsageError` for a filter the
    store cannot answer (a task name glob on results stored without
    ``result_extended``) and for a cursor of another query or store.
    """
    if not 1 <= limit <= MAX_FIND_LIMIT:
        raise UsageError(f"--limit {limit}: give a number from 1 to {MAX_FIND_LIMIT}")
    resolved, notes = store.prepare_query(query)
    state = decode_cursor(cursor, query, store.layout) if cursor else None
    page = store.find_page(resolved, state, limit)
    page.notes[:0] = notes
    return page


def select(
    store: Store, query: Query, *, batch_size: int = 1000, damaged: bool = False
) -> Iterator[Record]:
    """Every result *query* selects in *store*, in the store's own order, streamed
    (memory bounded by *batch_size*): what ``export``, ``erase`` and ``retry`` walk.

    With *damaged*, also the records the store could not read at all (an archive's
    damaged lines, ``Record.damaged``): they match no filter, and a caller that
    must account for every record (``export``) reports them instead of losing them.
    """
    from .boundary import translating

    resolved, _ = store.prepare_query(query)
    # A generator is not a guarded primitive: its driver errors are translated here.
    with translating(store.masked_url, "find results", store.redactor):
        yield from store.select_records(resolved, batch_size, damaged=damaged)


def once_each(records: Iterable[Record]) -> Iterator[Record]:
    """Each record of *records* once (a Redis SCAN may return a key twice while keys
    are written): what a command that acts on every selected result walks."""
    seen: set[tuple[Kind, str]] = set()
    for record in records:
        key = (record.kind, record.id)
        if key not in seen:
            seen.add(key)
            yield record


def batched(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """*records* in lists of *size* (the last one shorter)."""
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- cursors
def encode_cursor(query: Query, layout: str, position: Mapping[str, Any]) -> str:
    """The opaque cursor for *position* (a store's own JSON-able state) in *query*."""
    body = {"v": _CURSOR_VERSION, "q": query.fingerprint(), "s": layout, "p": position}
    text = json.dumps(body, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(cursor: str, query: Query, layout: str) -> dict[str, Any]:
    """The store's position in a cursor made by :func:`encode_cursor`, or a UsageError."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise UsageError(
            "--cursor: this is not a cursor resultkit made; pass the one the previous page printed"
        ) from None
    if not isinstance(body, dict) or body.get("v") != _CURSOR_VERSION:
        raise UsageError("--cursor: this cursor is from another version of resultkit; start over")
    if body.get("s") != layout or body.get("q") != query.fingerprint():
        raise UsageError(
            "--cursor: this cursor belongs to another query or store; repeat the same "
            "filters and store as the page that printed it"
        )
    position = body.get("p")
    if not isinstance(position, dict):
        raise UsageError("--cursor: this cursor is damaged; start over without --cursor")
    return position


# ---------------------------------------------------------------- matching
def _pair(item: str | tuple[str, str]) -> tuple[str, str]:
    if isinstance(item, tuple):
        return item
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--kwarg {item}: write KEY=VALUE, for example --kwarg user_id=42")
    return key.strip(), value


def _glob(value: Any, pattern: str) -> bool:
    return isinstance(value, str) and fnmatch.fnmatchcase(value, pattern)


def _scalar_matches(stored: Any, wanted: str) -> bool:
    """True when a stored scalar equals the text given on the command line.

    Text equals text; a number equals the number the text spells (``42``,
    ``4.2e1``); ``true``/``false``/``null`` the JSON literals.  Containers never
    equal a scalar (see :func:`value_matches` for containment).
    """
    if isinstance(stored, str):
        return stored == wanted
    if stored is None:
        return wanted == "null"
    if isinstance(stored, bool):
        return wanted == ("true" if stored else "false")
    if isinstance(stored, (int, float)):
        try:
            number = float(wanted)
        except ValueError:
            return False
        return not math.isnan(number) and number == stored
    return False


def json_fragments(value: str) -> list[str] | None:
    """Text that the JSON of every stored value equal to *value* (as
    :func:`value_matches` compares) contains, whichever encoder wrote it; None when there is
    no such text (a float's spelling varies, non-ASCII may be escaped)."""
    if value in ("true", "false", "null"):
        return [value]
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is not None:
        # 42 matches 42, 42.0 and "42": each one's JSON holds the digits.
        if str(number) == value and abs(number) < _PLAIN_INTEGER_BELOW:
            return [value]
        return None
    try:
        float(value)
    except ValueError:
        pass
    else:
        return None
    encoded = json.dumps(value)
    # Non-ASCII and escapes are written differently by different encoders.
    return [encoded] if encoded.isascii() and "\\" not in encoded else None


def value_matches(stored: Any, wanted: str, depth: int = 0) -> bool:
    """True when *stored* (args, kwargs) holds a scalar equal to *wanted* at any depth
    (list items and dict values; dict keys are not values)."""
    if depth > 32:  # nested deeper than any argument list a person writes
        return False
    if isinstance(stored, dict):
        return any(value_matches(v, wanted, depth + 1) for v in stored.values())
    if isinstance(stored, (list, tuple)):
        return any(value_matches(v, wanted, depth + 1) for v in stored)
    return _scalar_matches(stored, wanted)


def exception_matches(result: Any, wanted: str) -> bool:
    """True when *result* is Celery's stored exception of type *wanted* (its name, or
    its module and name: ``ValueError``, ``builtins.ValueError``, ``myapp.errors.Gone``)."""
    if not isinstance(result, dict):
        return False
    name = result.get("exc_type")
    if not isinstance(name, str):
        return False
    if name == wanted:
        return True
    module = result.get("exc_module")
    return isinstance(module, str) and f"{module}.{name}" == wanted


def exception_of(result: Any) -> tuple[str, str] | None:
    """(type, message) of Celery's stored exception, or None when *result* is none."""
    if not isinstance(result, dict) or not isinstance(result.get("exc_type"), str):
        return None
    message = result.get("exc_message")
    if isinstance(message, (list, tuple)):
        text = ", ".join(str(part) for part in message)
    else:
        text = "" if message is None else str(message)
    module = result.get("exc_module")
    name = result["exc_type"]
    full = name if not module or module == "builtins" else f"{module}.{name}"
    return full, text


def member_ids(value: Any) -> list[str]:
    """The ids of a stored group's members (its ``GroupResult.as_tuple()`` form,
    or a list of member tuples), or of a task's ``children``."""
    out: list[str] = []

    def walk(item: Any, depth: int) -> None:
        # A result tuple is ((id, parent), children-or-None); a group's, ((id, parent), [members]).
        if depth > 64 or not isinstance(item, (list, tuple)) or len(item) != 2:
            return
        head, tail = item
        if isinstance(head, (list, tuple)) and head and isinstance(head[0], str):
            if isinstance(tail, (list, tuple)):  # a group: its members
                for member in tail:
                    walk(member, depth + 1)
            else:
                out.append(head[0])

    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], list):
        head = value[0]
        if isinstance(head, (list, tuple)) and head and isinstance(head[0], str):
            walk(value, 0)  # one group tuple
            return out
    if isinstance(value, (list, tuple)):
        for item in value:
            walk(item, 0)
    return out


# ---------------------------------------------------------------- preparing
#: The most results ``--root`` follows down a workflow's children.
MAX_WORKFLOW_RESULTS = 100_000
#: Up to this many exact ids, stores read them by id rather than scanning.
MAX_READ_BY_ID = 10_000
#: Records per scan batch when a store streams a query.
STREAM_BATCH_RECORDS = 1000

_FIELD_OPTIONS = {
    "name": "--task",
    "args": "--arg",
    "kwargs": "--kwarg",
    "worker": "--worker",
    "queue": "--queue",
}


def prepare_query(store: Store, query: Query) -> tuple[Query, list[str]]:
    """*query* as *store* answers it, and notes for the user (see
    :meth:`Store.prepare_query <resultkit.stores.base.Store.prepare_query>`)."""
    notes: list[str] = []
    needed = query.needs_extended
    if needed:
        lacking = [
            option
            for name, option in _FIELD_OPTIONS.items()
            if option in needed and name not in store.query_fields
        ]
        if lacking:
            raise UsageError(
                f"{', '.join(lacking)}: {store.layout} results keep no "
                f"{', '.join(o.removeprefix('--') for o in lacking)} "
                f"at {store.masked_url}; filter on what they keep (--state, --since, --id...)"
            )
        if store.holds_extended() is False:
            verb = "needs" if len(needed) == 1 else "need"
            raise UsageError(
                f"{', '.join(needed)} {verb} result_extended: the results at {store.masked_url} "
                "were stored without task names, args, kwargs, worker or queue; set "
                "result_extended = True in the Celery configuration (results stored from "
                "then on can be filtered so)"
            )
    ids = query.ids
    changes: dict[str, Any] = {}
    if query.group and "group_id" not in store.query_fields:
        members = _group_members(store, query.group)
        notes.append(
            f"--group: {store.layout} results keep no group id; the members were read "
            f"from the group's stored record ({len(members)} found)"
        )
        ids = _narrow(ids, members)
        changes["group"] = None
    if query.parent and "parent_id" not in store.query_fields:
        children = _children(store, [query.parent]).get(query.parent, [])
        notes.append(
            f"--parent: {store.layout} results keep no parent id; the children were read "
            f"from the parent's stored result ({len(children)} found)"
        )
        ids = _narrow(ids, children)
        changes["parent"] = None
    if query.root:
        workflow = _workflow(store, query.root)
        notes.append(
            "--root: Celery stores no root id with a result; the workflow was followed "
            f"down the children each result records ({len(workflow)} found)"
        )
        ids = _narrow(ids, workflow)
        changes["root"] = None
    if ids is not query.ids:
        changes["ids"] = ids
    if not changes:
        return query, notes
    # The fingerprint stays the query's as given: cursors name what the user asked.
    return _Resolved.of(query, changes), notes


@dataclass(frozen=True)
class _Resolved(Query):
    """A query with relational filters turned into ids; it keeps the fingerprint
    of the query the user gave."""

    given: str = ""

    @classmethod
    def of(cls, query: Query, changes: Mapping[str, Any]) -> _Resolved:
        values = {f: getattr(query, f) for f in query.__dataclass_fields__ if f != "given"}
        values.update(changes)
        return cls(**values, given=query.fingerprint())

    def fingerprint(self) -> str:
        return self.given


def _narrow(ids: frozenset[str] | None, found: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(found)
    return chosen if ids is None else ids & chosen


def _group_members(store: Store, group_id: str) -> list[str]:
    record = store.read_many(Kind.GROUP, [group_id]).get(group_id)
    if record is None or record.meta is None:
        return []
    return member_ids(record.meta.get("result"))


def _children(store: Store, parents: list[str]) -> dict[str, list[str]]:
    found = store.read_many(Kind.TASK, parents)
    out: dict[str, list[str]] = {}
    for rid, record in found.items():
        meta = record.meta
        out[rid] = member_ids(meta.get("children")) if meta else []
    return out


def _workflow(store: Store, root: str) -> set[str]:
    """The root and every result below it, by the children each result records."""
    seen = {root}
    frontier = [root]
    while frontier and len(seen) < MAX_WORKFLOW_RESULTS:
        following: list[str] = []
        for start in range(0, len(frontier), STREAM_BATCH_RECORDS):
            chunk = frontier[start : start + STREAM_BATCH_RECORDS]
            for children in _children(store, chunk).values():
                for child in children:
                    if child not in seen:
                        seen.add(child)
                        following.append(child)
        frontier = following
    return seen


# ---------------------------------------------------------------- streaming
def _kinds(query: Query) -> list[Kind]:
    return [k for k in (Kind.TASK, Kind.GROUP) if k in query.kinds]


def candidates(
    store: Store, query: Query, batch_size: int, *, damaged: bool = False
) -> Iterator[list[Record]]:
    """Batches of the records a query may select: read by id when it names few ids,
    otherwise every record of its kinds, a scan page at a time (the damaged ones
    too when *damaged*)."""
    for kind in _kinds(query):
        if query.ids is not None and len(query.ids) <= MAX_READ_BY_ID:
            ordered = sorted(query.ids)
            for start in range(0, len(ordered), batch_size):
                found = store.read_many(kind, ordered[start : start + batch_size])
                yield list(found.values())
            continue
        for page in store.pages(kind, batch_size):
            yield [r for r in page.records if damaged or not r.damaged]


def stream_matches(
    store: Store, query: Query, batch_size: int, *, damaged: bool = False
) -> Iterator[Record]:
    """Every record *query* selects, in the order the store reads them, and with
    *damaged* every record the store could not read."""
    for batch in candidates(store, query, batch_size, damaged=damaged):
        for record in batch:
            if record.damaged or query.matches(record):
                yield record


def position_of(query: Query, record: Record) -> dict[str, Any]:
    """The keyset position of *record*: what a cursor after it holds."""
    done, rid = query.sort_key(record)
    return {"d": None if done == -math.inf else done, "i": rid}


def _after_key(position: Mapping[str, Any]) -> tuple[float, str]:
    try:
        done = position["d"]
        rid = position["i"]
        key = (-math.inf if done is None else float(done), str(rid))
    except (KeyError, TypeError, ValueError):
        raise UsageError("--cursor: this cursor is damaged; start over without --cursor") from None
    return key


def stream_page(
    store: Store, query: Query, position: Mapping[str, Any] | None, limit: int
) -> ResultPage:
    """One page in ``(date_done, id)`` order, found by reading every candidate.

    Keeps the best *limit* + 1 matches in a heap, so memory does not grow with
    the store; the extra one tells whether another page follows.
    """
    import heapq

    after = _after_key(position) if position is not None else None
    newest = not query.oldest_first
    # A min-heap of the page being built, whose root is its worst member.
    heap: list[tuple[Any, int, Record]] = []
    scanned = 0
    serial = 0
    for batch in candidates(store, query, STREAM_BATCH_RECORDS):
        for record in batch:
            scanned += 1
            if not query.matches(record):
                continue
            key = query.sort_key(record)
            if after is not None and (key >= after if newest else key <= after):
                continue
            rank: Any = key if newest else _Reversed(key)
            serial += 1
            item = (rank, serial, record)
            if len(heap) <= limit:
                heapq.heappush(heap, item)
            elif rank > heap[0][0]:
                heapq.heapreplace(heap, item)
    ordered = [record for _, _, record in sorted(heap, reverse=True)]
    more = len(ordered) > limit
    records = ordered[:limit]
    cursor = encode_cursor(query, store.layout, position_of(query, records[-1])) if more else None
    return ResultPage(records, cursor, scanned)


class _Reversed:
    """A sort key in the opposite order (oldest first in a heap that keeps the newest)."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[float, str]) -> None:
        self.key = key

    def __lt__(self, other: _Reversed) -> bool:
        return self.key > other.key

    def __gt__(self, other: _Reversed) -> bool:
        return self.key < other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)
