"""Chords on every resultkit backend, run by a real prefork worker with ONE process.

One process is the hard case: a worker that joins a header whose last parts
it has yet to run itself blocks for ever.  Each backend runs the shapes of
Celery's own canvas tests that failed or hung on resultkit-db: nested groups
in chains, chords of chords, headers of chains and of groups of chains,
errors in headers and bodies, errbacks on a failed header, a chord applied
twice, and a header task delivered twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from celery.app.task import Context
from celery.exceptions import ChordError

from tests.conftest import (
    cluster_keys,
    mysql_database,
    postgres_schema,
    redis_database,
    require,
    services,
)
from tests.worker import celery_worker, load, wait_until, write_app

TASKS = """
import json as _json
import os as _os


class ExpectedError(Exception):
    pass


_RECORD = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "record.jsonl")


def _flat(values):
    for value in values:
        if isinstance(value, (list, tuple)):
            yield from _flat(value)
        else:
            yield value


@app.task(name="c.add")
def add(x, y):
    return x + y


@app.task(name="c.tsum")
def tsum(values):
    return sum(_flat(values))


@app.task(name="c.fail")
def fail(*args):
    raise ExpectedError("expected", *args)


@app.task(name="c.slow_fail")
def slow_fail(seconds):
    import time as _time

    _time.sleep(seconds)
    raise ExpectedError("expected", seconds)


@app.task(name="c.record")
def record(*args):
    with open(_RECORD, "a") as handle:
        handle.write(_json.dumps([str(a) for a in args]) + "\\n")
"""

TIMEOUT_S = 30


@dataclass
class Chords:
    """A worker of one process, and its app as a client sees it."""

    app: Celery
    folder: Path
    url: str

    def s(self, name: str, *args: Any) -> Any:
        """A signature of task ``c.NAME`` that takes its parent's value."""
        return self.app.signature(f"c.{name}", args=args)

    def si(self, name: str, *args: Any) -> Any:
        """An immutable signature of task ``c.NAME``."""
        return self.app.signature(f"c.{name}", args=args, immutable=True)

    def recorded(self) -> list[list[str]]:
        import json

        path = self.folder / "record.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@contextlib.contextmanager
def _backend(kind: str, folder: Path, request: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """The result_backend URL of *kind*, and the settings it needs besides."""
    if kind == "rediscluster":
        cluster = request.getfixturevalue("redis_cluster")
        with cluster_keys(cluster) as prefix:
            options = {"global_keyprefix": prefix}
            yield cluster.backend_url, {"result_backend_transport_options": options}
    elif kind == "db-postgres":
        with postgres_schema() as db:
            yield "resultkit-db+" + db.sqlalchemy_url, {}
    elif kind == "db-mysql":
        with mysql_database() as db:
            yield "resultkit-db+" + db.sqlalchemy_url, {}
    elif kind == "db-sqlite":
        yield f"resultkit-db+sqlite:///{folder / 'results.sqlite3'}", {}
    elif kind == "redis":
        with redis_database() as db:
            yield "resultkit-redis+" + db.url, {}
    else:
        assert kind == "dual"
        with postgres_schema() as new, redis_database() as old:
            dual = {"new": "resultkit-db+" + new.sqlalchemy_url, "old": old.url}
            yield "resultkit-dual://", {"resultkit_dual_write": dual}


BACKENDS = ["db-postgres", "db-mysql", "db-sqlite", "redis", "dual", "rediscluster"]


@pytest.fixture(scope="module", params=BACKENDS)
def chords(request: Any, tmp_path_factory: Any) -> Iterator[Chords]:
    """A prefork worker of one process on each backend in turn."""
    require("rabbitmq")
    folder = tmp_path_factory.mktemp(f"chords-{request.param}")
    with _backend(request.param, folder, request) as (url, settings):
        settings.update(
            result_extended=True,
            task_allow_error_cb_on_chord_header=True,
            result_chord_join_timeout=10,
        )
        write_app(folder, "chordproj", services.AMQP_URL, url, tasks=TASKS, **settings)
        app = load(folder, "chordproj")
        with celery_worker(folder, "chordproj", pool="prefork", concurrency=1):
            yield Chords(app, folder, url)


def test_nested_groups_in_a_chain_complete(chords: Chords) -> None:
    # Given Celery's reduced test_nested_group_chain: a group whose second
    # member is a chain that ends in a group
    canvas = chain(
        chords.si("add", 1, 0),
        group(
            chords.si("add", 1, 100),
            chain(
                chords.si("add", 1, 200),
                group(
                    chords.si("add", 1, 1000),
                    chords.si("add", 1, 2000),
                ),
            ),
        ),
        chords.si("add", 1, 10),
    )
    # When it runs on one worker process, Then the last step's value comes back
    assert canvas.apply_async().get(timeout=TIMEOUT_S) == 11


def test_a_chord_of_chords_completes(chords: Chords) -> None:
    inner = [
        chord([chords.s("add", 1, 1), chords.s("add", 2, 2)], chords.s("tsum")),
        chord([chords.s("add", 3, 3), chords.s("add", 4, 4)], chords.s("tsum")),
    ]
    assert chord(inner, chords.s("tsum")).apply_async().get(timeout=TIMEOUT_S) == 20


def test_a_header_of_chains_and_of_a_group_of_chains_completes(chords: Chords) -> None:
    header = [
        chain(chords.si("add", 1, 1), chords.s("add", 10)),
        group(
            chain(chords.si("add", 2, 2), chords.s("add", 20)),
            chain(chords.si("add", 3, 3), chords.s("add", 30)),
        ),
        chords.s("add", 5, 5),
    ]
    # (2+10) + (4+20) + (6+30) + 10
    assert chord(header, chords.s("tsum")).apply_async().get(timeout=TIMEOUT_S) == 82


def test_an_error_in_the_header_reaches_get_and_fails_the_body(chords: Chords) -> None:
    result = chord([chords.s("add", 1, 1), chords.s("fail", 7)], chords.s("tsum")).apply_async()
    with pytest.raises(Exception, match="expected") as raised:
        result.get(timeout=TIMEOUT_S)
    assert type(raised.value).__name__ in ("ExpectedError", "ChordError")
    # The body is failed (a ChordError naming the header's error), never left pending
    wait_until(lambda: chords.app.AsyncResult(result.id).state == "FAILURE", TIMEOUT_S)
    body_error = chords.app.AsyncResult(result.id).result
    assert isinstance(body_error, ChordError), body_error
    assert "expected" in str(body_error)


def test_get_raises_the_header_tasks_own_error_when_it_fails_while_waiting(
    chords: Chords,
) -> None:
    # Given a chord whose header task fails a moment after the client starts waiting
    result = chord([chords.s("slow_fail", 1)], chords.s("tsum")).apply_async()
    # When the client waits: the header's failure and the body's ChordError are
    # stored within one polling round
    with pytest.raises(Exception, match="expected") as raised:
        result.get(timeout=TIMEOUT_S)
    # Then it gets the header task's own error, as Celery's test_canvas.py
    # test_error_propagates_to_chord_from_simple requires
    assert type(raised.value).__name__ == "ExpectedError", repr(raised.value)


def test_a_group_join_reports_the_chain_after_a_failed_header_as_failed(chords: Chords) -> None:
    # Given a group whose first member is a chain of two chords, the first of
    # which has a failing header task (Celery's test_header_failure_fails_the_chords_after_it)
    inner = chain(
        chord([chords.s("add", 1, 1), chords.s("fail")], chords.s("tsum")),
        chord([chords.s("add", 1), chords.s("add", 2)], chords.s("tsum")),
    )
    result = group(inner, chords.s("add", 1, 1)).apply_async()
    # When the client joins the group
    with pytest.raises(Exception, match="expected"):
        result.get(timeout=TIMEOUT_S)
    # Then the join raised only once the chain's last task was failed too
    assert result.results[0].state == "FAILURE"


def test_an_error_in_the_body_reaches_get(chords: Chords) -> None:
    result = chord([chords.s("add", 1, 1), chords.s("add", 2, 2)], chords.s("fail")).apply_async()
    with pytest.raises(Exception, match="expected") as raised:
        result.get(timeout=TIMEOUT_S)
    assert type(raised.value).__name__ == "ExpectedError"


def test_errbacks_run_when_a_header_task_fails(chords: Chords) -> None:
    # Given task_allow_error_cb_on_chord_header (set for this worker's app)
    marker = f"header-failed-{time.monotonic_ns()}"
    canvas = chord([chords.s("fail", 1), chords.s("add", 1, 1)], chords.s("tsum"))
    canvas.link_error(chords.si("record", marker))
    result = canvas.apply_async()
    with pytest.raises(Exception, match="expected"):
        result.get(timeout=TIMEOUT_S)
    # Then the errback ran
    wait_until(lambda: [marker] in chords.recorded(), TIMEOUT_S)


def test_a_chord_applied_twice_runs_twice(chords: Chords) -> None:
    canvas = chord([chords.s("add", i, i) for i in range(4)], chords.s("tsum"))
    canvas.freeze()  # the same ids both times
    assert canvas.apply_async().get(timeout=TIMEOUT_S) == 12
    assert canvas.apply_async().get(timeout=TIMEOUT_S) == 12


# ------------------------------------------------- a header task delivered twice


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def db_app(request: Any, tmp_path: Path) -> Iterator[Celery]:
    require("rabbitmq")
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(postgres_schema()).sqlalchemy_url
        elif request.param == "mysql":
            url = stack.enter_context(mysql_database()).sqlalchemy_url
        else:
            url = f"sqlite:///{tmp_path / 'results.sqlite3'}"
        app = Celery("dup", broker=services.AMQP_URL, set_as_current=False)
        app.conf.update(result_backend="resultkit-db+" + url, result_extended=True)
        yield app


def _queued(app: Celery, queue: str) -> int:
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def test_a_header_task_delivered_twice_is_counted_once(db_app: Celery) -> None:
    # Given a chord of two header tasks whose body goes to a queue of its own
    from uuid import uuid4

    from celery.result import AsyncResult

    queue = f"rk-body-{uuid4().hex[:10]}"
    with db_app.connection_for_write() as conn:
        conn.default_channel.queue_declare(queue, durable=True, auto_delete=False)
    backend = db_app.backend
    group_id, first, second = str(uuid4()), str(uuid4()), str(uuid4())
    body = db_app.signature("c.tsum", queue=queue).freeze()
    body_dict = dict(db_app.signature("c.tsum", queue=queue, task_id=body.id))
    backend.apply_chord(
        (group_id, [AsyncResult(first, app=db_app), AsyncResult(second, app=db_app)]), body_dict
    )
    backend.set_chord_size(group_id, 2)

    def finish(task_id: str, index: int, value: int) -> None:
        request = Context(id=task_id, group=group_id, group_index=index, chord=body_dict)
        backend.store_result(task_id, value, "SUCCESS", request=request)
        backend.on_chord_part_return(request, "SUCCESS", value)

    try:
        # When the first task is delivered twice, then the second
        finish(first, 0, 1)
        finish(first, 0, 1)
        assert _queued(db_app, queue) == 0  # counted once: the header is not complete
        finish(second, 1, 2)
        wait_until(lambda: _queued(db_app, queue) == 1, 10)
        # And a late duplicate arrives after the body was sent
        finish(first, 0, 1)
        time.sleep(0.3)
        # Then the body was sent exactly once
        assert _queued(db_app, queue) == 1
    finally:
        with db_app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
