"""``resultkit_offload`` in the Celery backends: large payloads go to object storage.

Key-value backends (``resultkit-redis``, single and cluster) offload the whole
stored meta of a task; ``resultkit-db`` offloads its ``result`` column.  Both
store a reference (:mod:`resultkit.offload`) in place of the payload and
resolve it wherever Celery decodes a stored payload (``get``, ``join``,
``get_many``, the pub/sub message that wakes ``get()``, chords).
"""

from __future__ import annotations

import contextvars
from typing import Any

from .. import offload

__all__ = ["OffloadKeyValueMixin"]

#: The id of the task whose result is being stored, for the duration of the store.
_STORING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "resultkit_offload_task", default=None
)


class OffloadKeyValueMixin:
    """For Celery's key-value backends: offload in ``_set_with_state``, resolve in ``decode``."""

    offloader: offload.Offloader | None = None

    def _init_offload(self) -> None:
        self.offloader = offload.Offloader.from_conf(self.app.conf)  # type: ignore[attr-defined]

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        token = _STORING.set(task_id)
        try:
            return super()._store_result(  # type: ignore[misc]
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )
        finally:
            _STORING.reset(token)

    def _set_with_state(self, key: Any, value: Any, state: str) -> Any:
        task_id = _STORING.get()
        if self.offloader is not None and task_id is not None:
            # The object first: a reference is only ever stored for a written object.
            value = self.offloader.offload(task_id, value)
        return super()._set_with_state(key, value, state)  # type: ignore[misc]

    def decode(self, payload: Any) -> Any:
        return super().decode(offload.resolve(payload))  # type: ignore[misc]

    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, offload.ObjectStoreUnavailable):
            return True
        return bool(super().exception_safe_to_retry(exc))  # type: ignore[misc]

    def _forget(self, task_id: str) -> None:
        key = self.get_key_for_task(task_id)  # type: ignore[attr-defined]
        stored = self.get(key)  # type: ignore[attr-defined]
        super()._forget(task_id)  # type: ignore[misc]
        # The reference goes first: a failure here leaves an orphan for cleanup to sweep,
        # never a reference without its object.
        offload.delete_referenced(stored)
