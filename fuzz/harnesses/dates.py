"""Marked strings and ISO dates, differential: the C parsers (``untag`` of
``~datetime:``, ``~date:``, ``~time:``, ``~decimal:``, ... and the COPY row's
timestamp column) against their pure-Python twins.

The input is one string (UTF-8, lone surrogates allowed).  Decoded as a
marked string and as the tagged object of the same tag, C and Python give the
same value or both refuse with SerializationError; as a ``date_done``, the C
row maker writes the timestamp Python computes, or declines what Python refuses.
"""

from __future__ import annotations

import copy
import struct

from _common import agree, fuzz, instrumented, outcome, pure_python, require_speedups

with instrumented(__name__):
    from resultkit import serializers
    from resultkit.errors import SerializationError
    from resultkit.records import naive_utc
    from resultkit.stores.sql.pgcopy import TIMESTAMP, pack_values

SPEC = ((TIMESTAMP, "date_done", 0),)


def text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decoded(value: object) -> object:
    # The C walk untags freshly decoded data in place: each walk gets its own copy.
    c = outcome(lambda: serializers._guarded_untag(copy.deepcopy(value)), SerializationError)
    with pure_python():
        py = outcome(lambda: serializers._guarded_untag(copy.deepcopy(value)), SerializationError)
    agree("untag", repr(value).encode("utf-8", "backslashreplace"), c, py)
    return c


def check(data: bytes) -> None:
    speedups = require_speedups()
    text = text_of(data)
    decoded(text)
    decoded([text, {"k": text}])
    tag, colon, rest = text[1:].partition(":")
    if colon:
        decoded({"__rk__": tag, "v": rest})
    try:
        expected: bytes | None = pack_values([naive_utc(text)], ["timestamp"])
    except (ValueError, TypeError, OverflowError, struct.error):
        expected = None
    out = bytearray()
    if speedups.pack_row(out, SPEC, "t-1", {"date_done": text}, None, 0):
        agree("timestamp", data, bytes(out), expected)
    elif out:
        raise AssertionError("declined, but wrote")


if __name__ == "__main__":
    fuzz(check)
