"""Fast, type-preserving, safe result serializers, registered with kombu.

Two serializers, usable as ``result_serializer`` and in accept lists::

    result_serializer = "resultkit-json"       # or "resultkit-msgpack"
    accept_content = ["json", "resultkit-json"]

They are registered with kombu in every process that has resultkit installed
(kombu loads the ``kombu.serializers`` entry points when it is imported), and
again whenever this module is imported; resultkit's backends import it.

Types that JSON and msgpack lack travel in a documented, stable form that
non-Python consumers can read (``docs/serializers.md``): scalars whose value is
text as *marked strings* (``"~datetime:2026-11-23T10:00:00+00:00"``,
``"~decimal:9.99"``; a string of the result that starts with ``~`` gets one
more: ``"~~/home"``), everything else as *tagged objects* — a mapping whose key
``"__rk__"`` names the type and whose ``"v"`` holds plain data.  datetime
(naive and aware), date, time, timedelta, Decimal, UUID, bytes, set,
frozenset, tuple, Enum, dataclasses, pydantic v2 models and numpy arrays
round-trip, nested in any combination.  Application types (Enum, dataclass,
pydantic) are rebuilt only when registered with :func:`register_type`;
otherwise they decode to plain data.  Nothing in a
payload can make the decoder import or call anything else.

The two walks over a result — tagging before encoding, untagging after
decoding — run in the optional C extension ``resultkit._speedups`` when it was
built, and in the equivalent pure-Python functions below otherwise; both
produce the same bytes.

Registering them also registers ``zstd`` and ``lz4`` compression
(:mod:`resultkit.compression`, the layer below).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import gc
import math
import re
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import orjson

from ._native import speedups
from .errors import SerializationError

__all__ = [
    "JSON_CONTENT_TYPE",
    "MAX_DEPTH",
    "MSGPACK_CONTENT_TYPE",
    "SPEEDUPS",
    "TAG",
    "json_dumps",
    "json_loads",
    "msgpack_dumps",
    "msgpack_loads",
    "register",
    "register_type",
    "registered_types",
]

TAG = "__rk__"
#: The first character of a marked string: ``~tag:text`` (a scalar), ``~~...`` (a string).
MARK = "~"
JSON_CONTENT_TYPE = "application/x-resultkit-json"
MSGPACK_CONTENT_TYPE = "application/x-resultkit-msgpack"
#: Payloads smaller than this are stored in a frame without being compressed.

T = TypeVar("T", bound=type)

_TAG_BYTES = TAG.encode()
_MARK_BYTE = MARK.encode()  # a marked string holds it (and so may a msgpack int 126)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what both orjson and msgpack carry as numbers
#: Application types allowed to be rebuilt, by the name payloads use.
_REGISTRY: dict[str, type] = {}
#: numpy dtype kinds an array may have (never "O", object).
_ARRAY_KINDS = frozenset("biufcUSMm")
#: A numpy dtype as ``dtype.str`` writes it: byte order, kind, size, datetime unit.
_DTYPE = re.compile(r"[<>|=]?[biufcUSMm][0-9]{1,10}(?:\[[0-9]{0,10}[A-Za-z]{1,2}\])?")
#: Deepest a payload may nest: each list, mapping and call of the decoding walk
#: is a level (the C walk's RK_MAX_DEPTH; a test checks they are equal).  Bounded
#: well below Python's recursion limit, so that both walks refuse the same payloads.
MAX_DEPTH = 128
#: Longest text a tagged int may have: int() of huge text is slow, refuse instead.
_MAX_INT_DIGITS = 4300


def register_type(cls: T | None = None, *, name: str | None = None) -> Any:
    """Allow *cls* (an Enum, dataclass or pydantic model) to be rebuilt when decoded.

    Usable as a decorator (``@register_type``) or a call (``register_type(Point)``).
    *name* overrides the name payloads use (default: ``module.QualName``), so a
    class can move or be renamed without breaking stored results.  Register the
    type in every process that reads results (import it where the app is built).
    """

    def apply(klass: T) -> T:
        if not isinstance(klass, type) or not (
            issubclass(klass, enum.Enum)
            or dataclasses.is_dataclass(klass)
            or _is_pydantic_class(klass)
        ):
            raise TypeError(
                f"{getattr(klass, '__qualname__', klass)!s} is not an Enum, a dataclass or a "
                "pydantic model; convert it to plain data before returning it from a task"
            )
        type_name = name or f"{klass.__module__}.{klass.__qualname__}"
        known = _REGISTRY.get(type_name)
        if known is not None and known is not klass and _qualified(known) != _qualified(klass):
            raise ValueError(f"{type_name!r} is already registered for {_qualified(known)}")
        _REGISTRY[type_name] = klass
        klass.__resultkit_name__ = type_name  # type: ignore[attr-defined]
        return klass

    return apply if cls is None else apply(cls)


def registered_types() -> dict[str, type]:
    """The application types this process rebuilds, by payload name."""
    return dict(_REGISTRY)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _type_name(cls: type) -> str:
    return cls.__dict__.get("__resultkit_name__") or _qualified(cls)


def _is_pydantic_class(cls: type) -> bool:
    return any(
        base.__name__ == "BaseModel" and base.__module__.startswith("pydantic")
        for base in cls.__mro__
    )


# ------------------------------------------------------------------ tagging


class _Unsupported(Exception):
    """A value cannot be serialized; :attr:`path` says where it sits in the result."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value
        self.path: list[str] = []


def _tag(obj: Any, binary: bool) -> Any:
    """*obj* as plain data with tagged objects (the pure-Python form of ``_speedups.prepare``)."""
    kind = type(obj)
    if kind is str:
        return MARK + obj if obj.startswith(MARK) else obj
    if kind is bool or obj is None:
        return obj
    if kind is int:
        return obj if _INT_MIN <= obj <= _INT_MAX else f"~int:{obj}"
    if kind is float:
        if math.isfinite(obj):
            return obj
        return "~float:" + ("nan" if obj != obj else ("inf" if obj > 0 else "-inf"))
    if kind is dict:
        with _ONE_LEVEL:
            if TAG in obj or not all(type(key) is str for key in obj):
                with _FALLBACK_LEVELS:
                    return _tag_object(obj, binary)
            return {k: _at(v, binary, _key(k)) for k, v in obj.items()}
    if kind is list:
        with _ONE_LEVEL:
            return [_at(item, binary, f"[{i}]") for i, item in enumerate(obj)]
    if kind is tuple:
        with _TUPLE_LEVELS:
            return {TAG: "tuple", "v": [_at(item, binary, f"[{i}]") for i, item in enumerate(obj)]}
    if kind is dt.datetime or kind is dt.date or kind is dt.time:
        return f"~{kind.__name__}:{obj.isoformat()}"
    if kind is Decimal:
        return f"~decimal:{obj}"
    if kind is uuid.UUID:
        return f"~uuid:{obj}"
    with _FALLBACK_LEVELS:
        return _tag_object(obj, binary)


#: Levels the written form nests on this thread, counted as the decoding walk counts
#: them (the C walk's prep_depth): a dict or list one, a tuple two, a value tagged
#: by _tag_object four at most (its mapping, the decoder's call back, "v" and a pair
#: list).  The reading call is one more, so a form may hold MAX_DEPTH - 1: the
#: writers refuse what the readers would refuse.
_TAGGING = threading.local()


class _Levels:
    """``with _Levels(n):`` enters *n* levels of the written form (reentrant)."""

    __slots__ = ("levels",)

    def __init__(self, levels: int) -> None:
        self.levels = levels

    def __enter__(self) -> None:
        depth = getattr(_TAGGING, "depth", 0) + self.levels
        if depth > MAX_DEPTH - 1:
            raise RecursionError(f"the result nests more than {MAX_DEPTH} levels deep")
        _TAGGING.depth = depth

    def __exit__(self, *exc: object) -> None:
        _TAGGING.depth -= self.levels


_ONE_LEVEL, _TUPLE_LEVELS, _FALLBACK_LEVELS = _Levels(1), _Levels(2), _Levels(4)


Child = Callable[[Any, bool, str], Any]


def _tag_object(obj: Any, binary: bool, child: Child | None = None) -> Any:
    """Tag anything that is not a JSON type, its contents tagged by *child*."""
    child = child or _at
    kind = type(obj)
    if kind is set or kind is frozenset:
        return {TAG: kind.__name__, "v": [child(item, binary, "{}") for item in obj]}
    if kind is bytes or kind is bytearray or kind is memoryview:
        data = bytes(obj)
        return {TAG: "bytes", "v": data if binary else base64.b64encode(data).decode("ascii")}
    if kind is dt.timedelta:
        return {TAG: "timedelta", "v": [obj.days, obj.seconds, obj.microseconds]}
    if isinstance(obj, enum.Enum):
        return {TAG: "enum", "type": _type_name(kind), "v": child(obj.value, binary, ".value")}
    if kind is dict:  # a mapping with the tag's key, or keys that are not text
        pairs = [[child(k, binary, "{}"), child(v, binary, _key(k))] for k, v in obj.items()]
        return {TAG: "dict", "v": pairs}
    shape = _FIELDS.get(kind) or _fields_of(kind)
    if shape is not None:
        tag, names = shape
        fields = {name: child(getattr(obj, name), binary, f".{name}") for name in names}
        return {TAG: tag, "type": _type_name(kind), "v": fields}
    if kind.__module__ == "numpy":
        return _tag_numpy(obj, binary)
    # Subclasses of the types above (OrderedDict, defaultdict, namedtuple, str
    # subclasses, pendulum datetimes...) travel as their base type.
    for moment in (dt.datetime, dt.date, dt.time):
        if isinstance(obj, moment):
            return f"~{moment.__name__}:{obj.isoformat()}"
    base: type[Any]
    for base in (dict, list, tuple):
        if isinstance(obj, base):
            return child(base(obj), binary, "")
    for base in (str, int, float, Decimal):
        if isinstance(obj, base):
            return _tag(base(obj), binary)  # a scalar: no level, and never back here
    raise _Unsupported(obj)


#: The tag and field names of dataclasses and pydantic models, by class.
_FIELDS: dict[type, tuple[str, tuple[str, ...]]] = {}


def _fields_of(cls: type) -> tuple[str, tuple[str, ...]] | None:
    if dataclasses.is_dataclass(cls):
        shape = ("dataclass", tuple(f.name for f in dataclasses.fields(cls)))
    elif _is_pydantic_class(cls):
        shape = ("pydantic", tuple(cls.model_fields))  # type: ignore[attr-defined]
    else:
        return None
    _FIELDS[cls] = shape
    return shape


def _object_fast(obj: Any, binary: bool) -> Any:
    """``_tag_object`` as ``_speedups.prepare`` calls it back: contents tagged in C too."""
    return _tag_object(obj, binary, _child_fast)


def _child_fast(value: Any, binary: bool, step: str) -> Any:
    return _prepare(value, binary, _object_fast)


def _tag_numpy(obj: Any, binary: bool) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray) and obj.dtype.kind in _ARRAY_KINDS:
        data = np.ascontiguousarray(obj).tobytes()
        return {
            TAG: "ndarray",
            "dtype": obj.dtype.str,
            "shape": list(obj.shape),
            "v": data if binary else base64.b64encode(data).decode("ascii"),
        }
    if isinstance(obj, np.generic) and obj.dtype.kind in _ARRAY_KINDS:
        return {TAG: "npscalar", "dtype": obj.dtype.str, "v": _tag(obj.item(), binary)}
    raise _Unsupported(obj)


def _key(key: Any) -> str:
    return f"[{orjson.dumps(key).decode()}]" if type(key) is str else f"[{key!r}]"


def _at(value: Any, binary: bool, step: str) -> Any:
    try:
        return _tag(value, binary)
    except _Unsupported as exc:
        exc.path.append(step)
        raise


# ---------------------------------------------------------------- untagging


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError("expected text")
    return value


def _bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    return base64.b64decode(_text(value).encode("ascii"), validate=True)


def _decode_int(text: Any) -> int:
    text = _text(text)
    if len(text) > _MAX_INT_DIGITS:
        raise ValueError("integer too long")
    return int(text)


def _decode_float(text: Any) -> float:
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[_text(text)]


def _decode_app(o: dict[str, Any], tag: str) -> Any:
    cls = _REGISTRY.get(_text(o["type"]))
    if tag == "enum":
        plain = untag(o["v"])
        return plain if cls is None else cls(plain)
    fields = o["v"]
    if type(fields) is not dict:
        raise TypeError("expected a mapping of fields")
    fields = {_text(k): untag(v) for k, v in fields.items()}
    if cls is None:
        return fields  # an unregistered type decodes to plain data, never to an instance
    if tag == "pydantic":
        return cls.model_validate(fields)  # type: ignore[attr-defined]
    return cls(**fields)


def _numpy_dtype(o: dict[str, Any]) -> Any:
    import numpy as np

    text = _text(o["dtype"])
    # Only what dtype.str writes: numpy parses other strings with ast.literal_eval,
    # which raises SyntaxError (and spends a parse) on a hostile payload.
    if not _DTYPE.fullmatch(text):
        raise ValueError(f"dtype {text[:40]} is not allowed")
    dtype = np.dtype(text)
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject:
        raise ValueError(f"dtype {dtype.str} is not allowed")
    return dtype


def _decode_array(o: dict[str, Any]) -> Any:
    import numpy as np

    dtype = _numpy_dtype(o)
    shape = tuple(_index(n) for n in o["shape"])
    data = _bytes(o["v"])
    if math.prod(shape) * dtype.itemsize != len(data):
        raise ValueError("shape and data do not agree")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _index(n: Any) -> int:
    if type(n) is not int or n < 0:
        raise ValueError("bad dimension")
    return n


def _decode_dict(pairs: Any) -> dict[Any, Any]:
    out = {}
    for key, value in pairs:
        out[untag(key)] = untag(value)
    return out


def _decode_timedelta(parts: Any) -> dt.timedelta:
    days, seconds, micros = (_int(n) for n in parts)
    return dt.timedelta(days, seconds, micros)


def _int(n: Any) -> int:
    if type(n) is not int:
        raise TypeError("expected an integer")
    return n


def _list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise TypeError("expected a list")
    items: list[Any] = untag(value)  # the list is a level, as in the C walk
    return items


#: A UTC offset of microseconds only, as isoformat() writes it.
_MICRO_OFFSET = re.compile(r"([+-])00:00:00\.(\d{6})$")


def _keeping_offset(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """*parse* (a fromisoformat), keeping an offset of microseconds only:
    Python 3.11 reads ``+00:00:00.000001`` as UTC."""

    def read(text: str) -> Any:
        value = parse(text)
        found = _MICRO_OFFSET.search(text)
        if found is None:
            return value
        micros = int(found[2]) * (-1 if found[1] == "-" else 1)
        return value.replace(tzinfo=dt.timezone(dt.timedelta(microseconds=micros)))

    return read


#: Tags whose value is text, written as marked strings ``~tag:text`` and decoded
#: by one call (the C walk calls these directly; tagged objects with these tags
#: are read too).
_SIMPLE: dict[str, Callable[[str], Any]] = {
    "datetime": _keeping_offset(dt.datetime.fromisoformat),
    "date": dt.date.fromisoformat,
    "time": _keeping_offset(dt.time.fromisoformat),
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "int": _decode_int,
    "float": _decode_float,
}
#: Tags whose "v" is a list of items (codes the C walk understands).
_CONTAINERS = {"tuple": 1, "set": 2, "frozenset": 3}
_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "tuple": lambda o: tuple(_list(o["v"])),
    "set": lambda o: set(_list(o["v"])),
    "frozenset": lambda o: frozenset(_list(o["v"])),
    "dict": lambda o: _decode_dict(o["v"]),
    "bytes": lambda o: _bytes(o["v"]),
    "timedelta": lambda o: _decode_timedelta(o["v"]),
    "enum": lambda o: _decode_app(o, "enum"),
    "dataclass": lambda o: _decode_app(o, "dataclass"),
    "pydantic": lambda o: _decode_app(o, "pydantic"),
    "ndarray": _decode_array,
    "npscalar": lambda o: _numpy_dtype(o).type(untag(o["v"])),
}


def _simple_decoder(fn: Callable[[str], Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda o: fn(_text(o["v"]))


_DECODERS.update({tag: _simple_decoder(fn) for tag, fn in _SIMPLE.items()})


#: What a malformed tagged value makes the decoders raise (reported as SerializationError).
_MALFORMED = (KeyError, TypeError, ValueError, OverflowError, InvalidOperation, AttributeError)


def _decode_tagged(o: dict[str, Any]) -> Any:
    """The value a tagged object stands for; the C walk calls this for the rarer tags."""
    tag = o[TAG]
    decoder = _DECODERS.get(tag) if type(tag) is str else None
    if decoder is None:
        raise SerializationError(
            f"unknown type tag {str(tag)[:40]!r} (written by a newer resultkit?): "
            "upgrade resultkit in this process"
        )
    try:
        return decoder(o)
    except SerializationError:
        raise
    except _MALFORMED as exc:
        detail = f": {str(exc)[:120]}" if str(exc) else ""
        raise SerializationError(f"malformed {tag!r} value{detail}") from None


def _unmark(text: str) -> Any:
    """The value a marked string (``~tag:text`` or ``~~...``) stands for."""
    if text.startswith("~~"):
        return text[1:]
    tag, colon, value = text[1:].partition(":")
    if not colon or tag not in _SIMPLE:
        raise SerializationError(
            f"unknown marked string {text[:40]!r} (written by a newer resultkit?): "
            "upgrade resultkit in this process"
        )
    return _decode_tagged({TAG: tag, "v": value})


def _untag(obj: Any, depth: int) -> Any:
    """*obj* with tagged values replaced by their values (pure-Python ``_speedups.untag``),
    *depth* levels down already; levels are counted as the C walk counts them."""
    kind = type(obj)
    if kind is str:
        return _unmark(obj) if obj.startswith(MARK) else obj
    if kind is not list and kind is not dict:
        return obj
    depth += 1
    if depth > MAX_DEPTH:
        raise RecursionError(f"the payload is nested more than {MAX_DEPTH} levels deep")
    if kind is list:
        return [_untag(item, depth) for item in obj]
    if TAG not in obj:
        return {key: _untag(value, depth) for key, value in obj.items()}
    tag, items = obj[TAG], obj.get("v")
    if type(tag) is str and len(obj) == 2 and type(items) is list and tag in _CONTAINERS:
        # As the C walk does: the common containers here, the rest by their decoders.
        made = _CONTAINER_TYPES[_CONTAINERS[tag]]
        try:
            return made(_untag(items, depth))
        except TypeError:
            pass  # an unhashable item: the decoder names the tag
    _WALK.depth = depth
    return _decode_tagged(obj)


#: The levels untag has entered on this thread, where the decoders call it back.
_WALK = threading.local()
_CONTAINER_TYPES: dict[int, Callable[[list[Any]], Any]] = {1: tuple, 2: set, 3: frozenset}


def _prepare_py(obj: Any, binary: bool, fallback: Any) -> Any:
    return _tag(obj, binary)  # the pure walk tags contents itself


def _untag_py(obj: Any, simple: Any, containers: Any, slow: Any, unmark: Any) -> Any:
    outer = getattr(_WALK, "depth", 0)
    if outer >= MAX_DEPTH:  # the call is a level: the decoders' calls back nest
        raise RecursionError(f"the payload is nested more than {MAX_DEPTH} levels deep")
    try:
        return _untag(obj, outer + 1)
    finally:
        _WALK.depth = outer


_prepare: Callable[[Any, bool, Any], Any]
_untag_walk: Callable[[Any, Any, Any, Any, Any], Any]
if speedups is not None:  # the C extension
    _prepare, _untag_walk = speedups.prepare, speedups.untag
    SPEEDUPS = True
else:
    _prepare, _untag_walk = _prepare_py, _untag_py
    SPEEDUPS = False


def untag(obj: Any) -> Any:
    """Decoded plain data with every tagged value replaced by the value it stands for."""
    return _untag_walk(obj, _SIMPLE, _CONTAINERS, _decode_tagged, _unmark)


def tag(obj: Any, *, binary: bool = False) -> Any:
    """*obj* as plain JSON (or msgpack, when *binary*) data with tagged values."""
    try:
        return _prepare(obj, binary, _object_fast)
    except _Unsupported:
        # Walk again in Python, which records where the value sits.
        try:
            _tag(obj, binary)
        except _Unsupported as exc:
            raise _unsupported(exc) from None
        raise  # pragma: no cover - both walks accept the same values
    except RecursionError:
        raise SerializationError(
            f"the result is nested too deeply to serialize (more than {MAX_DEPTH} levels: "
            "resultkit's serializers read no deeper)"
        ) from None


def _unsupported(exc: _Unsupported) -> SerializationError:
    path = "".join(reversed(exc.path))
    # Celery encodes either the meta (key-value backends) or the result alone (SQL):
    # both read as result["rows"][3].
    path = "result" + path.removeprefix('["result"]')
    return SerializationError(
        f"cannot serialize {path}: {type(exc.value)!r}: decorate the class with "
        "@resultkit.serializers.register_type (Enum, dataclass or pydantic model) "
        "or return plain data"
    )


def _guarded_untag(value: Any) -> Any:
    try:
        return untag(value)
    except SerializationError:
        raise
    except RecursionError:
        raise SerializationError(
            f"the payload is nested too deeply (more than {MAX_DEPTH} levels)"
        ) from None
    except _MALFORMED as exc:
        raise SerializationError(f"malformed tagged value: {str(exc)[:120]}") from None


# ------------------------------------------------------------------ codecs

_orjson_dumps = orjson.dumps
_orjson_loads = orjson.loads


def json_dumps(obj: Any) -> bytes:
    """Encode *obj* as resultkit-json (UTF-8 JSON bytes)."""
    try:
        try:
            return _orjson_dumps(_prepare(obj, False, _object_fast))
        except (_Unsupported, RecursionError):
            return _orjson_dumps(tag(obj))
    except orjson.JSONEncodeError as exc:
        # Nested past orjson's limit, or text with a lone surrogate: what JSON cannot hold.
        raise SerializationError(f"cannot serialize the result as JSON: {exc}") from None


def json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode resultkit-json; malformed input raises :class:`SerializationError` only."""
    if len(data) >= _LARGE and gc.isenabled():
        return _collector_paused(_json_loads, data)
    return _json_loads(data)


def _json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    try:
        value = _orjson_loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"not valid resultkit-json: {str(exc)[:120]}") from None
    raw = data.encode() if type(data) is str else data
    if _MARK_BYTE not in raw and _TAG_BYTES not in raw:
        return value
    return _guarded_untag(value)


#: Payloads from this size on are decoded with the cyclic collector paused.
_LARGE = 32 * 1024


def _collector_paused(decode: Callable[[Any], Any], data: Any) -> Any:
    """``decode(data)`` with the cyclic garbage collector paused.

    Decoding a large result allocates thousands of containers that all stay
    alive, so each collection the allocations trigger finds nothing to free
    and only rescans them (a third of the time, on a 100 KB result). Decoded
    data holds no reference cycles; the collector resumes afterwards.
    """
    gc.disable()
    try:
        return decode(data)
    finally:
        gc.enable()


_MSGPACK: tuple[Callable[[Any], bytes], Callable[[Any], Any]] | None = None


def _msgpack() -> tuple[Callable[[Any], bytes], Callable[[Any], Any]]:
    global _MSGPACK
    if _MSGPACK is None:
        try:
            import msgspec
        except ImportError:
            raise SerializationError(
                "resultkit-msgpack needs msgspec: pip install 'celery-resultkit[msgpack]'"
            ) from None
        _MSGPACK = (
            msgspec.msgpack.Encoder().encode,
            msgspec.msgpack.Decoder(ext_hook=_no_extension).decode,
        )
    return _MSGPACK


def _no_extension(code: int, data: memoryview) -> Any:
    """Refuse msgpack extension types: resultkit writes none, and an ``Ext`` object
    in a result is one that no serializer can write again (msgpack's own
    timestamp type, -1, is read as a datetime before this is asked)."""
    raise ValueError(f"msgpack extension type {code} is not part of resultkit-msgpack")


def msgpack_dumps(obj: Any) -> bytes:
    """Encode *obj* as resultkit-msgpack (bytes stay bytes, no base64)."""
    encode = _msgpack()[0]
    try:
        return encode(_prepare(obj, True, _object_fast))
    except (_Unsupported, RecursionError):
        return encode(tag(obj, binary=True))


def msgpack_loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode resultkit-msgpack; malformed input raises :class:`SerializationError` only."""
    if len(data) >= _LARGE and gc.isenabled():
        return _collector_paused(_msgpack_loads, data)
    return _msgpack_loads(data)


def _msgpack_loads(data: bytes | bytearray | memoryview | str) -> Any:
    decode = _msgpack()[1]
    raw = data.encode("latin-1") if type(data) is str else data
    try:
        value = decode(raw)
    except Exception as exc:  # msgspec.DecodeError, and anything a hostile payload provokes
        raise SerializationError(f"not valid resultkit-msgpack: {str(exc)[:120]}") from None
    if _MARK_BYTE not in raw and _TAG_BYTES not in raw:
        return value
    return _guarded_untag(value)


#: kombu entry points (``kombu.serializers``): (encoder, decoder, content type, encoding).
JSON_REGISTRATION = (json_dumps, json_loads, JSON_CONTENT_TYPE, "binary")
MSGPACK_REGISTRATION = (msgpack_dumps, msgpack_loads, MSGPACK_CONTENT_TYPE, "binary")


def register() -> None:
    """Register the serializers (and zstd, lz4) with kombu (idempotent)."""
    from kombu.serialization import register as register_serializer

    from . import compression

    register_serializer("resultkit-json", *JSON_REGISTRATION)
    register_serializer("resultkit-msgpack", *MSGPACK_REGISTRATION)
    compression.register()


register()
