"""Large results through a real worker into object storage (SeaweedFS), and back through Celery.

A worker with compression and encryption on returns results below and above
``resultkit_offload``'s threshold through ``resultkit-redis`` and
``resultkit-db`` (PostgreSQL); the client reads equal values with
``AsyncResult.get()``, ``join`` and a chord; forget leaves no object behind;
the object server killed mid-run leaves no reference without its object.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from resultkit import encryption
from resultkit.offload import MARKER, parse_reference
from tests.worker import celery_worker, load

THRESHOLD = "64KB"

APP = """
from celery import Celery
import os

app = Celery("{name}", broker={broker!r}, backend={backend!r})
app.conf.update(
    task_default_queue={queue!r},
    broker_connection_retry_on_startup=True,
    result_serializer="resultkit-encrypted",
    accept_content=["json", "resultkit-encrypted"],
    result_accept_content=["resultkit-encrypted"],
    resultkit_encryption_compression="zstd",
    result_compression={compression!r},
    result_extended=True,
    resultkit_offload={{"url": {offload!r}, "threshold": {threshold!r}}},
    result_backend_always_retry={always_retry!r},
    result_backend_max_retries=2,
)
if os.environ.get("APP_KEYS"):
    app.conf.resultkit_encryption_keys = os.environ["APP_KEYS"].split(",")


@app.task(name="big.blob")
def blob(seed, size):
    import base64, random
    return base64.b64encode(random.Random(seed).randbytes(size)).decode()


@app.task(name="big.lengths")
def lengths(values):
    return sorted(len(v) for v in values)
"""


def blob(seed: int, size: int) -> str:
    """What the worker's ``big.blob`` returns: incompressible text (base64 of random bytes)."""
    import base64
    import random

    return base64.b64encode(random.Random(seed).randbytes(size)).decode()


def write_app(
    folder: Path,
    broker: str,
    backend: str,
    offload: str,
    *,
    always_retry: bool = False,
) -> str:
    name = f"bigapp_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            APP.format(
                name=name,
                broker=broker,
                backend=backend,
                queue=f"rk-{name}",
                compression="zstd" if "redis" in backend else None,
                offload=offload,
                threshold=THRESHOLD,
                always_retry=always_retry,
            )
        )
    )
    return name


def backend_url(kind: str, request: Any) -> str:
    if kind == "redis":
        return "resultkit-redis+" + request.getfixturevalue("redis_db").url
    return "resultkit-" + request.getfixturevalue("postgres_db").url


def stored(kind: str, request: Any, task_id: str) -> bytes | None:
    """The bytes the backend holds for a task: Redis' value, or the result column."""
    if kind == "redis":
        value = request.getfixturevalue("redis_db").client.get(f"celery-task-meta-{task_id}")
        return None if value is None else bytes(value)
    db = request.getfixturevalue("postgres_db")
    with db.engine.connect() as conn:
        value = conn.scalar(
            sa.text("SELECT result FROM celery_taskmeta WHERE task_id = :id"), {"id": task_id}
        )
    return None if value is None else bytes(value)


@pytest.fixture
def keys() -> list[str]:
    return [encryption.generate_key()]


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_worker_results_above_the_threshold_round_trip_through_object_storage(
    kind: str, request: Any, tmp_path: Path, amqp_url: str, s3_bucket: Any, keys: list[str]
) -> None:
    # Given a worker whose results above 64 KB go to the test's bucket (zstd and encryption on)
    from celery import chord, group

    module = write_app(tmp_path, amqp_url, backend_url(kind, request), s3_bucket.url())
    app = load(tmp_path, module)
    encryption.configure(keys, conf=app.conf)
    env = {**s3_bucket.env, "APP_KEYS": ",".join(keys)}
    with celery_worker(tmp_path, module, extra_env=env):
        # When it returns a small and a large result
        small = app.send_task("big.blob", args=[1, 1_000])
        large = app.send_task("big.blob", args=[2, 300_000])
        # Then the client receives both, equal to what the task returned
        assert small.get(timeout=60) == blob(1, 1_000)
        assert large.get(timeout=60) == blob(2, 300_000)
        # ...the small one inline, the large one as a reference to its object
        assert not stored(kind, request, small.id).startswith(MARKER)
        reference = parse_reference(stored(kind, request, large.id))
        assert reference is not None
        assert reference.url.startswith(f"{s3_bucket.url()}/{large.id}.")
        assert reference.size > 64 * 1024
        assert len(s3_bucket.object_keys()) == 1

        # Groups and chords read offloaded members as if they were inline
        joined = group(app.signature("big.blob", args=[s, 200_000]) for s in (3, 4, 5))()
        assert joined.get(timeout=60) == [blob(s, 200_000) for s in (3, 4, 5)]
        body = chord(app.signature("big.blob", args=[s, 150_000]) for s in (6, 7))(
            app.signature("big.lengths")
        )
        assert body.get(timeout=60) == [len(blob(6, 150_000))] * 2

    # When the large results are forgotten
    before = len(s3_bucket.object_keys())
    assert before >= 6
    large.forget()
    for member in joined.results:
        member.forget()
    # Then their objects are gone with their references
    assert stored(kind, request, large.id) is None
    remaining = s3_bucket.object_keys()
    assert len(remaining) == before - 4
    assert not any(key.startswith(f"results/{large.id}") for key in remaining)


@pytest.mark.parametrize(
    ("kind", "always_retry"), [("redis", False), ("postgres", False), ("redis", True)]
)
def test_object_server_down_fails_the_store_and_leaves_no_dangling_reference(
    kind: str,
    always_retry: bool,
    request: Any,
    tmp_path: Path,
    amqp_url: str,
    own_seaweed: Any,
    keys: list[str],
) -> None:
    # Given a worker offloading to a server that is killed after the first large result
    # (with result_backend_always_retry: the store is retried, then BackendStoreError)
    module = write_app(
        tmp_path,
        amqp_url,
        backend_url(kind, request),
        own_seaweed.url(),
        always_retry=always_retry,
    )
    app = load(tmp_path, module)
    encryption.configure(keys, conf=app.conf)
    env = {**own_seaweed.env, "APP_KEYS": ",".join(keys)}
    with celery_worker(tmp_path, module, extra_env=env):
        first = app.send_task("big.blob", args=[1, 200_000])
        assert first.get(timeout=60) == blob(1, 200_000)
        own_seaweed.server.kill()

        # When a large result is stored while the object server is down
        second = app.send_task("big.blob", args=[2, 200_000])
        # Then the failure surfaces as the backend's error, naming the object store
        with pytest.raises(Exception, match=r"object store|failed to store result") as caught:
            second.get(timeout=90)
        expected = "BackendStoreError" if always_retry else "ObjectStoreUnavailable"
        assert type(caught.value).__name__ == expected
        # ...and what the backend holds for it is not a reference (no object behind it)
        payload = stored(kind, request, second.id)
        assert payload is None or not payload.startswith(MARKER)
        # Small results still go through
        assert app.send_task("big.blob", args=[3, 100]).get(timeout=60) == blob(3, 100)
