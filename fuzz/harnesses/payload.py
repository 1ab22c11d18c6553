"""Stored payloads as every store reads them (``codec.decode_sealed``):
sniffing the serializer, splitting kombu's compression, opening an encrypted
envelope, then the serializer's decoder, with the C walks and again with the
pure-Python ones.  Both give the same value or both refuse with
SerializationError (pickle is refused unopened).

The first byte chooses the serializer the store's column or key names (the
hint); the rest is the stored payload.
"""

from __future__ import annotations

from _common import agree, fuzz, instrumented, outcome, pure_python, require_speedups

with instrumented(__name__):
    from envelope import KEYS

    from resultkit import codec
    from resultkit.errors import SerializationError

HINTS = ["json", "resultkit-json", "resultkit-msgpack", "msgpack", "pickle", "yaml"]


def check(data: bytes) -> None:
    require_speedups()
    if not data:
        return
    hint, payload = HINTS[data[0] % len(HINTS)], data[1:]
    c = outcome(lambda: codec.decode_sealed(payload, hint=hint, keys=KEYS)[:3], SerializationError)
    with pure_python():
        py = outcome(
            lambda: codec.decode_sealed(payload, hint=hint, keys=KEYS)[:3], SerializationError
        )
    agree(f"decode_sealed({hint})", data, c, py)


if __name__ == "__main__":
    fuzz(check)
