"""``resultkit doctor``: does this result backend work, and is it configured well?"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..apps import resolve_target
from ..checks import Deadline, StepTimeout, run_bounded
from ..checks.audit import AuditContext, audit
from ..checks.probes import (
    Probe,
    check_connect,
    check_encryption,
    check_latency,
    check_roundtrip,
    check_server,
    check_url,
    cleanup,
)
from ..checks.probes.offload import check_offload
from ..encryption import uses_encryption
from ..errors import ConfigurationError
from ..offload import offload_settings
from ..report import CheckResult, Status

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_TIMEOUT_S", "DoctorReport", "doctor"]

#: The whole run, connection attempts included, ends within this many seconds.
DEFAULT_TIMEOUT_S = 10.0


@dataclass
class DoctorReport:
    """The outcome of ``doctor``: every check, in the order they ran."""

    backend: str
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings do not make a run fail)."""
        return not any(c.status is Status.FAIL for c in self.checks)

    def by_id(self, check_id: str) -> CheckResult:
        """The check with *check_id* (``KeyError`` when it did not run)."""
        for check in self.checks:
            if check.id == check_id:
                return check
        raise KeyError(check_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "backend": self.backend,
            "checks": [c.as_dict() for c in self.checks],
            "seconds": round(self.seconds, 3),
        }


def doctor(
    url: str | None = None,
    *,
    app: Celery | str | None = None,
    broker: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DoctorReport:
    """Check the result backend at *url* (or *app*'s, or the embedded default).

    Runs, within *timeout* seconds in total: the URL and driver checks, a
    connection, the server's state, a round trip through Celery's own backend
    class (success, failure, group, forget), a latency sample, and the
    configuration audit.  Never raises for a problem with the backend: every
    problem is a failing check.  Raises :class:`~resultkit.errors.UsageError`
    or :class:`~resultkit.errors.AppNotFound` for inputs that cannot work.
    """
    started = time.monotonic()
    target = resolve_target(url, app, broker=broker)
    report = DoctorReport(backend=target.masked_url)
    probe, checked = check_url(target, Deadline(timeout))
    report.checks.extend(checked)
    network_ok = probe is not None and not any(c.status is Status.FAIL for c in checked)
    for step_id, step in _steps(probe, uses_encryption(target.app.conf)):
        if not network_ok or probe is None:
            report.checks.append(CheckResult.skipped(step_id, _skip_reason(report)))
            continue
        results, network_ok = _run_step(probe, step_id, step)
        report.checks.extend(results)
    if probe is not None and network_ok:
        # Best effort: the probe's own keys expire with result_expires anyway.
        with contextlib.suppress(Exception):
            run_bounded(lambda: cleanup(probe), max(0.5, probe.deadline.remaining()))
    elif probe is not None:
        probe.close()
    report.checks.extend(_offload_checks(target.app, probe))
    report.checks.extend(audit(AuditContext.from_app(target.app, probe.url if probe else None)))
    report.checks = [_redacted(c, target.redactor.redact) for c in report.checks]
    report.seconds = time.monotonic() - started
    return report


def _steps(
    probe: Probe | None, encrypting: bool
) -> list[tuple[str, Callable[[], list[CheckResult]]]]:
    """The network steps, in order (each skipped once one has failed)."""

    def each(check: Callable[[Probe], list[CheckResult] | CheckResult]) -> Callable[[], Any]:
        def run() -> list[CheckResult]:
            assert probe is not None
            found = check(probe)
            return found if isinstance(found, list) else [found]

        return run

    steps = [
        ("connect", each(check_connect)),
        ("server", each(check_server)),
        ("roundtrip", each(check_roundtrip)),
        ("latency", each(check_latency)),
    ]
    if encrypting:
        steps.insert(2, ("encryption", each(check_encryption)))
    return steps


def _run_step(
    probe: Probe, step_id: str, step: Callable[[], list[CheckResult]]
) -> tuple[list[CheckResult], bool]:
    """Run one network step within the time left; report a timeout or error as a failure."""
    remaining = probe.deadline.remaining()
    if remaining <= 0:
        return [
            CheckResult.failed(
                step_id,
                f"no time left: the run is limited to {probe.deadline.total_s:g} s",
                "allow more time with --timeout",
            )
        ], False
    try:
        results = run_bounded(step, remaining)
    except StepTimeout:
        return [
            CheckResult.failed(
                step_id,
                f"no answer from {probe.where} within {probe.deadline.total_s:g} s",
                "check that the server is reachable (firewall, host, port) and not overloaded, "
                "or allow more time with --timeout",
                reason="timeout",
            )
        ], False
    except ConfigurationError as exc:
        # A setting the backend refuses: no connection was the problem.
        return [
            CheckResult.failed(
                step_id,
                f"the backend refuses the configuration: {exc}",
                "correct the setting named above; `resultkit config check -A APP` runs the "
                "same validation without connecting",
                reason="configuration",
            )
        ], False
    except Exception as exc:
        return [probe.fail(step_id, exc)], False
    return results, not any(r.status is Status.FAIL for r in results)


def _offload_checks(app: Any, probe: Probe | None) -> list[CheckResult]:
    """The object storage of ``resultkit_offload`` (a wrong setting is the audit's to report)."""
    try:
        settings = offload_settings(app.conf)
    except ConfigurationError:
        return []
    if settings is None:
        return []
    seconds = max(1.0, probe.deadline.remaining()) if probe is not None else DEFAULT_TIMEOUT_S
    try:
        return run_bounded(lambda: check_offload(settings.url), seconds)
    except StepTimeout:
        return [
            CheckResult.failed(
                "offload.bucket",
                f"no answer from the object store for {settings.url} within {seconds:g} s",
                "check AWS_ENDPOINT_URL and that the object store runs, or allow more time "
                "with --timeout",
                reason="timeout",
            )
        ]


def _skip_reason(report: DoctorReport) -> str:
    failed = next((c.id for c in report.checks if c.status is Status.FAIL), "an earlier check")
    return f"skipped: {failed} failed"


def _redacted(check: CheckResult, redact: Callable[[str], str]) -> CheckResult:
    return replace(check, message=redact(check.message), fix=redact(check.fix))
