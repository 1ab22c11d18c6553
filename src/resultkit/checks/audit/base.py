"""What every rule of the audit stands on: the settings it knows, the context it reads, the rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ...durations import expiry_seconds
from ...errors import ConfigurationError
from ...report import CheckResult
from ...urls import BackendKind, BackendURL

RESULTKIT_SETTINGS = frozenset(
    {
        "resultkit_retention",
        "resultkit_dual_write",
        "resultkit_encryption_keys",
        "resultkit_encryption_serializer",
        "resultkit_encryption_compression",
        "resultkit_poll_interval",
        "resultkit_offload",
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


def seconds_of(value: Any) -> float | None:
    """Lenient: a value of the wrong type is the types rule's to report."""
    try:
        return expiry_seconds(value)
    except ConfigurationError:
        return None


def invalid_expires(rule_id: str, ctx: AuditContext) -> CheckResult | None:
    """A failed check when ``result_expires`` is no lifetime at all (e.g. ``"1 day"``)."""
    try:
        expiry_seconds(ctx.get("result_expires"))
    except ConfigurationError as exc:
        return CheckResult.failed(
            rule_id, str(exc), "result_expires is a number of seconds, a timedelta or None"
        )
    return None


def backend_class(ctx: AuditContext) -> type | None:
    if ctx.url is None:
        return None
    from celery.app.backends import by_url

    try:
        cls, _ = by_url(ctx.url.raw)
    except Exception:  # the URL check reports an unusable URL
        return None
    return cls  # type: ignore[no-any-return]


#: The kinds of backend that Celery's redis_* settings apply to.
REDIS_KINDS = frozenset({BackendKind.REDIS, BackendKind.SENTINEL, BackendKind.REDIS_CLUSTER})
