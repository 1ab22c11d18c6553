"""Rules on the settings themselves: unknown names, wrong types, conflicts."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from datetime import timedelta

from ...report import CheckResult
from ...urls import BackendKind
from .base import (
    NEWER_CELERY_SETTINGS,
    REDIS_KINDS,
    AuditContext,
    Rule,
    known_settings,
)


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
