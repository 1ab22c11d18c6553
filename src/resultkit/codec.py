"""Decode and encode stored payloads exactly as Celery does, without guessing wrong.

Celery writes ``dumps(meta, serializer)`` and, when ``result_compression`` is
on, prefixes Celery's in-band compression marker.  A stored payload does not
name its serializer, so :func:`sniff_serializer` recognises the four that
kombu ships from their first bytes.  Pickle is never decoded unless the
caller explicitly accepts it.

JSON is kept as a *tree*: decoded with orjson and without kombu's object
hook, so kombu's type tags (``{"__type__": "datetime", ...}``) stay as the
dictionaries they are on the wire and are written back unchanged.  Moving JSON
results is then lossless and fast; only a transcode to another serializer
turns the tags into Python values (:func:`materialize`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import SerializationError

__all__ = [
    "PickleRefused",
    "decode_payload",
    "encode_payload",
    "sniff_serializer",
    "split_compression",
]

#: Celery's in-band compression marker (Celery 5.7); also recognised when the
#: installed Celery predates it, so such payloads are reported, not mangled.
COMPRESSED_MAGIC = b"\x00celery-compressed\x00"

_CONTENT_TYPES = {
    "json": "application/json",
    "msgpack": "application/x-msgpack",
    "yaml": "application/x-yaml",
    "pickle": "application/x-python-serialize",
}
_NAMES_BY_TYPE = {v: k for k, v in _CONTENT_TYPES.items()}
_COMPRESSION_NAMES = {
    "application/x-gzip": "gzip",
    "application/x-bz2": "bzip2",
    "application/x-lzma": "lzma",
    "application/zstd": "zstd",
    "application/x-lz4": "lz4",
}


class PickleRefused(SerializationError):
    """A payload is pickle and the caller did not accept pickle."""

    def __init__(self) -> None:
        super().__init__(
            "the payload is pickle, which can run code when decoded: pass --accept-pickle "
            "if you trust everyone who can write to this backend"
        )


def content_type_of(serializer: str) -> str:
    from kombu.serialization import registry

    return _CONTENT_TYPES.get(serializer) or registry.name_to_type.get(serializer, serializer)


def serializer_of(content_type: str) -> str:
    from kombu.serialization import registry

    if content_type in _NAMES_BY_TYPE:
        return _NAMES_BY_TYPE[content_type]
    for name, ctype in registry.name_to_type.items():
        if ctype == content_type:
            return str(name)
    return content_type


def split_compression(payload: bytes) -> tuple[bytes, str | None]:
    """Undo Celery's in-band compression; return the body and the compression name."""
    if not payload.startswith(COMPRESSED_MAGIC):
        return payload, None
    from kombu.compression import decompress

    content_type, _, body = payload[len(COMPRESSED_MAGIC) :].partition(b"\x00")
    ctype = content_type.decode("ascii", "replace")
    try:
        return decompress(body, ctype), _COMPRESSION_NAMES.get(ctype, ctype)
    except KeyError as exc:
        raise SerializationError(
            f"compressed with {ctype}, which is not installed here: install its library "
            "(zstandard, lz4) so kombu can decompress it"
        ) from exc
    except Exception as exc:
        raise SerializationError(f"corrupt {ctype} compressed payload: {exc}") from exc


def sniff_serializer(body: bytes, hint: str = "json") -> str:
    """Recognise the serializer of an (uncompressed) payload from its first bytes."""
    if not body:
        return hint
    first = body[0]
    if first == 0x80 and len(body) > 1 and 2 <= body[1] <= 5:
        return "pickle"
    stripped = body.lstrip()
    if (
        stripped[:1] in (b"{", b"[", b'"')
        or stripped[:4] in (b"null", b"true")
        or (stripped[:1].isdigit() and hint == "json")
    ):
        return "json"
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF, 0x90, 0xDC, 0xDD) or 0x90 <= first <= 0x9F:
        return "msgpack"
    return hint


def decode_payload(
    payload: bytes | str, *, hint: str = "json", accept_pickle: bool = False
) -> tuple[Any, str, str | None]:
    """Decode one stored payload: return (value, serializer name, compression name).

    Raises :class:`PickleRefused` for pickle unless *accept_pickle*, and
    :class:`SerializationError` for anything that does not decode.
    """
    from kombu.serialization import loads

    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    body, compression = split_compression(data)
    serializer = sniff_serializer(body, hint)
    if serializer == "pickle" and not accept_pickle:
        raise PickleRefused()
    if serializer == "json":
        return _json_tree(body, len(data)), serializer, compression
    content_type = content_type_of(serializer)
    accept = {content_type}
    try:
        encoding = "utf-8" if serializer in ("json", "yaml") else "binary"
        value = loads(body, content_type, encoding, accept)
    except Exception as exc:
        raise SerializationError(
            f"cannot decode a {serializer} payload of {len(data)} bytes "
            f"({type(exc).__name__}: {str(exc)[:120]})"
        ) from exc
    return value, serializer, compression


def _json_tree(body: bytes, size: int) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # NaN, Infinity or integers past 64 bits: the standard library reads them
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationError(
            f"cannot decode a json payload of {size} bytes ({type(exc).__name__}: {str(exc)[:120]})"
        ) from exc


def json_dumps(tree: Any) -> bytes:
    """Encode a JSON tree (as :func:`decode_payload` returns it) back to JSON."""
    try:
        return orjson.dumps(tree)
    except TypeError:
        # Python values rather than a tree (datetimes, Decimals...): kombu tags them.
        from kombu.utils.json import dumps

        return str(dumps(tree)).encode("utf-8")


def materialize(tree: Any) -> Any:
    """Turn kombu's JSON type tags in a JSON tree into the Python values they stand for."""
    from kombu.utils.json import object_hook

    if isinstance(tree, dict):
        return object_hook({k: materialize(v) for k, v in tree.items()})
    if isinstance(tree, list):
        return [materialize(v) for v in tree]
    return tree


def encode_payload(
    value: Any,
    serializer: str = "json",
    compression: str | None = None,
    *,
    source_serializer: str = "json",
) -> bytes:
    """Encode *value* as Celery's backends do, with the optional compression marker.

    *value* is in the form :func:`decode_payload` returned for
    *source_serializer*: a JSON tree for json, Python values otherwise.
    """
    from kombu.serialization import dumps

    try:
        if serializer == "json" and source_serializer == "json":
            data = json_dumps(value)
        else:
            if source_serializer == "json":
                value = materialize(value)
            _, _, body = dumps(value, serializer=serializer)
            data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    except Exception as exc:
        raise SerializationError(
            f"cannot encode as {serializer}: {type(exc).__name__}: {exc}"
        ) from exc
    if compression:
        from kombu.compression import compress

        compressed, content_type = compress(data, compression)
        data = b"".join([COMPRESSED_MAGIC, content_type.encode("ascii"), b"\x00", compressed])
    return data
