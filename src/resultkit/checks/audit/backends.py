"""Rules of particular backends: rpc, MySQL, Redis, dual-write, transport, URLs."""

from __future__ import annotations

import os

from ...errors import ConfigurationError
from ...report import CheckResult, Status
from ...urls import BackendKind
from .base import (
    REDIS_KINDS,
    AuditContext,
    Rule,
)


class RpcChords(Rule):
    id = "config.rpc-chords"
    kinds = frozenset({BackendKind.RPC})

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        return CheckResult.warned(
            self.id,
            "rpc:// does not support chords (a group chained to a task becomes a chord), "
            "and only the client that sent a task can read its result",
            "use redis:// or db+postgresql+psycopg:// if you use chords or read results "
            "from another process",
        )


class MysqlIsolation(Rule):
    id = "config.mysql-isolation"
    kinds = frozenset({BackendKind.SQL})

    def applies(self, ctx: AuditContext) -> bool:
        url = ctx.url
        return (
            super().applies(ctx)
            and url is not None
            and (url.sqlalchemy_url or "").startswith(("mysql", "mariadb"))
        )

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        if ctx.url is not None and ctx.url.alias == "resultkit-db":
            return CheckResult.passed(
                self.id, "resultkit-db runs every statement in autocommit: reads see commits"
            )
        options = ctx.get("database_engine_options") or {}
        level = str(options.get("isolation_level", "")).upper().replace("-", " ").replace("_", " ")
        if level != "READ COMMITTED":
            return CheckResult.warned(
                self.id,
                "MySQL's default REPEATABLE READ isolation can keep a polling "
                "AsyncResult.get() seeing PENDING after the result is stored",
                "set database_engine_options = {'isolation_level': 'READ COMMITTED'}",
            )
        return CheckResult.passed(self.id, "MySQL sessions use READ COMMITTED")


class RedisMaxConnections(Rule):
    id = "config.redis-max-connections"
    kinds = REDIS_KINDS

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        limit = ctx.get("redis_max_connections")
        concurrency = ctx.get("worker_concurrency") or os.cpu_count() or 1
        if limit is not None and int(limit) < int(concurrency):
            return CheckResult.warned(
                self.id,
                f"redis_max_connections is {limit}, below the worker concurrency of "
                f"{concurrency}: busy workers fail with 'Too many connections'",
                f"set redis_max_connections to at least {concurrency} (or leave it unset)",
            )
        return CheckResult.passed(
            self.id,
            "redis_max_connections is unset (no limit)"
            if limit is None
            else f"redis_max_connections ({limit}) covers the worker concurrency ({concurrency})",
        )


class ResultExtended(Rule):
    id = "config.result-extended"
    kinds = REDIS_KINDS | {BackendKind.SQL, BackendKind.FILE}

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        if ctx.get("result_extended"):
            return CheckResult.passed(
                self.id, "result_extended is on: task name, args, worker and queue are stored"
            )
        return CheckResult(
            self.id,
            Status.PASS,
            "info: result_extended is off, so results carry no task name, args or worker "
            "(filters by task name and per-task retention need it)",
            "set result_extended = True to store them",
            {"info": True},
        )


class InsecureTransport(Rule):
    id = "config.tls"
    kinds = REDIS_KINDS

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        url = ctx.url.raw if ctx.url else ""
        options = ctx.get("redis_backend_use_ssl") or {}
        reqs = str(ctx.url.query.get("ssl_cert_reqs", "") if ctx.url else "") or str(
            options.get("ssl_cert_reqs", "")
        )
        if reqs.upper().endswith("NONE"):
            return CheckResult.warned(
                self.id,
                "TLS without certificate checks (ssl_cert_reqs=none): anyone on the path can "
                "impersonate the server",
                "use ssl_cert_reqs=required and ssl_ca_certs=/path/to/ca.pem",
            )
        query = ctx.url.query if ctx.url else {}
        secure = (
            url.startswith(("rediss", "resultkit-redis+rediss"))
            or bool(options)
            or str(query.get("ssl", "")).lower() in ("1", "true", "yes", "on")
        )
        return CheckResult.passed(
            self.id, "TLS with certificate checks" if secure else "plain TCP (no TLS configured)"
        )


class DualWrite(Rule):
    """``resultkit_dual_write``, validated by the dual-write backend's own code."""

    id = "config.dual-write"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.get("resultkit_dual_write") is not None or ctx.kind is BackendKind.DUAL

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ...backends.dual import dual_write_settings
        from ...urls import mask_url

        try:
            settings = dual_write_settings(ctx.get("resultkit_dual_write"))
        except ConfigurationError as exc:
            return CheckResult.failed(
                self.id,
                str(exc),
                "set resultkit_dual_write = {'new': URL, 'old': URL} (and optionally "
                "write_old, read_old, old_retry_after); see docs/migration.md",
            )
        return CheckResult.passed(
            self.id,
            f"results go to {mask_url(settings['new'])}"
            + (f" and {mask_url(settings['old'])}" if settings["write_old"] else "")
            + (f"; reads fall back to {mask_url(settings['old'])}" if settings["read_old"] else ""),
        )


class UrlPasswords(Rule):
    """Passwords in URLs with URL syntax characters that are not percent-encoded."""

    id = "config.url-password"
    SETTINGS = ("result_backend", "broker_url")

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from urllib.parse import quote

        from ...urls import mask_url, unencoded_characters

        urls = [(name, ctx.get(name)) for name in self.SETTINGS]
        dual = ctx.get("resultkit_dual_write")
        if isinstance(dual, dict):
            urls += [(f"resultkit_dual_write[{side!r}]", dual.get(side)) for side in ("new", "old")]
        found, fixes = [], []
        for name, url in urls:
            if not isinstance(url, str):
                continue
            chars = unencoded_characters(url)
            if chars:
                listed = " ".join(repr(c) for c in chars)
                found.append(f"{name} ({mask_url(url)}) has {listed} unencoded in its password")
                fixes.append(", ".join(f"{quote(c, safe='')} for {c!r}" for c in chars))
        if found:
            return CheckResult.warned(
                self.id,
                "; ".join(found) + ": a driver may read a different password",
                "percent-encode the password: write "
                + "; ".join(fixes)
                + " (urllib.parse.quote(password, safe='') encodes one whole)",
            )
        return CheckResult.passed(self.id, "every password in a URL is percent-encoded")


class ReplicaWait(Rule):
    """``resultkit_redis_wait_replicas`` and ``_timeout``, as the cluster backend reads them."""

    id = "config.replica-wait"

    def applies(self, ctx: AuditContext) -> bool:
        return (
            ctx.get("resultkit_redis_wait_replicas") is not None
            or ctx.get("resultkit_redis_wait_timeout") is not None
        )

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ...cluster import replication_from_conf

        try:
            wait = replication_from_conf(ctx.conf)
        except ConfigurationError as exc:
            return CheckResult.failed(
                self.id,
                str(exc),
                "e.g. resultkit_redis_wait_replicas = 1 (see docs/redis-cluster.md)",
            )
        if ctx.kind is not BackendKind.REDIS_CLUSTER:
            return CheckResult.warned(
                self.id,
                "resultkit_redis_wait_replicas applies to resultkit-redis on a Redis Cluster only; "
                "it is ignored here",
                "remove it, or use resultkit-redis+rediscluster://...",
            )
        if not wait.replicas:
            return CheckResult.passed(self.id, "stores do not wait for replicas")
        return CheckResult.passed(
            self.id,
            f"each store waits up to {wait.timeout_s:g} s for {wait.replicas} replica(s)",
        )
