"""``resultkit-redis``: Celery's Redis backend, with per-task retention policies.

Selected with ``result_backend = "resultkit-redis+redis://host:6379/0"``
(``rediss://`` and ``sentinel://`` likewise; ``rediscluster://host:port,...``
selects :mod:`resultkit.backends.rediscluster`).  It is Celery's
:class:`~celery.backends.redis.RedisBackend` in every respect but one: each
result key gets the TTL that ``resultkit_retention`` gives its task name and
state, instead of one ``result_expires`` for everything.  Group and chord keys
get the policy's default lifetime.  With ``resultkit_offload``, results above
the threshold live in object storage behind a reference (docs/offload.md).
"""

from __future__ import annotations

import contextvars
from typing import Any

from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError

from .._celery_compat import redis_set_takes_expires
from ..retention import RetentionPolicy
from ._offload import OffloadKeyValueMixin

__all__ = ["ResultkitRedisBackend", "ResultkitSentinelBackend"]

#: The name of the task whose result is being stored, for the duration of the store.
_TASK_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "resultkit_task_name", default=None
)


def _redis_ttl(lifetime: float | None) -> int:
    """Seconds for SETEX; 0 means no TTL (Celery's RedisBackend stores without one)."""
    if lifetime is None:
        return 0
    return max(1, round(lifetime))


class _RetentionMixin:
    retention: RetentionPolicy

    def _init_retention(self) -> None:
        self.retention = RetentionPolicy.from_app(self.app)  # type: ignore[attr-defined]
        default = _redis_ttl(self.retention.default)
        # Group keys, chord counters and chord results follow the policy's default
        # (Celery derives chord lifetimes from ``expires`` unless result_chord_expires is set).
        self.expires = default or None

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        token = _TASK_NAME.set(getattr(request, "task", None))
        try:
            return super()._store_result(  # type: ignore[misc]
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )
        finally:
            _TASK_NAME.reset(token)

    def _set_with_state(self, key: Any, value: Any, state: str) -> Any:
        lifetime = self.retention.lifetime(_TASK_NAME.get(), state)
        if redis_set_takes_expires(type(self)):
            return self.set(key, value, expires=_redis_ttl(lifetime))  # type: ignore[attr-defined]
        # Celery 5.4-5.6's set() has no lifetime per key: the same store, with this one.
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:  # type: ignore[attr-defined]
            raise BackendStoreError("value too large for Redis backend")
        return self.ensure(  # type: ignore[attr-defined]
            self._set_expiring, (key, value, _redis_ttl(lifetime))
        )

    def _set_expiring(self, key: Any, value: Any, expires: int) -> None:
        """Store *value* at *key* for *expires* seconds (0: no TTL) and publish it, as
        Celery 5.7's ``RedisBackend._set`` does."""
        with self.client.pipeline() as pipe:  # type: ignore[attr-defined]
            pipe.set(key, value, ex=expires or None)
            pipe.publish(key, value)
            pipe.execute()


class ResultkitRedisBackend(OffloadKeyValueMixin, _RetentionMixin, RedisBackend):  # type: ignore[misc]
    """Celery's RedisBackend with per-task, per-state result lifetimes.

    ``resultkit-redis+rediscluster://...`` gives the Redis Cluster flavour,
    :class:`~resultkit.backends.rediscluster.ResultkitRedisClusterBackend`.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is ResultkitRedisBackend:
            from ..cluster import is_cluster_url

            url = kwargs.get("url")
            if is_cluster_url(url if isinstance(url, str) else None):
                from .rediscluster import ResultkitRedisClusterBackend

                return super().__new__(ResultkitRedisClusterBackend)
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_retention()
        self._init_offload()


class ResultkitSentinelBackend(OffloadKeyValueMixin, _RetentionMixin, SentinelBackend):  # type: ignore[misc]
    """Celery's SentinelBackend with per-task, per-state result lifetimes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_retention()
        self._init_offload()
