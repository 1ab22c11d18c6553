"""resultkit-dual: two backends during a cutover, with real workers, faults, and the runbook."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chord, group

from tests.conftest import RedisDB, SqlDB, run
from tests.worker import celery_worker, load, write_app


def dual_app(new: str, old: str, **settings: Any) -> Celery:
    app = Celery("dual", set_as_current=False)
    app.conf.update(
        result_backend="resultkit-dual://",
        resultkit_dual_write={"new": new, "old": old, **settings},
    )
    return app


def plain(url: str) -> Celery:
    app = Celery("plain", set_as_current=False)
    app.conf.result_backend = url
    return app


@pytest.mark.compat
def test_writes_go_to_both_and_reads_fall_back_to_old(
    redis_db: RedisDB, postgres_db: SqlDB
) -> None:
    app = dual_app(postgres_db.url, redis_db.url)
    plain(redis_db.url).backend.store_result("history", {"old": 1}, "SUCCESS")
    app.backend.store_result("fresh", {"new": 2}, "SUCCESS")
    assert app.AsyncResult("history").get(timeout=5) == {"old": 1}
    assert plain(postgres_db.url).AsyncResult("fresh").result == {"new": 2}
    assert plain(redis_db.url).AsyncResult("fresh").result == {"new": 2}
    app.AsyncResult("fresh").forget()
    assert plain(postgres_db.url).AsyncResult("fresh").state == "PENDING"
    assert plain(redis_db.url).AsyncResult("fresh").state == "PENDING"


@pytest.mark.compat
def test_writing_old_can_be_switched_off(redis_db: RedisDB, sqlite_db: SqlDB) -> None:
    app = dual_app(sqlite_db.url, redis_db.url, write_old=False)
    app.backend.store_result("only-new", 1, "SUCCESS")
    assert plain(redis_db.url).AsyncResult("only-new").state == "PENDING"
    assert app.AsyncResult("only-new").result == 1


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({}, "needs resultkit_dual_write"),
        ({"new": "redis://x"}, "needs resultkit_dual_write"),
        ({"new": "redis://a", "old": "redis://b", "mirror": True}, "unknown key 'mirror'"),
    ],
)
def test_bad_settings_fail_clearly(settings: dict[str, Any], words: str) -> None:
    from resultkit.errors import ConfigurationError

    app = Celery(set_as_current=False)
    app.conf.update(result_backend="resultkit-dual://", resultkit_dual_write=settings)
    with pytest.raises(ConfigurationError, match=words):
        _ = app.backend


@pytest.mark.compat
def test_a_failing_old_is_counted_and_never_fails_a_store(own_redis: Any, sqlite_db: SqlDB) -> None:
    server = own_redis()
    app = dual_app(sqlite_db.url, server.url)
    app.backend.store_result("before", 1, "SUCCESS")
    server.process.terminate()
    server.process.wait(10)
    app.backend.store_result("after", 2, "SUCCESS")  # does not raise
    assert app.backend.old_failures >= 1
    assert app.AsyncResult("after").get(timeout=5) == 2
    assert app.AsyncResult("before").result == 1


def test_an_unreachable_new_fails_loudly(redis_db: RedisDB) -> None:
    from tests.conftest import free_port

    app = dual_app(f"redis://127.0.0.1:{free_port()}/0", redis_db.url)
    app.conf.redis_socket_connect_timeout = 1
    with pytest.raises(Exception, match=r"(?i)connect|refused"):
        app.backend.store_result("lost", 1, "SUCCESS")
    assert plain(redis_db.url).AsyncResult("lost").state == "PENDING"


@pytest.mark.compat
@pytest.mark.parametrize("pool", ["prefork", "solo"])
@pytest.mark.parametrize("direction", ["redis to postgres", "postgres to redis"])
def test_real_workers_through_the_dual_backend(
    pool: str, direction: str, redis_db: RedisDB, postgres_db: SqlDB, amqp_url: str, tmp_path: Path
) -> None:
    new, old = (
        (postgres_db.url, redis_db.url)
        if direction == "redis to postgres"
        else (redis_db.url, postgres_db.url)
    )
    write_app(
        tmp_path,
        "dualproj",
        amqp_url,
        "resultkit-dual://",
        resultkit_dual_write={"new": new, "old": old},
    )
    app = load(tmp_path, "dualproj")
    plain(old).backend.store_result("older", {"kept": True}, "SUCCESS")
    with celery_worker(tmp_path, "dualproj", pool=pool, concurrency=2 if pool == "prefork" else 1):
        single = app.send_task("misc.add", args=[2, 2])
        assert single.get(timeout=60) == 4
        assert single.ready()
        joined = group(app.signature("misc.add", args=[i, 1]) for i in range(4)).apply_async()
        assert joined.join(timeout=60) == [1, 2, 3, 4]
        summed = chord([app.signature("misc.add", args=[i, 0]) for i in range(4)])(
            app.signature("misc.sum")
        )
        assert summed.get(timeout=60) == 6
        failed = app.send_task("reports.fail", args=[1])
        assert isinstance(failed.get(timeout=60, propagate=False), ValueError)
    assert app.AsyncResult("older").result == {"kept": True}
    for task_id in (single.id, summed.id, failed.id):
        assert plain(new).AsyncResult(task_id).state in ("SUCCESS", "FAILURE")
        assert plain(old).AsyncResult(task_id).state in ("SUCCESS", "FAILURE")
    single.forget()
    assert plain(new).AsyncResult(single.id).state == "PENDING"


@pytest.mark.compat
def test_old_stopped_mid_run_loses_nothing(
    own_redis: Any, postgres_db: SqlDB, amqp_url: str, tmp_path: Path
) -> None:
    old = own_redis()
    write_app(
        tmp_path,
        "faulty",
        amqp_url,
        "resultkit-dual://",
        resultkit_dual_write={"new": postgres_db.url, "old": old.url, "old_retry_after": 1},
    )
    app = load(tmp_path, "faulty")
    with celery_worker(tmp_path, "faulty", pool="prefork", concurrency=2):
        first = [app.send_task("misc.add", args=[i, 0]) for i in range(10)]
        assert [r.get(timeout=60) for r in first] == list(range(10))
        old.process.terminate()  # the old Redis goes away mid-run
        old.process.wait(10)
        second = [app.send_task("misc.add", args=[i, 100]) for i in range(10)]
        assert [r.get(timeout=60) for r in second] == [i + 100 for i in range(10)]
    reader = plain(postgres_db.url)
    assert [reader.AsyncResult(r.id).result for r in first + second] == (
        list(range(10)) + [i + 100 for i in range(10)]
    )


@pytest.mark.compat
def test_cutover_status_counts_where_results_live(
    redis_db: RedisDB, sqlite_db: SqlDB, tmp_path: Path
) -> None:
    (tmp_path / "cut.py").write_text(
        "from celery import Celery\n"
        "app = Celery('cut', backend='resultkit-dual://')\n"
        f"app.conf.resultkit_dual_write = {{'new': {sqlite_db.url!r}, 'old': {redis_db.url!r}}}\n"
    )
    plain(redis_db.url).backend.store_result("old-only", 1, "SUCCESS")
    dual = dual_app(sqlite_db.url, redis_db.url)
    dual.backend.store_result("both", 2, "SUCCESS")
    dual_app(sqlite_db.url, redis_db.url, write_old=False).backend.store_result(
        "new-only", 3, "SUCCESS"
    )
    result = run("resultkit", "cutover", "status", "-A", "cut", "--json", cwd=tmp_path)
    assert result.code == 1, result.output  # old still holds a result new lacks
    assert result.json["only_old"]["tasks"] == 1
    assert result.json["only_new"]["tasks"] == 1
    assert result.json["both"]["tasks"] == 1
    assert result.json["old_can_be_dropped"] is False
    run("resultkit", "migrate", redis_db.url, sqlite_db.url, cwd=tmp_path)
    after = run("resultkit", "cutover", "status", "-A", "cut", "--json", cwd=tmp_path)
    assert after.code == 0
    assert after.json["old_can_be_dropped"] is True


# Three worker fleets, a migration and every result read back: about 40 s on a quiet
# machine, 3 to 5 minutes when the machine's load is 15.
@pytest.mark.timeout(900)
def test_the_whole_runbook_with_workers_producing_throughout(
    redis_db: RedisDB, postgres_db: SqlDB, amqp_url: str, tmp_path: Path
) -> None:
    old, new = redis_db.url, postgres_db.url
    # A queue of this run's own: the broker is shared by every run on the machine, and
    # tmp_path's name is the same in each, so another run's workers took these tasks.
    queue_app = {"task_default_queue": f"runbook-{uuid.uuid4().hex[:10]}"}
    # Phase settings: the same module name in three folders, one per deployment.
    phases = {}
    for phase, backend, extra in (
        ("before", old, {}),
        ("during", "resultkit-dual://", {"resultkit_dual_write": {"new": new, "old": old}}),
        ("after", new, {}),
    ):
        folder = tmp_path / phase
        folder.mkdir()
        write_app(folder, "fleet", amqp_url, backend, **extra)
        text = (folder / "fleet.py").read_text()
        text = text.replace("app.conf.task_default_queue = ", "_ = ")
        text += f"\napp.conf.task_default_queue = {queue_app['task_default_queue']!r}\n"
        (folder / "fleet.py").write_text(text)
        phases[phase] = folder

    sent: list[tuple[str, int]] = []
    stop = threading.Event()
    producer_app = {"current": load(phases["before"], "fleet")}

    def produce() -> None:
        n = 0
        while not stop.is_set():
            result = producer_app["current"].send_task("misc.add", args=[n, 1000])
            sent.append((result.id, n + 1000))
            n += 1
            time.sleep(0.02)

    producer = threading.Thread(target=produce)

    def fleet(phase: str) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(celery_worker(phases[phase], "fleet", pool="prefork", concurrency=2))
        return stack

    # 1. Before: workers on the old backend, results produced continuously
    old_fleet = fleet("before")
    producer.start()
    time.sleep(2)
    # 2. doctor both backends
    assert run("resultkit", "doctor", old, "--json", cwd=tmp_path).json["ok"]
    assert run("resultkit", "doctor", new, "--json", cwd=tmp_path).json["ok"]
    # 3. deploy dual-write: the dual fleet starts, clients switch, then the old fleet stops
    dual_fleet = fleet("during")
    producer_app["current"] = load(phases["during"], "fleet")
    time.sleep(1)
    old_fleet.close()
    # 4. migrate --verify the history while the dual fleet keeps producing
    copied = run("resultkit", "migrate", old, new, "--verify", "--json", cwd=tmp_path)
    assert copied.code == 0, copied.output
    assert copied.json["mismatched"] == 0
    # 5. switch to new: the final fleet starts, clients switch, the dual fleet stops
    new_fleet = fleet("after")
    producer_app["current"] = load(phases["after"], "fleet")
    time.sleep(1)
    dual_fleet.close()
    time.sleep(2)
    stop.set()
    producer.join()
    for task_id, _ in sent:
        producer_app["current"].AsyncResult(task_id).get(timeout=120)
    new_fleet.close()
    # 6. everything produced before, during and after is in new, through plain Celery
    reader = plain(new)
    assert len(sent) > 100
    assert [reader.AsyncResult(task_id).result for task_id, _ in sent] == [v for _, v in sent]
    # 7. cutover status says old can go
    (tmp_path / "cut.py").write_text(
        "from celery import Celery\napp = Celery('cut', backend='resultkit-dual://')\n"
        f"app.conf.resultkit_dual_write = {{'new': {new!r}, 'old': {old!r}}}\n"
    )
    status = run("resultkit", "cutover", "status", "-A", "cut", "--json", cwd=tmp_path)
    assert status.json["old_can_be_dropped"] is True, status.output
