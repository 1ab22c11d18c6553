"""Authenticated encryption of stored results: the ``resultkit-encrypted`` serializer.

::

    result_serializer = "resultkit-encrypted"
    accept_content = ["json", "resultkit-encrypted"]
    result_accept_content = ["resultkit-encrypted"]
    resultkit_encryption_keys = os.environ["RESULTKIT_ENCRYPTION_KEYS"].split(",")  # newest first

A result is serialized by an inner serializer (``resultkit_encryption_serializer``,
``resultkit-json`` by default), optionally compressed
(``resultkit_encryption_compression``), then sealed with AES-256-GCM from the
``cryptography`` package under the *first* key.  Any key in the list opens a
payload: each payload names its key by a key id, so decryption never tries
keys blindly.  Keys come from the setting or, when it is unset, from the
``RESULTKIT_ENCRYPTION_KEYS`` environment variable (comma-separated); a process
without keys refuses to use the serializer — it never makes one up.

Payload layout (all of it authenticated; the header is the associated data)::

    b"\\x00rke\\x01"  key id (4 bytes)  nonce (12 bytes)  ciphertext + GCM tag (16 bytes)

and the plaintext is ``inner serializer name \\0 compression name \\0 body``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, SerializationError

__all__ = [
    "CONTENT_TYPE",
    "ENV_VAR",
    "MAGIC",
    "SERIALIZER",
    "Envelope",
    "KeyRing",
    "Settings",
    "UnknownKey",
    "configure",
    "current",
    "generate_key",
    "install_worker_check",
    "key_id_of",
    "key_label",
    "keyring_for",
    "load_settings",
    "open_payload",
    "reset",
    "scoped",
    "seal",
    "sealing_for",
    "undecryptable",
    "uses_encryption",
]

SERIALIZER = "resultkit-encrypted"
CONTENT_TYPE = "application/x-resultkit-encrypted"
ENV_VAR = "RESULTKIT_ENCRYPTION_KEYS"
MAGIC = b"\x00rke\x01"
_HEADER = len(MAGIC) + 4
_NONCE = 12
_TAG = 16
#: Inner serializers a payload may name: never pickle, whoever wrote it.
INNER_SERIALIZERS = ("resultkit-json", "resultkit-msgpack", "json", "msgpack")
_HOW_TO_GENERATE = "generate one with `resultkit key new`"


def generate_key() -> str:
    """A new random 256-bit key, as the URL-safe base64 text the settings take."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _key_id(secret: bytes) -> bytes:
    return hashlib.sha256(b"resultkit key id\x00" + secret).digest()[:4]


def key_label(key: str) -> str:
    """The key id payloads use for *key* (8 hex digits), as doctor and stats show it."""
    return _key_id(_decode_key(key, 1)).hex()


@dataclass(frozen=True)
class Key:
    """One AES-256-GCM key and the id payloads use to name it."""

    id: bytes
    aead: Any  # cryptography's AESGCM

    @property
    def label(self) -> str:
        return self.id.hex()


class KeyRing:
    """Keys, newest first: encrypt with the first, decrypt with whichever a payload names."""

    def __init__(self, keys: Iterable[str | bytes]) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise ConfigurationError(
                "resultkit-encrypted needs the 'cryptography' package: "
                "pip install 'celery-resultkit[encryption]'"
            ) from None
        self.keys: list[Key] = []
        for number, text in enumerate(keys, 1):
            secret = _decode_key(text, number)
            key = Key(_key_id(secret), AESGCM(secret))
            if any(k.id == key.id for k in self.keys):
                raise ConfigurationError(f"encryption key #{number} is listed twice: remove one")
            self.keys.append(key)
        if not self.keys:
            raise ConfigurationError(
                f"resultkit-encrypted has no key: set resultkit_encryption_keys or {ENV_VAR} "
                f"({_HOW_TO_GENERATE})"
            )
        self._by_id = {key.id: key for key in self.keys}

    def __add__(self, other: KeyRing) -> KeyRing:
        """This ring's keys, then those of *other* it lacks (for opening payloads)."""
        ring = object.__new__(KeyRing)
        ring.keys = self.keys + [key for key in other.keys if key.id not in self._by_id]
        ring._by_id = {key.id: key for key in ring.keys}
        return ring

    @property
    def primary(self) -> Key:
        return self.keys[0]

    def get(self, key_id: bytes) -> Key | None:
        return self._by_id.get(key_id)

    @property
    def labels(self) -> list[str]:
        return [key.label for key in self.keys]

    @classmethod
    def from_settings(cls, conf: Mapping[str, Any] | None = None, *, env: str = ENV_VAR) -> KeyRing:
        """Keys from ``resultkit_encryption_keys`` in *conf*, else from the environment."""
        value = None if conf is None else conf.get("resultkit_encryption_keys")
        source = "resultkit_encryption_keys"
        if not value:
            value, source = os.environ.get(env, ""), env
        if isinstance(value, (str, bytes)):
            text = value.decode() if isinstance(value, bytes) else value
            value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"{source} must be a list of keys, newest first")
        if not value:
            raise ConfigurationError(
                f"resultkit-encrypted has no key: set resultkit_encryption_keys or {env} "
                f"({_HOW_TO_GENERATE})"
            )
        return cls(value)


def keyring_for(conf: Mapping[str, Any] | None, *, env: str = ENV_VAR) -> KeyRing | None:
    """The keys an app's settings (or the environment) give, or None when they give none."""
    configured = conf is not None and conf.get("resultkit_encryption_keys")
    if not configured and not os.environ.get(env, "").strip():
        return None
    return KeyRing.from_settings(conf, env=env)


def undecryptable(sealed: Mapping[str, int], keys: KeyRing | None) -> dict[str, int]:
    """Of *sealed* (counts by key id), those under keys *keys* lacks, most first."""
    missing = {
        k: n for k, n in sealed.items() if keys is None or keys.get(bytes.fromhex(k)) is None
    }
    return dict(sorted(missing.items(), key=lambda item: (-item[1], item[0])))


def sealing_for(conf: Mapping[str, Any] | None, keys: KeyRing | None = None) -> Settings | None:
    """Keys, inner serializer and compression to encrypt with, or None without keys."""
    ring = keys or keyring_for(conf)
    if ring is None:
        return None
    return _settings_from(ring, conf)


def _decode_key(text: str | bytes, number: int) -> bytes:
    if not isinstance(text, (str, bytes)):
        raise ConfigurationError(
            f"encryption key #{number} is not text ({type(text).__name__}): {_HOW_TO_GENERATE}"
        )
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    try:
        secret = base64.urlsafe_b64decode(raw.strip())
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != 32:
        raise ConfigurationError(
            f"encryption key #{number} is not a URL-safe base64 256-bit key: {_HOW_TO_GENERATE}"
        )
    return secret


def key_id_of(payload: bytes) -> str | None:
    """The id of the key that sealed *payload*, or None when it is not a sealed payload."""
    if len(payload) >= _HEADER and payload.startswith(MAGIC):
        return payload[len(MAGIC) : _HEADER].hex()
    return None


@dataclass(frozen=True)
class Envelope:
    """What the sealed layer says about a payload."""

    key_id: str
    serializer: str
    compression: str | None


def seal(body: bytes, keys: KeyRing, serializer: str, compression: str | None = None) -> bytes:
    """Encrypt *body* (already serialized by *serializer*, compressed by *compression*)."""
    key = keys.primary
    header = MAGIC + key.id
    nonce = os.urandom(_NONCE)
    plain = b"".join([serializer.encode(), b"\0", (compression or "").encode(), b"\0", body])
    sealed: bytes = key.aead.encrypt(nonce, plain, header)
    return header + nonce + sealed


def open_payload(payload: bytes, keys: KeyRing) -> tuple[Envelope, bytes]:
    """Decrypt and authenticate *payload*: return its envelope and the inner body.

    Raises :class:`SerializationError` naming the problem: not a sealed
    payload, truncated, a key this process does not have, or a payload that
    fails authentication (tampered with, or sealed under another key).
    """
    data = bytes(payload)
    if not data.startswith(MAGIC):
        raise SerializationError(
            "not a resultkit-encrypted payload (written with another serializer, or not by "
            "resultkit): check result_serializer and result_accept_content"
        )
    if len(data) < _HEADER + _NONCE + _TAG:
        raise SerializationError(f"truncated resultkit-encrypted payload ({len(data)} bytes)")
    key_id = data[len(MAGIC) : _HEADER]
    key = keys.get(key_id)
    if key is None:
        raise UnknownKey(key_id.hex(), keys.labels)
    from cryptography.exceptions import InvalidTag

    try:
        plain = key.aead.decrypt(
            data[_HEADER : _HEADER + _NONCE], data[_HEADER + _NONCE :], data[:_HEADER]
        )
    except InvalidTag:
        raise SerializationError(
            f"resultkit-encrypted payload under key {key_id.hex()} failed authentication: "
            "it was altered or truncated after it was written"
        ) from None
    serializer, _, rest = plain.partition(b"\0")
    compression, _, body = rest.partition(b"\0")
    envelope = Envelope(
        key_id.hex(),
        serializer.decode("ascii", "replace"),
        compression.decode("ascii", "replace") or None,
    )
    if envelope.serializer not in INNER_SERIALIZERS:
        raise SerializationError(
            f"resultkit-encrypted payload names inner serializer {envelope.serializer!r}, "
            "which is refused"
        )
    return envelope, body


class UnknownKey(SerializationError):
    """A payload was sealed under a key this process does not have."""

    def __init__(self, key_id: str, known: Sequence[str]) -> None:
        self.key_id = key_id
        has = f"it has {', '.join(known)}" if known else f"it has no keys: set {ENV_VAR} or -A APP"
        super().__init__(
            f"result encrypted under key {key_id}, which this process does not have ({has}): "
            "add that key to resultkit_encryption_keys, after the newest"
        )


# ------------------------------------------------------------ configuration


@dataclass
class Settings:
    keys: KeyRing
    serializer: str = "resultkit-json"
    compression: str | None = None


_SETTINGS: Settings | None = None
#: Settings for the current context only (see :func:`scoped`): a library call
#: never replaces the process's own.
_SCOPED: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "resultkit_encryption", default=None
)


def configure(
    keys: KeyRing | Sequence[str] | None = None,
    *,
    conf: Mapping[str, Any] | None = None,
    serializer: str | None = None,
    compression: str | None = None,
) -> Settings:
    """Set the keys (and inner serializer and compression) this process uses.

    Without arguments, read them from *conf* (a Celery app's ``conf``) or from
    the current Celery app, then the environment.  Called for you the first
    time the serializer is used, and when a worker starts.
    """
    global _SETTINGS
    if conf is None and keys is None:
        from celery import current_app

        conf = current_app.conf
    _SETTINGS = load_settings(keys, conf=conf, serializer=serializer, compression=compression)
    return _SETTINGS


def load_settings(
    keys: KeyRing | Sequence[str] | None = None,
    *,
    conf: Mapping[str, Any] | None = None,
    serializer: str | None = None,
    compression: str | None = None,
) -> Settings:
    """The keys, inner serializer and compression that *keys* or *conf* (then the
    environment) give, validated; nothing is changed.  Raises ConfigurationError."""
    if isinstance(keys, KeyRing):
        ring = keys
    else:
        ring = KeyRing(keys) if keys is not None else KeyRing.from_settings(conf)
    return _settings_from(ring, conf, serializer, compression)


def _settings_from(
    ring: KeyRing,
    conf: Mapping[str, Any] | None,
    serializer: str | None = None,
    compression: str | None = None,
) -> Settings:
    inner = serializer or (conf or {}).get("resultkit_encryption_serializer") or "resultkit-json"
    if inner not in INNER_SERIALIZERS:
        raise ConfigurationError(
            f"resultkit_encryption_serializer {inner!r} is not one of "
            f"{', '.join(INNER_SERIALIZERS)}"
        )
    packing = compression or (conf or {}).get("resultkit_encryption_compression") or None
    if packing:
        from .compression import require_compression

        require_compression(packing, setting="resultkit_encryption_compression")
    return Settings(ring, inner, packing)


@contextlib.contextmanager
def scoped(settings: Settings) -> Iterator[Settings]:
    """Use *settings* in this context (thread or task) while the block runs.

    For a library call that reads results through Celery's own classes with
    keys of its own (``migrate --verify``): the keys reach kombu's decoder
    without replacing the process's settings, which other threads keep using.
    """
    token = _SCOPED.set(settings)
    try:
        yield settings
    finally:
        _SCOPED.reset(token)


def current() -> Settings:
    """The settings in force here: the scoped ones, else the process's (read once)."""
    return _SCOPED.get() or _SETTINGS or configure()


def reset() -> None:
    """Forget the configured keys (the next use reads the settings again)."""
    global _SETTINGS
    _SETTINGS = None


# ------------------------------------------------------------------- codec


def _inner_codecs() -> dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]:
    """The inner serializers' own functions (no trip through kombu's registry)."""
    import kombu.utils.json as kombu_json

    from . import serializers

    def msgpack_dumps(obj: Any) -> bytes:
        from kombu.serialization import dumps

        return bytes(dumps(obj, serializer="msgpack")[2])

    def msgpack_loads(body: bytes) -> Any:
        from kombu.serialization import loads, registry

        content_type = registry.name_to_type["msgpack"]
        return loads(body, content_type, "binary", accept={content_type})

    return {
        "resultkit-json": (serializers.json_dumps, serializers.json_loads),
        "resultkit-msgpack": (serializers.msgpack_dumps, serializers.msgpack_loads),
        "json": (lambda obj: kombu_json.dumps(obj).encode("utf-8"), kombu_json.loads),
        "msgpack": (msgpack_dumps, msgpack_loads),
    }


_INNER: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {}


def _inner(name: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    if not _INNER:
        _INNER.update(_inner_codecs())
    return _INNER[name]


def encrypted_dumps(obj: Any) -> bytes:
    """kombu encoder: serialize with the inner serializer, compress, seal."""
    settings = current()
    data = _inner(settings.serializer)[0](obj)
    if settings.compression:
        from .compression import compress

        data, _ = compress(data, settings.compression)
    return seal(data, settings.keys, settings.serializer, settings.compression)


def encrypted_loads(payload: bytes | str) -> Any:
    """kombu decoder: open, decompress, deserialize with the serializer the payload names."""
    data = payload.encode("latin-1") if isinstance(payload, str) else bytes(payload)
    envelope, body = open_payload(data, current().keys)
    if envelope.compression:
        from .compression import decompress

        body = decompress(body, envelope.compression)
    try:
        return _inner(envelope.serializer)[1](body)
    except SerializationError:
        raise
    except Exception as exc:  # kombu's DecodeError, json's ValueError: the same refusal
        raise SerializationError(
            f"the {envelope.serializer} payload inside a resultkit-encrypted one does not "
            f"decode ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


#: kombu entry point (``kombu.serializers``): (encoder, decoder, content type, encoding).
REGISTRATION = (encrypted_dumps, encrypted_loads, CONTENT_TYPE, "binary")


def uses_encryption(conf: Mapping[str, Any]) -> bool:
    """True when an app's settings write or accept resultkit-encrypted results."""
    names = {conf.get("result_serializer")}
    for setting in ("accept_content", "result_accept_content"):
        names.update(conf.get(setting) or ())
    return bool(names & {SERIALIZER, CONTENT_TYPE})


def _refuse_to_start_without_keys(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None or not uses_encryption(app.conf):
        return
    try:
        configure(conf=app.conf)
    except ConfigurationError as exc:
        # Signal handlers' exceptions are only logged: SystemExit stops the worker.
        raise SystemExit(f"resultkit: the worker cannot start: {exc}") from None


def install_worker_check() -> None:
    """Make every worker whose app uses resultkit-encrypted refuse to start without keys.

    Connected when the ``celery`` command loads resultkit's command plugin, so
    every ``celery worker`` has it (idempotent).
    """
    from celery import signals

    signals.worker_init.connect(
        _refuse_to_start_without_keys, weak=False, dispatch_uid="resultkit-encryption"
    )


def register() -> None:
    """Register resultkit-encrypted with kombu (idempotent)."""
    from kombu.serialization import register as register_serializer

    from . import serializers  # the default inner serializer

    serializers.register()
    register_serializer(SERIALIZER, *REGISTRATION)
    # Never import celery from here: kombu loads this module while it is itself
    # being imported, maybe by celery.  The command plugin connects it instead.
    if getattr(sys.modules.get("celery.signals"), "worker_init", None) is not None:
        install_worker_check()


register()
