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

from _common import agree, depth, fuzz, instrumented, outcome, pure_python, require_speedups

with instrumented(__name__):
    from resultkit import serializers
    from resultkit.errors import SerializationError


def check(data: bytes) -> None:
    require_speedups()
    c = outcome(lambda: serializers.json_loads(data), SerializationError)
    with pure_python():
        py = outcome(lambda: serializers.json_loads(data), SerializationError)
    agree("json_loads", data, c, py)
    if c[0] != "ok":
        return
    value = serializers.json_loads(data)
    if depth(value) > serializers.MAX_DEPTH:
        return
    c_bytes = outcome(lambda: serializers.json_dumps(value), SerializationError)
    with pure_python():
        py_bytes = outcome(lambda: serializers.json_dumps(value), SerializationError)
    agree("json_dumps", data, c_bytes, py_bytes)
    # The walk counts the tagged form's levels and its own call: deeper is refused
    # when read, though written (docs/security.md, limits).
    tagged = serializers.tag(value, binary=False) if c_bytes[0] == "ok" else None
    if c_bytes[0] == "ok" and depth(tagged) < serializers.MAX_DEPTH:
        again = serializers.json_loads(serializers.json_dumps(value))
        agree("round trip", data, outcome(lambda: again, SerializationError), c)


if __name__ == "__main__":
    fuzz(check)
