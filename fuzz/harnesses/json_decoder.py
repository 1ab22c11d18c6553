"""resultkit-json decoding, differential: the C tag walk and the pure-Python
one decode any bytes to the same value, or both refuse with SerializationError.

What both decoded is encoded again by both walks: the same bytes or the same
refusal.  What was written decodes to the same value (the round trip the
serializer promises): the writers count levels as the decoding walk does and
refuse what it would refuse (docs/security.md, limits).
"""

from __future__ import annotations

from _common import decoder_differential, fuzz, instrumented

with instrumented(__name__):
    from resultkit import serializers
    from resultkit.errors import SerializationError


def check(data: bytes) -> None:
    decoder_differential(
        data,
        "json",
        serializers.json_loads,
        serializers.json_dumps,
        binary=False,
        serializers=serializers,
        error=SerializationError,
    )


if __name__ == "__main__":
    fuzz(check)
