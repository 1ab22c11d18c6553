"""Large results in object storage: a claim check for every resultkit backend.

``resultkit_offload = {"url": "s3://bucket/prefix", "threshold": "256KB"}``
(or ``"file:///shared/volume"``): a stored payload larger than the threshold
(the exact bytes the backend would store, so after compression and
encryption) is written to ``<url>/<task id>``, and the backend stores a small
*reference* in its place (docs/offload.md)::

    b"\\x00resultkit-offload\\x00" + JSON {"v": 1, "url": ..., "size": ..., "sha256": ...}

The object is written first and the reference second, so a reference never
points at an object that was not written; readers fetch the object behind a
reference wherever they meet one (:func:`resolve`).  S3 goes through boto3
(``pip install 'celery-resultkit[s3]'``), with endpoint, region and
credentials from the standard AWS environment and configuration chain
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    MissingDriver,
    SerializationError,
)

__all__ = [
    "MARKER",
    "FileObjectStore",
    "MissingObject",
    "ObjectStore",
    "ObjectStoreUnavailable",
    "Offloader",
    "Reference",
    "S3ObjectStore",
    "object_store",
    "offload_settings",
    "parse_reference",
    "parse_size",
    "resolve",
]

#: What a reference starts with: no serializer's payload does (JSON, msgpack, pickle,
#: Celery's compression marker and the encryption envelope all start otherwise).
MARKER = b"\x00resultkit-offload\x00"
REFERENCE_VERSION = 1
#: A reference is never longer (its URL is a prefix, a task id and 13 characters).
REFERENCE_MAX_BYTES = 8192
DEFAULT_THRESHOLD_BYTES = 256 * 1024
#: Objects above this go up in parts (multipart upload: completed whole, or aborted).
MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
SETTING = "resultkit_offload"
#: Objects younger than this are never swept as orphans: their reference may be
#: about to be written (the object goes first).
ORPHAN_GRACE_S = 3600.0
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class ObjectStoreUnavailable(BackendUnavailable):
    """The object store cannot be reached (refused, timeout, DNS)."""


class MissingObject(BackendError):
    """A reference names an object that is not there."""


def parse_size(value: Any) -> int:
    """Bytes from ``262144``, ``"256KB"``, ``"5MB"``, ``"1.5MiB"`` (KB = 1024 bytes)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    match = _SIZE.match(str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(value)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class OffloadSettings:
    """``resultkit_offload``, validated."""

    url: str
    threshold: int


def offload_settings(conf: Mapping[str, Any] | Any) -> OffloadSettings | None:
    """``resultkit_offload`` from a Celery configuration, or None when it is not set;
    :class:`ConfigurationError` (one line) when it is wrong."""
    value = conf.get(SETTING)
    if value is None:
        return None
    if isinstance(value, str):
        value = {"url": value}
    if not isinstance(value, Mapping) or not value.get("url"):
        raise ConfigurationError(
            f'{SETTING} must be {{"url": "s3://bucket/prefix" or "file:///path", '
            f'"threshold": "256KB"}}, not {value!r}'
        )
    unknown = set(value) - {"url", "threshold"}
    if unknown:
        raise ConfigurationError(
            f"{SETTING}: unknown key {sorted(unknown)[0]!r}; known keys are threshold, url"
        )
    url = str(value["url"])
    check_url(url)
    raw = value.get("threshold", DEFAULT_THRESHOLD_BYTES)
    try:
        threshold = parse_size(raw)
    except ValueError:
        raise ConfigurationError(
            f"{SETTING} threshold = {raw!r} is not a size: write bytes or '256KB', '5MB'"
        ) from None
    return OffloadSettings(url.rstrip("/"), threshold)


def check_url(url: str) -> None:
    """:class:`ConfigurationError` unless *url* is ``s3://bucket[/prefix]`` or ``file:///path``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "s3":
        if not parsed.netloc or not re.fullmatch(
            r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", parsed.netloc
        ):
            raise ConfigurationError(
                f"{SETTING} url {url!r}: name a bucket (3-63 lowercase letters, digits, "
                "'.', '-'), as in s3://bucket/prefix"
            )
        if parsed.query or parsed.fragment:
            raise ConfigurationError(
                f"{SETTING} url {url!r}: no query here; the endpoint, region and credentials "
                "come from the AWS environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE...)"
            )
        return
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ConfigurationError(
                f"{SETTING} url {url!r}: write an absolute path, as in file:///shared/results"
            )
        return
    raise ConfigurationError(f"{SETTING} url {url!r}: use s3://bucket/prefix or file:///path")


# --------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    """What the backend stores in place of an offloaded payload."""

    url: str
    size: int
    sha256: str

    def encode(self) -> bytes:
        body = {"v": REFERENCE_VERSION, "url": self.url, "size": self.size, "sha256": self.sha256}
        return MARKER + orjson.dumps(body)


def is_reference(payload: Any) -> bool:
    if isinstance(payload, memoryview):
        payload = bytes(payload)
    if isinstance(payload, str):
        return payload.startswith(MARKER.decode())
    return isinstance(payload, bytes) and payload.startswith(MARKER)


def parse_reference(payload: Any) -> Reference | None:
    """The reference in a stored payload, or None when the payload is inline."""
    if not is_reference(payload):
        return None
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    try:
        body = orjson.loads(raw[len(MARKER) :])
        return Reference(str(body["url"]), int(body["size"]), str(body["sha256"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"a damaged offload reference: {raw[:200]!r}") from exc


def object_key(task_id: str) -> str:
    """A new object's name under the prefix: ``<task id>.<12 random hex digits>``.

    The task id (quoted where it is not URL-safe) lets cleanup find the reference;
    the random part makes every write a new object, so that a store which loses
    the race to a SUCCESS already stored (Celery never replaces one) cannot
    overwrite the object that SUCCESS references.
    """
    return f"{urllib.parse.quote(str(task_id), safe='-_@')}.{uuid.uuid4().hex[:12]}"


def task_id_of(name: str) -> str:
    """The task id in an object's name."""
    return urllib.parse.unquote(name.rpartition(".")[0] or name)


# ------------------------------------------------------------- object stores


class ObjectStore:
    """Objects under one URL prefix; subclasses implement the primitives."""

    url: str

    def put(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, name: str) -> bytes:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Delete *name*; nothing happens when it is not there."""
        raise NotImplementedError

    def list(self) -> Iterator[tuple[str, float, int]]:
        """``(name, modified as a Unix time, size)`` of every object under the prefix."""
        raise NotImplementedError

    def url_for(self, name: str) -> str:
        return f"{self.url}/{name}"

    def name_of(self, url: str) -> str | None:
        """The name under this store of an object URL, or None when it lives elsewhere."""
        head = self.url + "/"
        return url[len(head) :] if url.startswith(head) else None


class FileObjectStore(ObjectStore):
    """``file:///path``: one file per object; written to a temporary file and renamed."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.root = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, data: bytes) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.root, prefix=".partial-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(temp, self._path(name))
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise ObjectStoreUnavailable(
                f"cannot write {self.url_for(name)}: {exc.strerror or exc}",
                "check that the folder exists and is writable by the worker",
            ) from exc

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise MissingObject(
                f"the offloaded result {self.url_for(name)} does not exist",
                "it was deleted (by hand or a cleanup) while its reference remained",
                reason="missing",
            ) from None
        except OSError as exc:
            raise ObjectStoreUnavailable(
                f"cannot read {self.url_for(name)}: {exc.strerror or exc}"
            ) from exc

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink(missing_ok=True)
        except OSError as exc:
            raise ObjectStoreUnavailable(
                f"cannot delete {self.url_for(name)}: {exc.strerror or exc}"
            ) from exc

    def list(self) -> Iterator[tuple[str, float, int]]:
        if not self.root.is_dir():
            return
        for entry in os.scandir(self.root):
            if entry.is_file() and not entry.name.startswith(".partial-"):
                info = entry.stat()
                yield entry.name, info.st_mtime, info.st_size


class S3ObjectStore(ObjectStore):
    """``s3://bucket/prefix`` via boto3; one client per process (a forked child makes its own)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        parsed = urllib.parse.urlsplit(self.url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = make_s3_client()
                    self._pid = os.getpid()
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, data: bytes) -> None:
        with s3_errors(self.url_for(name)):
            if len(data) < MULTIPART_THRESHOLD_BYTES:
                # One PUT: the object appears whole or not at all.
                self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)
            else:
                from boto3.s3.transfer import TransferConfig

                # Parts, then CompleteMultipartUpload; boto3 aborts the upload on failure,
                # so no part is ever readable as the object.
                self.client.upload_fileobj(
                    io.BytesIO(data),
                    self.bucket,
                    self.key(name),
                    Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD_BYTES),
                )

    def get(self, name: str) -> bytes:
        with s3_errors(self.url_for(name)):
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            return bytes(answer["Body"].read())

    def delete(self, name: str) -> None:
        try:
            with s3_errors(self.url_for(name)):
                self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        except MissingObject:
            pass

    def list(self) -> Iterator[tuple[str, float, int]]:
        head = f"{self.prefix}/" if self.prefix else ""
        with s3_errors(self.url):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=head):
                for item in page.get("Contents", []):
                    name = item["Key"][len(head) :]
                    if name and "/" not in name:
                        yield name, item["LastModified"].timestamp(), int(item["Size"])


def make_s3_client() -> Any:
    """A boto3 S3 client from the standard AWS environment and configuration chain."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingDriver("boto3", "s3", f"{SETTING} with s3://") from None
    config = Config(
        # Checksums only where S3 requires them: boto3 >= 1.36 adds CRC32 trailers to
        # every PUT by default, which some S3-compatible servers refuse.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5,
        read_timeout=60,
        # A store fails fast; Celery's result_backend_always_retry retries the whole store.
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.session.Session().client("s3", config=config)


class s3_errors:
    """Translate botocore's errors into resultkit's (one boundary for S3)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            return
        import botocore.exceptions as be

        if isinstance(exc, be.NoCredentialsError):
            raise AccessDenied(
                f"no AWS credentials for {self.where}",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                reason="auth",
            ) from exc
        if isinstance(exc, (be.EndpointConnectionError, be.ConnectionError, be.HTTPClientError)):
            raise ObjectStoreUnavailable(
                f"the object store for {self.where} cannot be reached ({type(exc).__name__})",
                "check AWS_ENDPOINT_URL and that the server runs",
                reason="refused",
            ) from exc
        if isinstance(exc, be.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise MissingObject(
                    f"the offloaded result {self.where} does not exist",
                    "it was deleted (by hand, a lifecycle rule or a cleanup) while its "
                    "reference remained",
                    reason="missing",
                ) from exc
            if code == "NoSuchBucket":
                raise BackendError(
                    f"the bucket of {self.where} does not exist",
                    "create it, or fix the bucket in resultkit_offload",
                    reason="missing",
                ) from exc
            if code in (
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "403",
                "InvalidToken",
                "ExpiredToken",
            ):
                raise AccessDenied(
                    f"the object store refused {self.where} ({code})",
                    "check the AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the "
                    "bucket's policy",
                    reason="auth",
                ) from exc
            if code.startswith("5") or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
                raise ObjectStoreUnavailable(
                    f"the object store failed on {self.where} ({code})", reason="server"
                ) from exc
            raise BackendError(f"the object store failed on {self.where} ({code}: {exc})") from exc
        if isinstance(exc, be.BotoCoreError):
            raise ObjectStoreUnavailable(
                f"the object store failed on {self.where} ({type(exc).__name__}: {exc})"
            ) from exc


_STORES: dict[str, ObjectStore] = {}
_STORES_LOCK = threading.Lock()


def object_store(url: str) -> ObjectStore:
    """The store of an ``s3://`` or ``file://`` prefix, one per prefix and process."""
    url = url.rstrip("/")
    store = _STORES.get(url)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.get(url)
            if store is None:
                check_url(url)
                scheme = urllib.parse.urlsplit(url).scheme
                store = S3ObjectStore(url) if scheme == "s3" else FileObjectStore(url)
                _STORES[url] = store
    return store


def _split(url: str) -> tuple[ObjectStore, str]:
    """The store holding an object URL, and the object's name in it."""
    head, _, name = url.rpartition("/")
    return object_store(head), name


# ------------------------------------------------------------------ offload


class Offloader:
    """Puts payloads above the threshold in object storage, reads them back, deletes them."""

    def __init__(self, settings: OffloadSettings) -> None:
        self.settings = settings
        self.threshold = settings.threshold
        self.store = object_store(settings.url)

    @classmethod
    def from_conf(cls, conf: Any) -> Offloader | None:
        settings = offload_settings(conf)
        return None if settings is None else cls(settings)

    def offload(self, task_id: str, payload: Any) -> Any:
        """*payload* itself when it is small, else a reference to it (the object written first)."""
        if isinstance(payload, str):
            if len(payload) <= self.threshold // 4:  # cheap: no encoding for small text
                return payload
            data = payload.encode()
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            data = bytes(payload)
        else:
            return payload
        if len(data) <= self.threshold:
            return payload
        name = object_key(task_id)
        self.store.put(name, data)
        return Reference(
            self.store.url_for(name), len(data), hashlib.sha256(data).hexdigest()
        ).encode()


def resolve(payload: Any) -> Any:
    """The stored bytes behind *payload*: fetched when it is a reference, else itself."""
    reference = parse_reference(payload)
    if reference is None:
        return payload
    store, name = _split(reference.url)
    data = store.get(name)
    if len(data) != reference.size or hashlib.sha256(data).hexdigest() != reference.sha256:
        raise SerializationError(
            f"the offloaded result {reference.url} does not match its reference "
            f"({len(data)} bytes, expected {reference.size}): it was overwritten; store "
            "the task's result again"
        )
    return data


def delete_referenced(payload: Any) -> bool:
    """Delete the object behind *payload* when it is a reference; True when it was one."""
    reference = parse_reference(payload)
    if reference is None:
        return False
    store, name = _split(reference.url)
    store.delete(name)
    return True


def sweep_orphans(
    store: ObjectStore,
    references: Callable[[list[str]], Iterable[Any]],
    *,
    grace_s: float,
    now: float | None = None,
    dry_run: bool = False,
) -> tuple[int, int]:
    """Delete objects older than *grace_s* that no stored result references.

    *references* takes a list of task ids and returns the payloads (or their
    first bytes) stored for those that exist; every reference among them keeps
    its object.  Returns ``(deleted, kept)``.
    """
    now = time.time() if now is None else now
    deleted = kept = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal deleted, kept
        if not batch:
            return
        alive = set()
        for payload in references(sorted({task_id_of(name) for name in batch})):
            reference = parse_reference(payload) if is_reference(payload) else None
            if reference is not None:
                alive.add(reference.url)
        for name in batch:
            if store.url_for(name) in alive:
                kept += 1
            else:
                if not dry_run:
                    store.delete(name)
                deleted += 1
        batch.clear()

    for name, modified, _size in store.list():
        if now - modified < grace_s:
            kept += 1  # perhaps written a moment ago, its reference not yet
            continue
        batch.append(name)
        if len(batch) >= 500:
            flush()
    flush()
    return deleted, kept
