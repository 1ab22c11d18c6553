"""What every doctor probe does, whatever the backend: a round trip and a latency
sample through Celery's own backend class, and cleaning up after itself.

A backend kind adds one subclass of :class:`Probe` (see :mod:`.redis`,
:mod:`.sql`, :mod:`.file`, :mod:`.rpc`, :mod:`.dual`) and names it in
:data:`resultkit.checks.probes.PROBES`; the doctor's steps never branch on
the kind.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from ...apps import Target, private_copy
from ...durations import expiry_seconds
from ...explain import explain
from ...report import CheckResult
from ...urls import BackendKind, BackendURL
from .. import Deadline

__all__ = ["PROBE_ID_PREFIX", "PROBE_PAYLOAD", "Probe", "ProbeError", "StoreAndFetch"]

#: Upper bound for one connection attempt, whatever time is left overall.
CONNECT_TIMEOUT_S = 5.0
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

#: Stores a result (id, value, state) and reads it back; returns Celery's meta.
StoreAndFetch = Callable[[str, Any, str], Any]


class ProbeError(Exception):
    """A probe found the backend misbehaving (a wrong value read back)."""


def fix_from(message: str) -> str:
    """The fix a one-line message carries after its first ': '."""
    _, sep, fix = message.partition(": ")
    return fix if sep else "correct the result_backend URL"


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ProbeError(message)


class Probe:
    """The doctor's state for one backend, and the checks its kind adds."""

    #: What the url check says the backend is.
    label: ClassVar[str] = "a Celery result backend"
    #: What the latency check times.
    latency_label: ClassVar[str] = "store"

    def __init__(self, target: Target, deadline: Deadline, url: BackendURL) -> None:
        self.target = target
        self.deadline = deadline
        self.url = url
        #: Celery's backend, once built (by the connect step or the round trip).
        self.backend: Any = None
        #: Task ids this probe wrote, forgotten at the end.
        self.written: list[str] = []

    @functools.cached_property
    def app(self) -> Any:
        """The target's app, copied: the doctor shortens its timeouts and builds
        backends on this one, and leaves the caller's app as it found it."""
        return private_copy(self.target.app)

    @property
    def kind(self) -> BackendKind:
        return self.url.kind

    @property
    def where(self) -> str:
        return self.target.masked_url

    @property
    def expires_s(self) -> float | None:
        return expiry_seconds(self.app.conf.result_expires)

    def step_timeout(self) -> float:
        return min(CONNECT_TIMEOUT_S, max(0.5, self.deadline.remaining()))

    def fail(self, check_id: str, exc: BaseException) -> CheckResult:
        why = explain(exc, self.where, self.deadline.total_s)
        return CheckResult.failed(check_id, why.message, why.fix, reason=why.reason)

    def new_id(self) -> str:
        task_id = f"{PROBE_ID_PREFIX}{uuid.uuid4()}"
        self.written.append(task_id)
        return task_id

    # ------------------------------------------------------------------ hooks
    def check_url(self) -> list[CheckResult]:
        """Mistakes of this kind's URL and settings, found before connecting:
        raise ConfigurationError for the URL itself, return a failed check for
        another setting it needs."""
        return []

    def tighten(self, conf: Any, seconds: float) -> None:
        """Give the drivers timeouts that fit *seconds*, before Celery builds the backend."""

    def build_backend(self) -> Any:
        """Celery's backend for the target, with timeouts that fit the deadline."""
        from celery.app.backends import by_url

        self.tighten(self.app.conf, self.step_timeout())
        backend_cls, url = by_url(self.app.conf.result_backend, self.target.app.loader)
        self.backend = backend_cls(app=self.app, url=url)
        return self.backend

    def connect(self) -> str:
        """Reach the server; return what was reached (``Redis 7.2.4``)."""
        return type(self.build_backend()).__name__

    def server_checks(self) -> list[CheckResult]:
        """The server's own state: eviction, persistence, tables, backlog."""
        return []

    def roundtrip(self) -> list[CheckResult]:
        """Store and read back a success, a failure and a group; forget and confirm."""
        from celery import states
        from celery.result import AsyncResult, GroupResult

        backend = self.backend or self.build_backend()
        app = self.app
        ok_id = self.new_id()
        backend.store_result(ok_id, PROBE_PAYLOAD, states.SUCCESS)
        meta = backend.get_task_meta(ok_id, cache=False)
        expect(meta["status"] == states.SUCCESS, f"stored SUCCESS, read back {meta['status']}")
        expect(meta["result"] == PROBE_PAYLOAD, "the result read back differs from the one stored")
        results = [
            CheckResult.passed(
                "roundtrip.success", "a SUCCESS result was stored and read back equal"
            )
        ]

        fail_id = self.new_id()
        error = ValueError("resultkit doctor: probe failure 42")
        backend.mark_as_failure(fail_id, error, traceback="Traceback (probe)\nValueError")
        meta = backend.get_task_meta(fail_id, cache=False)
        exc = meta["result"]
        expect(meta["status"] == states.FAILURE, f"stored FAILURE, read back {meta['status']}")
        expect(
            type(exc).__name__ == "ValueError" and str(exc) == str(error),
            f"stored ValueError({str(error)!r}), read back {type(exc).__name__}({exc!s})",
        )
        results.append(
            CheckResult.passed(
                "roundtrip.failure",
                "a FAILURE was stored and read back with its exception type and message",
            )
        )

        group_id = self.new_id()
        members = [AsyncResult(ok_id, app=app), AsyncResult(fail_id, app=app)]
        backend.save_group(group_id, GroupResult(group_id, members, app=app))
        restored = backend.restore_group(group_id, cache=False)
        expect(restored is not None, "a saved group could not be restored")
        expect(
            [r.id for r in restored.results] == [ok_id, fail_id],
            "the restored group has different members",
        )
        backend.delete_group(group_id)
        expect(
            backend.restore_group(group_id, cache=False) is None, "a deleted group is still there"
        )
        results.append(
            CheckResult.passed("roundtrip.group", "a group was saved, restored, and deleted")
        )

        backend.forget(ok_id)
        backend.forget(fail_id)
        for task_id in (ok_id, fail_id):
            state = backend.get_task_meta(task_id, cache=False)["status"]
            expect(state == states.PENDING, f"a forgotten result still reads as {state}")
        results.append(CheckResult.passed("roundtrip.forget", "forgotten results are gone"))
        return results

    @contextlib.contextmanager
    def sampler(self) -> Iterator[StoreAndFetch | None]:
        """What the latency check times: None for the backend's own store and
        fetch (each timed on its own), or one function that does both."""
        yield None

    def close(self) -> None:
        """Release what the probe holds open."""

    def cleanup(self) -> None:
        """Forget every result the probe wrote (best effort: a failure changes nothing)."""
        if self.backend is None:
            return
        for task_id in self.written:
            try:
                self.backend.forget(task_id)
            except Exception:
                return
