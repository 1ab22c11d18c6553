"""resultkit-json decoding, differential: the C tag walk and the pure-Python
one decode any bytes to the same value, or both refuse with SerializationError.

What both decoded is encoded again by both walks: the same bytes, which decode
to the same value (the round trip the serializer promises).  The writers are
compared on values up to MAX_DEPTH deep (a payload without tags is not walked
when decoded, so it may be deeper, and the writers' limit is Python's
recursion limit, which the C and Python walks reach at different depths), the
round trip on values whose tagged form the decoding walk reads
(docs/security.md, limits).
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
