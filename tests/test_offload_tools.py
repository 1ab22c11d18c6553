"""The tools understand offloaded results: config new/check, stats, migrate, doctor.

Every command runs as the real CLI in a subprocess against real Redis,
PostgreSQL and a SeaweedFS bucket of the test's own.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from resultkit.offload import MARKER, parse_reference
from tests.conftest import redis_database

BIG = "y" * 150_000


def make_app(backend: str, offload: str) -> Celery:
    app = Celery("tools", set_as_current=False)
    app.conf.update(
        result_backend=backend,
        resultkit_offload={"url": offload, "threshold": "64KB"},
        result_extended=True,
    )
    return app


def write_app_module(folder: Path, name: str, backend: str, offload: Any) -> None:
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from celery import Celery
            app = Celery({name!r}, backend={backend!r})
            app.conf.resultkit_offload = {offload!r}
            """
        )
    )


@pytest.mark.parametrize(
    ("offload", "message"),
    [
        ({"url": "s3://Bad_Bucket/x"}, "name a bucket"),
        ({"url": "ftp://host/x"}, "use s3://bucket/prefix or file:///path"),
        ({"url": "s3://good-bucket/x", "threshold": "lots"}, "is not a size"),
        ({"url": "s3://good-bucket/x", "treshold": "1MB"}, "unknown key 'treshold'"),
    ],
)
def test_config_check_names_what_is_wrong_with_resultkit_offload(
    cli: Any, tmp_path: Path, offload: Any, message: str
) -> None:
    # Given an app whose resultkit_offload is wrong
    write_app_module(tmp_path, "badoffload", "resultkit-redis+redis://127.0.0.1:6379/1", offload)
    # When it is checked
    done = cli("config", "check", "-A", "badoffload", "--json")
    # Then the offload check fails with a message that says what to fix
    assert done.code == 1, done.output
    check = done.check("config.offload")
    assert check["status"] == "fail"
    assert message in check["message"]
    assert "\n" not in check["message"]


def test_config_new_writes_an_offload_setting_that_config_check_passes(
    cli: Any, tmp_path: Path
) -> None:
    # When a configuration is written with offload
    done = cli(
        "config", "new", "--backend", "redis", "--offload", "s3://my-results/prod",
        "--offload-threshold", "1MB", "--folder", str(tmp_path / "conf"),
    )  # fmt: skip
    assert done.code == 0, done.output
    text = (tmp_path / "conf" / "celeryconfig.py").read_text()
    # Then it selects resultkit-redis and carries the setting, which the audit accepts
    assert "resultkit-redis+redis://" in text
    assert "resultkit_offload" in text
    checked = cli(
        "config", "check", "-A", "celeryconfig", "--json",
        env={"PYTHONPATH": str(tmp_path / "conf")},
    )  # fmt: skip
    check = checked.check("config.offload")
    assert check["status"] == "pass", check
    assert "1,048,576 bytes" in check["message"]


def test_config_new_refuses_a_bad_offload_url_in_one_line(cli: Any, tmp_path: Path) -> None:
    done = cli("config", "new", "--backend", "redis", "--offload", "s3://X", "--folder", "c")
    assert done.code == 2
    assert "--offload 's3://X'" in done.stderr
    assert "Traceback" not in done.output
    assert len(done.stderr.strip().splitlines()) == 1


def test_stats_reports_offloaded_results_and_their_bytes(
    cli: Any, redis_db: Any, s3_bucket: Any
) -> None:
    # Given two offloaded results and an inline one in resultkit-redis
    app = make_app("resultkit-redis+" + redis_db.url, s3_bucket.url())
    app.backend.store_result("s-1", BIG, "SUCCESS")
    app.backend.store_result("s-2", BIG, "SUCCESS")
    app.backend.store_result("s-3", "small", "SUCCESS")
    # When stats runs on the Redis URL with the prefix
    done = cli("stats", redis_db.url, "--offload", s3_bucket.url(), "--json", env=s3_bucket.env)
    # Then every result counts under its state, and the objects and bytes are reported
    assert done.code == 0, done.output
    report = done.json
    assert report["by_state"] == {"SUCCESS": 3}
    assert report["unreadable"] == 0
    assert report["offloaded"]["objects"] == 2
    assert report["offloaded"]["bytes"] > 2 * 150_000


def test_migrate_carries_references_by_default_and_inlines_on_request(
    cli: Any, s3_bucket: Any
) -> None:
    # Given an offloaded result in one Redis database
    with redis_database() as source, redis_database() as plain, redis_database() as inlined:
        app = make_app("resultkit-redis+" + source.url, s3_bucket.url())
        app.backend.store_result("m-1", BIG, "SUCCESS")
        reference = source.client.get("celery-task-meta-m-1")
        assert reference.startswith(MARKER)

        # When it is migrated as it is, and with --inline-offloaded
        carried = cli("migrate", source.url, plain.url, "--json", env=s3_bucket.env)
        inline = cli(
            "migrate", source.url, inlined.url, "--inline-offloaded", "--json",
            env=s3_bucket.env,
        )  # fmt: skip

        # Then the first target holds the same reference (the same object) ...
        assert carried.code == 0, carried.output
        assert carried.json["copied"] == 1
        assert plain.client.get("celery-task-meta-m-1") == reference
        # ... the second the payload itself, which Celery's own backend reads
        assert inline.code == 0, inline.output
        payload = inlined.client.get("celery-task-meta-m-1")
        assert not payload.startswith(MARKER)
        reader = Celery("reader", set_as_current=False)
        reader.conf.result_backend = inlined.url
        assert reader.AsyncResult("m-1").get(timeout=10) == BIG
        assert len(s3_bucket.object_keys()) == 1


def test_migrate_redis_to_postgres_reads_through_references(
    cli: Any, redis_db: Any, postgres_db: Any, s3_bucket: Any
) -> None:
    # Given an offloaded result in Redis
    app = make_app("resultkit-redis+" + redis_db.url, s3_bucket.url())
    app.backend.store_result("p-1", BIG, "SUCCESS")
    # When it is migrated to PostgreSQL
    done = cli("migrate", redis_db.url, postgres_db.url, "--verify", "--json", env=s3_bucket.env)
    # Then Celery's SQL backend reads the value
    assert done.code == 0, done.output
    assert done.json["copied"] == 1
    assert done.json["mismatched"] == 0
    reader = Celery("reader", set_as_current=False)
    reader.conf.result_backend = postgres_db.url
    assert reader.AsyncResult("p-1").get(timeout=10) == BIG
    assert parse_reference(redis_db.client.get("celery-task-meta-p-1")) is not None


def test_doctor_checks_the_bucket_and_warns_without_a_lifecycle_rule(
    cli: Any, tmp_path: Path, redis_db: Any, s3_bucket: Any
) -> None:
    # Given an app that offloads to a bucket with no lifecycle rule
    write_app_module(
        tmp_path, "docapp", "resultkit-redis+" + redis_db.url, {"url": s3_bucket.url()}
    )
    # When the doctor runs
    done = cli("doctor", "-A", "docapp", "--json", env=s3_bucket.env)
    # Then the bucket works (endpoint and credentials named), the missing rule is a warning
    bucket = done.check("offload.bucket")
    assert bucket["status"] == "pass", bucket
    assert s3_bucket.server.endpoint in bucket["message"]
    assert "credentials from env" in bucket["message"]
    lifecycle = done.check("offload.lifecycle")
    assert lifecycle["status"] == "warn"
    assert "lifecycle rule" in lifecycle["fix"]
    # ...and the probe object was deleted
    assert s3_bucket.object_keys() == []


def test_doctor_fails_the_bucket_check_with_wrong_credentials_and_says_the_fix(
    cli: Any, tmp_path: Path, redis_db: Any, s3_bucket: Any
) -> None:
    write_app_module(
        tmp_path, "docapp2", "resultkit-redis+" + redis_db.url, {"url": s3_bucket.url()}
    )
    env = {**s3_bucket.env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    done = cli("doctor", "-A", "docapp2", "--json", env=env)
    assert done.code == 1
    bucket = done.check("offload.bucket")
    assert bucket["status"] == "fail"
    assert "refused" in bucket["message"]
    assert "AWS_ACCESS_KEY_ID" in bucket["fix"]
    assert "wrong-secret" not in done.output


def test_doctor_fails_the_bucket_check_when_the_object_store_is_down(
    cli: Any, tmp_path: Path, redis_db: Any, s3_bucket: Any
) -> None:
    from tests.conftest import free_port

    write_app_module(
        tmp_path, "docapp3", "resultkit-redis+" + redis_db.url, {"url": s3_bucket.url()}
    )
    env = {**s3_bucket.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    done = cli("doctor", "-A", "docapp3", "--json", "--timeout", "20", env=env)
    assert done.code == 1
    bucket = done.check("offload.bucket")
    assert bucket["status"] == "fail"
    assert "cannot be reached" in bucket["message"]
    assert "AWS_ENDPOINT_URL" in bucket["fix"]


@pytest.mark.parametrize("target_kind", ["redis", "postgres"])
def test_migrate_offloads_while_copying_and_verifies_through_celery(
    cli: Any, request: Any, s3_bucket: Any, target_kind: str
) -> None:
    # Given inline results in a plain Celery Redis backend, one large and one small
    with redis_database() as source:
        writer = Celery("writer", set_as_current=False)
        writer.conf.update(result_backend=source.url, result_extended=True)
        writer.backend.store_result("o-big", BIG, "SUCCESS")
        writer.backend.store_result("o-small", "tiny", "SUCCESS")
        target = (
            request.getfixturevalue("redis_db").url
            if target_kind == "redis"
            else request.getfixturevalue("postgres_db").url
        )
        # When they are migrated with --offload, verified
        done = cli(
            "migrate", source.url, target, "--offload", s3_bucket.url("moved"),
            "--offload-threshold", "64KB", "--verify", "--json", env=s3_bucket.env,
        )  # fmt: skip
        # Then both verify, the large one is the only object, referenced by the target
        assert done.code == 0, done.output
        assert done.json["copied"] == 2
        assert done.json["verified"] == 2
        assert done.json["mismatched"] == 0
        (key,) = s3_bucket.object_keys()
        assert key.startswith("moved/o-big.")
    # ...and resultkit's backend reads both
    reader = make_app(
        ("resultkit-redis+" if target_kind == "redis" else "resultkit-") + target,
        s3_bucket.url("moved"),
    )
    assert reader.AsyncResult("o-big").get(timeout=10) == BIG
    assert reader.AsyncResult("o-small").get(timeout=10) == "tiny"


def test_migrate_verifies_carried_references(cli: Any, s3_bucket: Any) -> None:
    with redis_database() as source, redis_database() as target:
        app = make_app("resultkit-redis+" + source.url, s3_bucket.url())
        app.backend.store_result("v-1", BIG, "SUCCESS")
        done = cli("migrate", source.url, target.url, "--verify", "--json", env=s3_bucket.env)
        assert done.code == 0, done.output
        assert done.json["verified"] == 1
        assert done.json["mismatched"] == 0


def test_migrate_refuses_a_bad_offload_option_in_one_line(cli: Any, redis_db: Any) -> None:
    done = cli("migrate", redis_db.url, redis_db.url + "1", "--offload", "s3://x")
    assert done.code == 2, done.output
    assert "--offload 's3://x'" in done.stderr
    assert "Traceback" not in done.output


def test_erase_deletes_the_offloaded_payloads_and_archives_them_inline(
    cli: Any, redis_db: Any, s3_bucket: Any, tmp_path: Path
) -> None:
    # Given offloaded results of user 42 and of user 7 in resultkit-redis
    app = make_app("resultkit-redis+" + redis_db.url, s3_bucket.url())
    for task_id, user in (("u42-0", 42), ("u42-1", 42), ("u7-2", 7)):
        app.backend.store_result(task_id, {"user": user, "blob": BIG}, "SUCCESS")
    assert len(s3_bucket.object_keys()) == 3
    kept_object = parse_reference(redis_db.client.get("celery-task-meta-u7-2"))
    assert kept_object is not None
    # When user 42's results are erased, archived first
    archive = tmp_path / "user-42.jsonl.gz"
    done = cli(
        "erase", redis_db.url, "--id", "u42-", "--yes", "--archive", str(archive),
        "--json", env=s3_bucket.env,
    )  # fmt: skip
    # Then their references and their objects are gone, user 7's are kept ...
    assert done.code == 0, done.output
    assert (done.json["deleted"], done.json["objects_deleted"]) == (2, 2)
    assert [f"s3://{s3_bucket.name}/{key}" for key in s3_bucket.object_keys()] == [kept_object.url]
    assert redis_db.client.get("celery-task-meta-u7-2") is not None
    # ... and the archive holds the payloads themselves, which Celery's own backend reads
    with redis_database() as restored:
        back = cli("migrate", f"jsonl://{archive}", restored.url, "--json", env=s3_bucket.env)
        assert back.code == 0, back.output
        assert not restored.client.get("celery-task-meta-u42-0").startswith(MARKER)
        reader = Celery("reader", set_as_current=False)
        reader.conf.result_backend = restored.url
        assert reader.AsyncResult("u42-0").get(timeout=10) == {"user": 42, "blob": BIG}


def test_an_export_of_offloaded_results_holds_the_payloads(
    cli: Any, redis_db: Any, s3_bucket: Any, tmp_path: Path
) -> None:
    # Given an offloaded result
    app = make_app("resultkit-redis+" + redis_db.url, s3_bucket.url())
    app.backend.store_result("x-1", BIG, "SUCCESS")
    # When it is exported, and the bucket emptied afterwards
    path = tmp_path / "backup.jsonl.gz"
    done = cli("export", redis_db.url, "--to", str(path), "--json", env=s3_bucket.env)
    assert done.code == 0, done.output
    for key in s3_bucket.object_keys():
        s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=key)
    # Then the export alone restores it, readable by Celery's own backend
    with redis_database() as restored:
        back = cli("migrate", f"jsonl://{path}", restored.url, "--json")
        assert back.code == 0, back.output
        reader = Celery("reader", set_as_current=False)
        reader.conf.result_backend = restored.url
        assert reader.AsyncResult("x-1").get(timeout=10) == BIG
