"""The configuration audit: mistakes visible in the settings alone, no connection needed.

Each rule is a small object with an ``id``, a test of whether it applies to a
backend kind, and an ``evaluate`` method returning one :class:`CheckResult`
(``pass`` when the setting is sound).  ``resultkit doctor`` and
``resultkit config check`` run the same rules; :data:`RULES` lists them, from
the modules ``settings``, ``serialization``, ``lifetimes`` and ``backends``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import ConfigurationError
from ...report import CheckResult, Status
from .backends import (
    DualWrite,
    InsecureTransport,
    MysqlIsolation,
    RedisMaxConnections,
    ReplicaWait,
    ResultExtended,
    RpcChords,
    UrlPasswords,
)
from .base import AuditContext, Rule, known_settings
from .lifetimes import Offload, PollInterval, RedisExpiry, Retention, SqlCleanup
from .serialization import Encryption, PickleAccepted, ResultCompression, SerializerAccepted
from .settings import Conflicts, SettingTypes, UnknownSetting

__all__ = ["RULES", "AuditContext", "Rule", "audit", "check_settings", "known_settings"]


RULES: Sequence[Rule] = (
    UnknownSetting(),
    SerializerAccepted(),
    PickleAccepted(),
    Encryption(),
    Retention(),
    DualWrite(),
    PollInterval(),
    Offload(),
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
