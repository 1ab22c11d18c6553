"""The doctor's checks of ``resultkit_offload``'s object storage: the bucket works, and
whether a lifecycle rule bounds what is left in it."""

from __future__ import annotations

import uuid

from ...errors import BackendError, ResultkitError
from ...offload import FileObjectStore, ObjectStore, S3ObjectStore, object_store
from ...report import CheckResult

__all__ = ["check_offload"]

#: Objects the doctor writes are named so that no task id can collide with them.
PROBE_NAME = "resultkit-doctor-probe"


def _where(store: ObjectStore) -> str:
    """The prefix, and for S3 the endpoint, region and where the credentials came from."""
    if not isinstance(store, S3ObjectStore):
        return store.url
    client = store.client
    credentials = client._request_signer._credentials
    source = getattr(credentials, "method", None) or "none found"
    return (
        f"{store.url} (endpoint {client.meta.endpoint_url}, region {client.meta.region_name}, "
        f"credentials from {source})"
    )


def check_offload(url: str) -> list[CheckResult]:
    """``offload.bucket``: put, get and delete a probe object; ``offload.lifecycle``: a rule."""
    store = object_store(url)
    try:
        where = _where(store)
    except ResultkitError as exc:
        return [CheckResult.failed("offload.bucket", str(exc), getattr(exc, "fix", ""))]
    name = f"{PROBE_NAME}.{uuid.uuid4().hex[:12]}"
    body = b"resultkit doctor " + name.encode()
    try:
        store.put(name, body)
        try:
            if store.get(name) != body:
                return [
                    CheckResult.failed(
                        "offload.bucket",
                        f"{where} returned other bytes than were written",
                        "check the object store (a proxy or cache in front of it?)",
                    )
                ]
        finally:
            store.delete(name)
    except BackendError as exc:
        return [
            CheckResult.failed(
                "offload.bucket",
                f"{exc.args[0]}; at {where}",
                exc.fix
                or "check the AWS environment (AWS_ENDPOINT_URL, AWS_REGION, "
                "AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket's policy",
                reason=exc.reason,
            )
        ]
    found = [CheckResult.passed("offload.bucket", f"put, get and delete work at {where}")]
    found.append(_lifecycle(store))
    return found


def _lifecycle(store: ObjectStore) -> CheckResult:
    if isinstance(store, FileObjectStore):
        return CheckResult.skipped(
            "offload.lifecycle", "a folder has no lifecycle rules: resultkit cleanup sweeps it"
        )
    assert isinstance(store, S3ObjectStore)
    import botocore.exceptions

    fix = (
        f"add a lifecycle rule expiring objects under {store.prefix or 'the bucket'}/ some "
        "days after result_expires, or run `resultkit cleanup` from cron (it sweeps orphans)"
    )
    try:
        rules = store.client.get_bucket_lifecycle_configuration(Bucket=store.bucket)["Rules"]
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchLifecycleConfiguration":
            return CheckResult.warned(
                "offload.lifecycle",
                f"the bucket {store.bucket} has no lifecycle rule: objects of results that "
                "expire in the backend stay until a cleanup sweeps them",
                fix,
            )
        return CheckResult.warned(
            "offload.lifecycle", f"cannot read the bucket's lifecycle rules ({code})", fix
        )
    except botocore.exceptions.BotoCoreError as exc:
        return CheckResult.warned(
            "offload.lifecycle", f"cannot read the bucket's lifecycle rules ({exc})", fix
        )
    covering = [
        rule
        for rule in rules
        if rule.get("Status") == "Enabled"
        and store.prefix.startswith(
            (rule.get("Filter") or {}).get("Prefix", rule.get("Prefix", "")) or ""
        )
    ]
    if not covering:
        return CheckResult.warned(
            "offload.lifecycle",
            f"no enabled lifecycle rule of the bucket {store.bucket} covers {store.url}",
            fix,
        )
    return CheckResult.passed(
        "offload.lifecycle", f"{len(covering)} lifecycle rule(s) cover {store.url}"
    )
