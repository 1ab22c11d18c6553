"""Write results the way a real Celery or django-celery-results release does.

Run by ``tests/test_compat_layouts.py`` with the Python of a virtualenv that
holds one release (Celery 5.4, django-celery-results 2.5, ...), never with the
project's own: nothing here imports resultkit, and the tables are made by the
release's own code (Celery's models, django-celery-results' migrations).

    python compat_writer.py celery SQLALCHEMY_URL [--extended]
    python compat_writer.py django SQLALCHEMY_URL
    python compat_writer.py celery|django SQLALCHEMY_URL [--extended] --read MANIFEST

Tasks run through Celery's tracer (``Task.apply`` with
``task_store_eager_result``), the code path a worker uses to store results;
a group is saved with ``GroupResult.save``. Prints one JSON document, the
manifest of what was written, for the test to compare with what it reads.
With ``--read``, writes nothing: reads the manifest's results back through
the release (``AsyncResult``, ``GroupResult.restore``) and prints what the
application would see, in the manifest's form.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import uuid
from typing import Any

from celery import Celery, states
from celery.result import GroupResult

#: Values that every layout must give back as they were.
VALUES: list[Any] = [
    42,
    "naïve ☃ text",
    {"nested": {"list": [1, 2.5, None, True, "x"]}, "empty": {}},
    [[], [1, [2, [3]]]],
    2**62,
    None,
]


def make_app(backend: str, extended: bool) -> Celery:
    app = Celery("compat", set_as_current=False)
    app.conf.update(
        broker_url="memory://",
        result_backend=backend,
        result_extended=extended,
        result_serializer="json",
        accept_content=["json"],
        task_store_eager_result=True,
    )
    return app


def write(app: Celery, extended: bool) -> dict[str, Any]:
    """Store successes, a failure, a started task, a custom state and a group."""

    @app.task(name="compat.echo")
    def echo(value: Any, *, label: str = "") -> Any:
        return value

    @app.task(name="compat.fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    tasks: list[dict[str, Any]] = []
    for value in VALUES:
        task_id = str(uuid.uuid4())
        echo.apply((value,), {"label": "v"}, task_id=task_id)
        tasks.append(
            {
                "task_id": task_id,
                "status": states.SUCCESS,
                "result": value,
                "name": "compat.echo",
                "args": [value],
                "kwargs": {"label": "v"},
            }
        )
    task_id = str(uuid.uuid4())
    fail.apply(("it broke",), task_id=task_id)
    tasks.append(
        {
            "task_id": task_id,
            "status": states.FAILURE,
            "exc_type": "ValueError",
            "exc_message": ["it broke"],
            "name": "compat.fail",
            "args": ["it broke"],
            "kwargs": {},
        }
    )
    # A task still running, and one reporting progress (a custom state), as a worker stores them.
    for state, meta in ((states.STARTED, {"pid": 1, "hostname": "w1"}), ("PROGRESS", {"done": 3})):
        task_id = str(uuid.uuid4())
        app.backend.store_result(task_id, meta, state)
        tasks.append({"task_id": task_id, "status": state, "result": meta})

    members = [str(uuid.uuid4()) for _ in range(2)]
    for member, value in zip(members, (1, 2), strict=True):
        echo.apply((value,), task_id=member)
        tasks.append(
            {
                "task_id": member,
                "status": states.SUCCESS,
                "result": value,
                "name": "compat.echo",
                "args": [value],
                "kwargs": {},
            }
        )
    group_id = str(uuid.uuid4())
    saved = GroupResult(group_id, [app.AsyncResult(m) for m in members], app=app)
    saved.save(backend=app.backend)
    # The group is a real one of Celery's: its members restore as they were saved.
    restored = app.GroupResult.restore(group_id)
    assert [r.id for r in restored.results] == members, restored
    return {
        "extended": extended,
        "tasks": tasks,
        "groups": [{"group_id": group_id, "members": members}],
    }


def _literal(value: Any) -> Any:
    """A value django-celery-results keeps as its repr, back as a value."""
    if isinstance(value, str):
        value = ast.literal_eval(value)
    return list(value) if isinstance(value, tuple) else value


def read(app: Celery, manifest: dict[str, Any]) -> dict[str, Any]:
    """What the application reads back for the manifest's tasks and groups."""
    tasks = []
    for expected in manifest["tasks"]:
        found = app.AsyncResult(expected["task_id"])
        seen: dict[str, Any] = {"task_id": found.id, "status": found.state}
        if found.state == states.FAILURE:
            seen["exc_type"] = type(found.result).__name__
            seen["exc_message"] = list(found.result.args)
            seen["traceback"] = found.traceback
        else:
            seen["result"] = found.result
        if manifest["extended"] and "name" in expected:
            if manifest["layout"] == "django":
                # django-celery-results names them task_name, task_args (a repr), ...
                meta = found._get_task_meta()
                seen.update(
                    name=meta.get("task_name"),
                    args=_literal(meta.get("task_args")),
                    kwargs=_literal(meta.get("task_kwargs")),
                )
            else:
                seen.update(name=found.name, args=found.args, kwargs=found.kwargs)
        tasks.append(seen)
    groups = []
    for expected in manifest["groups"]:
        restored = app.GroupResult.restore(expected["group_id"])
        members = None if restored is None else [r.id for r in restored.results]
        groups.append({"group_id": expected["group_id"], "members": members})
    return {**manifest, "tasks": tasks, "groups": groups}


def celery_app_for(url: str, extended: bool) -> Celery:
    return make_app(f"db+{url}", extended)


def django_app_for(url: str) -> Celery:
    import django
    import sqlalchemy as sa
    from django.conf import settings
    from django.core.management import call_command

    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.database}
    else:
        engine = {
            "postgresql": "django.db.backends.postgresql",
            "mysql": "django.db.backends.mysql",
        }[backend]
        database = {
            "ENGINE": engine,
            "NAME": parsed.database,
            "USER": parsed.username or "",
            "PASSWORD": parsed.password or "",
            "HOST": parsed.host or "",
            "PORT": str(parsed.port or ""),
        }
        search_path = parsed.query.get("options")
        if search_path:
            database["OPTIONS"] = {"options": search_path}
        if backend == "mysql":
            # Django's MySQL backend runs on PyMySQL under the name of MySQLdb.
            import pymysql

            pymysql.install_as_MySQLdb()
            pymysql.version_info = (2, 2, 1, "final", 0)
    settings.configure(
        DATABASES={"default": database},
        INSTALLED_APPS=["django_celery_results"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    # The release's own migrations make its tables (a no-op when they exist).
    call_command("migrate", "django_celery_results", verbosity=0)
    return make_app("django-db", extended=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("layout", choices=["celery", "django"])
    parser.add_argument("url", help="SQLAlchemy URL of a database (or schema) of its own")
    parser.add_argument("--extended", action="store_true", help="result_extended = True")
    parser.add_argument("--read", metavar="MANIFEST", help="read these results back instead")
    args = parser.parse_args(argv)
    if args.layout == "celery":
        app = celery_app_for(args.url, args.extended)
    else:
        app = django_app_for(args.url)
    if args.read:
        with open(args.read, encoding="utf-8") as handle:
            output = read(app, json.load(handle))
    else:
        output = {**write(app, args.extended or args.layout == "django"), "layout": args.layout}
    json.dump(output, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
