"""The resultkit-encrypted envelope: what ``open_payload`` and
``encrypted_loads`` make of any bytes.

The first byte chooses what the rest is: a sealed payload as stored (header,
key id, nonce, ciphertext: only SerializationError may come out), or the
plaintext inside the envelope (inner serializer, compression, body), sealed
here under the test key so that fuzzing reaches the parsing behind the
authentication check: again only SerializationError may come out.
"""

from __future__ import annotations

import base64
import contextlib

from _common import fuzz, instrumented

with instrumented(__name__):
    from resultkit import encryption
    from resultkit.errors import SerializationError

KEYS = encryption.KeyRing([base64.urlsafe_b64encode(bytes([n]) * 32).decode() for n in (1, 2)])
SETTINGS = encryption.Settings(KEYS)


def sealed_plaintext(plain: bytes) -> bytes:
    """*plain* sealed as ``seal`` seals a serializer, a compression and a body."""
    key = KEYS.primary
    header = encryption.MAGIC + key.id
    nonce = bytes(12)
    return header + nonce + key.aead.encrypt(nonce, plain, header)


def check(data: bytes) -> None:
    if not data:
        return
    payload = data[1:] if data[0] % 2 == 0 else sealed_plaintext(data[1:])
    encryption.key_id_of(payload)
    with contextlib.suppress(SerializationError):
        encryption.open_payload(payload, KEYS)
    with encryption.scoped(SETTINGS), contextlib.suppress(SerializationError):
        encryption.encrypted_loads(payload)


if __name__ == "__main__":
    fuzz(check)
