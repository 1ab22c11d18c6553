"""Library calls leave the caller's state as they found it: the app's settings,
the app's backend, kombu's serializer registry, the process's encryption settings.

Settings travel as values into the code that needs them; the doctor's shorter
timeouts, a broker given on the command line and the backends resultkit builds
live on private copies.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu.serialization import registry

from resultkit import encryption
from resultkit.commands import cleanup, doctor, migrate, stats
from tests.conftest import RedisDB, SqlDB, redis_database
from tests.faults import fill

KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()


def _app(backend: str) -> Celery:
    app = Celery("caller", set_as_current=False, broker="memory://")
    app.conf.update(
        result_backend=backend,
        result_extended=False,
        redis_socket_timeout=30.0,
        redis_socket_connect_timeout=30.0,
        redis_retry_on_timeout=True,
        database_engine_options={"echo": False},
        result_backend_transport_options={"visibility_timeout": 99},
        result_expires=3600,
        resultkit_encryption_keys=[KEY],
    )
    return app


def _state(app: Celery) -> dict[str, Any]:
    return {
        "settings": copy.deepcopy(dict(app.conf.table(with_defaults=True, censored=False))),
        "backend built": vars(app._local).get("backend") is not None,
        "encoders": sorted(registry._encoders),
        "decoders": sorted(registry._decoders),
        "disabled": sorted(registry._disabled_content_types),
        "encryption": encryption._SETTINGS,
        "scoped encryption": encryption._SCOPED.get(),
        "environment": dict(os.environ),
    }


CALLS: dict[str, Callable[[Celery, Path, RedisDB], Any]] = {
    "doctor": lambda app, tmp, other: doctor(app=app, broker="memory://", timeout=5),
    "stats": lambda app, tmp, other: stats(app=app),
    "cleanup": lambda app, tmp, other: cleanup(app=app, older_than="1d", dry_run=True),
    "migrate": lambda app, tmp, other: migrate(
        app.conf.result_backend, other.url, app=app, checkpoint=tmp / "cp.json", verify=True
    ),
    "migrate encrypting": lambda app, tmp, other: migrate(
        app.conf.result_backend,
        other.url,
        app=app,
        checkpoint=tmp / "cp2.json",
        target_serializer="resultkit-encrypted",
        verify=True,
    ),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_a_library_call_leaves_the_caller_as_it_found_it(
    call: str,
    kind: str,
    redis_db: RedisDB,
    postgres_db: SqlDB,
    tmp_path: Path,
) -> None:
    # Given a caller's app on a backend holding results
    fill(redis_db.client, "m", 50)
    if kind == "redis":
        app = _app(redis_db.url)
    else:
        app = _app(postgres_db.url)
        migrate(redis_db.url, postgres_db.url, checkpoint=tmp_path / "seed.json")
    before = _state(app)
    # When resultkit checks, counts, cleans or migrates through it
    with redis_database() as other:
        CALLS[call](app, tmp_path, other)
    # Then the app, the registries and the process are as they were
    after = _state(app)
    for part in before:
        assert after[part] == before[part], f"{call} changed the caller's {part}"
