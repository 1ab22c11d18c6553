"""Celery result backends shipped by resultkit, selected by plain Celery configuration.

``result_backend = "resultkit-redis+redis://..."`` picks
:class:`~resultkit.backends.redis.ResultkitRedisBackend` through the
``celery.result_backends`` entry point group.
"""

from __future__ import annotations

# A process using a resultkit backend can use resultkit's serializers and zstd/lz4.
from .. import serializers as _serializers  # noqa: F401

__all__: list[str] = []
