"""The S3 server of the tests: SeaweedFS starts, signs requests, and gives each test a bucket."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest


def test_bucket_of_its_own_stores_and_returns_an_object(s3_bucket: Any) -> None:
    # Given a test's own bucket
    client = s3_bucket.client
    # When an object is put
    client.put_object(Bucket=s3_bucket.name, Key="a/b", Body=b"x" * 300_000)
    # Then it reads back whole, and it is the only key
    body = client.get_object(Bucket=s3_bucket.name, Key="a/b")["Body"].read()
    assert body == b"x" * 300_000
    assert s3_bucket.object_keys() == ["a/b"]


def test_wrong_credentials_are_refused(s3_bucket: Any) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_bucket.server.endpoint,
        aws_access_key_id="nobody",
        aws_secret_access_key="wrong",
        region_name="us-east-1",
    )
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        client.list_objects_v2(Bucket=s3_bucket.name)
