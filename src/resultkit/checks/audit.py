"""The configuration audit: mistakes visible in the settings alone, no connection needed.

Each rule is a small object with an ``id``, a test of whether it applies to a
backend kind, and an ``evaluate`` method returning one :class:`CheckResult`
(``pass`` when the setting is sound).  ``resultkit doctor`` and
``resultkit config check`` run the same rules.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from ..durations import expiry_seconds, format_duration
from ..errors import ConfigurationError
from ..report import CheckResult, Status
from ..urls import BackendKind, BackendURL

__all__ = ["RULES", "AuditContext", "Rule", "audit", "check_settings", "known_settings"]

#: Settings resultkit itself reads from the app's configuration.
RESULTKIT_SETTINGS = frozenset(
    {
        "resultkit_retention",
        "resultkit_dual_write",
        "resultkit_encryption_keys",
        "resultkit_encryption_serializer",
        "resultkit_encryption_compression",
        "resultkit_poll_interval",
        "resultkit_redis_wait_replicas",
        "resultkit_redis_wait_timeout",
    }
)

#: Settings that only recent Celery releases read, with the release that added them.
NEWER_CELERY_SETTINGS = {
    "result_compression": "5.7",
    "result_failure_expires": "5.7",
    "result_chord_expires": "5.7",
}

#: Settings that are really Celery's but never in its defaults table.
_EXTRA_KNOWN = frozenset({"deprecated_settings"})


def known_settings() -> frozenset[str]:
    """Every setting name this Celery understands, new and old style, plus resultkit's."""
    from celery.app.defaults import _TO_OLD_KEY, NAMESPACES, flatten

    names = {key for key, _ in flatten(NAMESPACES)}
    names.update(old.lower() for old in _TO_OLD_KEY.values())
    return frozenset(names | RESULTKIT_SETTINGS | _EXTRA_KNOWN)


@dataclass
class AuditContext:
    """What the rules look at: the user's own settings and the effective ones."""

    #: Settings the user set (no defaults), as the app holds them.
    user_settings: Mapping[str, Any]
    #: The effective configuration (``app.conf``), defaults included.
    conf: Mapping[str, Any]
    url: BackendURL | None
    celery_version: str

    @property
    def kind(self) -> BackendKind | None:
        return self.url.kind if self.url else None

    @classmethod
    def from_app(cls, app: Any, url: BackendURL | None) -> AuditContext:
        """Audit the configuration of a Celery app."""
        import celery

        return cls(
            user_settings=app.conf.table(with_defaults=False, censored=False),
            conf=app.conf,
            url=url,
            celery_version=celery.__version__,
        )

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.conf.get(key, default)
        except Exception:  # a value Celery cannot even read is the rule's to report
            return default


class Rule:
    """One audit rule."""

    id: ClassVar[str]
    #: Backend kinds the rule applies to; empty means every kind.
    kinds: ClassVar[frozenset[BackendKind]] = frozenset()

    def applies(self, ctx: AuditContext) -> bool:
        return not self.kinds or ctx.kind in self.kinds

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        raise NotImplementedError


def _seconds(value: Any) -> float | None:
    """Lenient: a value of the wrong type is the types rule's to report."""
    try:
        return expiry_seconds(value)
    except ConfigurationError:
        return None


def _invalid_expires(rule_id: str, ctx: AuditContext) -> CheckResult | None:
    """A failed check when ``result_expires`` is no lifetime at all (e.g. ``"1 day"``)."""
    try:
        expiry_seconds(ctx.get("result_expires"))
    except ConfigurationError as exc:
        return CheckResult.failed(
            rule_id, str(exc), "result_expires is a number of seconds, a timedelta or None"
        )
    return None


def _looks_like_celery(key: str, known: Iterable[str]) -> bool:
    prefix = key.split("_", 1)[0] + "_"
    return any(k.startswith(prefix) for k in known)


class UnknownSetting(Rule):
    id = "config.unknown-setting"

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        known = known_settings()
        problems: list[str] = []
        fixes: list[str] = []
        newer: list[str] = []
        for key in sorted(ctx.user_settings):
            if key.startswith("_"):
                continue
            name = key.lower()
            if name.startswith("celery_") and name[7:] in known:
                name = name[7:]  # Django-style CELERY_ namespace
            if name in known:
                continue
            if name in NEWER_CELERY_SETTINGS:
                newer.append(key)
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            if close:
                problems.append(f"{key} (did you mean {close[0]}?)")
                fixes.append(f"rename {key} to {close[0]}")
            elif _looks_like_celery(name, known):
                problems.append(key)
                fixes.append(f"remove {key}: Celery has no such setting and ignores it")
        if newer:
            problems.extend(
                f"{key} (read by Celery {NEWER_CELERY_SETTINGS[key.lower()]}+, "
                f"this is Celery {ctx.celery_version})"
                for key in newer
            )
            fixes.append(f"upgrade Celery to {max(NEWER_CELERY_SETTINGS.values())} or remove it")
        if problems:
            return CheckResult.failed(
                self.id,
                "settings Celery does not know, so it ignores them: " + "; ".join(problems),
                "; ".join(fixes),
                settings=[p.split(" ")[0] for p in problems],
            )
        return CheckResult.passed(self.id, "every setting is one Celery knows")


def _accept_content(ctx: AuditContext) -> set[str]:
    from kombu.serialization import registry

    accept = ctx.get("result_accept_content")
    if accept is None:
        accept = ctx.get("accept_content") or ["json"]
    types = set()
    for name in accept:
        types.add(name if "/" in name else registry.name_to_type.get(name, name))
    return types


class PickleAccepted(Rule):
    id = "config.pickle"

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        pickle_type = "application/x-python-serialize"
        uses = ctx.get("result_serializer") == "pickle"
        accepts = pickle_type in _accept_content(ctx)
        if uses or accepts:
            what = "results are serialized with pickle" if uses else "pickle results are accepted"
            return CheckResult.warned(
                self.id,
                f"{what}: anyone who can write to the result backend can run code in every "
                "client that reads a result",
                "set result_serializer = 'json' and remove 'pickle' from result_accept_content "
                "and accept_content",
            )
        return CheckResult.passed(self.id, "pickle is neither used nor accepted for results")


class SerializerAccepted(Rule):
    id = "config.serializer-accepted"

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from kombu.serialization import registry

        serializer = ctx.get("result_serializer") or "json"
        content_type = registry.name_to_type.get(serializer)
        if content_type is None:
            return CheckResult.failed(
                self.id,
                f"result_serializer {serializer!r} is not registered with kombu",
                "use json, msgpack, yaml or pickle, or import the module that registers it "
                "in every worker and client",
            )
        accepted = _accept_content(ctx)
        if content_type not in accepted:
            return CheckResult.failed(
                self.id,
                f"results are written as {serializer} but clients accept only "
                f"{', '.join(sorted(accepted))}: every AsyncResult.get() raises ContentDisallowed",
                f"add {serializer!r} to result_accept_content",
            )
        return CheckResult.passed(self.id, f"result_serializer {serializer!r} is accepted")


#: The kinds of backend that Celery's redis_* settings apply to.
REDIS_KINDS = frozenset({BackendKind.REDIS, BackendKind.SENTINEL, BackendKind.REDIS_CLUSTER})


class RedisExpiry(Rule):
    id = "config.result-expires"
    kinds = REDIS_KINDS

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        invalid = _invalid_expires(self.id, ctx)
        if invalid is not None:
            return invalid
        seconds = _seconds(ctx.get("result_expires"))
        if not seconds:
            return CheckResult.warned(
                self.id,
                "result_expires is disabled: result keys never expire and Redis memory "
                "grows until it evicts or refuses writes",
                "set result_expires = 86400 (seconds, or a timedelta) or a retention policy",
            )
        return CheckResult.passed(
            self.id, f"result keys expire after {format_duration(seconds)}", seconds=seconds
        )


class SqlCleanup(Rule):
    id = "config.sql-cleanup"
    kinds = frozenset({BackendKind.SQL})

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        invalid = _invalid_expires(self.id, ctx)
        if invalid is not None:
            return invalid
        seconds = _seconds(ctx.get("result_expires"))
        cron = "or run `resultkit cleanup` from cron"
        if not seconds:
            return CheckResult.warned(
                self.id,
                "result_expires is disabled: rows in the results table are never deleted",
                f"set result_expires = 86400 and run celery beat, {cron}",
            )
        if not ctx.get("beat_schedule"):
            return CheckResult.warned(
                self.id,
                f"result_expires is {format_duration(seconds)} but no beat schedule is "
                "configured: Celery deletes expired rows only from beat's "
                "celery.backend_cleanup task, so the table grows without bound",
                f"run `celery beat` alongside the workers, {cron}",
            )
        return CheckResult.passed(
            self.id,
            "a beat schedule is configured: beat runs celery.backend_cleanup "
            f"{_cleanup_schedule(ctx.get('beat_schedule'))} (make sure beat is running)",
        )


def _cleanup_schedule(schedule: Any) -> str:
    """How often beat runs ``celery.backend_cleanup``: the user's own entry, else
    the one Celery adds (daily at 04:00, when result_expires is set)."""
    entries = schedule.values() if isinstance(schedule, Mapping) else ()
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("task") == "celery.backend_cleanup":
            return _describe_schedule(entry.get("schedule"))
    return "daily at 04:00 (the entry Celery adds; give it one of your own to change that)"


def _describe_schedule(value: Any) -> str:
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        return f"every {format_duration(seconds)}"
    fields = [getattr(value, f"_orig_{name}", None) for name in _CRONTAB_FIELDS]
    if all(f is not None for f in fields):
        return f"on the crontab '{' '.join(str(f) for f in fields)}'"
    every = getattr(value, "run_every", None)
    if isinstance(every, timedelta):
        return f"every {format_duration(every.total_seconds())}"
    return f"on the schedule {value!r}"


_CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


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


class ResultCompression(Rule):
    id = "config.result-compression"

    def applies(self, ctx: AuditContext) -> bool:
        return bool(ctx.get("result_compression"))

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        import celery.backends.base as base

        method = ctx.get("result_compression")
        if not hasattr(base, "COMPRESSED_PAYLOAD_MAGIC"):
            return CheckResult.warned(
                self.id,
                f"result_compression = {method!r} is ignored by Celery {ctx.celery_version}: "
                "results are stored uncompressed",
                "upgrade Celery to 5.7 or later, or remove result_compression",
            )
        import kombu.compression

        try:
            kombu.compression.get_encoder(method)
        except KeyError:
            names = sorted(getattr(kombu.compression, "_aliases", {}))
            return CheckResult.failed(
                self.id,
                f"result_compression = {method!r} is not a kombu compression method: "
                "the backend refuses to start",
                f"use one of {', '.join(names or kombu.compression.encoders())}",
            )
        backend_cls = _backend_class(ctx)
        if backend_cls is not None and not getattr(
            backend_cls, "supports_result_compression", False
        ):
            return CheckResult.warned(
                self.id,
                f"result_compression = {method!r} is ignored by {backend_cls.__name__}: "
                "results are stored uncompressed",
                "remove result_compression, or use a backend that stores bytes (Redis, file)",
            )
        return CheckResult.passed(self.id, f"results are compressed with {method}")


def _backend_class(ctx: AuditContext) -> type | None:
    if ctx.url is None:
        return None
    from celery.app.backends import by_url

    try:
        cls, _ = by_url(ctx.url.raw)
    except Exception:  # the URL check reports an unusable URL
        return None
    return cls  # type: ignore[no-any-return]


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


_TYPE_CHECKS: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "True or False"),
    "int": ((int,), "a whole number"),
    "float": ((int, float, timedelta), "a number of seconds (or a timedelta)"),
    "dict": ((dict,), "a dict"),
    "list": ((list, tuple, set, frozenset), "a list"),
    "tuple": ((list, tuple), "a tuple or list"),
    "string": ((str,), "a string"),
}


class SettingTypes(Rule):
    id = "config.types"

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from celery.app.defaults import NAMESPACES, flatten

        options = dict(flatten(NAMESPACES))
        problems, fixes = [], []
        for key, value in ctx.user_settings.items():
            option = options.get(key)
            if option is None or value is None or option.type not in _TYPE_CHECKS:
                continue
            allowed, words = _TYPE_CHECKS[option.type]
            wrong = not isinstance(value, allowed) or (
                option.type in ("int", "float") and isinstance(value, bool)
            )
            if wrong:
                problems.append(f"{key} is {type(value).__name__} {value!r:.40}")
                fixes.append(f"{key} must be {words}")
        if problems:
            return CheckResult.failed(
                self.id, "wrong types: " + "; ".join(problems), "; ".join(fixes)
            )
        return CheckResult.passed(self.id, "every setting has the type Celery expects")


class Conflicts(Rule):
    id = "config.conflicts"

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        kind = ctx.kind
        found, fixes = [], []
        user = ctx.user_settings
        if user.get("task_ignore_result") and ctx.url is not None:
            found.append("task_ignore_result = True drops every result the backend would store")
            fixes.append(
                "remove task_ignore_result, or set ignore_result on the tasks that need it"
            )
        redis_only = sorted(k for k in user if k.startswith("redis_"))
        if redis_only and kind is not None and kind not in REDIS_KINDS:
            found.append(f"{', '.join(redis_only)} apply to Redis only and are ignored here")
            fixes.append(f"remove {', '.join(redis_only)}")
        sql_only = sorted(k for k in user if k.startswith("database_"))
        if sql_only and kind not in (BackendKind.SQL, None):
            found.append(f"{', '.join(sql_only)} apply to SQL backends only and are ignored here")
            fixes.append(f"remove {', '.join(sql_only)}")
        if "result_persistent" in user and kind is not BackendKind.RPC:
            found.append("result_persistent applies to rpc:// only and is ignored here")
            fixes.append("remove result_persistent")
        if found:
            return CheckResult.warned(self.id, "; ".join(found), "; ".join(fixes))
        return CheckResult.passed(self.id, "no settings contradict each other")


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


class Encryption(Rule):
    id = "config.encryption"

    def applies(self, ctx: AuditContext) -> bool:
        from ..encryption import uses_encryption

        return uses_encryption(ctx)  # type: ignore[arg-type]

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ..encryption import KeyRing, _settings_from
        from ..errors import ConfigurationError

        try:
            settings = _settings_from(KeyRing.from_settings(ctx), ctx)  # type: ignore[arg-type]
        except ConfigurationError as exc:
            return CheckResult.failed(
                self.id,
                str(exc),
                "give every worker and client the same keys, newest first, in "
                "resultkit_encryption_keys or RESULTKIT_ENCRYPTION_KEYS (docs/encryption.md)",
            )
        if ctx.get("result_compression"):
            return CheckResult.warned(
                self.id,
                "result_compression compresses ciphertext, which does not shrink",
                "move the method to resultkit_encryption_compression (compressed before "
                "encryption) and unset result_compression",
            )
        return CheckResult.passed(
            self.id,
            f"results sealed with AES-256-GCM under key {settings.keys.primary.label} "
            f"({len(settings.keys.keys)} key(s)), inner serializer {settings.serializer}",
        )


class Retention(Rule):
    """``resultkit_retention``, validated by the code that applies it."""

    id = "config.retention"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.get("resultkit_retention") is not None

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from types import SimpleNamespace

        from ..retention import RetentionPolicy, describe

        try:
            policy = RetentionPolicy.from_app(SimpleNamespace(conf=ctx.conf))
        except ConfigurationError as exc:
            return CheckResult.failed(
                self.id,
                str(exc),
                "correct resultkit_retention: rules of 'task' (globs), 'state' (Celery's "
                "states) and 'expires' (30s, 15m, 12h, 7d or None), and a 'default'; "
                "see docs/retention.md",
            )
        return CheckResult.passed(self.id, "resultkit_retention: " + "; ".join(describe(policy)))


class DualWrite(Rule):
    """``resultkit_dual_write``, validated by the dual-write backend's own code."""

    id = "config.dual-write"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.get("resultkit_dual_write") is not None or ctx.kind is BackendKind.DUAL

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ..backends.dual import dual_write_settings
        from ..urls import mask_url

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


class PollInterval(Rule):
    """``resultkit_poll_interval``, validated as resultkit-db reads it."""

    id = "config.poll-interval"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.get("resultkit_poll_interval") is not None

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ..backends.database import poll_interval_s

        try:
            seconds = poll_interval_s(ctx.conf)
        except ConfigurationError as exc:
            return CheckResult.failed(self.id, str(exc), "write a number of seconds, e.g. 0.05")
        return CheckResult.passed(self.id, f"get() polls every {seconds:g} s at most")


class ReplicaWait(Rule):
    """``resultkit_redis_wait_replicas`` and ``_timeout``, as the cluster backend reads them."""

    id = "config.replica-wait"

    def applies(self, ctx: AuditContext) -> bool:
        return (
            ctx.get("resultkit_redis_wait_replicas") is not None
            or ctx.get("resultkit_redis_wait_timeout") is not None
        )

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ..cluster import replication_from_conf

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


class UrlPasswords(Rule):
    """Passwords in URLs with URL syntax characters that are not percent-encoded."""

    id = "config.url-password"
    SETTINGS = ("result_backend", "broker_url")

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from urllib.parse import quote

        from ..urls import mask_url, unencoded_characters

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


RULES: Sequence[Rule] = (
    UnknownSetting(),
    SerializerAccepted(),
    PickleAccepted(),
    Encryption(),
    Retention(),
    DualWrite(),
    PollInterval(),
    ReplicaWait(),
    UrlPasswords(),
    RedisExpiry(),
    SqlCleanup(),
    MysqlIsolation(),
    RedisMaxConnections(),
    RpcChords(),
    ResultCompression(),
    ResultExtended(),
    SettingTypes(),
    Conflicts(),
    InsecureTransport(),
)


def audit(ctx: AuditContext, rules: Sequence[Rule] = RULES) -> list[CheckResult]:
    """Run every rule that applies to *ctx* and return their findings, in order."""
    results = []
    for rule in rules:
        if not rule.applies(ctx):
            continue
        try:
            results.append(rule.evaluate(ctx))
        except Exception as exc:  # a malformed setting must not abort the audit
            results.append(
                CheckResult.failed(
                    rule.id,
                    f"cannot read the settings this rule checks: {type(exc).__name__}: {exc}",
                    "correct the type of the setting named above",
                )
            )
    return results


def check_settings(app: Any) -> None:
    """Refuse, as :class:`ConfigurationError`, settings of the wrong type for Celery
    (``result_expires = "1 day"``...): the verdict of ``config check``'s type rule,
    before a command works with them."""
    check = SettingTypes().evaluate(AuditContext.from_app(app, None))
    if check.status is Status.FAIL:
        raise ConfigurationError(
            f"the app's settings cannot work: {check.message}; {check.fix} "
            "(resultkit config check -A APP lists every problem)"
        )
