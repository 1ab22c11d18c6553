"""The resultkit-redis backend: Celery's Redis backend with per-task lifetimes,
proven with a real worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import chord, group

from tests.conftest import RedisDB
from tests.samples import RETENTION_POLICY
from tests.worker import celery_worker, load, write_app

#: Every test here runs in the compatibility matrix too (noxfile.py).
pytestmark = pytest.mark.compat


def test_a_worker_stores_each_result_with_the_ttl_its_task_and_state_call_for(
    redis_db: RedisDB, amqp_url: str, tmp_path: Path
) -> None:
    # Given a worker whose app uses resultkit-redis with a retention policy
    backend = "resultkit-redis+" + redis_db.url
    write_app(tmp_path, "retained", amqp_url, backend, resultkit_retention=RETENTION_POLICY)
    app = load(tmp_path, "retained")
    with celery_worker(tmp_path, "retained"):
        # When tasks of each kind finish
        audit = app.send_task("audit.log", args=[1])
        report = app.send_task("reports.daily", args=[2])
        failed = app.send_task("reports.fail", args=[3])
        other = app.send_task("misc.add", args=[1, 2])
        assert audit.get(timeout=30) == {"audited": 1}
        assert report.get(timeout=30) == 4
        assert other.get(timeout=30) == 3
        assert failed.get(timeout=30, propagate=False).__class__.__name__ == "ValueError"
        members = group(app.signature("misc.add", args=[i, i]) for i in range(3)).apply_async()
        assert members.get(timeout=30) == [0, 2, 4]
        members.save()
        summed = chord([app.signature("misc.add", args=[i, 1]) for i in range(3)])(
            app.signature("misc.sum")
        )
        assert summed.get(timeout=30) == 6

    # Then each key has the TTL the policy gives it
    def ttl(task_id: str) -> int:
        return int(redis_db.client.ttl(f"celery-task-meta-{task_id}"))

    assert ttl(audit.id) == -1  # kept forever
    assert 7 * 86400 - 60 <= ttl(report.id) <= 7 * 86400
    assert 30 * 86400 - 60 <= ttl(failed.id) <= 30 * 86400
    assert 3600 - 60 <= ttl(other.id) <= 3600
    # ... group keys and chord results the default
    assert 3600 - 60 <= redis_db.client.ttl(f"celery-taskset-meta-{members.id}") <= 3600
    assert 3600 - 60 <= ttl(summed.id) <= 3600
    # ... and everything reads back through plain Celery
    reader = load(tmp_path, "retained")
    assert reader.AsyncResult(report.id).result == 4


def test_without_a_policy_it_behaves_like_celerys_redis_backend(
    redis_db: RedisDB, tmp_path: Path
) -> None:
    from celery import Celery

    app = Celery(set_as_current=False)
    app.conf.update(result_backend="resultkit-redis+" + redis_db.url, result_expires=1234)
    assert type(app.backend).__name__ == "ResultkitRedisBackend"
    app.backend.store_result("plain", {"v": 1}, "SUCCESS")
    assert 1200 <= redis_db.client.ttl("celery-task-meta-plain") <= 1234
    reader = Celery(set_as_current=False)
    reader.conf.result_backend = redis_db.url
    assert reader.AsyncResult("plain").result == {"v": 1}


def test_an_invalid_policy_stops_the_backend_with_a_clear_message(redis_db: RedisDB) -> None:
    import pytest
    from celery import Celery

    from resultkit.errors import ConfigurationError

    app = Celery(set_as_current=False)
    app.conf.update(
        result_backend="resultkit-redis+" + redis_db.url,
        resultkit_retention={"rules": [{"state": "NOPE", "expires": "1d"}]},
    )
    with pytest.raises(ConfigurationError, match="unknown state 'NOPE'"):
        _ = app.backend
