"""Redis Cluster: URLs, clients, and a store written on the master that owns the key.

One home for what the ``resultkit-redis`` backend (and the ``rediscluster://``
store) need on a cluster:

``rediscluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?ssl=true&ssl_cert_reqs=required...]``
    any reachable node is enough to find the others; more are tried when the
    first does not answer.  TLS is ``?ssl=true`` (with Celery's ``rediss://``
    parameters ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``); a cluster has no database numbers, so a path other
    than ``/`` or ``/0`` is refused.

:func:`write_on_master` sends ``SET`` + ``SPUBLISH`` (+ ``WAIT``) to the master
of the key's slot on one connection, so that ``WAIT`` counts the replicas
that have *this* write, and follows ``MOVED`` and ``ASK`` itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from .errors import ConfigurationError
from .urls import mask_url

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterURL",
    "ReplicaWaits",
    "Replication",
    "cluster_errors",
    "is_cluster_url",
    "is_refusal",
    "make_client",
    "parse_cluster_url",
    "read_on_master",
    "replication_from_conf",
    "supports_sharded_pubsub",
    "write_on_master",
]

logger = logging.getLogger(__name__)

CLUSTER_SCHEMES = ("rediscluster",)
#: The oldest redis-py whose cluster client and sharded pub/sub pass the cluster tests
#: (5.0 loses sharded messages on a node's pub/sub connection).
MIN_REDIS_PY = (6, 0)
DEFAULT_PORT = 6379
#: Redirections (MOVED, ASK) followed for one write before it counts as failed.
MAX_REDIRECTS = 5
#: Pause before a write is sent again after TRYAGAIN (a multi-key slot migration step).
TRYAGAIN_PAUSE_S = 0.05
_SSL_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ClusterURL:
    """A ``rediscluster://`` URL, split."""

    raw: str
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    #: ``ssl_*`` parameters, passed to every node's connection.
    ssl_options: dict[str, str] = field(default_factory=dict)

    @property
    def masked(self) -> str:
        return mask_url(self.raw)


def is_cluster_url(url: str | None) -> bool:
    """True for ``rediscluster://...`` (with or without the ``resultkit-redis+`` prefix)."""
    if not url or "://" not in url:
        return False
    scheme = url.partition("://")[0].lower()
    return scheme.rpartition("+")[2] in CLUSTER_SCHEMES


def _host_port(text: str, url: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:7000
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ConfigurationError(f"{mask_url(url)!r}: a node has no host; write HOST:PORT")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ConfigurationError(
            f"{mask_url(url)!r}: {port_text!r} is not a port number; write HOST:PORT,HOST:PORT"
        ) from None
    return host, port


def parse_cluster_url(url: str) -> ClusterURL:
    """Split a ``rediscluster://`` URL (a ``resultkit-redis+`` prefix is allowed)."""
    raw = url.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower().rpartition("+")[2] not in CLUSTER_SCHEMES:
        raise ConfigurationError(
            f"{mask_url(raw)!r} is not a Redis Cluster URL: write rediscluster://HOST:PORT,HOST:PORT"
        )
    rest, _, query_text = rest.partition("?")
    authority, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"{mask_url(raw)!r}: a Redis Cluster has only database 0; remove /{path}"
        )
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ConfigurationError(f"{mask_url(raw)!r} names no node: write HOST:PORT[,HOST:PORT]")
    nodes = tuple(_host_port(part, raw) for part in hosts.split(",") if part.strip())
    query = dict(parse_qsl(query_text))
    unknown = set(query) - {"ssl", *_SSL_PARAMS}
    if unknown:
        raise ConfigurationError(
            f"{mask_url(raw)!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"known: ssl, {', '.join(_SSL_PARAMS)}"
        )
    ssl_options = {key: unquote(query[key]) for key in _SSL_PARAMS if key in query}
    ssl = query.get("ssl", "").lower() in _TRUE or bool(ssl_options)
    return ClusterURL(raw, nodes, username, password, ssl, ssl_options)


def cluster_errors() -> tuple[type[BaseException], ...]:
    """The redis-py errors that a retry after a pause (and a fresh slot map) may cure."""
    from redis import exceptions as e

    return (
        e.ConnectionError,
        e.TimeoutError,
        e.ClusterDownError,
        e.TryAgainError,
        e.AskError,  # and MovedError, its subclass
        e.ClusterError,
        e.SlotNotCoveredError,
        e.RedisClusterException,
    )


def is_refusal(exc: BaseException) -> bool:
    """True when the cluster refused the credentials or the command: retrying cannot help."""
    from redis import exceptions as e

    if isinstance(exc, (e.AuthenticationError, e.AuthorizationError, e.NoPermissionError)):
        return True
    text = str(exc)
    return any(word in text for word in ("WRONGPASS", "NOAUTH", "NOPERM", "invalid username"))


def make_client(url: ClusterURL, **options: Any) -> Any:
    """A redis-py ``RedisCluster`` client for *url*; *options* go to every node's connections
    (``socket_timeout``, ``retry_on_timeout``, ``max_connections``, ``ssl_*``...)."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    installed = tuple(int(part) for part in redis.__version__.split(".")[:2] if part.isdigit())
    if installed < MIN_REDIS_PY:
        raise ConfigurationError(
            f"Redis Cluster needs redis-py {'.'.join(map(str, MIN_REDIS_PY))} or later "
            f"(installed: {redis.__version__}): pip install -U 'redis>=6'"
        )
    nodes = [ClusterNode(host, port) for host, port in url.nodes]  # type: ignore[no-untyped-call]

    params: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if url.username:
        params["username"] = url.username
    if url.password is not None:
        params["password"] = url.password
    if url.ssl:
        params["ssl"] = True
        params.update(url.ssl_options)
        reqs = params.get("ssl_cert_reqs")
        if isinstance(reqs, str):
            params["ssl_cert_reqs"] = reqs.lower().removeprefix("cert_")
    return RedisCluster(startup_nodes=nodes, **params)


def supports_sharded_pubsub(client: Any) -> bool:
    """True when the cluster's servers have SPUBLISH/SSUBSCRIBE (Redis 7.0 and later)."""
    version = client.get_default_node().redis_connection.info("server")["redis_version"]
    return int(str(version).split(".")[0]) >= 7


#: How long a master that lacks replicas is written to without waiting, before it is tried again.
DEGRADED_RECHECK_S = 1.0


@dataclass(frozen=True)
class Replication:
    """How many replicas a store waits for (``WAIT``), and for how long."""

    replicas: int = 0
    timeout_s: float = 1.0


def replication_from_conf(conf: Any) -> Replication:
    """``resultkit_redis_wait_replicas`` and ``resultkit_redis_wait_timeout``, checked."""
    replicas = conf.get("resultkit_redis_wait_replicas") or 0
    timeout = conf.get("resultkit_redis_wait_timeout")
    try:
        replication = Replication(int(replicas), 1.0 if timeout is None else float(timeout))
    except (TypeError, ValueError):
        raise ConfigurationError(
            "resultkit_redis_wait_replicas must be a whole number of replicas and "
            f"resultkit_redis_wait_timeout a number of seconds (got {replicas!r}, {timeout!r})"
        ) from None
    if isinstance(replicas, bool) or replication.replicas < 0 or replication.timeout_s <= 0:
        raise ConfigurationError(
            "resultkit_redis_wait_replicas must be 0 or more and resultkit_redis_wait_timeout "
            f"more than 0 seconds (got {replicas!r}, {timeout!r})"
        )
    return replication


class ReplicaWaits:
    """The replica wait of one client, aware of masters that have too few replicas.

    A master whose replica has just taken over from it, or whose replicas are
    down, cannot give N acknowledgements; waiting the full timeout on every
    store to it would stall every worker.  After a short count, that master's
    stores wait only for the replicas that answered, for
    :data:`DEGRADED_RECHECK_S`; then one store waits for N again.
    """

    def __init__(self, replication: Replication) -> None:
        self.replication = replication
        #: node name -> (replicas that acknowledged, until when to settle for that)
        self._short: dict[str, tuple[int, float]] = {}

    def replicas_for(self, node: str) -> int:
        short = self._short.get(node)
        if short is not None and time.monotonic() < short[1]:
            return short[0]
        return self.replication.replicas

    def record(self, node: str, key: bytes | str, asked: int, acknowledged: int) -> None:
        """Note how many replicas acknowledged a store that asked for *asked*."""
        if asked < self.replication.replicas:
            return  # a store while settling for fewer tells nothing new
        if acknowledged >= asked:
            self._short.pop(node, None)
            return
        if node not in self._short:
            logger.warning(
                "master %s has only %d of the %d replicas resultkit_redis_wait_replicas asks "
                "for (result %s): results stored on it now are lost if it fails",
                node,
                acknowledged,
                self.replication.replicas,
                key.decode(errors="replace") if isinstance(key, bytes) else key,
            )
        self._short[node] = (acknowledged, time.monotonic() + DEGRADED_RECHECK_S)


def write_on_master(
    client: Any,
    key: bytes | str,
    value: bytes | str,
    ttl_s: int | None,
    *,
    sharded: bool,
    waits: ReplicaWaits | None = None,
) -> int | None:
    """SET *key* (with a TTL when *ttl_s*), publish *value* on the channel *key*, and
    ``WAIT`` for the replicas *waits* asks for; return how many acknowledged
    (``None`` when not waiting).

    A ``MOVED`` reply refreshes the slot map and goes to the new master; an
    ``ASK`` sends the write to the importing node after ``ASKING``; ``TRYAGAIN``
    pauses.  Connection errors and ``CLUSTERDOWN`` are raised (the caller
    retries), after marking the slot map for a refresh.
    """
    from redis.exceptions import AskError, ConnectionError, MovedError, TimeoutError, TryAgainError

    publish = "SPUBLISH" if sharded else "PUBLISH"
    node = client.get_node_from_key(key)
    asking = False
    for _ in range(MAX_REDIRECTS):
        connection = client.get_redis_connection(node)
        try:
            with connection.pipeline(transaction=False) as pipe:
                if asking:
                    pipe.execute_command("ASKING")
                if ttl_s:
                    pipe.set(key, value, ex=ttl_s)
                else:
                    pipe.set(key, value)
                if asking:
                    pipe.execute_command("ASKING")
                pipe.execute_command(publish, key, value)
                wanted = waits.replicas_for(node.name) if waits else 0
                if wanted:
                    timeout_ms = max(1, round(waits.replication.timeout_s * 1000))  # type: ignore[union-attr]
                    pipe.execute_command("WAIT", wanted, timeout_ms)
                replies = pipe.execute()
        except MovedError:
            client.nodes_manager.initialize()
            node, asking = client.get_node_from_key(key), False
            continue
        except AskError as exc:
            target = client.get_node(host=exc.host, port=exc.port)
            if target is None:
                client.nodes_manager.initialize()
                target = client.get_node(host=exc.host, port=exc.port)
            if target is None:
                raise
            node, asking = target, True
            continue
        except TryAgainError:
            time.sleep(TRYAGAIN_PAUSE_S)
            continue
        except (ConnectionError, TimeoutError):
            # The retry starts from a fresh slot map: a replica may have taken over.
            _refresh_quietly(client)
            raise
        if waits is None or not waits.replication.replicas:
            return None
        acknowledged = int(replies[-1]) if wanted else 0
        waits.record(node.name, key, wanted, acknowledged)
        return acknowledged
    raise MovedError(f"0 {node.host}:{node.port}")  # too many redirections: retried by the caller


def read_on_master(client: Any, command: str, key: bytes | str) -> Any:
    """Run the one-key read *command* (``get``) straight on the master of *key*'s slot.

    The cluster client's own path (slot lookup, redirections, retries) costs
    as much as the round trip itself; this goes to the master the slot map
    names, and only when that fails (a moved slot, a failover) takes the
    cluster client's path, which follows redirections and reloads the map.
    """
    from redis.exceptions import AskError, ClusterDownError, ConnectionError, TryAgainError

    try:
        node = client.get_node_from_key(key)
        return getattr(client.get_redis_connection(node), command)(key)
    except (AskError, TryAgainError, ClusterDownError, ConnectionError):
        return getattr(client, command)(key)


def _refresh_quietly(client: Any) -> None:
    """Reload the slot map; while the cluster is still failing over, try again later."""
    try:
        client.nodes_manager.initialize()
    except Exception:  # the caller's retry loop refreshes again
        logger.debug("slot map refresh failed; the next attempt refreshes again", exc_info=True)
