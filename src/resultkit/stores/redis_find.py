"""Queries on Redis (and each master of a Redis Cluster): a Lua script per SCAN batch.

Redis has no index on what a result holds, so a query reads every key; the
work is done next to the data.  Each call of :data:`FIND_SCRIPT` runs one
``SCAN`` step (``COUNT`` :data:`SCAN_COUNT_KEYS`) and decodes each value with
``cjson``, returning only the results that may match: those the script's
filters pass, and those it cannot read (compressed, msgpack, pickle,
encrypted), which the client decodes.  Every candidate is confirmed in Python
by :meth:`Query.matches`, so a result is selected exactly as on any store.

Bounded work per ``find`` call: at most :data:`MAX_SCAN_KEYS_PER_PAGE` keys
are scanned (on each master in turn, for a cluster); a page may then hold
fewer results than asked, even none, with a cursor to continue.  The cursor
carries the SCAN cursor (and the master), plus the last key handed out of a
SCAN step cut short by the page's limit, so the next call starts again inside
that step without repeating it.

Pages follow the keyspace's order, not ``date_done`` (each page is sorted
newest first): Redis cannot order by date without reading every key, which
a bounded call does not do.  SCAN's own guarantee holds across pages: a
result stored the whole time is returned; one whose key is rehashed while the
table *shrinks* may be returned twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timezone
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..query import MAX_READ_BY_ID, Query, ResultPage, encode_cursor, json_fragments
from ..records import Kind, Record

if TYPE_CHECKING:
    from .redis import RedisStore

from .redis import match_prefix

__all__ = [
    "FIND_SCRIPT",
    "MAX_SCAN_KEYS_PER_PAGE",
    "SCAN_COUNT_KEYS",
    "lua_filters",
    "redis_find_page",
]

#: Keys one script call asks SCAN for (its COUNT): the longest a script holds the server.
SCAN_COUNT_KEYS = 1000
#: The most keys one ``find`` call scans (the sum over its script calls).
MAX_SCAN_KEYS_PER_PAGE = 20_000

#: ARGV: SCAN cursor, MATCH pattern, COUNT, the filters as JSON. Returns
#: {next cursor, keys scanned, {key, value, pttl, key, value, pttl, ...}}.
FIND_SCRIPT = r"""
local scanned = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local f = cjson.decode(ARGV[4])
local null = cjson.null

local function scalar(v, w, wn)
  local t = type(v)
  if t == 'string' then return v == w end
  if t == 'number' then return wn ~= nil and v == wn end
  if t == 'boolean' then return (v and w == 'true') or ((not v) and w == 'false') end
  if v == null then return w == 'null' end
  return false
end

local function holds(v, w, wn, depth)
  if depth > 32 then return true end
  if type(v) == 'table' then
    for _, item in pairs(v) do
      if holds(item, w, wn, depth + 1) then return true end
    end
    return false
  end
  return scalar(v, w, wn)
end

local function globbed(value, patterns)
  if type(value) ~= 'string' then return false end
  for _, p in ipairs(patterns) do
    if p == false or string.find(value, p) then return true end
  end
  return false
end

local function utc_second(d)
  if type(d) ~= 'string' or string.len(d) < 19 then return nil end
  local tail = string.sub(d, 20)
  if tail ~= '' and not string.find(tail, '^%.?%d*$') and not string.find(tail, '^%.?%d*%+00:00$')
     and not string.find(tail, '^%.?%d*Z$') then
    return nil
  end
  return string.sub(d, 1, 19)
end

-- Text the raw JSON must hold (one of each group): most keys are passed over
-- without being decoded.
local function holds_needles(v)
  if not f.needles then return true end
  for _, group in ipairs(f.needles) do
    local hit = false
    for _, n in ipairs(group) do
      if string.find(v, n, 1, true) then hit = true break end
    end
    if not hit then return false end
  end
  return true
end

local function passes(m)
  if f.states and not (type(m.status) == 'string' and f.states[m.status]) then return false end
  if f.tasks and not globbed(m.name, f.tasks) then return false end
  if f.since or f.untl then
    local d = m.date_done
    if d == nil or d == null then return false end
    local s = utc_second(d)
    if s then
      if f.since and s < f.since then return false end
      if f.untl and s > f.untl then return false end
    end
  end
  if f.worker and not globbed(m.worker, f.worker) then return false end
  if f.queue and m.queue ~= f.queue then return false end
  if f.group and m.group_id ~= f.group then return false end
  if f.parent and m.parent_id ~= f.parent then return false end
  if f.exc then
    local r = m.result
    if type(r) ~= 'table' or type(r.exc_type) ~= 'string' then return false end
    if r.exc_type ~= f.exc then return false end
  end
  if f.args then
    for _, w in ipairs(f.args) do
      local wn = tonumber(w)
      if not (holds(m.args, w, wn, 0) or holds(m.kwargs, w, wn, 0)) then return false end
    end
  end
  if f.kwargs then
    local kw = m.kwargs
    if type(kw) ~= 'table' then return false end
    for _, pair in ipairs(f.kwargs) do
      local v = kw[pair[1]]
      if v == nil or not scalar(v, pair[2], tonumber(pair[2])) then return false end
    end
  end
  return true
end

local out = {}
for _, key in ipairs(scanned[2]) do
  local value = redis.call('GET', key)
  if value and (string.byte(value, 1) ~= 123 or holds_needles(value)) then
    local ok, meta = pcall(cjson.decode, value)
    if (not ok) or type(meta) ~= 'table' or passes(meta) then
      out[#out + 1] = key
      out[#out + 1] = value
      out[#out + 1] = redis.call('PTTL', key)
    end
  end
end
return {scanned[1], #scanned[2], out}
"""


def _lua_pattern(glob: str) -> str | bool:
    """The anchored Lua pattern of a glob, or False (the script lets everything
    through) for one with a ``[...]`` class."""
    if "[" in glob:
        return False
    out = ["^"]
    for char in glob:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char in "^$()%.[]+-":
            out.append("%" + char)
        else:
            out.append(char)
    out.append("$")
    return "".join(out)


def lua_filters(query: Query) -> dict[str, Any]:
    """The filters the script applies: a superset of *query* (Python confirms)."""
    f: dict[str, Any] = {}
    if query.states:
        f["states"] = dict.fromkeys(query.states, True)
    if query.tasks:
        f["tasks"] = [_lua_pattern(p) for p in query.tasks]
    if query.since:
        f["since"] = query.since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if query.until:
        f["untl"] = query.until.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if query.worker:
        f["worker"] = [_lua_pattern(query.worker)]
    for name, key in (("queue", "queue"), ("group", "group"), ("parent", "parent")):
        value = getattr(query, name)
        if value:
            f[key] = value
    if query.exception:
        f["exc"] = query.exception.rsplit(".", 1)[-1]
    if query.args:
        f["args"] = list(query.args)
    if query.kwargs:
        f["kwargs"] = [list(pair) for pair in query.kwargs]
    needles = _needles(query)
    if needles:
        f["needles"] = needles
    return f


def _quoted(text: str) -> str | None:
    """*text* as every JSON encoder writes it, quoted; None when encoders differ."""
    encoded = json.dumps(text)
    return encoded if encoded.isascii() and "\\" not in encoded else None


def _glob_needle(glob: str) -> str | None:
    """The opening quote and the literal start of a glob (``"reports.``)."""
    literal = glob
    for at, char in enumerate(glob):
        if char in "*?[":
            literal = glob[:at]
            break
    quoted = _quoted(literal) if literal else None
    return quoted[:-1] if quoted else None


def _fragments(wanted: str) -> list[str | None]:
    fragments = json_fragments(wanted)
    return [None] if fragments is None else list(fragments)


def _needles(query: Query) -> list[list[str]]:
    """Groups of text the stored JSON of a selected result holds (one of each group)."""
    groups: list[list[str | None]] = []
    if query.states:
        groups.append([_quoted(s) for s in sorted(query.states)])
    if query.tasks:
        groups.append([_glob_needle(p) for p in query.tasks])
    if query.worker:
        groups.append([_glob_needle(query.worker)])
    for value in (query.queue, query.group, query.parent):
        if value:
            groups.append([_quoted(value)])
    if query.exception:
        groups.append([_quoted(query.exception.rsplit(".", 1)[-1])])
    for wanted in query.args:
        groups.append(_fragments(wanted))
    for key, wanted in query.kwargs:
        groups.append([_quoted(key)])
        groups.append(_fragments(wanted))
    # A group with a member that has no needle cannot pass anything over.
    return [[n for n in group if n] for group in groups if group and all(group)]


def _position(position: Mapping[str, Any] | None) -> tuple[int, int, str | None]:
    if position is None:
        return 0, 0, None
    try:
        node = int(position.get("n", 0))
        cursor = int(position["c"])
        last = position.get("k")
    except (KeyError, TypeError, ValueError):
        raise UsageError("--cursor: this cursor is damaged; start over without --cursor") from None
    return node, cursor, None if last is None else str(last)


def redis_find_page(
    store: RedisStore, query: Query, position: Mapping[str, Any] | None, limit: int
) -> ResultPage:
    """One page of *query* (see the module docstring)."""
    nodes = store.scan_nodes()
    node, cursor, last = _position(position)
    prefix = store.prefix(Kind.TASK)
    pattern = match_prefix(prefix + (query.id_prefix or "").encode())
    filters = json.dumps(lua_filters(query))
    found: list[Record] = []
    scanned = 0
    following: dict[str, Any] | None = None
    while node < len(nodes):
        if scanned >= MAX_SCAN_KEYS_PER_PAGE:
            following = {"n": node, "c": cursor}
            break
        reply = nodes[node].eval(FIND_SCRIPT, 0, cursor, pattern, SCAN_COUNT_KEYS, filters)
        next_cursor, count, flat = int(reply[0]), int(reply[1]), reply[2]
        scanned += count
        batch = _confirm(store, query, flat, len(prefix), last)
        last = None
        room = limit - len(found)
        if len(batch) > room:
            # The page is full inside this SCAN step: hand out its first results
            # by key, and start the next page in the same step after the last one.
            batch.sort(key=lambda r: r.id)
            found.extend(batch[:room])
            following = {"n": node, "c": cursor, "k": batch[room - 1].id}
            break
        found.extend(batch)
        if next_cursor == 0:
            node, cursor = node + 1, 0
        else:
            cursor = next_cursor
        if len(found) == limit and node < len(nodes):
            following = {"n": node, "c": cursor}
            break
    found.sort(key=query.sort_key, reverse=not query.oldest_first)
    token = encode_cursor(query, store.layout, following) if following is not None else None
    return ResultPage(found, token, scanned)


def _confirm(
    store: RedisStore, query: Query, flat: list[Any], prefix_len: int, after: str | None
) -> list[Record]:
    """The candidates of one script call that *query* selects (after the key *after*)."""
    ids, values, ttls = [], [], []
    for at in range(0, len(flat), 3):
        result_id = bytes(flat[at])[prefix_len:].decode()
        if after is not None and result_id <= after:
            continue
        ids.append(result_id)
        values.append(flat[at + 1])
        ttls.append(int(flat[at + 2]))
    records = store.records_of(Kind.TASK, ids, values, ttls, time.time())
    return [r for r in records.values() if query.matches(r)]


def uses_script(store: RedisStore, query: Query) -> bool:
    """True when the script answers *query*; False for groups, a few exact ids (read
    by id) and a user who may not run scripts."""
    if query.kinds != frozenset({Kind.TASK}) or not store.query_scripts:
        return False
    return query.ids is None or len(query.ids) > MAX_READ_BY_ID
