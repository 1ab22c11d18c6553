"""The doctor's network steps, each over a :class:`Probe` of the backend's kind:
URL, connectivity, server state, encryption, round trip, latency.

The round trip and the latency sample go through Celery's own backend class,
so they prove what Celery itself will do; connectivity and server state use
the raw driver, which words errors precisely and never creates tables.

Adding a backend kind adds one :class:`Probe` subclass and one entry in
:data:`PROBES` (see CONTRIBUTING.md); no step branches on the kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...apps import Target
from ...drivers import require_driver
from ...errors import ConfigurationError, MissingDriver
from ...figures import percentile
from ...report import CheckResult, Status
from ...urls import BackendKind, BackendURL, parse_backend_url
from .. import Deadline
from .base import PROBE_ID_PREFIX, PROBE_PAYLOAD, Probe, ProbeError, fix_from
from .cluster import RedisClusterProbe
from .dual import DualProbe
from .file import FileProbe
from .redis import RedisProbe, SentinelProbe
from .rpc import RpcProbe
from .sql import SqlProbe, server_label

__all__ = [
    "PROBES",
    "PROBE_ID_PREFIX",
    "PROBE_PAYLOAD",
    "Probe",
    "ProbeError",
    "check_connect",
    "check_encryption",
    "check_latency",
    "check_roundtrip",
    "check_server",
    "check_url",
    "cleanup",
    "probe_for",
    "server_label",
]

#: Store/fetch pairs timed by the latency check.
LATENCY_SAMPLES = 20
#: A p50 above this makes the latency check warn.
SLOW_P50_MS = 100.0

#: The probe of each kind of backend.
PROBES: dict[BackendKind, type[Probe]] = {
    BackendKind.REDIS: RedisProbe,
    BackendKind.SENTINEL: SentinelProbe,
    BackendKind.REDIS_CLUSTER: RedisClusterProbe,
    BackendKind.SQL: SqlProbe,
    BackendKind.RPC: RpcProbe,
    BackendKind.FILE: FileProbe,
    BackendKind.DUAL: DualProbe,
}


def probe_for(target: Target, deadline: Deadline, url: BackendURL) -> Probe:
    """The probe of *url*'s kind (a plain :class:`Probe` for other Celery backends)."""
    return PROBES.get(url.kind, Probe)(target, deadline, url)


# --------------------------------------------------------------------------- url


def check_url(target: Target, deadline: Deadline) -> tuple[Probe | None, list[CheckResult]]:
    """Parse the URL, catch the usual mistakes and make sure the driver imports;
    return the probe for the next steps (None: they cannot run)."""
    raw = target.url
    if not raw:
        return None, [
            CheckResult.failed(
                "url",
                f"{target.label} has no result_backend: results are not stored",
                "set result_backend, e.g. 'redis://localhost:6379/0' or "
                "'db+postgresql+psycopg://user@host/db'",
            )
        ]
    try:
        url = parse_backend_url(raw)
        probe = probe_for(target, deadline, url)
        further = probe.check_url()
    except ConfigurationError as exc:
        return None, [CheckResult.failed("url", str(exc), fix_from(str(exc)))]
    results = [CheckResult.passed("url", f"{url.masked}: {probe.label}"), *further]
    if any(r.status is Status.FAIL for r in further):
        return probe, results
    try:
        require_driver(url)
    except MissingDriver as exc:
        results.append(CheckResult.failed("driver", exc.args[0], exc.fix, module=exc.module))
        return probe, results
    except ConfigurationError as exc:
        results.append(CheckResult.failed("driver", str(exc), fix_from(str(exc))))
        return probe, results
    results.append(CheckResult.passed("driver", "the driver for this URL is installed"))
    return probe, results


# ------------------------------------------------------------------ the steps


def check_connect(probe: Probe) -> CheckResult:
    """Reach the server with the raw driver (the probe explains precisely why not)."""
    started = time.perf_counter()
    detail = probe.connect()
    ms = (time.perf_counter() - started) * 1000
    return CheckResult.passed("connect", f"connected to {detail} in {ms:.0f} ms", ms=round(ms, 1))


def check_server(probe: Probe) -> list[CheckResult]:
    """Read the server's own state: eviction, persistence, tables, backlog."""
    return probe.server_checks()


def check_roundtrip(probe: Probe) -> list[CheckResult]:
    """Store and read back a success, a failure and a group; forget and confirm."""
    return probe.roundtrip()


def cleanup(probe: Probe) -> None:
    """Forget what the probe wrote, and release what it holds."""
    try:
        probe.cleanup()
    finally:
        probe.close()


def check_encryption(probe: Probe) -> list[CheckResult]:
    """The app's encryption keys, and stored results sealed under keys it does not have."""
    from ...encryption import load_settings, undecryptable
    from ...errors import ConfigurationError
    from ...stores import open_store

    try:
        ring = load_settings(conf=probe.app.conf).keys
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
    store = open_store(probe.target.url, probe.app)
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

    with probe.sampler() as store_and_fetch:
        sample(store_and_fetch)
    label = probe.latency_label
    figures = {
        f"{label}_p50_ms": round(percentile(stores, 50), 2),
        f"{label}_p95_ms": round(percentile(stores, 95), 2),
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
            fetch_p50_ms=round(percentile(fetches, 50), 2),
            fetch_p95_ms=round(percentile(fetches, 95), 2),
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
