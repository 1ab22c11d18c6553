"""``resultkit-redis`` on Redis Cluster: ``resultkit-redis+rediscluster://host:port,host:port``.

Celery's :class:`~celery.backends.redis.RedisBackend`, with resultkit's
retention policies, on redis-py's ``RedisCluster`` client:

- result and group keys keep Celery's names (``celery-task-meta-<id>``,
  ``celery-taskset-meta-<id>``); a chord's counters are
  ``{celery-taskset-meta-<id>}.j`` (``.t``, ``.s``, ``.d``, ``.c``): the
  hash tag is the group key's own name, so that all of them share the group
  key's slot and Celery's chord script runs on one node;
- ``get_many``/``join`` read across slots (one MGET per slot);
- ``AsyncResult.get()`` is woken by sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``,
  Redis 7+; plain ``PUBLISH``/``SUBSCRIBE`` on older servers), subscribed on
  the master that owns each result's slot;
- ``resultkit_redis_wait_replicas = N`` makes each store ``WAIT`` for N
  replicas (``resultkit_redis_wait_timeout``, seconds, default 1).

``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN`` and lost connections are
retried under Celery's result retry policy (``retry_policy`` in
``result_backend_transport_options``: 20 attempts about a second apart by
default); after that a store raises :class:`~celery.exceptions.BackendStoreError`
and a read :class:`~celery.exceptions.BackendGetMetaError`.
"""

from __future__ import annotations

import selectors
import time
from collections.abc import Iterator
from typing import Any

from celery.backends.redis import ResultConsumer
from celery.exceptions import BackendGetMetaError, BackendStoreError, ImproperlyConfigured
from kombu.utils.objects import cached_property

from .. import cluster
from ..urls import mask_url
from .redis import ResultkitRedisBackend

__all__ = ["ClusterResultConsumer", "ResultkitRedisClusterBackend"]

#: The longest one wait for a result message lasts before the waiter looks again.
MAX_WAIT_S = 1.0
#: How often a waiter re-reads the results it waits for when no message came: a
#: message lost in a failover or a slot move then delays get(), never hangs it.
RECHECK_S = 1.0


def _one_by_one_pubsub(connection_pool: Any) -> Any:
    """A redis-py ``PubSub`` that, reconnected, subscribes its shard channels one at a time:
    one master serves many slots, and one SSUBSCRIBE of channels in several is CROSSSLOT."""
    from redis.client import PubSub

    class OneByOne(PubSub):
        def on_connect(self, connection: Any) -> None:
            shard, self.shard_channels = dict(self.shard_channels), {}
            super().on_connect(connection)
            for channel in shard:
                self.ssubscribe(channel)

    return OneByOne(connection_pool=connection_pool)


class _Subscriptions:
    """Result channels, each subscribed on the master that owns its key's slot.

    It stands in for the single ``PubSub`` of Celery's ``ResultConsumer``
    (``subscribe``, ``unsubscribe``, ``close``, ``subscribed``), with one
    redis-py ``PubSub`` per master underneath.
    """

    def __init__(self, client: Any, sharded: bool) -> None:
        self._client = client
        self._sharded = sharded
        self._by_node: dict[str, Any] = {}
        self._node_of: dict[bytes, str] = {}
        #: Channels the server dropped (their slot moved to another master).
        self.moved: set[bytes] = set()

    @property
    def subscribed(self) -> bool:
        return bool(self._node_of)

    def subscribe(self, *keys: bytes) -> None:
        for key in keys:
            node = self._client.get_node_from_key(key)
            pubsub = self._by_node.get(node.name)
            if pubsub is None:
                pubsub = _one_by_one_pubsub(self._client.get_redis_connection(node).connection_pool)
                self._by_node[node.name] = pubsub
            (pubsub.ssubscribe if self._sharded else pubsub.subscribe)(key)
            self._node_of[key] = node.name

    def unsubscribe(self, *keys: bytes) -> None:
        for key in keys:
            pubsub = self._by_node.get(self._node_of.pop(key, ""))
            if pubsub is not None:
                (pubsub.sunsubscribe if self._sharded else pubsub.unsubscribe)(key)

    def close(self) -> None:
        for pubsub in self._by_node.values():
            pubsub.close()
        self._by_node.clear()
        self._node_of.clear()

    def messages(self) -> Iterator[bytes]:
        """The payloads waiting on every connection, without blocking."""
        for pubsub in list(self._by_node.values()):
            while pubsub.connection is not None and pubsub.connection.can_read(timeout=0):
                message = pubsub.get_message(timeout=0)
                if message is None:
                    break
                kind = message["type"]
                if kind in ("message", "smessage"):
                    yield message["data"]
                elif kind == "sunsubscribe" and message["channel"] in self._node_of:
                    # Not asked for: the server dropped it when the slot moved away.
                    self.moved.add(message["channel"])

    def wait(self, timeout: float) -> bool:
        """Until a connection has something to read, or *timeout* seconds."""
        sockets = [
            p.connection._sock
            for p in self._by_node.values()
            if p.connection is not None and getattr(p.connection, "_sock", None) is not None
        ]
        if not sockets:
            time.sleep(timeout)
            return False
        with selectors.DefaultSelector() as selector:
            for sock in sockets:
                selector.register(sock, selectors.EVENT_READ)
            return bool(selector.select(timeout))


class ClusterResultConsumer(ResultConsumer):  # type: ignore[misc]
    """Celery's Redis result consumer (locking, unsubscribe on collection, waiting),
    with its one pub/sub connection replaced by one per master."""

    backend: ResultkitRedisClusterBackend
    _pubsub: _Subscriptions | None
    subscribed_to: set[bytes]

    def _subscriptions(self) -> _Subscriptions:
        return _Subscriptions(self.backend.client, self.backend.sharded_pubsub)

    def start(self, initial_task_id: str, **kwargs: Any) -> None:
        with self._locked():
            self._pubsub = self._subscriptions()
            self._consume_from(initial_task_id)

    _last_read = 0.0

    def on_after_fork(self) -> None:
        # The parent's sockets and subscriptions are not this process's.
        self._reset_sync()
        self._pubsub = None
        self.subscribed_to = set()

    def _reconnect_pubsub(self) -> None:
        with self._locked():
            if self._pubsub is not None:
                self._pubsub.close()
            self._pubsub = None
            self.backend.client.nodes_manager.initialize()
            # A result stored while no one listened is read instead.
            self._read_current(list(self.subscribed_to))
            self.subscribed_to -= self._pending_unsubscribe
            self._pending_unsubscribe.clear()
            self._pubsub = self._subscriptions()
            if self.subscribed_to:
                self._pubsub.subscribe(*self.subscribed_to)

    def _read_current(self, keys: list[bytes]) -> None:
        if keys:
            for meta in self.backend.client.mget_nonatomic(keys):
                if meta:
                    self.on_state_change(self._decode_result(meta), None)

    def _drain_one(self, pubsub: _Subscriptions, timeout: float | None) -> bool:
        got = False
        with self.reconnect_on_error():
            for payload in pubsub.messages():
                self.on_state_change(self._decode_result(payload), None)
                got = True
            if pubsub.moved:
                moved, pubsub.moved = pubsub.moved, set()
                self.backend.client.nodes_manager.initialize()
                still = [key for key in moved if key in self.subscribed_to]
                pubsub.subscribe(*still)
                self._read_current(still)
                got = True
            now = time.monotonic()
            if got:
                self._last_read = now
            elif now - self._last_read >= RECHECK_S and self.subscribed_to:
                self._last_read = now
                self._read_current(list(self.subscribed_to))
        return got

    def _wait_for_pubsub(self, pubsub: _Subscriptions, timeout: float | None) -> bool:
        return pubsub.wait(MAX_WAIT_S if timeout is None else min(timeout, MAX_WAIT_S))


#: Celery's RedisBackend refuses string values longer than Redis takes (512 MB).
_MAX_VALUE_CHARS = 512 * 1024 * 1024


class _Refused(Exception):
    """The cluster refused the credentials (not a connection error: never retried)."""


class ResultkitRedisClusterBackend(ResultkitRedisBackend):
    """The ``resultkit-redis`` backend on a Redis Cluster."""

    ResultConsumer = ClusterResultConsumer
    connection_errors: tuple[type[BaseException], ...]

    def __init__(self, *args: Any, url: str | None = None, **kwargs: Any) -> None:
        if not url:
            raise ImproperlyConfigured("the Redis Cluster backend needs rediscluster://HOST:PORT")
        self._cluster_url = cluster.parse_cluster_url(url)
        super().__init__(*args, url=url, **kwargs)
        self.replication = cluster.replication_from_conf(self.app.conf)
        self.replica_waits = cluster.ReplicaWaits(self.replication)
        self.connection_errors = tuple(self.connection_errors) + cluster.cluster_errors()

    # ------------------------------------------------------------ connection
    def _params_from_url(self, url: str, defaults: dict[str, Any]) -> dict[str, Any]:
        # Celery's per-server settings that a cluster node connection takes.
        keep = (
            "socket_timeout",
            "socket_connect_timeout",
            "retry_on_timeout",
            "socket_keepalive",
            "max_connections",
            "client_name",
            "health_check_interval",
            "username",
            "password",
            "credential_provider",
            *cluster._SSL_PARAMS,
        )
        # False is redis-py's default: passing it only earns a deprecation warning.
        params = {key: defaults[key] for key in keep if defaults.get(key) not in (None, False)}
        if "connection_class" in defaults:  # redis_backend_use_ssl
            params["ssl"] = True
        return params

    def _create_client(self, **params: Any) -> Any:
        options = dict(params)
        if options.pop("ssl", False) and not self._cluster_url.ssl:
            url = self._cluster_url
            self._cluster_url = cluster.ClusterURL(
                url.raw, url.nodes, url.username, url.password, True, url.ssl_options
            )
        for key in ("username", "password"):  # the URL's own win
            if getattr(self._cluster_url, key):
                options.pop(key, None)
        return cluster.make_client(self._cluster_url, **options)

    @cached_property
    def sharded_pubsub(self) -> bool:
        return cluster.supports_sharded_pubsub(self.client)

    def as_uri(self, include_password: bool = False) -> str:
        return str(self.url) if include_password else mask_url(self.url)

    # -------------------------------------------------------------- keys
    def get_key_for_group(self, group_id: str, key: str = "") -> bytes:
        """The group key keeps Celery's name; the chord keys beside it are
        ``{<group key>}<suffix>``, in the group key's slot."""
        name: bytes = super().get_key_for_group(group_id)
        if not key:
            return name
        suffix: bytes = self.key_t(key)
        return b"{" + name + b"}" + suffix

    # ------------------------------------------------------------ reads/writes
    def _set(self, key: bytes, value: Any, expires: int | None = None) -> None:
        if expires is None:
            expires = self.expires
        cluster.write_on_master(
            self.client,
            key,
            value,
            expires or None,
            sharded=self.sharded_pubsub,
            waits=self.replica_waits,
        )

    def ensure(self, fun: Any, args: Any, **policy: Any) -> Any:
        """Celery's retry loop, except for refused credentials, which no retry cures."""

        def guarded(*call_args: Any) -> Any:
            try:
                return fun(*call_args)
            except Exception as exc:
                if cluster.is_refusal(exc):
                    raise _Refused(
                        f"the Redis Cluster {self.as_uri()} refused the credentials: {exc}; "
                        "check the user and password in the URL (or redis_username/"
                        "redis_password) and the user's ACL"
                    ) from exc
                raise

        return super().ensure(guarded, args, **policy)

    def set(self, key: bytes, value: Any, expires: int | None = None, **retry_policy: Any) -> Any:
        if isinstance(value, str) and len(value) > _MAX_VALUE_CHARS:
            raise BackendStoreError("value too large for Redis backend")
        # Once without Celery's retry loop, as reads do (its set-up costs a twentieth of
        # a store); a store that fails goes through it from the start. Repeating the
        # SET and PUBLISH is what the loop itself does on a retry.
        try:
            return self._set(key, value, expires)
        except Exception:  # any failure: the retry loop below decides
            pass
        try:
            return self.ensure(self._set, (key, value, expires), **retry_policy)
        except _Refused as exc:
            raise BackendStoreError(str(exc)) from exc
        except self.connection_errors as exc:
            raise BackendStoreError(
                f"could not store {key.decode(errors='replace')} on the Redis Cluster "
                f"{self.as_uri()} after retrying: {exc}"
            ) from exc

    def store_result(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().store_result(*args, **kwargs)
        except BackendGetMetaError as exc:  # Celery reads the current state before a store
            task_id = args[0] if args else kwargs.get("task_id")
            raise BackendStoreError(str(exc), task_id=task_id) from exc

    def _read(self, call: Any, *args: Any) -> Any:
        # Once without Celery's retry loop, whose set-up costs a tenth of a read;
        # a read that fails goes through it from the start (one attempt more).
        try:
            return call(*args)
        except Exception:  # any failure: the retry loop below decides
            pass
        try:
            return self.ensure(call, args)
        except _Refused as exc:
            raise BackendGetMetaError(str(exc)) from exc
        except self.connection_errors as exc:
            raise BackendGetMetaError(
                f"could not read from the Redis Cluster {self.as_uri()} after retrying: {exc}"
            ) from exc

    def get(self, key: bytes) -> Any:
        return self._read(lambda k: cluster.read_on_master(self.client, "get", k), key)

    def mget(self, keys: list[bytes]) -> list[Any]:
        keys = list(keys)
        if not keys:
            return []
        return list(self._read(lambda k: self.client.mget_nonatomic(k), keys))
