"""Archives in object storage: ``jsonl+s3://bucket/key.jsonl.gz``.

The same format as :mod:`.archive` (gzip members of JSON lines), kept as one
S3 object, so that archiving before deleting (``resultkit cleanup --archive
s3://bucket/key.jsonl.gz``) and restoring (``resultkit migrate
jsonl+s3://bucket/key.jsonl.gz TARGET``) need no local disk.

Each batch is appended as one gzip member, and the object is replaced
atomically: below 5 MiB by one ``PutObject`` of the whole archive; above, by
a multipart upload whose first part is a server-side copy of the object as it
is (``UploadPartCopy``, only if its ETag has not changed) and whose last part
is the new member, completed or aborted. A batch is acknowledged (and its
results may be deleted from their backend) only once the new object is in
place; a writer killed part-way leaves the previous archive whole and at most
an incomplete upload (aborted by a lifecycle rule, or listed by
``list_multipart_uploads``), so running the same cleanup again resumes it.
Reading downloads the archive into memory.
"""

from __future__ import annotations

import io
import urllib.parse
from typing import Any, BinaryIO

from ..errors import ConfigurationError, UsageError
from ..offload import MissingObject, make_s3_client, s3_errors
from .archive import _GZIP_MAGIC, ArchiveStore

__all__ = ["S3ArchiveStore"]

#: S3's smallest part but the last: a smaller archive is replaced by one PUT.
MIN_PART_BYTES = 5 * 1024 * 1024


class S3ArchiveStore(ArchiveStore):
    """A gzip'd JSON-lines archive as one S3 object (endpoint and credentials from the
    AWS environment, as for ``resultkit_offload``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bucket, _, key = self.location.path.partition("/")
        if not bucket or not key:
            raise ConfigurationError(
                "an archive in S3 needs a bucket and a key: jsonl+s3://bucket/results.jsonl.gz"
            )
        self.bucket = bucket
        self.key = urllib.parse.unquote(key)
        self.path = f"s3://{bucket}/{self.key}"
        self._client: Any = None
        #: The object as last read or written here, and its ETag.
        self._data: bytes | None = None
        self._etag: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client()
        return self._client

    # -------------------------------------------------------------- the object
    def _load(self) -> bytes:
        """The archive's bytes (empty when there is no object yet), downloaded once."""
        if self._data is None:
            try:
                with s3_errors(self.path):
                    answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
                    self._data = bytes(answer["Body"].read())
                    self._etag = str(answer["ETag"])
            except MissingObject:
                self._data, self._etag = b"", None
        return self._data

    def _exists(self) -> bool:
        return bool(self._load()) or self._etag is not None

    def _reader(self) -> BinaryIO:
        return io.BytesIO(self._load())

    def check_source(self) -> None:
        data = self._load()
        if self._etag is None:
            raise UsageError(
                f"the archive {self.path} does not exist: give the key of an archive written "
                "by resultkit (jsonl+s3://BUCKET/KEY.jsonl.gz)"
            )
        if data and data[:2] != _GZIP_MAGIC:
            raise UsageError(f"{self.path} is not a gzip'd archive (it starts with {data[:2]!r})")

    def _truncate(self, offset: int) -> None:
        self._replace(self._load()[:offset])

    def _replace(self, data: bytes) -> None:
        with s3_errors(self.path):
            answer = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data)
        self._data, self._etag = data, str(answer["ETag"])

    def _append(self, member: bytes) -> None:
        """The archive with *member* at its end, in place atomically (or not at all)."""
        data = self._load()
        if len(data) < MIN_PART_BYTES:
            self._replace(data + member)
            return
        client = self.client
        with s3_errors(self.path):
            upload = client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
            try:
                first = client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=upload,
                    PartNumber=1,
                    CopySource={"Bucket": self.bucket, "Key": self.key},
                    # Another writer's archive is never the base of this one.
                    CopySourceIfMatch=self._etag,
                )["CopyPartResult"]["ETag"]
                last = client.upload_part(
                    Bucket=self.bucket, Key=self.key, UploadId=upload, PartNumber=2, Body=member
                )["ETag"]
                done = client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=upload,
                    MultipartUpload={
                        "Parts": [
                            {"PartNumber": 1, "ETag": first},
                            {"PartNumber": 2, "ETag": last},
                        ]
                    },
                )
            except BaseException:
                client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload)
                raise
        self._data, self._etag = data + member, str(done["ETag"])

    def close(self) -> None:
        self._data = None
