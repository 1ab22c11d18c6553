"""What the harnesses share: instrumenting resultkit, the pure-Python path in
the same process as the C one, and comparing decoded values exactly.

A harness is both an atheris fuzz target (``python fuzz/harnesses/X.py
[libFuzzer flags]``, or ``fuzz/run X SECONDS``) and a plain module whose
``check(data)`` the regression tests call on every kept input
(``tests/test_fuzz_regressions.py``).  ``check`` raises only when it found
a bug: a crash, an exception that is not the documented refusal, or a
disagreement between the C and pure-Python paths.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any


def fuzz(check: Callable[[bytes], None]) -> None:
    """Run *check* under atheris with the command line's libFuzzer flags."""
    import atheris

    # libFuzzer runs argv[0] again for -merge and -fork: this interpreter and this file.
    argv = [f"{sys.executable} {os.path.abspath(sys.argv[0])}", *sys.argv[1:]]
    atheris.Setup(argv, check)
    atheris.Fuzz()


def instrumented(name: str) -> contextlib.AbstractContextManager[Any]:
    """Import resultkit inside this (given the harness's ``__name__``) to collect
    coverage of its Python code too; outside atheris (the regression tests) it
    does nothing."""
    if name == "__main__":
        import atheris

        return atheris.instrument_imports(include=["resultkit"])  # type: ignore[no-any-return]
    return contextlib.nullcontext()


@contextlib.contextmanager
def pure_python() -> Iterator[None]:
    """Within this, the serializers walk in pure Python even though the C
    extension is loaded (what ``RESULTKIT_PURE_PYTHON=1`` does at import)."""
    from resultkit import serializers

    saved = serializers._untag_walk, serializers._prepare
    serializers._untag_walk = serializers._untag_py
    serializers._prepare = serializers._prepare_py
    try:
        yield
    finally:
        serializers._untag_walk, serializers._prepare = saved


def require_speedups() -> Any:
    """The C extension; a differential harness without it would test nothing."""
    from resultkit._native import speedups

    if speedups is None:
        raise SystemExit("resultkit._speedups is not built (or RESULTKIT_PURE_PYTHON is set)")
    return speedups


def canon(value: Any) -> Any:
    """*value* as nested tuples that are equal exactly when the values are the
    same: same types, NaN equal to NaN, -0.0 unlike 0.0, offsets kept."""
    kind = type(value)
    if kind in (list, tuple):
        return (kind.__name__, tuple(canon(v) for v in value))
    if kind in (set, frozenset):
        return (kind.__name__, tuple(sorted((canon(v) for v in value), key=repr)))
    if kind is dict:
        return ("dict", tuple((canon(k), canon(v)) for k, v in value.items()))
    if kind is float:
        return ("float", "nan" if math.isnan(value) else value.hex())
    if kind is Decimal:
        return ("Decimal", str(value))
    if isinstance(value, (dt.datetime, dt.time)):
        return (kind.__name__, value.isoformat(), repr(value.tzinfo), getattr(value, "fold", 0))
    if hasattr(value, "tobytes") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return (kind.__name__, str(value.dtype), getattr(value, "shape", ()), value.tobytes())
    return (kind.__name__, repr(value))


def outcome(
    call: Callable[[], Any], refusal: type[BaseException] | tuple[type[BaseException], ...]
) -> Any:
    """("ok", canon(result)) or ("refused", exception type name); anything else raises."""
    try:
        return ("ok", canon(call()))
    except refusal as exc:
        return ("refused", type(exc).__name__)


def agree(what: str, data: bytes, c: Any, py: Any) -> None:
    """Raise when the C and pure-Python outcomes differ."""
    if c != py:
        raise AssertionError(
            f"{what}: C and pure Python disagree on {data[:200]!r}\n"
            f" C: {c!r:.600}\n py: {py!r:.600}"
        )


def decoder_differential(
    data: bytes,
    name: str,
    loads: Callable[[bytes], Any],
    dumps: Callable[[Any], bytes],
    *,
    binary: bool,
    serializers: Any,
    error: type[BaseException],
) -> None:
    """The check of a resultkit serializer's decoder (``json``, ``msgpack``): the C
    and pure-Python walks decode *data* alike, encode the value again alike, and
    the round trip gives back what was decoded (docs/security.md, limits)."""
    require_speedups()
    c = outcome(lambda: loads(data), error)
    with pure_python():
        py = outcome(lambda: loads(data), error)
    agree(f"{name}_loads", data, c, py)
    if c[0] != "ok":
        return
    value = loads(data)
    c_bytes = outcome(lambda: dumps(value), error)
    with pure_python():
        py_bytes = outcome(lambda: dumps(value), error)
    agree(f"{name}_dumps", data, c_bytes, py_bytes)
    # The writers refuse what the readers would refuse: whatever is written reads back.
    if c_bytes[0] == "ok":
        again = loads(dumps(value))
        agree("round trip", data, outcome(lambda: again, error), c)
