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
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ._native import speedups
from .compression import add_marker, compress, decompress, split_compression
from .encryption import MAGIC, UnknownKey
from .errors import ConfigurationError, ResultkitError, SerializationError
from .offload import is_reference, resolve
from .records import Payload

if TYPE_CHECKING:
    from .encryption import Envelope, KeyRing, Settings
    from .records import Record

__all__ = [
    "Codec",
    "PickleRefused",
    "decode_payload",
    "decode_sealed",
    "encode_json_tree",
    "encode_payload",
    "require_serializer",
    "sniff_serializer",
    "unreadable",
]

_CONTENT_TYPES = {
    "json": "application/json",
    "msgpack": "application/x-msgpack",
    "yaml": "application/x-yaml",
    "pickle": "application/x-python-serialize",
}
_NAMES_BY_TYPE = {v: k for k, v in _CONTENT_TYPES.items()}
#: Serializers whose payloads are JSON text, kept as a tree when moved.
JSON_FAMILY = frozenset({"json", "resultkit-json"})
ENCRYPTED = "resultkit-encrypted"
#: First bytes of JSON that orjson reads at once (objects and arrays).
JSON_OPENERS = frozenset((b"{", b"["))


class PickleRefused(SerializationError):
    """A payload is pickle and the caller did not accept pickle."""

    def __init__(self, what: str = "the payload is pickle") -> None:
        super().__init__(
            f"{what}, which can run code when decoded: pass --accept-pickle "
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


def require_serializer(name: str) -> None:
    """Fail before any work when a serializer cannot encode here (unknown, no library, no key)."""
    from kombu.serialization import dumps

    try:
        dumps({"probe": 1}, serializer=name)
    except Exception as exc:
        from kombu.exceptions import SerializerNotInstalled
        from kombu.serialization import registry

        from .choices import did_you_mean

        cause: object = exc.__cause__ or exc.__context__ or exc  # kombu wraps the real error
        if isinstance(exc, SerializerNotInstalled) and name not in registry.name_to_type:
            cause = f"kombu has no such serializer{did_you_mean(name, registry.name_to_type)}"
        raise ConfigurationError(
            f"the {name!r} serializer cannot be used here: {cause}"
            + (
                ""
                if isinstance(cause, ResultkitError)
                else "; install its library or pick "
                "json, msgpack, resultkit-json or resultkit-msgpack"
            )
        ) from exc


def sniff_serializer(body: bytes, hint: str = "json") -> str:
    """Recognise the serializer of an (uncompressed) payload from its first bytes.

    resultkit's serializers write JSON and msgpack, so a JSON or msgpack payload
    is taken for theirs when *hint* names them.
    """
    if not body:
        return hint
    if body.startswith(MAGIC):
        return ENCRYPTED
    guess = _sniff(body, hint)
    if hint == f"resultkit-{guess}":
        return hint
    return guess


def _sniff(body: bytes, hint: str) -> str:
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


#: What :func:`json_at_once` returns for a payload it leaves to the careful path.
NOT_READ: Any = object()


def json_at_once(data: bytes, hint: str) -> Any:
    """The tree of a JSON object or array, read at once when *hint* names a JSON serializer.

    The common case of every store, without sniffing; returns :data:`NOT_READ`
    for anything else (NaN, big integers, other serializers), which
    :func:`decode_sealed` then reads carefully.
    """
    if hint in JSON_FAMILY and data[:1] in JSON_OPENERS:
        return exact_json(data)
    return NOT_READ


def exact_json(data: bytes) -> Any:
    """*data* read by orjson when that reading is exact, else :data:`NOT_READ`:
    not JSON, NaN or Infinity (the standard library reads them), or an integer
    past 64 bits (which orjson would read as a float)."""
    if long_digits(data):
        return NOT_READ
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return NOT_READ


def _long_digits(data: bytes) -> bool:
    return _LONG_DIGITS.search(data) is not None


def _nonfinite(tree: Any) -> bool:
    if isinstance(tree, float):
        return not math.isfinite(tree)
    if isinstance(tree, dict):
        return any(_nonfinite(value) for value in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(_nonfinite(value) for value in tree)
    return False


_LONG_DIGITS = re.compile(rb"[0-9]{20}")

#: True when a payload has 20 digits in a row: orjson reads an integer past 64
#: bits as a float, so such payloads are read by the standard library.
long_digits: Callable[[bytes], bool] = speedups.long_digits if speedups else _long_digits
#: True when a tree holds a NaN or an infinite float, which orjson writes as null.
nonfinite: Callable[[Any], bool] = speedups.nonfinite if speedups else _nonfinite


def decode_payload(
    payload: bytes | str,
    *,
    hint: str = "json",
    accept_pickle: bool = False,
    keys: KeyRing | None = None,
) -> tuple[Any, str, str | None]:
    """Decode one stored payload: return (value, serializer name, compression name).

    Raises :class:`PickleRefused` for pickle unless *accept_pickle*, and
    :class:`SerializationError` for anything that does not decode.
    """
    value, serializer, compression, _ = decode_sealed(
        payload, hint=hint, accept_pickle=accept_pickle, keys=keys
    )
    return value, serializer, compression


def decode_sealed(
    payload: bytes | str,
    *,
    hint: str = "json",
    accept_pickle: bool = False,
    keys: KeyRing | None = None,
) -> tuple[Any, str, str | None, Envelope | None]:
    """:func:`decode_payload`, opening resultkit-encrypted payloads with *keys*.

    For an encrypted payload the value and serializer are those of the inner
    payload, and the envelope (key id, inner serializer and compression) comes
    fourth; it is None for other payloads.
    """
    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    tree = json_at_once(data, hint)
    if tree is not NOT_READ:
        return tree, hint, None, None
    body, compression = split_compression(data)
    serializer = sniff_serializer(body, hint)
    if serializer == ENCRYPTED:
        from .encryption import UnknownKey, key_id_of, open_payload

        if keys is None:
            raise UnknownKey(key_id_of(body) or "?", [])
        envelope, inner = open_payload(body, keys)
        if envelope.compression:
            inner = decompress(inner, envelope.compression)
        value, serializer, _ = decode_payload(inner, hint=envelope.serializer)
        return value, serializer, compression, envelope
    if serializer == "pickle" and not accept_pickle:
        raise PickleRefused()
    if serializer in JSON_FAMILY:
        return _json_tree(body, len(data)), serializer, compression, None
    from kombu.serialization import loads

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
    return value, serializer, compression, None


def _json_tree(body: bytes, size: int) -> Any:
    tree = exact_json(body)
    if tree is not NOT_READ:
        return tree
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationError(
            f"cannot decode a json payload of {size} bytes ({type(exc).__name__}: {str(exc)[:120]})"
        ) from exc


#: Encoded JSON shorter than this is copied into an object of its own size.
COMPACT_BELOW = 512
_EMPTY = b""


def encode_json_tree(tree: Any) -> bytes:
    """Encode a JSON tree (as :func:`decode_payload` returns it) back to JSON.

    orjson writes into a buffer of about 1 KB and shrinks it when done; a batch
    keeps thousands of such results alive until it is written, and their
    shrunken buffers scatter the heap: a copy of exactly the right size (from
    Python's small-object allocator) costs far less (3 µs less per value,
    measured on a batch of 5,000 records).
    """
    try:
        data = orjson.dumps(tree)
    except TypeError:
        pass  # Python values (datetimes, Decimals...) or integers past 64 bits
    else:
        # orjson writes NaN and infinities as null; kombu writes them as Celery does.
        if b"null" not in data or not nonfinite(tree):
            return _EMPTY.join((data, _EMPTY)) if len(data) < COMPACT_BELOW else data  # a copy
    from kombu.utils.json import dumps

    return str(dumps(tree)).encode("utf-8")


def materialize(tree: Any, serializer: str = "json") -> Any:
    """Turn the type tags in a JSON tree into the Python values they stand for.

    kombu's tags for ``json``, resultkit's for ``resultkit-json``; the tree is
    left as it was.
    """
    if serializer == "resultkit-json":
        from .serializers import untag

        return untag(orjson.loads(orjson.dumps(tree)))  # untag rebuilds in place: a copy
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
    sealing: Settings | None = None,
) -> bytes:
    """Encode *value* as Celery's backends do, with the optional compression marker.

    *value* is in the form :func:`decode_payload` returned for
    *source_serializer*: a JSON tree for the JSON serializers, Python values
    otherwise.  ``resultkit-encrypted`` seals with *sealing* (keys, inner
    serializer and compression).
    """
    from kombu.serialization import dumps

    if serializer == ENCRYPTED:
        if sealing is None:
            raise SerializationError(
                "cannot write resultkit-encrypted results without keys: give the target's keys "
                "(--target-keys-env, or resultkit_encryption_keys in the app)"
            )
        from .encryption import seal

        inner = encode_payload(value, sealing.serializer, source_serializer=source_serializer)
        if sealing.compression:
            inner, _ = compress(inner, sealing.compression)
        data = seal(inner, sealing.keys, sealing.serializer, sealing.compression)
        return add_marker(data, compression)
    try:
        if serializer in JSON_FAMILY and source_serializer == serializer:
            data = encode_json_tree(value)
        else:
            if source_serializer in JSON_FAMILY:
                value = materialize(value, source_serializer)
            _, _, body = dumps(value, serializer=serializer)
            data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    except Exception as exc:
        raise SerializationError(
            f"cannot encode as {serializer}: {type(exc).__name__}: {exc}"
        ) from exc
    return add_marker(data, compression)


@dataclass
class Codec:
    """How a store encodes payloads it writes."""

    #: Serializer to (re)encode with; None keeps each record's own.
    serializer: str | None = None
    #: Compression to (re)encode with; "" forces none, None keeps each record's own.
    compression: str | None = None
    accept_pickle: bool = False
    #: Serializer assumed when a payload's first bytes do not tell.
    hint: str = "json"
    #: Keys that open resultkit-encrypted payloads read from this store.
    keys: KeyRing | None = None
    #: Keys (newest first), inner serializer and compression for encrypted payloads written.
    sealing: Settings | None = None
    #: (serializer, compression, sealed) → encode_json_tree when such records are written as
    #: plain JSON, unchanged; None when each needs :meth:`encode`.
    _plain: dict[tuple[str, str | None, bool], Callable[[Any], bytes] | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    def transcodes(self, record: Record) -> bool:
        serializer, compression = self.target_format(record)
        if serializer == ENCRYPTED:
            if record.envelope is None:
                return True  # encrypt what was stored in the clear
            if (
                self.sealing is not None
                and record.envelope.key_id != self.sealing.keys.primary.label
            ):
                return True  # re-encrypt under the newest key
        elif serializer != record.serializer or record.envelope is not None:
            return True
        return compression != record.compression

    def target_format(self, record: Record) -> tuple[str, str | None]:
        kept = ENCRYPTED if record.envelope is not None else record.serializer
        serializer = self.serializer or kept
        compression = record.compression if self.compression is None else (self.compression or None)
        return serializer, compression

    def encode(self, value: Any, record: Record) -> bytes:
        serializer, compression = self.target_format(record)
        return encode_payload(
            value,
            serializer,
            compression,
            source_serializer=record.serializer,
            sealing=self.sealing,
        )

    def encoder_for(self, record: Record) -> Callable[[Any], bytes]:
        """The function that encodes *record*'s values: plain JSON at once when
        nothing about it changes (the common case of a migration), else :meth:`encode`."""
        key = (record.serializer, record.compression, record.envelope is not None)
        if key not in self._plain:
            unchanged = key[0] in JSON_FAMILY and key[1:] == (None, False)
            self._plain[key] = (
                encode_json_tree if unchanged and not self.transcodes(record) else None
            )
        plain = self._plain[key]
        if plain is not None:
            return plain
        return lambda value: self.encode(value, record)

    def decode(self, payload: bytes | str) -> tuple[Any, str, str | None]:
        payload = _inline(payload)
        return decode_payload(
            payload, hint=self.hint, accept_pickle=self.accept_pickle, keys=self.keys
        )

    def read(self, payload: bytes | str) -> tuple[Any, Payload]:
        """The value of *payload*, and the form it was stored in (a payload
        without its meta); raises SerializationError for what cannot be read.

        An offload reference is read through: the object's bytes are decoded."""
        payload = _inline(payload)
        value, serializer, compression, envelope = decode_sealed(
            payload, hint=self.hint, accept_pickle=self.accept_pickle, keys=self.keys
        )
        return value, Payload(None, serializer, compression, envelope)


def _inline(payload: bytes | str) -> bytes | str:
    """The payload behind an offload reference (fetched), or *payload* itself."""
    if not is_reference(payload):
        return payload
    try:
        return resolve(payload)  # type: ignore[no-any-return]
    except ResultkitError as exc:
        # A record that cannot be read, with the object's URL in its error.
        raise SerializationError(str(exc)) from exc


def unreadable(exc: SerializationError, form: Payload | None = None) -> Payload:
    """*form* (what was found of the payload so far) with why it could not be read."""
    form = Payload(None) if form is None else form
    if isinstance(exc, UnknownKey):
        return form._replace(serializer=ENCRYPTED, missing_key=exc.key_id, error=str(exc))
    if isinstance(exc, PickleRefused):
        return form._replace(serializer="pickle", error=str(exc))
    return form._replace(error=str(exc))
