"""A real worker returns every supported type through Redis and PostgreSQL; the client gets them."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PICKLED_LAYOUT
from tests.test_serializers import same
from tests.worker import celery_worker, load

#: Every test here runs in the compatibility matrix too (noxfile.py).
pytestmark = pytest.mark.compat

TYPES = """
import dataclasses, datetime as dt, enum, math, uuid
from decimal import Decimal

import numpy as np
import pydantic

from resultkit.serializers import register_type


@register_type
class Colour(enum.Enum):
    RED = "red"


@register_type
@dataclasses.dataclass
class Point:
    x: int
    y: object


@register_type
class Invoice(pydantic.BaseModel):
    number: str
    amount: Decimal
    lines: list[Point]


def everything():
    tz = dt.timezone(dt.timedelta(hours=-3))
    return {
        "naive": dt.datetime(2026, 11, 23, 10, 0, 1, 5),
        "aware": dt.datetime(2026, 11, 23, 10, 0, tzinfo=tz),
        "date": dt.date(2026, 2, 28),
        "time": dt.time(23, 59, 59),
        "timedelta": dt.timedelta(days=2, microseconds=3),
        "decimal": Decimal("12.3400"),
        "uuid": uuid.UUID(int=99),
        "bytes": bytes(range(256)),
        "set": {1, "a", (2, 3)},
        "frozenset": frozenset({"x"}),
        "tuple": (1, (2,), [3, (4, 5)]),
        "enum": Colour.RED,
        "dataclass": Point(1, Point(2, {dt.date(2026, 1, 1)})),
        "pydantic": Invoice(number="N-1", amount=Decimal("5.5"), lines=[Point(3, 4)]),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "big": 2**90,
        "inf": -math.inf,
        "int_keys": {1: "a", (2, 3): "b"},
        "tag_key": {"__rk__": "user data"},
    }
"""

WORKER_ONLY = """
import dataclasses
from resultkit.serializers import register_type


@register_type
@dataclasses.dataclass
class Secret:
    owner: str
"""

APP = """
from celery import Celery
import {types}

app = Celery("{name}", broker={broker!r}, backend={backend!r})
app.conf.update(
    task_default_queue={queue!r},
    broker_connection_retry_on_startup=True,
    result_serializer={serializer!r},
    accept_content=["json", {serializer!r}],
    result_accept_content=[{serializer!r}],
    result_compression={compression!r},
    result_extended=True,
)


@app.task(name="types.everything")
def everything():
    return {types}.everything()


@app.task(name="types.echo")
def echo(value):
    return value


@app.task(name="types.opaque")
def opaque():
    class Opaque:
        pass
    return {{"rows": [1, {{"created": Opaque()}}]}}


@app.task(name="types.worker_only")
def worker_only():
    import {worker_only}
    return {worker_only}.Secret("ops")


@app.task(name="types.fails")
def fails():
    raise KeyError("missing", 7)
"""


@pytest.mark.parametrize("serializer", ["resultkit-json", "resultkit-msgpack"])
@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_worker_returns_every_supported_type(
    backend: str, serializer: str, request: Any, tmp_path: Path, amqp_url: str
) -> None:
    if backend == "postgres" and PICKLED_LAYOUT:
        pytest.skip(
            "Celery 5.4-5.6's SQL tables pickle the result whatever result_serializer says: "
            "no serializer of ours is used there (docs/compatibility.md)"
        )
    url = (
        request.getfixturevalue("redis_db").url
        if backend == "redis"
        else request.getfixturevalue("postgres_db").url
    )
    suffix = uuid.uuid4().hex[:8]
    types, worker_only, name = f"rktypes_{suffix}", f"rkworker_{suffix}", f"rkapp_{suffix}"
    (tmp_path / f"{types}.py").write_text(textwrap.dedent(TYPES))
    (tmp_path / f"{worker_only}.py").write_text(textwrap.dedent(WORKER_ONLY))
    compression = "zstd" if backend == "redis" and serializer == "resultkit-json" else None
    (tmp_path / f"{name}.py").write_text(
        APP.format(
            types=types,
            worker_only=worker_only,
            name=name,
            broker=amqp_url,
            backend=url,
            queue=f"rk-{suffix}",
            serializer=serializer,
            compression=compression,
        )
    )
    app = load(tmp_path, name)  # also imports (and registers) the shared types
    expected = __import__(types).everything()
    with celery_worker(tmp_path, name):
        got = app.send_task("types.everything").get(timeout=60)
        assert same(got, expected), got

        # A task's own arguments travel as JSON; the result comes back typed.
        assert app.send_task("types.echo", args=[[1, "x"]]).get(timeout=60) == [1, "x"]

        with pytest.raises(
            Exception, match=r'result\["rows"\]\[1\]\["created"\].*Opaque.*register_type'
        ):
            app.send_task("types.opaque").get(timeout=60)

        # Registered in the worker only: this client gets plain data, never an instance.
        assert app.send_task("types.worker_only").get(timeout=60) == {"owner": "ops"}

        failed = app.send_task("types.fails")
        with pytest.raises(KeyError) as caught:
            failed.get(timeout=60)
        assert caught.value.args == ("missing", 7)
        assert "KeyError" in failed.traceback
