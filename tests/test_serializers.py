"""resultkit-json and resultkit-msgpack: round trips, safety, errors and compression."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import math
import subprocess
import sys
import time
import uuid
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.serialization import registry

from resultkit import compression, serializers
from resultkit.errors import SerializationError

#: Every test here runs in the compatibility matrix too (noxfile.py).
pytestmark = pytest.mark.compat

CODECS = {
    "resultkit-json": (serializers.json_dumps, serializers.json_loads),
    "resultkit-msgpack": (serializers.msgpack_dumps, serializers.msgpack_loads),
}


@serializers.register_type
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@serializers.register_type
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@serializers.register_type
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: Any


@serializers.register_type(name="tests.Invoice")
class Invoice(pydantic.BaseModel):
    number: str
    amount: Decimal
    due: dt.date
    lines: list[Point]


@dataclasses.dataclass
class Unregistered:
    a: int


class Opaque:
    pass


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down (1 == 1.0 == True otherwise)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal) and a.is_nan():
        return b.is_nan()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, dt.datetime):  # the wall time and UTC offset travel, not a zone's name
        return a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.utcoffset() == b.utcoffset()
    if isinstance(a, dt.time):
        return a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.utcoffset() == b.utcoffset()
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, pydantic.BaseModel):
        return same(dict(a), dict(b))
    return bool(a == b)


@pytest.fixture(params=["c", "python"])
def walks(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the C walks and again with the pure-Python ones."""
    if request.param == "python":
        monkeypatch.setattr(serializers, "_prepare", serializers._prepare_py)
        monkeypatch.setattr(serializers, "_untag_walk", serializers._untag_py)
    else:
        assert serializers.SPEEDUPS, "the C extension was not built (pip install -e . needs gcc)"
    return str(request.param)


def every_type() -> dict[str, Any]:
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    return {
        "naive": dt.datetime(2026, 11, 23, 10, 0, 1, 123456),
        "aware": dt.datetime(2026, 11, 23, 10, 0, tzinfo=tz),
        "date": dt.date(2026, 2, 28),
        "time": dt.time(23, 59, 59, 999999),
        "aware_time": dt.time(8, 0, tzinfo=dt.timezone.utc),
        "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=7),
        "decimal": Decimal("-12345.678900"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "bytes": b"\x00\xff binary",
        "set": {1, "two", (3, 4)},
        "frozenset": frozenset({b"x", 2.5}),
        "tuple": (1, (2, [3, (4,)]), {"k": (5,)}),
        "empty": ((), set(), frozenset(), [], {}, b""),
        "enum": Colour.BLUE,
        "int_enum": Level.HIGH,
        "dataclass": Point(1, Point(2, [dt.date(2026, 1, 1)])),
        "pydantic": Invoice(
            number="A-1", amount=Decimal("9.90"), due=dt.date(2026, 12, 1), lines=[Point(1, 2)]
        ),
        "array": np.arange(12, dtype=np.int32).reshape(3, 4),
        "floats": np.array([1.5, -0.0, 3.25], dtype="<f8"),
        "scalar": np.float32(2.5),
        "big": 2**100,
        "negative_big": -(2**70),
        "u64": 2**64 - 1,
        "specials": [math.inf, -math.inf],
        "int_keys": {1: "one", (2, 3): "pair", None: "none"},
        "tag_key": {"__rk__": "not a tag", "v": 1},
        "nested": [
            {
                "when": [dt.date(2026, 1, i + 1) for i in range(3)],
                "ids": {uuid.UUID(int=i) for i in range(3)},
            }
        ],
        "plain": {"a": [1, 2.5, "x", None, True, False]},
    }


@pytest.mark.parametrize("name", list(CODECS))
def test_every_supported_type_round_trips(name: str, walks: str) -> None:
    dumps, loads = CODECS[name]
    value = every_type()
    back = loads(dumps(value))
    assert same(back, value), back
    nan = loads(dumps({"nan": math.nan}))["nan"]
    assert isinstance(nan, float)
    assert math.isnan(nan)


def test_zoneinfo_datetimes_keep_their_instant_and_offset() -> None:
    from zoneinfo import ZoneInfo

    when = dt.datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
    back = serializers.json_loads(serializers.json_dumps(when))
    assert back == when
    assert back.utcoffset() == dt.timedelta(hours=2)


def test_celery_exception_meta_round_trips() -> None:
    meta = {
        "status": "FAILURE",
        "result": {"exc_type": "ValueError", "exc_message": ("bad", 3), "exc_module": "builtins"},
        "traceback": "Traceback (most recent call last):\n ...",
        "children": [[["id-1", None], None]],
        "date_done": "2026-11-23T10:00:00+00:00",
    }
    for dumps, loads in CODECS.values():
        assert same(loads(dumps(meta)), meta)


def test_subclasses_of_plain_types_travel_as_their_base_type() -> None:
    Pair = namedtuple("Pair", "a b")
    value = {"od": OrderedDict(b=1, a=2), "pair": Pair(1, 2), "text": type("S", (str,), {})("s")}
    back = serializers.json_loads(serializers.json_dumps(value))
    assert same(back, {"od": {"b": 1, "a": 2}, "pair": (1, 2), "text": "s"})


def test_plain_json_is_ordinary_json_and_tags_are_readable() -> None:
    plain = {"a": [1, 2.5, "x", None, True], "b": {"c": "d"}}
    assert orjson.loads(serializers.json_dumps(plain)) == plain
    encoded = orjson.loads(serializers.json_dumps({"when": dt.date(2026, 11, 23), "ids": (1, 2)}))
    assert encoded == {"when": "~date:2026-11-23", "ids": {"__rk__": "tuple", "v": [1, 2]}}
    dc = orjson.loads(serializers.json_dumps(Point(1, 2)))
    assert dc == {
        "__rk__": "dataclass",
        "type": "tests.test_serializers.Point",
        "v": {"x": 1, "y": 2},
    }


def test_strings_that_start_with_the_mark_get_one_more() -> None:
    texts = ["~", "~~", "~/home/ada", "~date:2026-11-23", "~uuid:x", "a~b"]
    value = {"texts": texts, "~key": "~", "pair": ("~x", {1: "~y"})}
    for dumps, loads in CODECS.values():
        assert same(loads(dumps(value)), value)
    encoded = orjson.loads(serializers.json_dumps(texts))
    assert encoded == ["~~", "~~~", "~~/home/ada", "~~date:2026-11-23", "~~uuid:x", "a~b"]


def test_scalars_written_as_tagged_objects_are_read_too() -> None:
    by_hand = {
        "when": {"__rk__": "datetime", "v": "2026-11-23T10:00:00+00:00"},
        "day": {"__rk__": "date", "v": "2026-11-23"},
        "price": {"__rk__": "decimal", "v": "9.99"},
        "id": {"__rk__": "uuid", "v": "00000000-0000-0000-0000-000000000007"},
    }
    assert serializers.json_loads(orjson.dumps(by_hand)) == {
        "when": dt.datetime(2026, 11, 23, 10, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 11, 23),
        "price": Decimal("9.99"),
        "id": uuid.UUID(int=7),
    }


def test_every_text_form_of_a_moment_reads_as_fromisoformat_does(walks: str) -> None:
    forms = {
        "datetime": [
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00.000001+00:00",
            "2026-11-23T10:00:00-05:30",
            "2026-11-23 10:00:00",
            "2026-11-23T10:00",
        ],
        "date": ["2026-11-23", "0001-01-01", "9999-12-31"],
        "time": ["10:00:00", "23:59:59.999999+00:00", "10:00:00+02:00", "10:00"],
    }
    for tag, texts in forms.items():
        parse = getattr(dt, tag).fromisoformat
        for text in texts:
            back = serializers.json_loads(orjson.dumps([f"~{tag}:{text}"]))[0]
            assert back == parse(text)
            assert type(back) is type(parse(text))
            assert getattr(back, "tzinfo", None) == getattr(parse(text), "tzinfo", None)


@pytest.mark.parametrize("micros", [1, -7, 999_999])
@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_an_offset_of_microseconds_only_round_trips(walks: str, codec: str, micros: int) -> None:
    # Python 3.11's fromisoformat reads "+00:00:00.000001" as UTC.
    zone = dt.timezone(dt.timedelta(microseconds=micros))
    dumps, loads = getattr(serializers, f"{codec}_dumps"), getattr(serializers, f"{codec}_loads")
    for value in (dt.datetime(2000, 1, 1, tzinfo=zone), dt.time(1, 2, 3, tzinfo=zone)):
        back = loads(dumps(value))
        assert back == value
        assert back.utcoffset() == value.utcoffset()


# ---------------------------------------------------------------- properties

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text()
    | st.text(max_size=12).map(lambda text: "~" + text)
    | st.sampled_from(["~date:2026-11-23", "~uuid:x", "~~"])
    | st.binary(max_size=40)
    # Fixed offsets: a zone's name does not travel (its offset does; see the zoneinfo test).
    | st.datetimes(
        timezones=st.none()
        | st.builds(dt.timezone, st.timedeltas(-dt.timedelta(hours=23), dt.timedelta(hours=23)))
    )
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.decimals(allow_nan=False)
    | st.uuids()
    | st.sampled_from(list(Colour) + list(Level))
)
hashables = st.recursive(
    scalars.filter(lambda v: not isinstance(v, float) or v == v),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["__rk__", "~k"]), inner, max_size=5
        )
        | st.dictionaries(hashables, inner, max_size=3)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.builds(Point, inner, inner)
    ),
    max_leaves=25,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(values)
def test_property_round_trip_json(value: Any) -> None:
    assert same(serializers.json_loads(serializers.json_dumps(value)), value)


@FAST
@given(values)
def test_property_round_trip_msgpack(value: Any) -> None:
    assert same(serializers.msgpack_loads(serializers.msgpack_dumps(value)), value)


UNTAG_ARGS = (None, None, None, None)  # the pure walk takes the C walk's arguments, unused


@FAST
@given(values, st.booleans())
def test_property_c_and_python_walks_write_the_same_bytes(value: Any, binary: bool) -> None:
    from resultkit import _speedups

    c_tagged = _speedups.prepare(value, binary, serializers._object_fast)
    py_tagged = serializers._tag(value, binary)
    if binary:
        assert serializers._msgpack()[0](c_tagged) == serializers._msgpack()[0](py_tagged)
    else:
        assert orjson.dumps(c_tagged) == orjson.dumps(py_tagged)
        decoded = orjson.loads(orjson.dumps(py_tagged))
        assert same(
            serializers._untag_py(orjson.loads(orjson.dumps(py_tagged)), *UNTAG_ARGS),
            serializers.untag(decoded),
        )


@FAST
@given(st.binary(max_size=300))
def test_property_arbitrary_bytes_fail_only_with_the_documented_error(data: bytes) -> None:
    for _, loads in CODECS.values():
        with contextlib.suppress(SerializationError):
            loads(data)


tag_names = st.sampled_from([*serializers._DECODERS, "nope", "", "__rk__", "os.system"]) | st.text(
    max_size=5
)
marked = st.builds(
    lambda tag, colon, text: f"~{tag}{colon}{text}",
    tag_names,
    st.sampled_from([":", "", "::"]),
    st.text(max_size=30) | st.sampled_from(["2026-13-01", "2026-02-30T25:00:00", "1e999999999"]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats()
    | st.text(max_size=50)
    | marked,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
hostile = st.recursive(
    st.fixed_dictionaries(
        {"__rk__": tag_names | json_values, "v": json_values},
        optional={
            "type": st.sampled_from(["os.system", "tests.test_serializers.Point", "builtins.eval"])
            | json_values,
            "dtype": st.sampled_from(["O", "<i4", "V8", "M8[ns]", "(3,)i4", "|S2"]) | json_values,
            "shape": st.lists(st.integers(-2, 10**12), max_size=4) | json_values,
        },
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@FAST
@given(hostile)
def test_property_hostile_tags_fail_only_with_the_documented_error(payload: Any) -> None:
    for codec in ("json", "msgpack"):
        data = orjson.dumps(payload) if codec == "json" else serializers._msgpack()[0](payload)
        loads = serializers.json_loads if codec == "json" else serializers.msgpack_loads
        try:
            value = loads(data)
        except SerializationError:
            continue
        assert not isinstance(value, (Opaque, type)), value


# ------------------------------------------------------------------ safety


def test_unregistered_types_decode_to_plain_data_and_nothing_is_imported() -> None:
    payload = orjson.dumps(
        {
            "a": {
                "__rk__": "dataclass",
                "type": "subprocess.Popen",
                "v": {"args": "touch /tmp/pwned"},
            },
            "b": {"__rk__": "enum", "type": "os.Whatever", "v": 3},
            "c": {"__rk__": "pydantic", "type": "builtins.eval", "v": {"source": "1+1"}},
        }
    )
    modules = set(sys.modules)
    assert serializers.json_loads(payload) == {
        "a": {"args": "touch /tmp/pwned"},
        "b": 3,
        "c": {"source": "1+1"},
    }
    assert set(sys.modules) == modules
    assert serializers.json_loads(serializers.json_dumps(Unregistered(4))) == {"a": 4}


def test_payloads_that_claim_an_object_array_are_refused() -> None:
    data = orjson.dumps({"__rk__": "ndarray", "dtype": "|O", "shape": [1], "v": "AAAAAAAAAAA="})
    with pytest.raises(
        SerializationError, match=r"malformed 'ndarray' value: dtype \|O is not allowed"
    ):
        serializers.json_loads(data)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"__rk__": "from-the-future", "v": 1},
            "unknown type tag 'from-the-future'.*upgrade resultkit",
        ),
        ("~from-the-future:1", "unknown marked string '~from-the-future:1'.*upgrade resultkit"),
        ("~", "unknown marked string '~'"),
        ("~tuple:[1]", "unknown marked string '~tuple:"),
        ("~datetime:12", "malformed 'datetime' value"),
        ("~date:2026-02-30", "malformed 'date' value: day is out of range"),
        ("~time:25:00:00", "malformed 'time' value"),
        ("~uuid:not-a-uuid", "malformed 'uuid' value"),
        ("~decimal:1,5", "malformed 'decimal' value"),
        ("~int:" + "9" * 5000, "malformed 'int' value: integer too long"),
        ("~float:1.5", "malformed 'float' value"),
        ({"__rk__": "datetime", "v": 12}, "malformed 'datetime' value: expected text"),
        ({"__rk__": "uuid", "v": "not-a-uuid"}, "malformed 'uuid' value"),
        ({"__rk__": "bytes", "v": "***"}, "malformed 'bytes' value"),
        ({"__rk__": "int", "v": "9" * 5000}, "malformed 'int' value: integer too long"),
        ({"__rk__": "tuple", "v": {"no": "list"}}, "malformed 'tuple' value: expected a list"),
        ({"__rk__": "set", "v": [[1]]}, "malformed 'set' value: unhashable"),
        (
            {"__rk__": "ndarray", "dtype": "<i4", "shape": [10**12], "v": ""},
            "shape and data do not agree",
        ),
        (
            {"__rk__": "enum", "type": "tests.test_serializers.Colour", "v": "green"},
            "malformed 'enum'",
        ),
        (
            {"__rk__": "dataclass", "type": "tests.test_serializers.Point", "v": {"z": 1}},
            "malformed 'dataclass'",
        ),
    ],
)
def test_malformed_tags_name_what_is_wrong(payload: Any, message: str, walks: str) -> None:
    with pytest.raises(SerializationError, match=message):
        serializers.json_loads(orjson.dumps(payload))


def test_deep_nesting_fails_cleanly_both_ways() -> None:
    deep: Any = (1,)
    for _ in range(100_000):
        deep = (deep,)
    with pytest.raises(SerializationError, match="nested too deeply"):
        serializers.json_dumps(deep)
    for data in (b"[" * 100_000, b"\x91" * 100_000):
        with pytest.raises(SerializationError):
            serializers.json_loads(data)
        with pytest.raises(SerializationError):
            serializers.msgpack_loads(data)


@dataclasses.dataclass
class Box:
    inside: Any


def _wrap(kind: str, value: Any) -> Any:
    """*value* inside one container of *kind*."""
    if kind == "list":
        return [value]
    if kind == "dict":
        return {"k": value}
    if kind == "tuple":
        return (value,)
    if kind == "int-keys":
        return {1: value}
    return Box(value)


def _nest(kind: str, levels: int) -> Any:
    value: Any = "~x"
    for _ in range(levels):
        value = _wrap(kind, value)
    return value


@pytest.mark.parametrize(
    ("kind", "deepest"),
    # The reading call is a level; a list or mapping one; a tuple two; a tagged mapping
    # or dataclass five (its mapping, the decoder's call back, "v" and a pair list).
    [("list", 127), ("dict", 127), ("tuple", 63), ("int-keys", 25), ("dataclass", 31)],
)
@pytest.mark.parametrize("dumps", ["json", "msgpack"])
def test_the_writers_refuse_what_the_readers_would_refuse(
    kind: str, deepest: int, dumps: str, walks: str
) -> None:
    write = serializers.json_dumps if dumps == "json" else serializers.msgpack_dumps
    read = serializers.json_loads if dumps == "json" else serializers.msgpack_loads
    serializers.register_type(Box)
    written = write(_nest(kind, deepest))
    assert same(read(written), _nest(kind, deepest))
    with pytest.raises(SerializationError, match="nested too deeply to serialize"):
        write(_nest(kind, deepest + 1))
    # The refusal leaves the walk's count where it was: the same depth is written again.
    assert write(_nest(kind, deepest)) == written


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(["list", "dict", "tuple", "int-keys", "dataclass"]),
        min_size=20,
        max_size=140,
    )
)
def test_whatever_is_written_is_read_back(shape: list[str]) -> None:
    """Both walks refuse the same values, and anything written reads back (docs/security.md)."""
    serializers.register_type(Box)
    value: Any = "~x"
    for kind in shape:
        value = _wrap(kind, value)
    outcomes = []
    for walk in ("c", "python"):
        with _walk(walk):
            try:
                written = serializers.json_dumps(value)
            except SerializationError:
                outcomes.append("refused")
                continue
            assert same(serializers.json_loads(written), value)
            outcomes.append(written)
    assert outcomes[0] == outcomes[1]


@contextlib.contextmanager
def _walk(name: str) -> Any:
    if name == "c":
        yield
        return
    saved = serializers._prepare, serializers._untag_walk
    serializers._prepare, serializers._untag_walk = serializers._prepare_py, serializers._untag_py
    try:
        yield
    finally:
        serializers._prepare, serializers._untag_walk = saved


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("name", list(CODECS))
def test_unserializable_value_names_its_type_path_and_fix(name: str, walks: str) -> None:
    meta = {"status": "SUCCESS", "result": {"rows": [1, 2, 3, Point(1, {"created": [Opaque()]})]}}
    with pytest.raises(SerializationError) as caught:
        CODECS[name][0](meta)
    message = str(caught.value)
    assert 'result["rows"][3].y["created"][0]: ' in message
    assert "Opaque" in message
    assert "register_type" in message


def test_register_type_refuses_what_it_cannot_rebuild() -> None:
    with pytest.raises(TypeError, match="not an Enum, a dataclass or a pydantic model"):
        serializers.register_type(Opaque)
    with pytest.raises(ValueError, match="already registered"):
        serializers.register_type(name="tests.test_serializers.Point")(
            dataclasses.dataclass(type("Q", (), {}))
        )
    assert serializers.registered_types()["tests.Invoice"] is Invoice


def test_kombu_wraps_our_errors_for_celery() -> None:
    from kombu.exceptions import DecodeError, EncodeError

    with pytest.raises(EncodeError, match="Opaque"):
        registry.dumps({"x": Opaque()}, "resultkit-json")
    with pytest.raises(DecodeError, match="not valid resultkit-json"):
        registry.loads(
            b"{", serializers.JSON_CONTENT_TYPE, "binary", accept={serializers.JSON_CONTENT_TYPE}
        )


# ---------------------------------------------------------------- registry


def test_registered_with_kombu_through_the_entry_point() -> None:
    code = (
        "import sys; from kombu.serialization import registry; "
        "print('resultkit-json' in registry._encoders, 'resultkit-msgpack' in registry._encoders, "
        "'resultkit.serializers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]


# ------------------------------------------------------------- compression


@pytest.fixture
def compressors() -> Callable[[str], tuple[Any, Any]]:
    from kombu import compression as kombu_compression

    def get(name: str) -> tuple[Any, Any]:
        encoder, content_type = kombu_compression.get_encoder(name)
        return encoder, kombu_compression.get_decoder(content_type)

    return get


@pytest.mark.parametrize("size", [0, 1, 200, 511, 512, 5000, 300_000])
def test_zstd_and_lz4_frames_are_read_by_the_libraries_themselves(
    size: int, compressors: Callable[[str], tuple[Any, Any]]
) -> None:
    import lz4.frame
    import zstandard

    body = (b"resultkit " * (size // 10 + 1))[:size]
    z_encode, z_decode = compressors("zstd")
    l_encode, l_decode = compressors("lz4")
    z, lz = z_encode(body), l_encode(body)
    assert zstandard.ZstdDecompressor().decompress(z) == body == z_decode(z)
    assert lz4.frame.decompress(lz) == body == l_decode(lz)
    if size < compression.COMPRESSION_THRESHOLD_BYTES:  # stored: the bytes are there as they are
        assert body in z
        assert body in lz
    elif size > 1000:
        assert len(z) < size / 5
        assert len(lz) < size / 5


def test_corrupt_frames_fail_with_the_documented_error(
    compressors: Callable[[str], tuple[Any, Any]],
) -> None:
    for name in ("zstd", "lz4"):
        encode, decode = compressors(name)
        frame = encode(b"x" * 2000)
        with pytest.raises(SerializationError, match=f"not a valid {name} frame"):
            decode(frame[: len(frame) // 2])


@pytest.mark.parametrize("name", list(CODECS))
def test_large_payloads_leave_the_collector_as_they_found_it(name: str) -> None:
    import gc

    dumps, loads = CODECS[name]
    large = dumps({"rows": [{"id": i, "when": dt.date(2026, 1, 1)} for i in range(3000)]})
    assert len(large) >= serializers._LARGE
    assert loads(large)["rows"][2999] == {"id": 2999, "when": dt.date(2026, 1, 1)}
    assert gc.isenabled()
    with pytest.raises(SerializationError):
        loads(large[:-10])
    assert gc.isenabled()
    gc.disable()
    try:
        loads(large)
        assert not gc.isenabled()
    finally:
        gc.enable()


HOSTILE = [
    b'{"__rk__": "int", "v": "' + b"9" * 4300 + b'"}',
    b'{"__rk__": "int", "v": "' + b"9" * 10_000_000 + b'"}',
    b'{"__rk__": "decimal", "v": "1e999999999"}',
    b'{"__rk__": "ndarray", "dtype": "<f8", "shape": [99999999999, 99999999999], "v": ""}',
    b'{"__rk__": "set", "v": [' + b",".join([b"[1]"] * 100_000) + b"]}",
    b'{"__rk__": "tuple", "v": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    b'{"__rk__": "dict", "v": [[{"__rk__": "dict", "v": []}, 1]]}',
    b'{"__rk__": "bytes", "v": "' + b"A" * 10_000_001 + b'"}',
    b"[" + b'{"__rk__": "uuid", "v": "x"},' * 50_000 + b"1]",
    b'"~int:' + b"9" * 10_000_000 + b'"',
    b'"~decimal:1e999999999"',
    b"[" + b'"~uuid:x",' * 50_000 + b"1]",
    b"[" + b'"~datetime:2026-02-30T10:00:00",' * 50_000 + b"1]",
    b'"~' + b"x" * 10_000_000 + b'"',
]


@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_payloads_never_hang(payload: bytes, walks: str) -> None:
    started = time.perf_counter()
    with contextlib.suppress(SerializationError):
        serializers.json_loads(payload)
    assert time.perf_counter() - started < 2.0


def test_the_c_walk_and_the_python_walk_nest_as_deep_as_each_other(walks: str) -> None:
    from resultkit import _speedups

    assert _speedups.MAX_DEPTH == serializers.MAX_DEPTH
    # The decoding call is a level, each list another: MAX_DEPTH - 1 lists decode.
    deepest = serializers.MAX_DEPTH - 1
    for lists, decodes in ((deepest, True), (deepest + 1, False)):
        data = b"[" * lists + b'"~~x"' + b"]" * lists
        if decodes:
            value = serializers.json_loads(data)
            for _ in range(lists):
                value = value[0]
            assert value == "~x"
        else:
            with pytest.raises(SerializationError, match="nested too deeply"):
                serializers.json_loads(data)
    # A tagged tuple is its mapping and its list, in both walks.
    tuples = b'{"__rk__":"tuple","v":[' * 63 + b'"~~x"' + b"]}" * 63
    assert serializers.json_loads(tuples) is not None
    with pytest.raises(SerializationError, match="nested too deeply"):
        serializers.json_loads(b'{"__rk__":"tuple","v":[' * 64 + b'"~~x"' + b"]}" * 64)
