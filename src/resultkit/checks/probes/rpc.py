"""Doctor probe for ``rpc://``: results travel as broker messages, so the round
trip sends one through the broker to a reply queue of the probe's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ...report import CheckResult
from ...urls import credential_problem
from .base import PROBE_PAYLOAD, Probe, StoreAndFetch, expect, fix_from

__all__ = ["RpcProbe"]


class RpcProbe(Probe):
    label = "the RPC result backend (results travel as broker messages)"
    latency_label = "send+receive"

    def check_url(self) -> list[CheckResult]:
        broker = self.target.app.conf.broker_url
        problem = credential_problem(broker, "urllib") if isinstance(broker, str) else None
        return [CheckResult.failed("broker", problem, fix_from(problem))] if problem else []

    def tighten(self, conf: Any, seconds: float) -> None:
        conf.broker_connection_timeout = seconds
        conf.broker_connection_retry = False
        conf.broker_connection_max_retries = 1

    def connect(self) -> str:
        self.build_backend()
        with self.app.connection_for_write() as conn:
            conn.connect()
            return f"broker {conn.as_uri()}"

    def roundtrip(self) -> list[CheckResult]:
        from celery import states

        if self.backend is None:
            self.build_backend()
        with self.sampler() as store_and_fetch:
            assert store_and_fetch is not None
            meta = store_and_fetch(self.new_id(), PROBE_PAYLOAD, states.SUCCESS)
            expect(meta["status"] == states.SUCCESS, f"sent SUCCESS, received {meta['status']}")
            expect(meta["result"] == PROBE_PAYLOAD, "the result received differs from the one sent")
            error = ValueError("resultkit doctor: probe failure 42")
            meta = store_and_fetch(self.new_id(), error, states.FAILURE)
            exc = meta["result"]
            expect(
                type(exc).__name__ == "ValueError" and str(exc) == str(error),
                f"sent ValueError, received {type(exc).__name__}({exc!s})",
            )
        return [
            CheckResult.passed(
                "roundtrip.success", "a SUCCESS result went through the broker and came back equal"
            ),
            CheckResult.passed(
                "roundtrip.failure",
                "a FAILURE went through the broker and came back with its exception",
            ),
            CheckResult.skipped("roundtrip.group", "rpc:// stores no groups"),
            CheckResult.skipped("roundtrip.forget", "rpc:// stores nothing to forget"),
        ]

    @contextlib.contextmanager
    def sampler(self) -> Iterator[StoreAndFetch | None]:
        """Declare the reply queue, yield a send+receive function, delete the queue after."""
        from celery.app.task import Context

        backend, app = self.backend, self.app
        with app.producer_or_acquire() as producer:
            backend.on_task_call(producer, "resultkit-doctor")

        def store_and_fetch(task_id: str, value: Any, state: str) -> Any:
            request = Context(id=task_id, reply_to=backend.oid, correlation_id=task_id)
            if state == "FAILURE":
                backend.mark_as_failure(task_id, value, request=request, call_errbacks=False)
            else:
                backend.store_result(task_id, value, state, request=request)
            return backend.get_task_meta(task_id)

        try:
            yield store_and_fetch
        finally:
            with app.connection_for_write() as conn:
                backend.binding(conn.default_channel).delete()

    def cleanup(self) -> None:
        """Nothing is stored: the reply queue is deleted by :meth:`sampler`."""
