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
Reading streams the object in ranged GETs; an archive below 5 MiB is
downloaded whole to be replaced with the new batch.
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
#: Bytes per ranged GET while reading.
RANGE_BYTES = 8 * 1024 * 1024


class _RangeReader(io.RawIOBase):
    """A seekable read-only view of an S3 object, read with ranged GETs."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, where: str) -> None:
        self.client, self.bucket, self.key, self.size, self.where = client, bucket, key, size, where
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        if self.position >= self.size:
            return 0
        end = min(self.size, self.position + len(buffer)) - 1
        with s3_errors(self.where):
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}"
            )
            chunk = answer["Body"].read()
        buffer[: len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)


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
        #: The object's bytes when downloaded whole (small archives), its size and ETag.
        self._data: bytes | None = None
        self._size = 0
        self._etag: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client()
        return self._client

    # -------------------------------------------------------------- the object
    def _head(self) -> tuple[int, str] | None:
        """The object's size and ETag, or None when there is none."""
        try:
            with s3_errors(self.path):
                answer = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except MissingObject:
            return None
        return int(answer["ContentLength"]), str(answer["ETag"])

    def _load(self) -> bytes:
        """The archive's bytes (empty when there is no object yet), downloaded once."""
        if self._data is None:
            try:
                with s3_errors(self.path):
                    answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
                    self._data = bytes(answer["Body"].read())
                    self._size, self._etag = len(self._data), str(answer["ETag"])
            except MissingObject:
                self._data, self._size, self._etag = b"", 0, None
        return self._data

    def _exists(self) -> bool:
        if self._data is not None:
            return self._etag is not None
        head = self._head()
        if head is None:
            return False
        self._size, self._etag = head
        return True

    def _reader(self) -> BinaryIO:
        """The object streamed in ranged GETs (the archive is never held whole)."""
        if self._data is not None:
            return io.BytesIO(self._data)
        raw = _RangeReader(self.client, self.bucket, self.key, self._size, self.path)
        return io.BufferedReader(raw, buffer_size=RANGE_BYTES)

    def check_source(self) -> None:
        if not self._exists():
            raise UsageError(
                f"the archive {self.path} does not exist: give the key of an archive written "
                "by resultkit (jsonl+s3://BUCKET/KEY.jsonl.gz)"
            )
        with self._reader() as handle:
            head = handle.read(2)
        if head and head != _GZIP_MAGIC:
            raise UsageError(f"{self.path} is not a gzip'd archive (it starts with {head!r})")

    def _truncate(self, offset: int) -> None:
        # Appends replace the object whole, so a cut member is not ours: keep what precedes.
        with self._reader() as handle:
            self._replace(handle.read(offset))

    def _replace(self, data: bytes) -> None:
        with s3_errors(self.path):
            answer = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data)
        self._size, self._etag = len(data), str(answer["ETag"])

    def _append(self, member: bytes) -> None:
        """The archive with *member* at its end, in place atomically (or not at all)."""
        if self._etag is None or self._size < MIN_PART_BYTES:
            # Small (or new): the whole archive in one PUT.
            self._data = None
            data = self._load() if self._etag is not None else b""
            self._replace(data + member)
            self._data = None  # never held past the append
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
        self._size, self._etag = self._size + len(member), str(done["ETag"])

    def close(self) -> None:
        self._data = None
