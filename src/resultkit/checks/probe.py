"""The doctor's network steps: URL, connectivity, server state, round trip, latency.

Every step takes a :class:`Probe` (the target, its parsed URL, the shared
deadline and the Celery backend once built) and returns check results.  The
round trip and the latency sample go through Celery's own backend class, so
they prove what Celery itself will do; connectivity and server state use the
raw driver, which words errors precisely and never creates tables.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..apps import Target
from ..drivers import require_driver
from ..durations import expiry_seconds
from ..errors import ConfigurationError, MissingDriver
from ..explain import explain
from ..records import Kind, as_datetime
from ..report import CheckResult, Status
from ..urls import BackendKind, BackendURL, credential_problem, parse_backend_url
from . import Deadline

__all__ = [
    "Probe",
    "check_connect",
    "check_latency",
    "check_roundtrip",
    "check_server",
    "check_url",
]

#: Upper bound for one connection attempt, whatever time is left overall.
CONNECT_TIMEOUT_S = 5.0
#: Store/fetch pairs timed by the latency check.
LATENCY_SAMPLES = 20
#: A p50 above this makes the latency check warn.
SLOW_P50_MS = 100.0
#: Result keys SCAN visits before the count becomes an estimate.
SCAN_LIMIT_KEYS = 200_000
#: Result keys whose TTL is read to find keys that never expire.
TTL_SAMPLE_KEYS = 1_000
#: Task ids written by the doctor start with this, so they can be recognised.
PROBE_ID_PREFIX = "resultkit-doctor-"

#: A non-trivial result: unicode, big integers, floats, nesting, None and booleans.
PROBE_PAYLOAD: dict[str, Any] = {
    "text": "résultkit ✓ — 結果",
    "big": 2**53 + 1,
    "ratio": 0.1 + 0.2,
    "items": [1, "two", None, True, False, {"nested": [1.5, -3]}],
    "blob": "x" * 2048,
}


class ProbeError(Exception):
    """A probe found the backend misbehaving (a wrong value read back)."""


@dataclass
class Probe:
    """State shared by the doctor's steps."""

    target: Target
    deadline: Deadline
    url: BackendURL | None = None
    backend: Any = None
    #: SQLAlchemy engine for read-only server checks (SQL backends only).
    engine: Any = None
    written: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return self.target.masked_url

    @property
    def kind(self) -> BackendKind | None:
        return self.url.kind if self.url else None

    def step_timeout(self) -> float:
        return min(CONNECT_TIMEOUT_S, max(0.5, self.deadline.remaining()))

    def fail(self, check_id: str, exc: BaseException) -> CheckResult:
        why = explain(exc, self.where, self.deadline.total_s)
        return CheckResult.failed(check_id, why.message, why.fix, reason=why.reason)

    def new_id(self) -> str:
        task_id = f"{PROBE_ID_PREFIX}{uuid.uuid4()}"
        self.written.append(task_id)
        return task_id


# --------------------------------------------------------------------------- url


def check_url(probe: Probe) -> list[CheckResult]:
    """Parse the URL, catch the usual mistakes and make sure the driver imports."""
    raw = probe.target.url
    if not raw:
        return [
            CheckResult.failed(
                "url",
                f"{probe.target.label} has no result_backend: results are not stored",
                "set result_backend, e.g. 'redis://localhost:6379/0' or "
                "'db+postgresql+psycopg://user@host/db'",
            )
        ]
    try:
        url = parse_backend_url(raw)
        _check_known_mistakes(url, probe.target)
    except ConfigurationError as exc:
        return [CheckResult.failed("url", str(exc), _fix_from(str(exc)))]
    probe.url = url
    results = [CheckResult.passed("url", f"{url.masked}: {_KIND_LABELS[url.kind]}")]
    if url.kind is BackendKind.RPC:
        broker = probe.target.app.conf.broker_url
        problem = credential_problem(broker, "urllib") if isinstance(broker, str) else None
        if problem:
            results.append(CheckResult.failed("broker", problem, _fix_from(problem)))
            return results
    try:
        require_driver(url)
    except MissingDriver as exc:
        results.append(CheckResult.failed("driver", exc.args[0], exc.fix, module=exc.module))
        return results
    except ConfigurationError as exc:
        results.append(CheckResult.failed("driver", str(exc), _fix_from(str(exc))))
        return results
    results.append(CheckResult.passed("driver", "the driver for this URL is installed"))
    return results


_KIND_LABELS = {
    BackendKind.REDIS: "a Redis result backend",
    BackendKind.REDIS_CLUSTER: "a Redis Cluster result backend (resultkit-redis)",
    BackendKind.SENTINEL: "a Redis Sentinel result backend",
    BackendKind.SQL: "a SQL result backend (SQLAlchemy)",
    BackendKind.RPC: "the RPC result backend (results travel as broker messages)",
    BackendKind.FILE: "the filesystem result backend",
    BackendKind.DUAL: "the resultkit dual-write backend",
    BackendKind.OTHER: "a Celery result backend",
}


def _fix_from(message: str) -> str:
    _, sep, fix = message.partition(": ")
    return fix if sep else "correct the result_backend URL"


def _check_known_mistakes(url: BackendURL, target: Target) -> None:
    if url.kind is BackendKind.SENTINEL:
        for chunk in url.raw.split(";"):
            path = chunk.partition("://")[2].partition("/")[2].partition("?")[0]
            if path and not path.isdigit():
                raise ConfigurationError(
                    f"sentinel URL path {path!r} is not a database number: Celery reads the "
                    "master name from result_backend_transport_options = "
                    f"{{'master_name': {path!r}}} (or ?master_name={path} for resultkit), "
                    "and the path is the database number, e.g. /0"
                )
        options = target.app.conf.result_backend_transport_options or {}
        if not options.get("master_name"):
            raise ConfigurationError(
                "a sentinel:// backend needs a master name: set "
                "result_backend_transport_options = {'master_name': 'mymaster'} "
                "(or add ?master_name=mymaster to the URL for resultkit)"
            )
    if url.scheme.startswith("rediss") or (
        url.kind is BackendKind.REDIS and url.raw.lower().split("+")[-1].startswith("rediss")
    ):
        ssl_conf = target.app.conf.redis_backend_use_ssl or {}
        if "ssl_cert_reqs" not in url.query and "ssl_cert_reqs" not in ssl_conf:
            raise ConfigurationError(
                "a rediss:// URL needs ssl_cert_reqs: add ?ssl_cert_reqs=required"
                "&ssl_ca_certs=/path/to/ca.pem (CERT_NONE disables certificate checks)"
            )


# ------------------------------------------------------------------- connect


def _apply_timeouts(probe: Probe) -> None:
    """Give drivers timeouts that fit the time left, before Celery builds the backend."""
    conf = probe.target.app.conf
    seconds = probe.step_timeout()
    kind = probe.kind
    if kind in (BackendKind.REDIS, BackendKind.SENTINEL, BackendKind.REDIS_CLUSTER):
        conf.redis_socket_connect_timeout = min(
            float(conf.redis_socket_connect_timeout or seconds), seconds
        )
        conf.redis_socket_timeout = min(float(conf.redis_socket_timeout or seconds), seconds)
        conf.redis_retry_on_timeout = False
        if kind is BackendKind.SENTINEL:
            options = dict(conf.result_backend_transport_options or {})
            sentinel_kwargs = dict(options.get("sentinel_kwargs") or {})
            sentinel_kwargs.setdefault("socket_timeout", seconds)
            sentinel_kwargs.setdefault("socket_connect_timeout", seconds)
            options["sentinel_kwargs"] = sentinel_kwargs
            conf.result_backend_transport_options = options
    elif kind is BackendKind.SQL:
        options = dict(conf.database_engine_options or {})
        options["connect_args"] = {
            **_sql_timeouts(probe.url, seconds),
            **(options.get("connect_args") or {}),
        }
        conf.database_engine_options = options
    elif kind is BackendKind.RPC:
        conf.broker_connection_timeout = seconds
        conf.broker_connection_retry = False
        conf.broker_connection_max_retries = 1


def _sql_timeouts(url: BackendURL | None, seconds: float) -> dict[str, Any]:
    name = (url.sqlalchemy_url or "") if url else ""
    if name.startswith("postgresql"):
        return {"connect_timeout": max(2, int(seconds))}
    if name.startswith(("mysql", "mariadb")):
        whole = max(1, int(seconds))
        return {"connect_timeout": whole, "read_timeout": whole, "write_timeout": whole}
    if name.startswith("sqlite"):
        return {"timeout": seconds}
    return {}


def _sql_engine(probe: Probe) -> Any:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    assert probe.url is not None
    assert probe.url.sqlalchemy_url is not None
    options = dict(probe.target.app.conf.database_engine_options or {})
    for pool_only in ("pool_size", "max_overflow", "pool_timeout", "pool_recycle"):
        options.pop(pool_only, None)
    return sa.create_engine(probe.url.sqlalchemy_url, poolclass=NullPool, **options)


def build_backend(probe: Probe) -> Any:
    """Build Celery's backend for the target, with timeouts that fit the deadline."""
    _apply_timeouts(probe)
    return probe.target.app._get_backend()


def check_connect(probe: Probe) -> CheckResult:
    """Reach the server with the raw driver and explain precisely why not."""
    kind = probe.kind
    started = time.perf_counter()
    if kind is BackendKind.SQL:
        import sqlalchemy as sa

        # Celery's backend is built later, by the round trip: building it may
        # create the tables, and the server checks must see them as they are.
        probe.engine = _sql_engine(probe)
        with probe.engine.connect() as conn:
            version = conn.execute(sa.text(_version_sql(probe.engine.dialect.name))).scalar()
        detail = server_label(probe.engine.dialect.name, str(version))
    elif kind in (BackendKind.REDIS, BackendKind.SENTINEL):
        probe.backend = build_backend(probe)
        client = probe.backend.client
        client.ping()
        detail = f"Redis {client.info('server').get('redis_version', '?')}"
    elif kind is BackendKind.REDIS_CLUSTER:
        from redis.exceptions import RedisClusterException

        probe.backend = build_backend(probe)
        try:
            client = probe.backend.client
        except RedisClusterException as exc:
            if (
                "cluster mode is not enabled" in str(exc).lower()
                or "cluster support" in str(exc).lower()
            ):
                return CheckResult.failed(
                    "connect",
                    f"{probe.where} points at a Redis server that is not in cluster mode",
                    "for a single Redis use resultkit-redis+redis://HOST:PORT/0; for a cluster, "
                    "name its nodes (cluster-enabled yes)",
                    reason="not-a-cluster",
                )
            raise
        node = client.get_default_node()
        version = client.get_redis_connection(node).info("server").get("redis_version", "?")
        detail = f"a Redis Cluster of {len(client.get_primaries())} masters (Redis {version})"
    elif kind is BackendKind.RPC:
        probe.backend = build_backend(probe)
        with probe.target.app.connection_for_write() as conn:
            conn.connect()
            detail = f"broker {conn.as_uri()}"
    else:
        probe.backend = build_backend(probe)
        detail = type(probe.backend).__name__
    ms = (time.perf_counter() - started) * 1000
    return CheckResult.passed("connect", f"connected to {detail} in {ms:.0f} ms", ms=round(ms, 1))


def server_label(dialect: str, version: str) -> str:
    """The server's name and version, once: ``PostgreSQL 16.2``, ``MariaDB 10.11.6``."""
    if dialect == "postgresql":
        return " ".join(version.split()[:2])  # "PostgreSQL 16.2 (Debian ...) on x86_64..."
    if dialect in ("mysql", "mariadb"):
        number, _, rest = version.partition("-")
        return f"{'MariaDB' if 'mariadb' in rest.lower() else 'MySQL'} {number}"
    if dialect == "sqlite":
        return f"SQLite {version}"
    return f"{dialect} {version.split()[0] if version.split() else ''}".strip()


def _version_sql(dialect: str) -> str:
    return "SELECT sqlite_version()" if dialect == "sqlite" else "SELECT version()"


# -------------------------------------------------------------- server state


def check_server(probe: Probe) -> list[CheckResult]:
    """Read the server's own state: eviction, persistence, tables, backlog."""
    if probe.kind in (BackendKind.REDIS, BackendKind.SENTINEL):
        return _redis_state(probe)
    if probe.kind is BackendKind.REDIS_CLUSTER:
        return _cluster_state(probe)
    if probe.kind is BackendKind.SQL:
        return _sql_state(probe)
    if probe.kind is BackendKind.FILE:
        return _file_state(probe)
    return []


def _expires_s(probe: Probe) -> float | None:
    return expiry_seconds(probe.target.app.conf.result_expires)


#: How bad each status is, to report the worst node of a cluster.
_SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


def _cluster_state(probe: Probe) -> list[CheckResult]:
    """The cluster's health, then each master's Redis checks, worst master first."""
    cluster = probe.backend.client
    results = _cluster_health(cluster)
    per_check: dict[str, list[tuple[str, CheckResult]]] = {}
    for node in cluster.get_primaries():
        try:
            found = _redis_state(probe, cluster.get_redis_connection(node))
        except Exception as exc:  # an unreachable master is reported by cluster.nodes
            found = [probe.fail("redis.node", exc)]
        for result in found:
            per_check.setdefault(result.id, []).append((node.name, result))
    for check_id, found_on in per_check.items():
        name, worst = max(found_on, key=lambda item: _SEVERITY[item[1].status])
        if check_id == "redis.result-keys":
            keys = sum(int(r.data.get("keys", 0)) for _, r in found_on)
            no_ttl = sum(int(r.data.get("no_ttl_in_sample", 0)) for _, r in found_on)
            sampled = sum(int(r.data.get("sampled", 0)) for _, r in found_on)
            message = f"{keys:,} result keys on {len(found_on)} masters, {sampled:,} sampled"
            if no_ttl:
                message += f"; {no_ttl} sampled keys have no TTL (worst: {name})"
            results.append(CheckResult(check_id, worst.status, message, worst.fix, {"keys": keys}))
            continue
        message = (
            f"{name}: {worst.message}"
            if worst.status is not Status.PASS
            else (f"every master: {worst.message}" if len(found_on) > 1 else worst.message)
        )
        results.append(CheckResult(check_id, worst.status, message, worst.fix, worst.data))
    return results


def _cluster_health(cluster: Any) -> list[CheckResult]:
    """CLUSTER INFO and NODES: state, slot coverage, nodes down, masters without replicas."""
    node = cluster.get_default_node()
    connection = cluster.get_redis_connection(node)
    info = connection.execute_command("CLUSTER INFO")
    if isinstance(info, bytes):
        info = info.decode()
    if isinstance(info, str):
        info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    state = str(info.get("cluster_state", "?"))
    covered = int(info.get("cluster_slots_ok", 0))
    results: list[CheckResult] = []
    if state != "ok" or covered < 16384:
        results.append(
            CheckResult.failed(
                "cluster.state",
                f"cluster_state is {state}, {covered:,} of 16,384 slots served: "
                "stores and reads of results in the other slots fail (CLUSTERDOWN)",
                "bring the failed master back or let its replica take over; "
                "redis-cli --cluster fix HOST:PORT covers slots nobody serves",
                state=state,
                slots_ok=covered,
            )
        )
    else:
        results.append(
            CheckResult.passed(
                "cluster.state", "cluster_state ok, all 16,384 slots served", slots_ok=covered
            )
        )
    nodes = cluster.cluster_nodes()
    down = sorted(
        address
        for address, entry in nodes.items()
        if {"fail", "fail?", "noaddr"} & set(str(entry.get("flags", "")).split(","))
        or not entry.get("connected", True)
    )
    masters = {
        entry["node_id"]: address
        for address, entry in nodes.items()
        if "master" in str(entry.get("flags", "")) and "fail" not in str(entry.get("flags", ""))
    }
    replicas: dict[str, int] = dict.fromkeys(masters, 0)
    for entry in nodes.values():
        flags = str(entry.get("flags", ""))
        if "slave" in flags and "fail" not in flags and entry.get("master_id") in replicas:
            replicas[entry["master_id"]] += 1
    lonely = sorted(masters[m] for m, count in replicas.items() if count == 0)
    layout = f"{len(masters)} masters, {sum(replicas.values())} replicas"
    if down:
        results.append(
            CheckResult.failed(
                "cluster.nodes",
                f"{layout}; unreachable or failed: {', '.join(down)}",
                "restart those nodes (they rejoin by their nodes.conf), or remove them with "
                "redis-cli --cluster del-node",
                down=down,
            )
        )
    elif lonely:
        results.append(
            CheckResult.warned(
                "cluster.nodes",
                f"{layout}; without a replica: {', '.join(lonely)} (its results are lost "
                "with it, and resultkit_redis_wait_replicas cannot be met)",
                "add a replica to each: redis-cli --cluster add-node NEW:PORT HOST:PORT "
                "--cluster-slave --cluster-master-id ID",
                without_replica=lonely,
            )
        )
    else:
        results.append(
            CheckResult.passed(
                "cluster.nodes", f"{layout}; every node reachable, each master replicated"
            )
        )
    return results


def _redis_state(probe: Probe, client: Any = None) -> list[CheckResult]:
    import redis

    client = client if client is not None else probe.backend.client
    results: list[CheckResult] = []
    memory = client.info("memory")
    policy = memory.get("maxmemory_policy", "noeviction")
    if policy.startswith("allkeys"):
        results.append(
            CheckResult.failed(
                "redis.maxmemory-policy",
                f"maxmemory-policy is {policy}: when memory is full Redis evicts result keys, "
                "so finished tasks read back as PENDING",
                "CONFIG SET maxmemory-policy noeviction (or volatile-ttl), and put the broker "
                "and results on an instance of their own",
                policy=policy,
            )
        )
    elif policy.startswith("volatile"):
        results.append(
            CheckResult.warned(
                "redis.maxmemory-policy",
                f"maxmemory-policy is {policy}: result keys carry a TTL, so they can be "
                "evicted before they expire when memory is full",
                "prefer noeviction for a result database, and size maxmemory for result_expires",
                policy=policy,
            )
        )
    else:
        results.append(
            CheckResult.passed(
                "redis.maxmemory-policy", f"maxmemory-policy is {policy}", policy=policy
            )
        )
    try:
        save = client.config_get("save").get("save", "")
        appendonly = client.config_get("appendonly").get("appendonly", "no")
    except redis.ResponseError:
        results.append(
            CheckResult.skipped(
                "redis.persistence", "CONFIG GET is not allowed on this server (managed Redis)"
            )
        )
    else:
        if not save and appendonly != "yes":
            results.append(
                CheckResult.warned(
                    "redis.persistence",
                    "persistence is off (no RDB snapshots, no AOF): a restart loses every result",
                    "CONFIG SET appendonly yes (and CONFIG REWRITE), if results must survive "
                    "a restart",
                )
            )
        else:
            how = "AOF" if appendonly == "yes" else f"RDB snapshots ({save})"
            results.append(CheckResult.passed("redis.persistence", f"persistence: {how}"))
    used = int(memory.get("used_memory", 0))
    limit = int(memory.get("maxmemory", 0))
    human = memory.get("used_memory_human", f"{used} B")
    if limit and used > 0.9 * limit:
        results.append(
            CheckResult.warned(
                "redis.memory",
                f"{human} used of maxmemory {memory.get('maxmemory_human', limit)} "
                f"({used / limit:.0%})",
                "lower result_expires, run `resultkit cleanup --fix-missing-ttl`, "
                "or raise maxmemory",
                used_bytes=used,
                maxmemory_bytes=limit,
            )
        )
    else:
        cap = f" of {memory.get('maxmemory_human')}" if limit else " (no maxmemory limit)"
        results.append(
            CheckResult.passed(
                "redis.memory", f"{human} used{cap}", used_bytes=used, maxmemory_bytes=limit
            )
        )
    results.append(_redis_keys(probe, client))
    return results


def _redis_keys(probe: Probe, client: Any) -> CheckResult:
    prefix = probe.backend.task_keyprefix
    if isinstance(prefix, bytes):
        prefix = prefix.decode()
    budget_end = time.monotonic() + max(0.2, probe.deadline.remaining() * 0.3)
    count = 0
    sample: list[bytes] = []
    complete = True
    from ..stores.redis import match_prefix

    for key in client.scan_iter(match=match_prefix(prefix), count=1000):
        count += 1
        if len(sample) < TTL_SAMPLE_KEYS:
            sample.append(key)
        if count >= SCAN_LIMIT_KEYS or (count % 1000 == 0 and time.monotonic() > budget_end):
            complete = False
            break
    pipe = client.pipeline(transaction=False)
    for key in sample:
        pipe.ttl(key)
    no_ttl = sum(1 for ttl in pipe.execute() if ttl == -1)
    counted = f"{count:,}" if complete else f"at least {count:,} (estimated: scan stopped early)"
    data = {"keys": count, "exact": complete, "sampled": len(sample), "no_ttl_in_sample": no_ttl}
    if no_ttl:
        return CheckResult.warned(
            "redis.result-keys",
            f"{counted} result keys; {no_ttl} of {len(sample)} sampled never expire (no TTL)",
            "run `resultkit cleanup --fix-missing-ttl` to give them the lifetime result_expires "
            "calls for",
            **data,
        )
    return CheckResult.passed(
        "redis.result-keys",
        f"{counted} result keys; all {len(sample)} sampled have a TTL",
        **data,
    )


def _sql_state(probe: Probe) -> list[CheckResult]:
    import sqlalchemy as sa

    from ..stores.sql import celery_table_names

    tables = celery_table_names(probe.target.app.conf)
    (task_schema, task_table), (group_schema, group_table) = tables[Kind.TASK], tables[Kind.GROUP]
    inspector = sa.inspect(probe.engine)
    missing = [
        name if schema is None else f"{schema}.{name}"
        for schema, name in ((task_schema, task_table), (group_schema, group_table))
        if not inspector.has_table(name, schema=schema)
    ]
    if missing:
        return [
            CheckResult.warned(
                "sql.tables",
                f"tables {', '.join(missing)} do not exist yet: Celery creates them on first use",
                "nothing to do if the database user may CREATE TABLE; otherwise create them "
                "(set database_create_tables_at_setup = True and start a worker once)",
                missing=missing,
            )
        ]
    results = [CheckResult.passed("sql.tables", f"tables {task_table} and {group_table} exist")]
    indexed = any(
        list(index.get("column_names") or []) == ["date_done"]
        for index in inspector.get_indexes(task_table, schema=task_schema)
    )
    if indexed:
        results.append(CheckResult.passed("sql.date-done-index", "date_done is indexed"))
    else:
        qualified = task_table if task_schema is None else f"{task_schema}.{task_table}"
        results.append(
            CheckResult.warned(
                "sql.date-done-index",
                f"{qualified}.date_done has no index (tables created by older Celery "
                "versions lack it): every cleanup scans the whole table",
                f"CREATE INDEX ix_{task_table}_date_done ON {qualified} (date_done)",
            )
        )
    table = sa.table(task_table, sa.column("date_done"), schema=task_schema)
    with probe.engine.connect() as conn:
        total, oldest = conn.execute(
            sa.select(sa.func.count(), sa.func.min(table.c.date_done))
        ).one()
        expires = _expires_s(probe)
        expired = 0
        if expires:
            cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=expires)
            expired = conn.execute(
                sa.select(sa.func.count()).where(table.c.date_done < cutoff)
            ).scalar_one()
    oldest = as_datetime(oldest)  # SQLite returns text
    oldest_text = f", oldest from {oldest:%Y-%m-%d %H:%M} UTC" if oldest else ""
    results.append(
        CheckResult.passed(
            "sql.rows",
            f"{total:,} task results{oldest_text}",
            rows=total,
            oldest=oldest.isoformat() if oldest else None,
        )
    )
    if expired:
        results.append(
            CheckResult.warned(
                "sql.expired-rows",
                f"{expired:,} rows are past result_expires and still stored: nothing is "
                "cleaning up",
                "run `resultkit cleanup` now, and schedule it (cron) or run celery beat",
                rows=expired,
            )
        )
    elif expires:
        results.append(
            CheckResult.passed("sql.expired-rows", "no rows are past result_expires", rows=0)
        )
    return results


def _file_state(probe: Probe) -> list[CheckResult]:
    path = probe.backend.path.decode()
    prefix = probe.backend.task_keyprefix
    prefix = prefix.decode() if isinstance(prefix, bytes) else prefix
    expires = _expires_s(probe)
    now = time.time()
    count = expired = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                count += 1
                if expires and now - entry.stat().st_mtime > expires:
                    expired += 1
    if expired:
        return [
            CheckResult.warned(
                "file.results",
                f"{count:,} result files in {path}; {expired:,} are past result_expires",
                "run `resultkit cleanup`, or celery beat (its backend_cleanup task)",
                files=count,
                expired=expired,
            )
        ]
    return [
        CheckResult.passed(
            "file.results", f"{count:,} result files in {path}", files=count, expired=0
        )
    ]


# ----------------------------------------------------------------- round trip


def check_encryption(probe: Probe) -> list[CheckResult]:
    """The app's encryption keys, and stored results sealed under keys it does not have."""
    from ..encryption import load_settings, undecryptable
    from ..errors import ConfigurationError
    from ..stores import open_store

    try:
        ring = load_settings(conf=probe.target.app.conf).keys
    except ConfigurationError as exc:
        return [
            CheckResult.failed(
                "encryption.keys",
                f"resultkit-encrypted cannot be used: {exc}",
                "set resultkit_encryption_keys (or RESULTKIT_ENCRYPTION_KEYS) in every worker "
                "and client; see docs/encryption.md",
            )
        ]
    checks = [
        CheckResult.passed(
            "encryption.keys",
            f"{len(ring.keys)} encryption key(s); new results sealed under {ring.primary.label}",
            keys=ring.labels,
        )
    ]
    store = open_store(probe.target.url, probe.target.app)
    try:
        sealed = store.sealed_keys()
    finally:
        store.close()
    lost = undecryptable(sealed, ring)
    older = sum(n for k, n in sealed.items() if k != ring.primary.label and k not in lost)
    if lost:
        listed = ", ".join(f"{k} ({n:,})" for k, n in sorted(lost.items()))
        checks.append(
            CheckResult.warned(
                "encryption.unreadable",
                f"{sum(lost.values()):,} stored results are encrypted under keys this process "
                f"does not have, so they cannot be read: {listed}",
                "add the retired key back to resultkit_encryption_keys (after the newest), or "
                "delete those results with resultkit cleanup once nobody needs them",
                unreadable=lost,
            )
        )
    else:
        note = (
            f"; {older:,} under older keys (re-encrypt with resultkit migrate --target-keys-env)"
            if older
            else ""
        )
        checks.append(
            CheckResult.passed(
                "encryption.unreadable",
                f"every encrypted result ({sum(sealed.values()):,}) can be read{note}",
                by_key=dict(sealed),
            )
        )
    return checks


def check_roundtrip(probe: Probe) -> list[CheckResult]:
    """Store and read back a success, a failure and a group; forget and confirm."""
    if probe.backend is None:
        probe.backend = build_backend(probe)
    if probe.kind is BackendKind.RPC:
        return _rpc_roundtrip(probe)
    from celery import states
    from celery.result import AsyncResult, GroupResult

    backend = probe.backend
    app = probe.target.app
    results: list[CheckResult] = []

    ok_id = probe.new_id()
    backend.store_result(ok_id, PROBE_PAYLOAD, states.SUCCESS)
    meta = backend.get_task_meta(ok_id, cache=False)
    _expect(meta["status"] == states.SUCCESS, f"stored SUCCESS, read back {meta['status']}")
    _expect(meta["result"] == PROBE_PAYLOAD, "the result read back differs from the one stored")
    results.append(
        CheckResult.passed("roundtrip.success", "a SUCCESS result was stored and read back equal")
    )

    fail_id = probe.new_id()
    error = ValueError("resultkit doctor: probe failure 42")
    backend.mark_as_failure(fail_id, error, traceback="Traceback (probe)\nValueError")
    meta = backend.get_task_meta(fail_id, cache=False)
    exc = meta["result"]
    _expect(meta["status"] == states.FAILURE, f"stored FAILURE, read back {meta['status']}")
    _expect(
        type(exc).__name__ == "ValueError" and str(exc) == str(error),
        f"stored ValueError({str(error)!r}), read back {type(exc).__name__}({exc!s})",
    )
    results.append(
        CheckResult.passed(
            "roundtrip.failure",
            "a FAILURE was stored and read back with its exception type and message",
        )
    )

    group_id = probe.new_id()
    members = [AsyncResult(ok_id, app=app), AsyncResult(fail_id, app=app)]
    backend.save_group(group_id, GroupResult(group_id, members, app=app))
    restored = backend.restore_group(group_id, cache=False)
    _expect(restored is not None, "a saved group could not be restored")
    _expect(
        [r.id for r in restored.results] == [ok_id, fail_id],
        "the restored group has different members",
    )
    backend.delete_group(group_id)
    _expect(backend.restore_group(group_id, cache=False) is None, "a deleted group is still there")
    results.append(
        CheckResult.passed("roundtrip.group", "a group was saved, restored, and deleted")
    )

    backend.forget(ok_id)
    backend.forget(fail_id)
    for task_id in (ok_id, fail_id):
        state = backend.get_task_meta(task_id, cache=False)["status"]
        _expect(state == states.PENDING, f"a forgotten result still reads as {state}")
    results.append(CheckResult.passed("roundtrip.forget", "forgotten results are gone"))
    return results


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ProbeError(message)


@contextmanager
def _rpc_reply_queue(probe: Probe) -> Iterator[Callable[[str, Any, str], Any]]:
    """Declare the reply queue, yield a store+fetch function, delete the queue after."""
    from celery.app.task import Context

    backend = probe.backend
    app = probe.target.app
    with app.producer_or_acquire() as producer:
        backend.on_task_call(producer, "resultkit-doctor")

    def store_and_fetch(task_id: str, value: Any, state: str) -> Any:
        request = Context(id=task_id, reply_to=backend.oid, correlation_id=task_id)
        if state == "FAILURE":
            backend.mark_as_failure(task_id, value, request=request, call_errbacks=False)
        else:
            backend.store_result(task_id, value, state, request=request)
        return backend.get_task_meta(task_id)

    try:
        yield store_and_fetch
    finally:
        with app.connection_for_write() as conn:
            backend.binding(conn.default_channel).delete()


def _rpc_roundtrip(probe: Probe) -> list[CheckResult]:
    from celery import states

    with _rpc_reply_queue(probe) as store_and_fetch:
        meta = store_and_fetch(probe.new_id(), PROBE_PAYLOAD, states.SUCCESS)
        _expect(meta["status"] == states.SUCCESS, f"sent SUCCESS, received {meta['status']}")
        _expect(meta["result"] == PROBE_PAYLOAD, "the result received differs from the one sent")
        error = ValueError("resultkit doctor: probe failure 42")
        meta = store_and_fetch(probe.new_id(), error, states.FAILURE)
        exc = meta["result"]
        _expect(
            type(exc).__name__ == "ValueError" and str(exc) == str(error),
            f"sent ValueError, received {type(exc).__name__}({exc!s})",
        )
    return [
        CheckResult.passed(
            "roundtrip.success", "a SUCCESS result went through the broker and came back equal"
        ),
        CheckResult.passed(
            "roundtrip.failure",
            "a FAILURE went through the broker and came back with its exception",
        ),
        CheckResult.skipped("roundtrip.group", "rpc:// stores no groups"),
        CheckResult.skipped("roundtrip.forget", "rpc:// stores nothing to forget"),
    ]


# -------------------------------------------------------------------- latency


def _percentile(samples: list[float], q: float) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def check_latency(probe: Probe) -> CheckResult:
    """Time store and fetch over a small sample, within the time left."""
    from celery import states

    stores: list[float] = []
    fetches: list[float] = []
    stop_at = time.monotonic() + probe.deadline.remaining() * 0.5
    payload = {"value": "x" * 256}

    def sample(store_and_fetch: Callable[[str, Any, str], Any] | None) -> None:
        backend = probe.backend
        for _ in range(LATENCY_SAMPLES):
            if stores and time.monotonic() > stop_at:
                break
            task_id = probe.new_id()
            if store_and_fetch is not None:
                started = time.perf_counter()
                store_and_fetch(task_id, payload, states.SUCCESS)
                stores.append((time.perf_counter() - started) * 1000)
                continue
            started = time.perf_counter()
            backend.store_result(task_id, payload, states.SUCCESS)
            stored = time.perf_counter()
            backend.get_task_meta(task_id, cache=False)
            fetched = time.perf_counter()
            stores.append((stored - started) * 1000)
            fetches.append((fetched - stored) * 1000)
            backend.forget(task_id)

    if probe.kind is BackendKind.RPC:
        with _rpc_reply_queue(probe) as store_and_fetch:
            sample(store_and_fetch)
        label = "send+receive"
    else:
        sample(None)
        label = "store"
    figures = {
        f"{label}_p50_ms": round(_percentile(stores, 50), 2),
        f"{label}_p95_ms": round(_percentile(stores, 95), 2),
        f"{label}_max_ms": round(max(stores), 2),
        "samples": len(stores),
    }
    text = (
        f"{label} p50 {figures[f'{label}_p50_ms']:.1f} ms, p95 {figures[f'{label}_p95_ms']:.1f} "
        f"ms, max {figures[f'{label}_max_ms']:.1f} ms"
    )
    slowest = figures[f"{label}_p50_ms"]
    if fetches:
        figures.update(
            fetch_p50_ms=round(_percentile(fetches, 50), 2),
            fetch_p95_ms=round(_percentile(fetches, 95), 2),
            fetch_max_ms=round(max(fetches), 2),
        )
        text += (
            f"; fetch p50 {figures['fetch_p50_ms']:.1f} ms, p95 {figures['fetch_p95_ms']:.1f} ms,"
            f" max {figures['fetch_max_ms']:.1f} ms"
        )
        slowest = max(slowest, figures["fetch_p50_ms"])
    text += f" ({len(stores)} samples)"
    if slowest > SLOW_P50_MS:
        return CheckResult(
            "latency",
            Status.WARN,
            f"slow: {text}",
            "check the network round trip to the server and its load; for SQL, "
            "resultkit-db keeps pooled connections instead of one per operation",
            figures,
        )
    return CheckResult("latency", Status.PASS, text, "", figures)


def cleanup(probe: Probe) -> None:
    """Forget every result the probe wrote (best effort: a failure here changes nothing)."""
    if probe.backend is None or probe.kind is BackendKind.RPC:
        return
    for task_id in probe.written:
        try:
            probe.backend.forget(task_id)
        except Exception:
            return
