"""Write the results that ``tests/test_find.py`` queries, through Celery's own backends.

Run in a subprocess of its own (django-celery-results needs Django configured
once per process)::

    python find_writer.py BACKEND_URL [--setting KEY=JSON ...]
    python find_writer.py django SQLALCHEMY_URL

Every result is stored by the backend's own ``store_result`` /
``mark_as_failure`` / ``mark_as_retry`` with a request object, as a worker
stores it with ``result_extended`` on; the group by ``GroupResult.save``.
Three waves, apart by a whole second (MySQL keeps whole seconds), so that
``--since``/``--until`` between them select whole waves. Prints the manifest:
the boundaries between waves, as ISO times.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from celery import Celery
from celery.app.task import Context
from celery.result import AsyncResult, GroupResult


def request(app: Celery, task_id: str, name: str, **fields: Any) -> Context:
    children = [AsyncResult(c, app=app) for c in fields.pop("children", [])]
    context = Context(
        id=task_id,
        task=name,
        args=fields.pop("args", []),
        kwargs=fields.pop("kwargs", {}),
        hostname=fields.pop("worker", "celery@alpha"),
        retries=fields.pop("retries", 0),
        delivery_info={"routing_key": fields.pop("queue", "q-default")},
        **fields,
    )
    # ``children`` is a property over the list a task appends the results it sends to.
    context.children.extend(children)
    return context


def fail(backend: Any, req: Context, exc: BaseException, state: str = "FAILURE") -> None:
    try:
        raise exc
    except BaseException as raised:
        tb = f"Traceback (most recent call last):\n{type(raised).__name__}: {raised}\n"
        if state == "RETRY":
            backend.mark_as_retry(req.id, raised, traceback=tb, request=req)
        else:
            backend.mark_as_failure(req.id, raised, traceback=tb, request=req)


def gap() -> str:
    """Wait for the next wave; the boundary between the two, a whole second at least
    0.6 s after the last result and 0.1 s before the next one: MySQL keeps whole
    seconds (truncated or rounded), which then fall on the same side of it."""
    boundary = math.ceil(time.time() + 0.6)
    time.sleep(boundary + 0.1 - time.time())
    return datetime.fromtimestamp(boundary, timezone.utc).isoformat()


def write(app: Celery) -> dict[str, Any]:
    backend = app.backend
    ok = backend.mark_as_done
    # Wave 1: reports and mail, a group of two.
    ok(
        "w1-report",
        {"rows": 10},
        request=request(
            app,
            "w1-report",
            "reports.daily",
            args=[1, "eu"],
            kwargs={"user_id": 42},
            queue="q-reports",
            group="g-1",
        ),
    )
    fail(
        backend,
        request(
            app,
            "w1-fail",
            "reports.daily",
            args=[2, "us"],
            kwargs={"user_id": 7},
            queue="q-reports",
            group="g-1",
        ),
        ValueError("report 2 failed"),
    )
    ok(
        "w1-mail",
        None,
        request=request(
            app,
            "w1-mail",
            "mail.send",
            args=["bob@example.com"],
            kwargs={"user_id": 42, "tags": ["welcome", 3]},
            worker="celery@beta",
            queue="q-mail",
        ),
    )
    GroupResult(
        "g-1", [AsyncResult("w1-report", app=app), AsyncResult("w1-fail", app=app)], app=app
    ).save(backend=backend)
    since = gap()
    # Wave 2: a workflow root -> (c1 -> c3), c2.
    ok(
        "w2-leaf",
        1,
        request=request(
            app, "w2-leaf", "flows.leaf", parent_id="w2-c1", root_id="w2-root", worker="celery@beta"
        ),
    )
    ok(
        "w2-c1",
        2,
        request=request(
            app, "w2-c1", "flows.step", parent_id="w2-root", root_id="w2-root", children=["w2-leaf"]
        ),
    )
    fail(
        backend,
        request(
            app,
            "w2-c2",
            "flows.step",
            parent_id="w2-root",
            root_id="w2-root",
            kwargs={"user_id": "42"},
        ),
        KeyError("missing"),
    )
    ok(
        "w2-root",
        3,
        request=request(
            app, "w2-root", "flows.start", children=["w2-c1", "w2-c2"], root_id="w2-root"
        ),
    )
    until = gap()
    # Wave 3: recent failures and a retry.
    fail(
        backend,
        request(
            app, "w3-weekly", "reports.weekly", args=[3], kwargs={"user_id": 42}, queue="q-reports"
        ),
        ValueError("week 3 failed"),
    )
    fail(
        backend,
        request(app, "w3-retry", "reports.daily", args=[4], retries=1, queue="q-reports"),
        TimeoutError("slow"),
        state="RETRY",
    )
    ok(
        "w3-add",
        42,
        request=request(app, "w3-add", "misc.add", args=[2, 40], worker="celery@gamma"),
    )
    return {"since": since, "until": until}


def django_app(sqlalchemy_url: str) -> Celery:
    from tests.compat_writer import django_app_for

    return django_app_for(sqlalchemy_url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend")
    parser.add_argument("url", nargs="?")
    parser.add_argument("--setting", action="append", default=[])
    options = parser.parse_args(argv)
    if options.backend == "django":
        app = django_app(options.url)
    else:
        if options.backend.startswith("file://"):
            # Celery's filesystem backend writes into a folder that exists.
            Path(options.backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        app = Celery("find-writer", set_as_current=False)
        app.conf.update(
            broker_url="memory://",
            result_backend=options.backend,
            result_extended=True,
            result_serializer="json",
            accept_content=["json"],
        )
        for item in options.setting:
            key, _, value = item.partition("=")
            app.conf[key] = json.loads(value)
    manifest = write(app)
    json.dump(manifest, sys.stdout)


if __name__ == "__main__":
    main()
