"""pytest plugin loaded (``-p celery_suite_plugin``) into Celery's own integration tests.

``scripts/celery-suite`` runs Celery's ``t/integration`` unchanged; this plugin only
adjusts how they are run:

- a hang fails the test instead of blocking the run: a ``@pytest.mark.timeout``
  of Celery's longer than ``--timeout`` is lowered to it;
- the session worker's start-up ping may take up to ``WORKER_PING_TIMEOUT_S``
  (Celery's 10 s fail every test of a run when a loaded machine starts the
  worker slowly);
- ``RESULTKIT_SUITE_REDIS_ALIAS=1`` makes Celery's ``redis://`` alias build
  resultkit's Redis backend, so the tests that Celery gates on
  ``result_backend.startswith('redis')`` also run on ``resultkit-redis``;
- ``RESULTKIT_SUITE_REDISCLUSTER_ALIAS=1`` adds a ``rediscluster://`` alias for
  resultkit's Redis backend (Celery has none), so that a ``result_backend`` of
  ``rediscluster://host:port,...`` runs those tests on a Redis Cluster.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

#: How long the session worker may take to answer its start-up ping (seconds).
WORKER_PING_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    """Celery's worker parameters, with a start-up ping that tolerates a loaded machine."""
    return {"ping_task_timeout": WORKER_PING_TIMEOUT_S}


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("RESULTKIT_SUITE_REDIS_ALIAS") == "1":
        from celery.app import backends

        backends.BACKEND_ALIASES["redis"] = "resultkit.backends.redis:ResultkitRedisBackend"
    if os.environ.get("RESULTKIT_SUITE_REDISCLUSTER_ALIAS") == "1":
        from celery.app import backends

        backends.BACKEND_ALIASES["rediscluster"] = "resultkit.backends.redis:ResultkitRedisBackend"


def pytest_collection_modifyitems(config: pytest.Config, items: list[Any]) -> None:
    limit = config.getoption("timeout", None)
    if not limit:
        return
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is None:
            continue
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        if value is None or float(value) > float(limit):
            item.add_marker(pytest.mark.timeout(timeout=float(limit)), append=False)
