"""Results on a Redis Cluster, as the ``resultkit-redis`` cluster backend stores them.

The same keys and values as :class:`~resultkit.stores.redis.RedisStore`
(Celery's names; see ``docs/redis-cluster.md``), spread over the masters.
A scan walks every master in turn, in the order of their names; its cursor
is ``"<master>:<SCAN cursor>"``, and its epoch names every master (run id,
replication id), the slots each serves by its own account and the keys left
in a slot it is giving away, so that a failover or a slot moved (or moving)
during a migration starts the pass again instead of trusting a cursor of
another hash table or missing keys that moved behind it.  Multi-key reads go one
``MGET`` per slot; writes, deletes and expiries go through a cluster pipeline
(one round trip per master).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..encryption import key_id_of
from ..purge import PurgePlan
from ..records import Kind, Record
from ..summary import Summary
from .base import Page, Store
from .redis import _DELETE_UNCHANGED_SCRIPT, RedisStore, _epoch

__all__ = ["RedisClusterStore"]


class RedisClusterStore(RedisStore):
    layout = "redis"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Multi-key scripts would need every key in one slot: reads take the plain path.
        self.scripts = False

    def transient(self, exc: BaseException) -> bool:
        from ..cluster import cluster_errors

        return super().transient(exc) or isinstance(exc, cluster_errors())

    # ------------------------------------------------------------- masters
    def _masters(self) -> list[Any]:
        """The masters, by name: an order that no slot moved can change (a pass's
        cursor names a master by its place in it)."""
        return sorted(self.client.get_primaries(), key=lambda node: node.name)

    def _layout_epoch(self, masters: list[Any]) -> str:
        """Each master's keyspace identity, the slots it serves by its own account,
        and the keys left in each slot it is giving away.

        Read from the servers, not the client's slot map (which learns of a moved
        slot only from a MOVED reply, and a SCAN never gets one): a slot that
        moves, or a key that leaves a half-moved slot, between two pages changes
        it, so the pass starts again instead of missing keys that moved behind its
        cursor to a master already scanned.
        """
        parts = []
        for node in masters:
            connection = self.client.get_redis_connection(node)
            parts.append(_epoch(connection.info("server"), connection.info("replication")) or "-")
            nodes = connection.execute_command("CLUSTER", "NODES")
            text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
            myself = next((line for line in text.splitlines() if "myself" in line), "")
            served = myself.split()[8:]
            parts.extend(served)
            for field in served:
                if "->-" in field:  # [slot->-target]: keys are leaving it
                    slot = int(field.strip("[").partition("-")[0])
                    left = connection.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
                    parts.append(f"{slot}:{int(left)}")
        return hashlib.sha1("|".join(parts).encode()).hexdigest()

    # ----------------------------------------------------------- primitives
    def scan(self, kind: Kind, cursor: Any, limit: int) -> Page:
        masters = self._masters()
        index, _, node_cursor = str(cursor or "0:0").partition(":")
        number = int(index)
        if number >= len(masters):
            return Page([], None, epoch=self._layout_epoch(masters))
        connection = self.client.get_redis_connection(masters[number])
        next_cursor, keys = connection.scan(
            cursor=int(node_cursor or 0), match=self._pattern(kind), count=limit
        )
        prefix_len = len(self.prefix(kind))
        ids = [k[prefix_len:].decode() for k in keys]
        records = list(self._fetch(kind, ids, keys).values())
        if int(next_cursor):
            following: str | None = f"{number}:{int(next_cursor)}"
        else:
            following = f"{number + 1}:0" if number + 1 < len(masters) else None
        return Page(
            records,
            following,
            epoch=self._layout_epoch(masters),
            vanished=len(keys) - len(records),
        )

    def _mget(self, keys: Sequence[bytes]) -> list[Any]:
        return list(self.client.mget_nonatomic(list(keys))) if keys else []

    def _write_pipeline(self) -> Any:
        # A transaction cannot span slots; each SET stands alone (a retried batch rewrites).
        return self.client.pipeline(transaction=False)

    def _values_and_ttls(self, keys: Sequence[bytes]) -> tuple[list[Any], list[int]]:
        values = self._mget(keys)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
        return values, [int(t) for t in pipe.execute()]

    def _per_key(self, command: str, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            pipe.execute_command(command, *row)
        return list(pipe.execute())

    def delete_unchanged(self, kind: Kind, records: Sequence[Record]) -> int:
        rows = [
            (_DELETE_UNCHANGED_SCRIPT, 1, self.key(kind, r.id), r.raw)
            for r in records
            if r.raw is not None
        ]
        return sum(int(n) for n in self._per_key("EVAL", rows))

    def set_expiry(self, kind: Kind, items: Sequence[tuple[Record, float]]) -> int:
        # NX: only a key that still has no TTL (Redis 7).
        rows = [(self.key(kind, r.id), int(at * 1000), "NX") for r, at in items]
        return sum(int(n) for n in self._per_key("PEXPIREAT", rows))

    def delete_many(self, kind: Kind, ids: Sequence[str]) -> int:
        return sum(int(n) for n in self._per_key("DEL", [(self.key(kind, i),) for i in ids]))

    def count(self, kind: Kind) -> int:
        total = 0
        for node in self._masters():
            connection = self.client.get_redis_connection(node)
            total += sum(1 for _ in connection.scan_iter(match=self._pattern(kind), count=5000))
        return total

    def sealed_keys(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for node in self._masters():
            connection = self.client.get_redis_connection(node)
            keys = list(connection.scan_iter(match=self._pattern(Kind.TASK), count=5000))
            heads = self._per_key("GETRANGE", [(key, 0, 8) for key in keys])
            counts.update(filter(None, (key_id_of(bytes(head)) for head in heads)))
        return counts

    def summarize(self, plan: PurgePlan) -> Summary:
        return Store.summarize(self, plan)

    def scan_nodes(self) -> list[Any]:
        """Each master's own client: a query runs its script on every master in turn."""
        return [self.client.get_redis_connection(node) for node in self._masters()]

    def close(self) -> None:
        self.client.close()
