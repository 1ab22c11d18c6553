"""Write results the way a real Celery or django-celery-results release does.

Run by ``tests/test_compat_layouts.py`` with the Python of a virtualenv that
holds one release (Celery 5.4, django-celery-results 2.5, ...), never with the
project's own: nothing here imports resultkit, and the tables are made by the
release's own code (Celery's models, django-celery-results' migrations).

    python compat_writer.py celery SQLALCHEMY_URL [--extended]
    python compat_writer.py django SQLALCHEMY_URL

Tasks run through Celery's tracer (``Task.apply`` with
``task_store_eager_result``), the code path a worker uses to store results;
a group is saved with ``GroupResult.save``. Prints one JSON document, the
manifest of what was written, for the test to compare with what it reads.
"""

from __future__ import annotations

import argparse
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
    for member, value in zip(members, (1, 2)):
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


def celery_layout(url: str, extended: bool) -> dict[str, Any]:
    app = make_app(f"db+{url}", extended)
    manifest = write(app, extended)
    manifest["layout"] = "celery"
    return manifest


def django_layout(url: str) -> dict[str, Any]:
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
    call_command("migrate", "django_celery_results", verbosity=0)
    app = make_app("django-db", extended=True)
    manifest = write(app, True)
    manifest["layout"] = "django"
    return manifest


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("layout", choices=["celery", "django"])
    parser.add_argument("url", help="SQLAlchemy URL of a database (or schema) of its own")
    parser.add_argument("--extended", action="store_true", help="result_extended = True")
    args = parser.parse_args(argv)
    if args.layout == "celery":
        manifest = celery_layout(args.url, args.extended)
    else:
        manifest = django_layout(args.url)
    json.dump(manifest, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
