"""resultkit-json decoding, differential: the C tag walk and the pure-Python
one decode any bytes to the same value, or both refuse with SerializationError.

What both decoded is encoded again by both walks: the same bytes, which decode
to the same value (the round trip the serializer promises).
"""

from __future__ import annotations

from _common import agree, fuzz, instrumented, outcome, pure_python, require_speedups

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
    c_bytes = serializers.json_dumps(value)
    with pure_python():
        py_bytes = serializers.json_dumps(value)
    agree("json_dumps", data, c_bytes, py_bytes)
    agree("round trip", data, outcome(lambda: serializers.json_loads(c_bytes), SerializationError), c)


if __name__ == "__main__":
    fuzz(check)
