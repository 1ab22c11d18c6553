"""resultkit retry: a stored task is sent again through the app's broker, by its
stored name, arguments and queue, and a real worker runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run
from tests.worker import celery_worker, load, write_app

#: A task that fails until a file exists: retried once the file is there, it succeeds.
FLAKY = """
import os as _os

@app.task(name="reports.build")
def build(report_id, *, flag):
    if not _os.path.exists(flag):
        raise RuntimeError(f"report {report_id} is not ready")
    return {"report": report_id, "built": True}

@app.task(name="misc.add")
def add(x, y):
    return x + y
"""


def resultkit(*args: str, cwd: Path) -> Any:
    return run("resultkit", *args, cwd=cwd)


def failed_builds(app: Any, flag: Path, ids: list[int]) -> list[Any]:
    sent = [app.send_task("reports.build", args=[i], kwargs={"flag": str(flag)}) for i in ids]
    for result in sent:
        result.get(timeout=60, propagate=False)
        assert result.state == "FAILURE"
    return sent


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_retry_sends_the_task_again_and_the_worker_runs_it(
    backend: str, request: Any, amqp_url: str, tmp_path: Path
) -> None:
    # Given a task that failed, stored with result_extended by a real worker
    url = (
        request.getfixturevalue("redis_db").url
        if backend == "redis"
        else request.getfixturevalue("postgres_db").url
    )
    queue = write_app(tmp_path, "proj", amqp_url, url, tasks=FLAKY, result_extended=True)
    app = load(tmp_path, "proj")
    flag = tmp_path / "ready"
    with celery_worker(tmp_path, "proj"):
        (old,) = failed_builds(app, flag, [7])
        # When the cause is fixed and the task is retried by its id
        flag.write_text("")
        done = resultkit("retry", old.id, "-A", "proj", "--json", cwd=tmp_path)
        assert done.code == 0, done.output
        report = done.json
        new_id = report["mapping"][old.id]
        assert new_id != old.id
        assert report["tasks"][0]["name"] == "reports.build"
        assert report["tasks"][0]["queue"] == queue
        # Then the worker runs it with the stored arguments, through the stored queue
        new = app.AsyncResult(new_id)
        assert new.get(timeout=60) == {"report": 7, "built": True}
        assert new.name == "reports.build"
        assert list(new.args) == [7]
        assert new.kwargs == {"flag": str(flag)}
        assert new.queue == queue
    # And the old result is left as it was
    assert app.AsyncResult(old.id).state == "FAILURE"


def test_retry_by_filters_needs_yes_and_sends_each_match(
    amqp_url: str, redis_db: Any, tmp_path: Path
) -> None:
    write_app(tmp_path, "proj", amqp_url, redis_db.url, tasks=FLAKY, result_extended=True)
    app = load(tmp_path, "proj")
    flag = tmp_path / "ready"
    with celery_worker(tmp_path, "proj"):
        olds = failed_builds(app, flag, [1, 2])
        assert app.send_task("misc.add", args=[1, 2]).get(timeout=60) == 3
        flag.write_text("")
        filters = ("--state", "FAILURE", "--task", "reports.*")
        # Without --yes: refused, nothing sent
        refused = resultkit("retry", "-A", "proj", *filters, cwd=tmp_path)
        assert refused.code == 2
        assert "--yes" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        # A dry run lists them and sends nothing
        dry = resultkit("retry", "-A", "proj", *filters, "--dry-run", "--json", cwd=tmp_path)
        assert dry.code == 0, dry.output
        assert (dry.json["matched"], dry.json["sent"], dry.json["mapping"]) == (2, 0, {})
        assert {t["task_id"] for t in dry.json["tasks"]} == {r.id for r in olds}
        # With --yes, each is sent again and runs
        done = resultkit("retry", "-A", "proj", *filters, "--yes", "--json", cwd=tmp_path)
        assert done.code == 0, done.output
        mapping = done.json["mapping"]
        assert set(mapping) == {r.id for r in olds}
        built = sorted(app.AsyncResult(n).get(timeout=60)["report"] for n in mapping.values())
        assert built == [1, 2]
        # The human report prints old and new ids
        human = resultkit("retry", olds[0].id, "-A", "proj", cwd=tmp_path)
        assert human.code == 0, human.output
        assert olds[0].id in human.stdout
        assert "sent 1 tasks" in human.stdout


def test_celery_results_retry_uses_celerys_app(
    amqp_url: str, redis_db: Any, tmp_path: Path
) -> None:
    write_app(tmp_path, "proj", amqp_url, redis_db.url, tasks=FLAKY, result_extended=True)
    app = load(tmp_path, "proj")
    flag = tmp_path / "ready"
    with celery_worker(tmp_path, "proj"):
        (old,) = failed_builds(app, flag, [3])
        flag.write_text("")
        done = run("celery", "-A", "proj", "results", "retry", old.id, "--json", cwd=tmp_path)
        assert done.code == 0, done.output
        new = app.AsyncResult(done.json["mapping"][old.id])
        assert new.get(timeout=60) == {"report": 3, "built": True}


def test_retry_refuses_results_stored_without_result_extended(
    amqp_url: str, redis_db: Any, tmp_path: Path
) -> None:
    write_app(tmp_path, "plain", amqp_url, redis_db.url, tasks=FLAKY)
    app = load(tmp_path, "plain")
    app.backend.store_result("old-1", None, "FAILURE")
    done = resultkit("retry", "old-1", "-A", "plain", cwd=tmp_path)
    assert done.code == 1
    assert "result_extended" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    missing = resultkit("retry", "nope", "-A", "plain", cwd=tmp_path)
    assert missing.code == 1
    assert "no result with id nope" in missing.stderr


def test_retry_needs_an_app_and_a_task_id_or_filters(redis_db: Any, tmp_path: Path) -> None:
    no_app = resultkit("retry", "some-id", cwd=tmp_path)
    assert no_app.code == 2
    assert "-A" in no_app.stderr
    (tmp_path / "proj.py").write_text(
        f"from celery import Celery\napp = Celery('proj', backend={redis_db.url!r})\n"
    )
    nothing = resultkit("retry", "-A", "proj", cwd=tmp_path)
    assert nothing.code == 2
    assert "TASK_ID" in nothing.stderr
    both = resultkit("retry", "x", "-A", "proj", "--state", "FAILURE", cwd=tmp_path)
    assert both.code == 2


def test_pickled_arguments_are_decoded_only_with_accept_pickle(
    redis_db: Any, tmp_path: Path
) -> None:
    from celery.app.task import Context

    (tmp_path / "pickled.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('pickled', broker='memory://', backend={redis_db.url!r})\n"
        "app.conf.update(result_serializer='pickle', result_accept_content=['pickle', 'json'],"
        " accept_content=['pickle', 'json'], result_extended=True)\n"
    )
    app = load(tmp_path, "pickled")
    request = Context(
        id="p-1",
        task="reports.build",
        args=[5],
        kwargs={"flag": "x"},
        delivery_info={"routing_key": "reports"},
    )
    app.backend.store_result("p-1", None, "FAILURE", request=request)
    refused = resultkit("retry", "p-1", "-A", "pickled", "--dry-run", cwd=tmp_path)
    assert refused.code == 1
    assert "--accept-pickle" in refused.stderr
    accepted = resultkit(
        "retry",
        "p-1",
        "-A",
        "pickled",
        "--dry-run",
        "--accept-pickle",
        "--to-queue",
        "other",
        "--json",
        cwd=tmp_path,
    )
    assert accepted.code == 0, accepted.output
    assert accepted.json["tasks"] == [
        {"task_id": "p-1", "name": "reports.build", "queue": "other", "new_task_id": None}
    ]


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql", "sqlite", "file"])
def test_retry_reads_what_to_send_from_every_celery_backend(
    kind: str, request: Any, tmp_path: Path
) -> None:
    from tests.subjects import fresh_store, write_subjects

    # Given results written by Celery's own backend, with result_extended
    url = fresh_store(kind, request, tmp_path / "store")
    write_subjects(kind, url)
    (tmp_path / "proj.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('proj', broker='memory://', backend={url!r})\n"
        "app.conf.result_extended = True\n"
    )
    # When a task and a filter are retried dry
    one = resultkit("retry", "u42-1", "-A", "proj", "--dry-run", "--json", cwd=tmp_path)
    failed = resultkit(
        "retry", "-A", "proj", "--exception", "ValueError", "--dry-run", "--json", cwd=tmp_path
    )
    # Then the plan holds the stored name and queue, and nothing was sent
    assert one.code == 0, one.output
    assert one.json["tasks"] == [
        {"task_id": "u42-1", "name": "mail.send", "queue": "mail", "new_task_id": None}
    ]
    assert failed.code == 0, failed.output
    assert {t["task_id"] for t in failed.json["tasks"]} == {"u42-0", "u7-1"}
    assert {t["name"] for t in failed.json["tasks"]} == {"billing.charge"}
    assert failed.json["sent"] == 0
