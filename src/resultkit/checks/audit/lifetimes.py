"""Rules on how long results live and what removes them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ...durations import format_duration
from ...errors import ConfigurationError
from ...report import CheckResult
from ...urls import BackendKind
from .base import (
    REDIS_KINDS,
    AuditContext,
    Rule,
    invalid_expires,
    seconds_of,
)


class RedisExpiry(Rule):
    id = "config.result-expires"
    kinds = REDIS_KINDS

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        invalid = invalid_expires(self.id, ctx)
        if invalid is not None:
            return invalid
        seconds = seconds_of(ctx.get("result_expires"))
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
        invalid = invalid_expires(self.id, ctx)
        if invalid is not None:
            return invalid
        seconds = seconds_of(ctx.get("result_expires"))
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


class Retention(Rule):
    """``resultkit_retention``, validated by the code that applies it."""

    id = "config.retention"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.get("resultkit_retention") is not None

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from types import SimpleNamespace

        from ...retention import RetentionPolicy, describe

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


class PollInterval(Rule):
    """``resultkit_poll_interval``, validated as resultkit-db reads it."""

    id = "config.poll-interval"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.get("resultkit_poll_interval") is not None

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ...backends.database import poll_interval_s

        try:
            seconds = poll_interval_s(ctx.conf)
        except ConfigurationError as exc:
            return CheckResult.failed(self.id, str(exc), "write a number of seconds, e.g. 0.05")
        return CheckResult.passed(self.id, f"get() polls every {seconds:g} s at most")


class Offload(Rule):
    """``resultkit_offload``, validated as the backends read it."""

    id = "config.offload"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.get("resultkit_offload") is not None

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ...offload import offload_settings

        try:
            settings = offload_settings(ctx.conf)
        except ConfigurationError as exc:
            return CheckResult.failed(
                self.id,
                str(exc),
                'write resultkit_offload = {"url": "s3://bucket/prefix", "threshold": "256KB"}',
            )
        assert settings is not None
        if ctx.url is not None and not ctx.url.alias.startswith("resultkit-"):
            return CheckResult.warned(
                self.id,
                f"resultkit_offload is set but {ctx.url.alias}:// does not offload: only "
                "resultkit's backends do",
                "use resultkit-redis+redis://..., resultkit-db+... or resultkit-dual://",
            )
        return CheckResult.passed(
            self.id,
            f"results above {settings.threshold:,} bytes are stored in {settings.url}",
        )
