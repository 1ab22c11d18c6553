"""Archives in object storage: cleanup archives into S3 before deleting, migrate restores.

The real CLI in a subprocess, real Redis, a SeaweedFS bucket of the test's own;
results written and read back through Celery's own Redis backend.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from celery import Celery

from tests.conftest import redis_database


def celery_app(url: str) -> Celery:
    app = Celery("archive-s3", set_as_current=False)
    app.conf.update(result_backend=url, result_extended=True)
    return app


def test_cleanup_archives_into_s3_and_migrate_restores_from_it(
    cli: Any, s3_bucket: Any, tmp_path: Path
) -> None:
    with redis_database() as source, redis_database() as restored:
        # Given results in Redis
        app = celery_app(source.url)
        values = {f"a-{n}": {"n": n, "text": "é" * n} for n in range(40)}
        for task_id, value in values.items():
            app.backend.store_result(task_id, value, "SUCCESS")
        archive = f"s3://{s3_bucket.name}/archives/2026-11.jsonl.gz"

        # When cleanup archives every one into S3 before deleting it
        done = cli(
            "cleanup", source.url, "--older-than", "0s", "--archive", archive, "--json",
            env=s3_bucket.env,
        )  # fmt: skip

        # Then each was archived, then deleted, and the archive is one object in the bucket
        assert done.code == 0, done.output
        assert done.json["archived"] == 40
        assert done.json["deleted"] == 40
        assert not source.client.keys("celery-task-meta-*")
        assert s3_bucket.object_keys() == ["archives/2026-11.jsonl.gz"]

        # ...which migrate restores, and Celery reads
        back = cli("migrate", "jsonl+" + archive, restored.url, "--json", env=s3_bucket.env)
        assert back.code == 0, back.output
        assert back.json["copied"] == 40
        reader = celery_app(restored.url)
        for task_id, value in values.items():
            assert reader.AsyncResult(task_id).get(timeout=10) == value

        # The object is the local archive format: a local reader restores it too
        local = tmp_path / "copy.jsonl.gz"
        body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="archives/2026-11.jsonl.gz")
        local.write_bytes(body["Body"].read())
        counted = cli("stats", f"jsonl://{local}", "--json")
        assert counted.code == 0, counted.output
        assert counted.json["total"] == 40


def test_appending_past_5_mib_goes_through_a_server_side_copy_and_loses_nothing(
    cli: Any, s3_bucket: Any
) -> None:
    # Given an archive in S3 already larger than S3's smallest multipart part
    archive = f"s3://{s3_bucket.name}/big.jsonl.gz"
    with redis_database() as source, redis_database() as restored:
        app = celery_app(source.url)
        blobs = {f"b-{n}": base64.b64encode(os.urandom(300_000)).decode() for n in range(24)}
        first = dict(list(blobs.items())[:20])
        for task_id, blob in first.items():
            app.backend.store_result(task_id, blob, "SUCCESS")
        one = cli(
            "cleanup", source.url, "--older-than", "0s", "--archive", archive, "--json",
            env=s3_bucket.env,
        )  # fmt: skip
        assert one.code == 0, one.output
        size = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="big.jsonl.gz")
        assert size["ContentLength"] > 5 * 1024 * 1024

        # When a later cleanup appends to it
        for task_id, blob in list(blobs.items())[20:]:
            app.backend.store_result(task_id, blob, "SUCCESS")
        two = cli(
            "cleanup", source.url, "--older-than", "0s", "--archive", archive, "--json",
            env=s3_bucket.env,
        )  # fmt: skip
        assert two.code == 0, two.output
        assert two.json["archived"] == 4

        # Then the archive holds all of them, no upload is left open, and they restore
        uploads = s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name)
        assert not uploads.get("Uploads")
        back = cli("migrate", "jsonl+" + archive, restored.url, "--json", env=s3_bucket.env)
        assert back.code == 0, back.output
        assert back.json["copied"] == 24
        reader = celery_app(restored.url)
        assert reader.AsyncResult("b-23").get(timeout=10) == blobs["b-23"]
        assert reader.AsyncResult("b-0").get(timeout=10) == blobs["b-0"]


def test_restoring_from_a_missing_s3_archive_is_one_line(cli: Any, s3_bucket: Any) -> None:
    with redis_database() as target:
        done = cli(
            "migrate", f"jsonl+s3://{s3_bucket.name}/nothing.jsonl.gz", target.url,
            env=s3_bucket.env,
        )  # fmt: skip
    assert done.code == 2, done.output
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.output
