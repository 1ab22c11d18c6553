"""Diagnostics: small check functions and rule objects that each return :class:`CheckResult`.

``resultkit doctor`` runs them in order; ``resultkit config check`` reuses the
configuration audit in :mod:`resultkit.checks.audit`, which never connects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Deadline", "StepTimeout", "run_bounded"]

T = TypeVar("T")


class StepTimeout(Exception):
    """A step did not finish within the time left."""


class Deadline:
    """The time budget shared by every step of one run."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self._end = time.monotonic() + total_s

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


def run_bounded(fn: Callable[[], T], seconds: float) -> T:
    """Run *fn* and return its result, or raise :class:`StepTimeout` after *seconds*.

    Drivers do not all honour their own timeouts (DNS look-ups, TLS handshakes,
    retry loops), so each step runs in a daemon thread that is abandoned when
    its time is up: the command's total time stays bounded whatever the driver
    does.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="resultkit-step", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        raise StepTimeout(f"no answer within {seconds:.1f} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
