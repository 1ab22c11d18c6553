"""Results in Redis, as Celery's RedisBackend stores them.

Keys ``celery-task-meta-<id>`` and ``celery-taskset-meta-<id>`` (after the
``global_keyprefix`` of the transport options, when set) each hold Celery's
meta dictionary, serialized and optionally compressed, with a TTL.  The
client, key prefixes and connection options come from Celery's own backend,
so ``redis://``, ``rediss://``, ``sentinel://`` and ``socket://`` behave
exactly as they do in Celery.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..codec import JSON_FAMILY, json_at_once
from ..encryption import key_id_of
from ..errors import UsageError
from ..offload import REFERENCE_MAX_BYTES, is_reference
from ..purge import PurgePlan
from ..records import Kind, Payload, Record, as_datetime
from ..summary import Summary
from .base import OnConflict, Page, Store, WriteResult

if TYPE_CHECKING:
    from ..query import Query, ResultPage

__all__ = ["RedisStore", "match_prefix"]


#: Returns the PTTL of every key given, in order.
_PTTL_SCRIPT = (
    "local out = {} for i, key in ipairs(KEYS) do out[i] = redis.call('PTTL', key) end return out"
)


#: Deletes each key whose value is still the one given (ARGV[i] for KEYS[i]).
_DELETE_UNCHANGED_SCRIPT = (
    "local n = 0 for i, key in ipairs(KEYS) do "
    "if redis.call('GET', key) == ARGV[i] then n = n + redis.call('DEL', key) end end "
    "return n"
)

#: Sets PEXPIREAT ARGV[i] on each key that still has no TTL.
_EXPIRE_MISSING_SCRIPT = (
    "local n = 0 for i, key in ipairs(KEYS) do "
    "if redis.call('PTTL', key) == -1 then n = n + redis.call('PEXPIREAT', key, ARGV[i]) end end "
    "return n"
)


#: For each key: status, task name, size, PTTL and date_done, read by Redis itself,
#: so statistics need not carry every payload to the client.  Values that are
#: not JSON (compressed, msgpack, pickle) come back with status false.
#: The first 9 bytes of each key's value: enough for an encrypted payload's key id.
_HEADS_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('GETRANGE', key, 0, 8) end
return out
"""

_SUMMARY_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then
    local status, name, done = false, false, false
    local ok, meta = pcall(cjson.decode, value)
    if ok and type(meta) == 'table' then
      if type(meta['status']) == 'string' then status = meta['status'] end
      if type(meta['name']) == 'string' then name = meta['name'] end
      if type(meta['date_done']) == 'string' then done = meta['date_done'] end
    end
    out[i] = {status, name, string.len(value), redis.call('PTTL', key), done}
  else
    out[i] = false
  end
end
return out
"""


def _epoch(server: Any, replication: Any) -> str | None:
    """The identity of a Redis server's keyspace for SCAN cursors: its run id
    (a new one at every start) and replication id (a new one when a replica is
    promoted or resynchronised); None when INFO is not allowed (an ACL)."""
    if not isinstance(server, dict) or not server.get("run_id"):
        return None
    replid = replication.get("master_replid") if isinstance(replication, dict) else None
    return f"{server['run_id']}/{replid or '-'}"


def match_prefix(prefix: bytes | str) -> bytes:
    """A SCAN MATCH pattern for every key starting with *prefix* (glob characters escaped)."""
    raw = prefix.encode() if isinstance(prefix, str) else prefix
    escaped = bytearray()
    for byte in raw:
        if chr(byte) in "*?[]\\":
            escaped += b"\\"
        escaped.append(byte)
    return bytes(escaped) + b"*"


class RedisStore(Store):
    layout = "redis"
    native_ttl = True
    meta_blobs = True
    ordered_pages = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backend = self.celery_app.backend
        self.client = self.backend.client
        #: False once the server refused EVAL (an ACL user without scripting, as a
        #: read-only user often is): reads then take the same data without scripts.
        self.scripts = True
        #: False once the server refused the query script (see :mod:`.redis_find`).
        self.query_scripts = True

    def _refused(self, exc: Exception) -> bool:
        """True when *exc* is the server refusing a script to this user; scripts
        are then not tried again."""
        import redis

        text = str(exc)
        if isinstance(exc, redis.ResponseError) and ("NOPERM" in text or "no permissions" in text):
            self.scripts = False
            self.query_scripts = False
            return True
        return False

    def prefix(self, kind: Kind) -> bytes:
        raw = self.backend.task_keyprefix if kind is Kind.TASK else self.backend.group_keyprefix
        return raw if isinstance(raw, bytes) else str(raw).encode()

    def transient(self, exc: BaseException) -> bool:
        import redis

        if isinstance(exc, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
            return False
        # Also a server LOADING its RDB file, and a Sentinel that names no master yet.
        return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))

    def key(self, kind: Kind, result_id: str) -> bytes:
        return self.prefix(kind) + result_id.encode()

    def _pattern(self, kind: Kind) -> bytes:
        return match_prefix(self.prefix(kind))

    def _mget(self, keys: Sequence[bytes]) -> list[Any]:
        return list(self.client.mget(keys))

    def _write_pipeline(self) -> Any:
        """The pipeline a batch of writes goes through: all or nothing on one server."""
        return self.client.pipeline(transaction=True)

    # ----------------------------------------------------------- primitives
    def ping(self) -> None:
        self.client.ping()

    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        # The server's identity comes with the SCAN on the same connection, so it
        # names the server whose hash table the cursor walks (see Page.epoch).
        pipe = self.client.pipeline(transaction=False)
        pipe.info("server")
        pipe.info("replication")
        pipe.scan(cursor=int(cursor or 0), match=self._pattern(kind), count=limit)
        server, replication, scanned = pipe.execute(raise_on_error=False)
        if isinstance(scanned, Exception):
            raise scanned
        next_cursor, keys = scanned
        prefix_len = len(self.prefix(kind))
        ids = [k[prefix_len:].decode() for k in keys]
        records = list(self._fetch(kind, ids, keys).values())
        return Page(
            records,
            None if int(next_cursor) == 0 else int(next_cursor),
            epoch=_epoch(server, replication),
            vanished=len(keys) - len(records),
        )

    def _fetch(
        self, kind: Kind, ids: Sequence[str], keys: Sequence[bytes] | None = None
    ) -> dict[str, Record]:
        if not ids:
            return {}
        if keys is None:
            keys = [self.key(kind, i) for i in ids]
        if self.read_lifetimes:
            values, ttls = self._values_and_ttls(keys)
        else:
            values, ttls = self._mget(keys), [-3] * len(keys)  # -3: not read
        return self.records_of(kind, ids, values, ttls, time.time())

    def records_of(
        self,
        kind: Kind,
        ids: Sequence[str],
        values: Sequence[Any],
        ttls: Sequence[int],
        now: float,
    ) -> dict[str, Record]:
        """The records of keys read (their values and PTTLs, -3: not read)."""
        out: dict[str, Record] = {}
        # JSON is resultkit-json's when the store is said to hold that.
        as_json = self.codec.hint if self.codec.hint in JSON_FAMILY else "json"
        expected = Payload(None, as_json)
        decode = functools.partial(self._decode_json, as_json)
        for result_id, value, pttl in zip(ids, values, ttls, strict=True):
            if value is None or pttl == -2:
                continue  # vanished (expired or deleted) between SCAN and GET
            expires_at = now + pttl / 1000 if pttl >= 0 else None
            known = pttl != -3
            if value[:1] == b"{":
                # The common case, uncompressed JSON: decoded when first used (a
                # migration into a table decodes each just before making its row).
                record = Record(
                    kind,
                    result_id,
                    expected,
                    decode=decode,
                    raw=value,
                    expires_at=expires_at,
                    expires_known=known,
                )
            else:
                record = self.record_from_payload(
                    kind, result_id, value, expires_at=expires_at, expires_known=known
                )
            out[result_id] = record
        return out

    def _values_and_ttls(self, keys: Sequence[bytes]) -> tuple[list[Any], list[int]]:
        """Each key's value and PTTL, in one round trip."""
        if self.scripts:
            pipe = self.client.pipeline(transaction=False)
            pipe.mget(keys)
            # One reply with every TTL, rather than one reply per key.
            pipe.eval(_PTTL_SCRIPT, len(keys), *keys)
            try:
                values, ttls = pipe.execute()
                return values, ttls
            except Exception as exc:
                if not self._refused(exc):
                    raise
        pipe = self.client.pipeline(transaction=False)
        pipe.mget(keys)
        for key in keys:
            pipe.pttl(key)
        values, *ttls = pipe.execute()
        return values, ttls

    def _decode_json(self, serializer: str, raw: bytes) -> Payload:
        """Decode a payload that looked like JSON (see :meth:`_fetch`); anything
        else is decoded as any other payload, with the same errors."""
        meta = json_at_once(raw, serializer)
        if isinstance(meta, dict):
            return Payload(meta, serializer)
        return self.payload_of(raw)

    def read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, Record]:
        return self._fetch(kind, ids)

    def payload_for(self, record: Record) -> bytes:
        """The bytes to store for *record*: its own blob when nothing changes."""
        raw = self.reusable_raw(record)
        if raw is None:
            if record.meta is None:
                raise ValueError(record.error or "the record has no readable payload")
            raw = self.codec.encoder_for(record)(self.meta_for(record))
        if self.offloader is not None and record.kind is Kind.TASK and not is_reference(raw):
            # The object first: the key is written after it, by the caller.
            raw = self.offloader.offload(record.id, raw)
        return raw

    @staticmethod
    def meta_for(record: Record) -> dict[str, Any]:
        """Celery's key-value meta for a record: ISO dates, the task id inside."""
        assert record.meta is not None
        meta = dict(record.meta)
        if record.kind is Kind.TASK:
            meta["task_id"] = record.id
            done = as_datetime(meta.get("date_done"))
            meta["date_done"] = done.isoformat() if done else None
        else:
            meta.pop("date_done", None)
        return meta

    def write_many(self, records: Sequence[Record], on_conflict: OnConflict) -> WriteResult:
        outcome = WriteResult()
        now = time.time()
        planned: list[tuple[Record, bytes, float | None]] = []
        for record in records:
            expires_at = self.lifetime_for(record, now)
            if expires_at is not None and expires_at <= now:
                outcome.expired.append(record.id)
                continue
            try:
                planned.append((record, self.payload_for(record), expires_at))
            except Exception as exc:
                outcome.failed[record.id] = str(exc)
        if on_conflict is OnConflict.NEWER and planned:
            existing = self._fetch_dates(planned)
            keep = []
            for item in planned:
                record = item[0]
                current = existing.get((record.kind, record.id), "absent")
                if current == "absent" or (
                    record.date_done is not None and (current is None or record.date_done > current)
                ):
                    keep.append(item)
                else:
                    outcome.skipped.append(record.id)
            planned = keep
        if not planned:
            return outcome
        pipe = self._write_pipeline()
        command = pipe.execute_command  # SET with its options spelled out: no per-call parsing
        nx = ("NX",) if on_conflict is OnConflict.SKIP else ()
        for record, payload, expires_at in planned:
            key = self.key(record.kind, record.id)
            if expires_at is not None:
                command("SET", key, payload, "PXAT", int(expires_at * 1000), *nx)
            else:
                command("SET", key, payload, *nx)
        for (record, _, _), reply in zip(planned, pipe.execute(), strict=True):
            (outcome.written if reply else outcome.skipped).append(record.id)
        return outcome

    def _fetch_dates(self, planned: Sequence[tuple[Record, bytes, float | None]]) -> dict[Any, Any]:
        keys = [self.key(r.kind, r.id) for r, _, _ in planned]
        values = self._mget(keys)
        out: dict[Any, Any] = {}
        for (record, _, _), value in zip(planned, values, strict=True):
            if value is None:
                continue
            existing = self.record_from_payload(record.kind, record.id, value)
            out[(record.kind, record.id)] = existing.date_done
        return out

    def sealed_keys(self) -> Counter[str]:
        """Key ids of encrypted results, read from the first bytes of each value."""
        counts: Counter[str] = Counter()
        cursor = 0
        while True:
            cursor, keys = self.client.scan(
                cursor=cursor, match=self._pattern(Kind.TASK), count=5000
            )
            if keys:
                heads = self._heads(keys)
                counts.update(filter(None, (key_id_of(bytes(head)) for head in heads)))
            if not cursor:
                return counts

    def _heads(self, keys: Sequence[bytes]) -> list[bytes]:
        """The first 9 bytes of each key's value."""
        if self.scripts:
            try:
                return list(self.client.eval(_HEADS_SCRIPT, len(keys), *keys))
            except Exception as exc:
                if not self._refused(exc):
                    raise
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.getrange(key, 0, 8)
        return list(pipe.execute())

    def summarize(self, plan: PurgePlan) -> Summary:
        """Exact counts over every result key, each batch summarised by Redis in one call
        (by reading every result, for a user who may not run scripts).

        The next batch is scanned and summarised by the server while this one
        is counted here.
        """
        if self.scripts:
            try:
                self.client.eval("return 1", 0)
            except Exception as exc:
                if not self._refused(exc):
                    raise
        if not self.scripts:
            return super().summarize(plan)
        summary = Summary(no_ttl=0)
        prefix_len = len(self.prefix(Kind.TASK))
        parse = datetime.fromisoformat

        def fetch(cursor: int) -> tuple[int, list[bytes], list[Any]]:
            cursor, keys = self.client.scan(
                cursor=cursor, match=self._pattern(Kind.TASK), count=5000
            )
            rows = self.client.eval(_SUMMARY_SCRIPT, len(keys), *keys) if keys else []
            return int(cursor), keys, rows

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resultkit-stats") as pool:
            pending = pool.submit(fetch, 0)
            while True:
                cursor, keys, rows = pending.result()
                if cursor:
                    pending = pool.submit(fetch, cursor)
                undecoded = []
                for key, row in zip(keys, rows, strict=True):
                    if not row:
                        continue  # expired between SCAN and the script
                    status, name, size, pttl, done = row
                    result_id = key[prefix_len:].decode()
                    if not status:
                        undecoded.append(result_id)
                        continue
                    try:
                        when = parse(done.decode()) if done else None
                    except ValueError:
                        when = as_datetime(done.decode())
                    if when is not None and when.tzinfo is None:
                        when = when.replace(tzinfo=timezone.utc)
                    summary.add(
                        result_id=result_id,
                        status=status.decode(),
                        name=name.decode() if name else None,
                        done=when,
                        size=size,
                        plan=plan,
                        no_ttl=pttl == -1,
                    )
                for record in self._fetch(Kind.TASK, undecoded).values():
                    summary.add(
                        result_id=record.id,
                        status=record.status,
                        name=record.name,
                        done=record.date_done,
                        size=len(record.raw or b""),
                        plan=plan,
                        no_ttl=record.expires_at is None,
                        sealed_key=record.sealed_key,
                    )
                if not cursor:
                    return summary

    def delete_unchanged(self, kind: Kind, records: Sequence[Record]) -> int:
        """Delete each key only if it still holds the value read (a worker may rewrite it)."""
        with_raw = [r for r in records if r.raw is not None]
        if not with_raw:
            return 0
        keys = [self.key(kind, r.id) for r in with_raw]
        return int(
            self.client.eval(_DELETE_UNCHANGED_SCRIPT, len(keys), *keys, *[r.raw for r in with_raw])
        )

    def set_expiry(self, kind: Kind, items: Sequence[tuple[Record, float]]) -> int:
        if not items:
            return 0
        keys = [self.key(kind, r.id) for r, _ in items]
        stamps = [int(at * 1000) for _, at in items]
        return int(self.client.eval(_EXPIRE_MISSING_SCRIPT, len(keys), *keys, *stamps))

    def stored_references(self, ids: Sequence[str]) -> list[bytes]:
        """The first bytes of each key, enough for a reference: no payload is read whole."""
        pipe = self.client.pipeline(transaction=False)
        for result_id in ids:
            pipe.getrange(self.key(Kind.TASK, result_id), 0, REFERENCE_MAX_BYTES - 1)
        return [bytes(head) for head in pipe.execute() if head and is_reference(head)]

    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(self.client.delete(*[self.key(kind, i) for i in ids]))

    def count(self, kind: Kind) -> int:
        total = 0
        cursor = 0
        while True:
            cursor, keys = self.client.scan(cursor=cursor, match=self._pattern(kind), count=5000)
            total += len(keys)
            if int(cursor) == 0:
                return total

    def celery_read_many(self, kind: Kind, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if kind is Kind.GROUP:
            return super().celery_read_many(kind, ids)
        values = self._mget([self.key(kind, i) for i in ids]) if ids else []
        out: dict[str, dict[str, Any]] = {}
        for result_id, value in zip(ids, values, strict=True):
            if value is None:
                continue
            try:
                out[result_id] = self.celery_backend_for(value).decode_result(value)
            except Exception as exc:
                out[result_id] = {"unreadable": f"{type(exc).__name__}: {exc}"}
        return out

    # ------------------------------------------------------------ queries
    def scan_nodes(self) -> list[Any]:
        """The clients whose keyspaces a query scans, in order (one server here)."""
        return [self.client]

    def find_page(self, query: Query, position: Mapping[str, Any] | None, limit: int) -> ResultPage:
        """A Lua script per SCAN step filters next to the data (see :mod:`.redis_find`)."""
        from .redis_find import redis_find_page, uses_script

        if uses_script(self, query):
            try:
                return redis_find_page(self, query, position, limit)
            except Exception as exc:
                if not self._refused(exc):
                    raise
        if position is not None and "i" not in position:
            raise UsageError(
                "--cursor: this cursor was made by a script this user may no longer run; "
                "start over without --cursor"
            )
        return super().find_page(query, position, limit)

    def explain_query(self, query: Query, limit: int) -> list[str]:
        from .redis_find import MAX_SCAN_KEYS_PER_PAGE, SCAN_COUNT_KEYS, uses_script

        if not uses_script(self, query):
            return super().explain_query(query, limit)
        nodes = len(self.scan_nodes())
        where = f"each of {nodes} masters in turn" if nodes > 1 else "the server"
        return [
            f"redis: SCAN MATCH {self.prefix(Kind.TASK).decode('latin-1')}"
            f"{query.id_prefix or ''}* on {where}, COUNT {SCAN_COUNT_KEYS} per script call",
            "a Lua script decodes each JSON value with cjson and returns the candidates; "
            "values it cannot read (compressed, msgpack, pickle, encrypted) are decoded here",
            f"at most {MAX_SCAN_KEYS_PER_PAGE} keys scanned per call: a page may hold fewer "
            "results than --limit, with a cursor to continue",
            "pages follow the keyspace's order (each page newest first); no index exists",
        ]

    def close(self) -> None:
        self.client.close()
