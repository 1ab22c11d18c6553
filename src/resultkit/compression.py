"""Compression, the lowest layer of the payload stack.

Everything resultkit knows about compressed payloads lives here:

- Celery's in-band marker (Celery 5.7's ``result_compression``): a stored
  payload that starts with :data:`COMPRESSED_MAGIC`, the content type and a
  NUL, then the compressed body — :func:`split_compression` and
  :func:`add_marker`;
- kombu's compression registry, by method name or content type —
  :func:`compress`, :func:`decompress`, :func:`require_compression`;
- ``zstd`` and ``lz4``, registered with kombu when their libraries are
  installed (:func:`register`).  Payloads below
  :data:`COMPRESSION_THRESHOLD_BYTES` are written as *stored* frames — valid
  zstd/lz4 frames holding the bytes uncompressed — so small results cost no
  compression work and any reader with the library decodes them.

The layers above: :mod:`resultkit.serializers`, :mod:`resultkit.encryption`
(the envelope), :mod:`resultkit.codec`.
"""

from __future__ import annotations

import difflib
import struct

from .errors import ConfigurationError, SerializationError

__all__ = [
    "COMPRESSED_MAGIC",
    "COMPRESSION_THRESHOLD_BYTES",
    "add_marker",
    "compress",
    "decompress",
    "installed",
    "lz4_stored_frame",
    "register",
    "require_compression",
    "split_compression",
    "zstd_stored_frame",
]

#: Celery's in-band compression marker (Celery 5.7); also recognised when the
#: installed Celery predates it, so such payloads are reported, not mangled.
COMPRESSED_MAGIC = b"\x00celery-compressed\x00"
#: Payloads shorter than this are written as stored (uncompressed) zstd/lz4 frames.
COMPRESSION_THRESHOLD_BYTES = 512

#: kombu's content types, by the method name resultkit reports.
_NAMES_BY_CONTENT_TYPE = {
    "application/x-gzip": "gzip",
    "application/x-bz2": "bzip2",
    "application/x-lzma": "lzma",
    "application/zstd": "zstd",
    "application/x-lz4": "lz4",
}


def installed() -> list[str]:
    """The compression methods kombu can use in this process (names and aliases)."""
    from kombu import compression

    register()
    return sorted(compression._aliases)


def require_compression(name: str, *, setting: str = "compression") -> str:
    """*name* when kombu can compress with it here; otherwise a one-line
    :class:`ConfigurationError` naming what is installed (and a close match)."""
    from kombu import compression

    register()
    try:
        compression.get_encoder(name)
    except KeyError:
        known = installed()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        extra = (
            f"pip install 'celery-resultkit[{name}]'; "
            if name in ("zstd", "zstandard", "lz4")
            else ""
        )
        raise ConfigurationError(
            f"{setting} {name!r} is not a compression method here: {hint}{extra}"
            f"installed: {', '.join(known)}"
        ) from None
    return name


def compress(data: bytes, name: str) -> tuple[bytes, str]:
    """*data* compressed by kombu method *name*, and its content type."""
    from kombu.compression import compress as kombu_compress

    body, content_type = kombu_compress(data, name)
    return bytes(body), str(content_type)


def decompress(body: bytes, name: str) -> bytes:
    """*body* decompressed with the kombu method (or content type) *name*."""
    from kombu.compression import decompress as kombu_decompress
    from kombu.compression import get_encoder

    try:
        content_type = name if "/" in name else get_encoder(name)[1]
    except KeyError:
        raise SerializationError(
            f"the payload is compressed with {name}, which is not installed here: install its "
            "library (zstandard, lz4) so kombu can decompress it"
        ) from None
    try:
        return bytes(kombu_decompress(body, content_type))
    except KeyError:
        raise SerializationError(
            f"the payload is compressed with {name}, which is not installed here: install its "
            "library (zstandard, lz4) so kombu can decompress it"
        ) from None
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"corrupt {name} compressed payload: {exc}") from exc


def split_compression(payload: bytes) -> tuple[bytes, str | None]:
    """Undo Celery's in-band compression; return the body and the method's name."""
    if not payload.startswith(COMPRESSED_MAGIC):
        return payload, None
    content_type, _, body = payload[len(COMPRESSED_MAGIC) :].partition(b"\x00")
    ctype = content_type.decode("ascii", "replace")
    return decompress(body, ctype), _NAMES_BY_CONTENT_TYPE.get(ctype, ctype)


def add_marker(data: bytes, name: str | None) -> bytes:
    """*data* compressed with *name* behind Celery's in-band marker (as it is, without one)."""
    if not name:
        return data
    compressed, content_type = compress(data, name)
    return b"".join([COMPRESSED_MAGIC, content_type.encode("ascii"), b"\x00", compressed])


# ------------------------------------------------------------ zstd and lz4

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MAX_RAW_BLOCK = 128 * 1024 - 1


def zstd_stored_frame(data: bytes) -> bytes:
    """A zstd frame holding *data* in raw (uncompressed) blocks: any zstd decoder reads it."""
    # Frame header: single-segment, 4-byte content size (RFC 8878, 3.1.1.1).
    header = _ZSTD_MAGIC + b"\xa0" + struct.pack("<I", len(data))
    chunks = [data[i : i + _MAX_RAW_BLOCK] for i in range(0, len(data), _MAX_RAW_BLOCK)] or [b""]
    blocks = []
    for index, chunk in enumerate(chunks):
        last = int(index == len(chunks) - 1)
        blocks.append(struct.pack("<I", last | (len(chunk) << 3))[:3] + chunk)  # type 0: raw
    return header + b"".join(blocks)


def lz4_stored_frame(header: bytes, data: bytes) -> bytes:
    """An lz4 frame holding *data* in one uncompressed block, then the end mark."""
    return header + struct.pack("<I", len(data) | 0x80000000) + data + b"\0\0\0\0"


_REGISTERED = False


def register() -> None:
    """Register zstd and lz4 with kombu when their libraries are installed (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from kombu import compression

    try:
        import zstandard
    except ImportError:
        pass
    else:
        compressor = zstandard.ZstdCompressor(level=3)
        decompressor = zstandard.ZstdDecompressor()

        def zstd_compress(body: bytes) -> bytes:
            if len(body) < COMPRESSION_THRESHOLD_BYTES:
                return zstd_stored_frame(body)
            return compressor.compress(body)

        def zstd_decompress(body: bytes) -> bytes:
            try:
                return decompressor.decompress(body)
            except zstandard.ZstdError as exc:
                raise SerializationError(f"not a valid zstd frame: {exc}") from None

        compression.register(
            zstd_compress, zstd_decompress, "application/zstd", aliases=["zstd", "zstandard"]
        )
    try:
        import lz4.frame as lz4_frame
    except ImportError:
        pass
    else:
        # The 7-byte header of a frame with independent 64 KB blocks and no checksums.
        header = lz4_frame.compress(
            b"", block_size=lz4_frame.BLOCKSIZE_MAX64KB, content_checksum=False
        )[:7]

        def lz4_compress(body: bytes) -> bytes:
            if len(body) < COMPRESSION_THRESHOLD_BYTES:
                return lz4_stored_frame(header, body)
            return lz4_frame.compress(body)  # type: ignore[no-any-return]

        def lz4_decompress(body: bytes) -> bytes:
            try:
                return lz4_frame.decompress(body)  # type: ignore[no-any-return]
            except RuntimeError as exc:
                raise SerializationError(f"not a valid lz4 frame: {exc}") from None

        compression.register(lz4_compress, lz4_decompress, "application/x-lz4", aliases=["lz4"])
