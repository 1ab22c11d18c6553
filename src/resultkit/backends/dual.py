"""``resultkit-dual``: write results to two backends while a fleet moves from one to the other.

::

    result_backend = "resultkit-dual://"
    resultkit_dual_write = {
        "new": "db+postgresql+psycopg://app@db/results",   # any Celery backend URL
        "old": "redis://cache:6379/0",
        # "write_old": True,     # also write every result to old (default)
        # "read_old": True,      # read from old what new does not have (default)
        # "old_retry_after": 5,  # seconds to leave a failing old alone
    }

Every stored state, group save, forget and chord bookkeeping goes to ``new``,
through Celery's own backend for that URL, and fails exactly as that backend
fails.  Writes to ``old`` follow (unless switched off); a failing ``old`` is
logged and counted (:attr:`ResultkitDualBackend.old_failures`) and never fails
a task.  Reads come from ``new``; a result ``new`` does not have is read from
``old``, so history stays visible before (or without) a bulk copy.

With ``resultkit_offload`` and a resultkit backend as ``new``, ``new``
offloads large results; ``old`` keeps them inline (it is on its way out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from celery import states
from celery.app.backends import by_url
from celery.backends.base import BaseBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError

from ..errors import ConfigurationError
from ..urls import mask_url
from ._polling import poll_many, wait_for_one

__all__ = ["DEFAULT_OLD_RETRY_AFTER_S", "ResultkitDualBackend", "dual_write_settings"]

logger = logging.getLogger("resultkit.dual")

#: After a failure, the old backend is left alone this long (seconds).
DEFAULT_OLD_RETRY_AFTER_S = 5.0
_KNOWN_KEYS = {"new", "old", "write_old", "read_old", "old_retry_after"}


def dual_write_settings(settings: Any) -> dict[str, Any]:
    """``resultkit_dual_write`` validated, with its defaults; :class:`ConfigurationError`
    says what is wrong.  The backend and ``resultkit config check`` both use it."""
    from ..urls import parse_backend_url

    if not isinstance(settings, dict) or not settings.get("new") or not settings.get("old"):
        raise ConfigurationError(
            "resultkit-dual:// needs resultkit_dual_write = {'new': URL, 'old': URL}"
        )
    unknown = set(settings) - _KNOWN_KEYS
    if unknown:
        raise ConfigurationError(
            f"resultkit_dual_write: unknown key {sorted(unknown)[0]!r}; "
            f"known keys are {', '.join(sorted(_KNOWN_KEYS))}"
        )
    for side in ("new", "old"):
        url = str(settings[side])
        if "dual" in url.split("://")[0]:
            raise ConfigurationError("resultkit_dual_write cannot name resultkit-dual:// itself")
        try:
            parse_backend_url(url)
        except ConfigurationError as exc:
            raise ConfigurationError(f"resultkit_dual_write {side!r}: {exc}") from None
    retry = settings.get("old_retry_after", DEFAULT_OLD_RETRY_AFTER_S)
    try:
        if isinstance(retry, bool) or float(retry) < 0:
            raise ValueError(retry)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"resultkit_dual_write 'old_retry_after' = {retry!r} is not a number of seconds "
            "(0 or more)"
        ) from None
    for flag in ("write_old", "read_old"):
        if not isinstance(settings.get(flag, True), bool):
            raise ConfigurationError(f"resultkit_dual_write {flag!r} must be True or False")
    return {"write_old": True, "read_old": True, **settings, "old_retry_after": float(retry)}


class ResultkitDualBackend(BaseBackend):  # type: ignore[misc]
    """Celery result backend over two backends: ``new`` (authoritative) and ``old``."""

    supports_native_join = True

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        settings = dual_write_settings(app.conf.get("resultkit_dual_write"))
        self.new = self._build(str(settings["new"]))
        self.old = self._build(str(settings["old"]))
        if getattr(self.old, "offloader", None) is not None:
            # One copy of each large payload in object storage, owned by ``new``: two
            # backends offloading under one prefix would delete each other's objects.
            self.old.offloader = None
        self.new_url, self.old_url = str(settings["new"]), str(settings["old"])
        self.write_old = bool(settings.get("write_old", True))
        self.read_old = bool(settings.get("read_old", True))
        self.old_retry_after = float(settings["old_retry_after"])
        #: How many operations on ``old`` failed in this process.
        self.old_failures = 0
        self._old_down_until = 0.0
        self._lock = threading.Lock()

    def _build(self, url: str) -> BaseBackend:
        cls, backend_url = by_url(url, self.app.loader)
        return cls(app=self.app, url=backend_url)

    def as_uri(self, include_password: bool = False) -> str:
        return "resultkit-dual://"

    @property
    def supports_autoexpire(self) -> bool:
        return bool(getattr(self.new, "supports_autoexpire", False))

    # ------------------------------------------------------------ the old side
    def _on_old(self, operation: str, fn: Callable[[], Any], default: Any = None) -> Any:
        """Run *fn* on ``old``; a failure is logged and counted, never raised."""
        if time.monotonic() < self._old_down_until:
            return default
        try:
            return fn()
        except Exception as exc:
            with self._lock:
                self.old_failures += 1
                self._old_down_until = time.monotonic() + self.old_retry_after
            logger.warning(
                "resultkit-dual: %s on the old backend %s failed (%s: %s); the new backend "
                "has it, the old one is left alone for %.0f s",
                operation,
                mask_url(self.old_url),
                type(exc).__name__,
                exc,
                self.old_retry_after,
            )
            return default

    # ------------------------------------------------------------------ writes
    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        stored = self.new.store_result(
            task_id, result, state, traceback=traceback, request=request, **kwargs
        )
        if self.write_old:
            self._on_old(
                "store_result",
                lambda: self.old.store_result(
                    task_id, result, state, traceback=traceback, request=request, **kwargs
                ),
            )
        return stored

    def forget(self, task_id: str) -> None:
        self._cache.pop(task_id, None)
        self.new.forget(task_id)
        self._on_old("forget", lambda: self.old.forget(task_id))

    def save_group(self, group_id: str, result: Any) -> Any:
        saved = self.new.save_group(group_id, result)
        if self.write_old:
            self._on_old("save_group", lambda: self.old.save_group(group_id, result))
        return saved

    def delete_group(self, group_id: str) -> None:
        self.new.delete_group(group_id)
        self._on_old("delete_group", lambda: self.old.delete_group(group_id))

    def cleanup(self) -> None:
        self.new.cleanup()
        self._on_old("cleanup", self.old.cleanup)

    # ------------------------------------------------------------------- reads
    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        if cache and task_id in self._cache:
            return self._cache[task_id]  # type: ignore[no-any-return]
        meta: dict[str, Any] = self.new.get_task_meta(task_id, cache=False)
        if meta.get("status") == states.PENDING and self.read_old:
            older = self._on_old(
                "get_task_meta", lambda: self.old.get_task_meta(task_id, cache=False)
            )
            if older and older.get("status") != states.PENDING:
                meta = older
        if cache and meta.get("status") in states.READY_STATES:
            self._cache[task_id] = meta
        return meta

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Any = None,
    ) -> dict[str, Any]:
        """Wait for one result, in either backend.

        A failed result is first checked against its parents, as ``resultkit-db``
        does: ``AsyncResult.get()`` on a chord must raise the header task's own
        error, not the ``ChordError`` that was stored for the body a moment later.
        """
        self._ensure_not_eager()

        def pause(deadline: float | None) -> None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise CeleryTimeoutError("The operation timed out.")
            seconds = min(interval, 0.1)
            time.sleep(seconds if deadline is None else max(0.0, min(seconds, deadline - now)))

        return wait_for_one(
            lambda: self.get_task_meta(task_id, cache=False), pause, timeout, on_interval
        )

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        return self.get_task_meta(task_id, cache=False)

    def restore_group(self, group_id: str, cache: bool = True) -> Any:
        group = self.new.restore_group(group_id, cache=cache)
        if group is None and self.read_old:
            group = self._on_old(
                "restore_group", lambda: self.old.restore_group(group_id, cache=cache)
            )
        return group

    def get_many(
        self,
        task_ids: Any,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
        max_iterations: int | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(task_id, meta)`` as results become ready in either backend."""

        def fetch_ready(ids: list[str]) -> dict[str, dict[str, Any]]:
            metas = {task_id: self.get_task_meta(task_id) for task_id in ids}
            return {i: m for i, m in metas.items() if m.get("status") in states.READY_STATES}

        yield from poll_many(
            task_ids,
            fetch_ready,
            lambda ids, deadline: time.sleep(min(interval, 0.1)),
            timeout=timeout,
            on_message=on_message,
            on_interval=on_interval,
            max_iterations=max_iterations,
        )

    # ------------------------------------------------------------------ chords
    def ensure_chords_allowed(self) -> None:
        self.new.ensure_chords_allowed()

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> Any:
        return self.new.apply_chord(header_result_args, body, **kwargs)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> Any:
        return self.new.on_chord_part_return(request, state, result, **kwargs)

    def set_chord_size(self, group_id: str, chord_size: int) -> Any:
        return self.new.set_chord_size(group_id, chord_size)

    def add_to_chord(self, chord_id: str, result: Any) -> Any:
        return self.new.add_to_chord(chord_id, result)
