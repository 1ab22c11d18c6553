"""``resultkit bench``: measure result backends on your own servers.

For each case (a backend URL, serializer, compression, payload size and
concurrency) it times ``store_result``, ``get_task_meta`` and a store
followed by a fetch for a bounded time, and reports throughput and latency
percentiles.  Everything it writes uses task ids of its own
(``resultkit-bench-<run>-...``) and is forgotten afterwards; it never reads or
touches other results.  When a resultkit backend is measured, Celery's own
counterpart is measured in the same run.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..apps import app_for_url, resolve_target, user_settings
from ..boundary import translating
from ..checks.audit import check_settings
from ..choices import require_compression
from ..codec import require_serializer
from ..errors import UsageError
from ..figures import percentile
from ..urls import BackendKind, Redactor, mask_url, parse_backend_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["BenchCase", "BenchReport", "bench"]

OPERATIONS = ("store", "fetch", "roundtrip")
#: Default time per operation of each case (seconds).
DEFAULT_SECONDS = 2.0
#: Default payload sizes (bytes of the result's text).
DEFAULT_SIZES = (1024,)
#: The largest payload a case may measure.
MAX_SIZE_BYTES = 1024**3


@dataclass
class BenchCase:
    """One measured combination and its figures."""

    backend: str
    serializer: str
    compression: str | None
    size: int
    concurrency: int
    mode: str
    #: Operation → operations per second.
    throughput: dict[str, float] = field(default_factory=dict)
    #: Operation → {"p50", "p95", "p99"} in milliseconds.
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The Celery backend this case is compared with, when it is a resultkit one.
    counterpart_of: str | None = None

    @property
    def label(self) -> str:
        parts = [self.backend, self.serializer]
        if self.compression:
            parts.append(self.compression)
        parts += [_size_label(self.size), f"{self.concurrency} {self.mode}"]
        return " · ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "serializer": self.serializer,
            "compression": self.compression,
            "size": self.size,
            "concurrency": self.concurrency,
            "mode": self.mode,
            "throughput": {k: round(v, 1) for k, v in self.throughput.items()},
            "latency_ms": self.latency_ms,
            "counterpart_of": self.counterpart_of,
        }


@dataclass
class BenchReport:
    cases: list[BenchCase] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"cases": [c.as_dict() for c in self.cases], "seconds": round(self.seconds, 2)}


def _size_label(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def counterpart(url: str) -> str | None:
    """Celery's own backend URL for a resultkit backend URL (None for Celery's own, and
    for a Redis Cluster, which Celery cannot use)."""
    scheme = url.partition("://")[0]
    if scheme.rpartition("+")[2] == "rediscluster":
        return None
    for prefix, replacement in (("resultkit-db+", "db+"), ("resultkit-redis+", "")):
        if scheme.startswith(prefix):
            return replacement + url[len(prefix) :]
    return None


def _run_worker(
    url: str, settings: dict[str, Any], size: int, seconds: float, prefix: str
) -> dict[str, list[float]]:
    """Time each operation for *seconds*; return latencies (s) and forget what was written."""
    app = app_for_url(url, **settings)
    backend = app.backend
    payload = {"data": "x" * size, "n": 0}
    latencies: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    written: list[str] = []
    counter = itertools.count()
    try:
        # One untimed round trip first: connections, lazy imports, key set-up.
        warm_up = f"{prefix}-warm-up-{os.getpid()}-{threading.get_ident()}"
        written.append(warm_up)
        backend.store_result(warm_up, payload, "SUCCESS")
        backend.get_task_meta(warm_up, cache=False)
        for op in OPERATIONS:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                task_id = f"{prefix}-{os.getpid()}-{threading.get_ident()}-{next(counter)}"
                if op == "fetch" and written:
                    task_id = written[len(latencies[op]) % len(written)]
                    started = time.perf_counter()
                    backend.get_task_meta(task_id, cache=False)
                elif op == "roundtrip":
                    started = time.perf_counter()
                    backend.store_result(task_id, payload, "SUCCESS")
                    backend.get_task_meta(task_id, cache=False)
                    written.append(task_id)
                else:
                    started = time.perf_counter()
                    backend.store_result(task_id, payload, "SUCCESS")
                    written.append(task_id)
                latencies[op].append(time.perf_counter() - started)
    finally:
        _forget_all(backend, written)
    return latencies


#: Consecutive failed forgets after which cleanup gives up (the server is gone).
FORGET_GIVE_UP_AFTER = 3


def _forget_all(backend: Any, task_ids: list[str]) -> None:
    """Forget every id written; a passing error skips one id, not all the rest.

    Whatever is left (the server went away) expires with result_expires.
    """
    failures = 0
    for task_id in task_ids:
        try:
            backend.forget(task_id)
            failures = 0
        except Exception:
            failures += 1
            if failures >= FORGET_GIVE_UP_AFTER:
                return


def _measure(
    url: str, settings: dict[str, Any], size: int, concurrency: int, mode: str, seconds: float
) -> dict[str, list[float]]:
    prefix = f"resultkit-bench-{uuid.uuid4().hex[:12]}"
    args = (url, settings, size, seconds, prefix)
    if mode == "processes" and concurrency > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(concurrency) as pool:
            parts = pool.starmap(_run_worker, [args] * concurrency)
    elif concurrency > 1:
        with ThreadPoolExecutor(concurrency) as pool:
            parts = list(pool.map(lambda _: _run_worker(*args), range(concurrency)))
    else:
        parts = [_run_worker(*args)]
    merged: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    for part in parts:
        for op in OPERATIONS:
            merged[op].extend(part[op])
    return merged


def bench(
    urls: list[str] | None = None,
    *,
    app: Celery | str | None = None,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    serializers: tuple[str | None, ...] = (None,),
    compressions: tuple[str | None, ...] = (None,),
    concurrency: tuple[int, ...] = (1,),
    mode: str = "threads",
    seconds: float = DEFAULT_SECONDS,
    compare: bool = True,
) -> BenchReport:
    """Measure every combination of the given backends and choices (see the module docstring)."""
    if mode not in ("threads", "processes"):
        raise UsageError("--mode must be threads or processes")
    if seconds <= 0:
        raise UsageError("--seconds must be positive")
    started = time.monotonic()
    targets: list[tuple[str, Celery | None]] = []
    if urls:
        if app is not None:
            raise UsageError("give backend URLs or -A/--app, not both")
        targets = [(u, None) for u in urls]
    else:
        target = resolve_target(None, app)
        if target.origin == "app":
            check_settings(target.app)
        targets = [(target.url, target.app if target.origin == "app" else None)]
    for url, _ in targets:
        if parse_backend_url(url).kind is BackendKind.RPC:
            raise UsageError("rpc:// stores no results, so there is nothing to benchmark")
    plan: list[tuple[str, str | None]] = []
    for url, _ in targets:
        plan.append((url, None))
        other = counterpart(url)
        if compare and other and other not in [u for u, _ in targets]:
            plan.append((other, url))
    for name in serializers:
        if name:
            require_serializer(name)
    for method in compressions:
        if method:
            require_compression(method)
    for size in sizes:
        if not 0 < size <= MAX_SIZE_BYTES:
            raise UsageError(f"--size {size}: write a size from 1 byte to 1GB, e.g. 1KB or 2MB")
    report = BenchReport()
    base_settings = user_settings(targets[0][1])
    for (url, twin), serializer, compression, size, workers in itertools.product(
        plan, serializers, compressions, sizes, concurrency
    ):
        settings = dict(base_settings)
        name = serializer or settings.get("result_serializer") or "json"
        settings.update(result_serializer=name, result_accept_content=[name])
        if compression:
            settings["result_compression"] = compression
        redactor = Redactor()
        redactor.add_url(url)
        with translating(mask_url(url), "measure the backend", redactor):
            latencies = _measure(url, settings, size, workers, mode, seconds / len(OPERATIONS))
        case = BenchCase(
            mask_url(url),
            name,
            compression,
            size,
            workers,
            mode,
            counterpart_of=mask_url(twin) if twin else None,
        )
        for op, samples in latencies.items():
            elapsed = sum(samples)
            case.throughput[op] = (len(samples) / elapsed * workers) if elapsed else 0.0
            case.latency_ms[op] = {
                f"p{q}": round(percentile(samples, q) * 1000, 3) for q in (50, 95, 99)
            }
        report.cases.append(case)
    report.seconds = time.monotonic() - started
    return report
