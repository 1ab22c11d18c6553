"""Write the seed corpora of fuzz/corpus/ (run again after changing a format).

Usage: .venv/bin/python fuzz/seeds.py
Each seed is a small valid input of the harness, so that fuzzing starts from
every branch of the format instead of finding the format first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parent / "corpus"
UTC = dt.timezone.utc


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


def values() -> list[Any]:
    import numpy as np

    moment = dt.datetime(2026, 11, 24, 10, 11, 12, 345678)
    return [
        None,
        True,
        1,
        -(2**63),
        2**64 - 1,
        2**70,
        1.5,
        float("nan"),
        float("-inf"),
        "plain",
        "~tilde",
        "",
        b"\x00\xffbytes",
        [1, "two", None],
        {"a": {"b": [1, 2]}},
        (1, (2, 3)),
        {1, 2},
        frozenset({"a"}),
        {1: "int key", (1, 2): "tuple key"},
        moment,
        moment.replace(tzinfo=UTC),
        moment.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
        moment.replace(tzinfo=dt.timezone(dt.timedelta(microseconds=1))),
        moment.date(),
        moment.time(),
        moment.time().replace(tzinfo=UTC),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        Decimal("9.99"),
        Decimal("-0E-7"),
        Decimal("NaN"),
        uuid.UUID(int=12345),
        Colour.RED,
        Point(1, 2.5),
        np.arange(6, dtype="<i4").reshape(2, 3),
        np.float32(1.25),
        {"status": "SUCCESS", "result": [moment, Decimal("1")], "children": [], "date_done": None},
    ]


def task_metas() -> list[dict[str, Any]]:
    base = {
        "status": "SUCCESS",
        "result": {"rows": [1, 2.5, "x", None, True]},
        "traceback": None,
        "children": [],
        "date_done": "2026-11-24T10:11:12.345678+00:00",
        "task_id": "t-1",
        "name": "proj.add",
        "args": [1, 2],
        "kwargs": {"k": "v"},
        "worker": "celery@host",
        "retries": 0,
        "queue": "celery",
    }
    return [
        base,
        {**base, "date_done": "2026-11-24T10:11:12"},
        {**base, "date_done": "2026-11-24T10:11:12Z", "status": "FAILURE"},
        {**base, "date_done": "2026-11-24T10:11:12.5-05:30", "retries": 2**31},
        {**base, "stamped_headers": ["h"], "h": 1},
        {**base, "result": "caf\u00e9 \U0001f600", "traceback": "Traceback\n"},
        {k: v for k, v in base.items() if k in ("status", "result", "date_done", "task_id")},
    ]


def write(harness: str, seeds: list[bytes]) -> None:
    folder = CORPUS / harness
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def main() -> None:
    from resultkit import serializers

    serializers.register_type(Colour)
    serializers.register_type(Point)
    vals = values()
    write("json_decoder", [serializers.json_dumps(v) for v in vals])
    write("msgpack_decoder", [serializers.msgpack_dumps(v) for v in vals])
    metas = task_metas()
    write(
        "json_row",
        [json.dumps(m).encode() for m in metas] + [serializers.json_dumps(m) for m in metas],
    )
    marks = [
        "~datetime:2026-11-24T10:11:12.345678+00:00",
        "~datetime:2026-11-24T10:11:12-05:30",
        "~datetime:2026-11-24T10:11:12+00:00:00.000001",
        "~datetime:2026-11-24",
        "~date:2026-11-24",
        "~time:10:11:12.5",
        "~time:10:11:12+02:00",
        "~decimal:-1.5E+3",
        "~uuid:12345678-1234-5678-1234-567812345678",
        "~int:-123456789012345678901234567890",
        "~float:nan",
        "~~home",
        "2026-11-24T10:11:12.345678+00:00",
        "2026-11-24T10:11:12Z",
        "2026-11-24 10:11:12",
    ]
    write("dates", [m.encode() for m in marks])
    write("envelope", envelope_seeds())
    write("urls", [u.encode() for u in URLS])
    write("retention", retention_seeds())
    write("checkpoint", checkpoint_seeds())
    write("archive_line", archive_seeds())
    write("payload", payload_seeds())


URLS = [
    "redis://:s3cret@localhost:6379/0",
    "rediss://user:p%40ss@host:6380/1?ssl_cert_reqs=required",
    "sentinel://:pw1@h1:26379/0;sentinel://:pw2@h2:26379/0",
    "db+postgresql+psycopg://user:pass#word@localhost/test",
    "resultkit-db+mysql+pymysql://root:a@b@127.0.0.1:3306/test?password=x",
    "resultkit-redis+redis://u:secret@host/2",
    "resultkit-redis+rediscluster://:pw@h1:7000,h2:7001",
    "db+sqlite:///celery-results.sqlite3",
    "file:///var/results",
    "rpc://",
    "redis://localhost?token=abcd&x=1",
    "postgres://u:p@h/db",
    "jsonl:///tmp/archive.jsonl.gz",
]


def envelope_seeds() -> list[bytes]:
    import zlib

    sys.path.insert(0, str(Path(__file__).parent / "harnesses"))
    import envelope  # type: ignore[import-not-found]

    from resultkit import serializers

    body = serializers.json_dumps({"a": [1, dt.date(2026, 1, 1)]})
    plains = [
        b"resultkit-json\0\0" + body,
        b"resultkit-msgpack\0\0" + serializers.msgpack_dumps([1, b"x"]),
        b"json\0\0" + b'{"a": 1}',
        b"msgpack\0\0" + b"\x91\x01",
        b"resultkit-json\0zlib\0" + zlib.compress(body),
        b"pickle\0\0x",
    ]
    seeds = [b"\x01" + p for p in plains]
    seeds += [b"\x00" + envelope.sealed_plaintext(p) for p in plains[:2]]
    return seeds


def payload_seeds() -> list[bytes]:
    import pickle

    from kombu.compression import compress

    sys.path.insert(0, str(Path(__file__).parent / "harnesses"))
    import envelope  # type: ignore[import-not-found]

    from resultkit import serializers

    meta = {"status": "SUCCESS", "result": [1, dt.date(2026, 1, 1)], "children": []}
    plain = json.dumps({"status": "SUCCESS", "result": 1}).encode()
    rk = serializers.json_dumps(meta)
    seeds = [
        b"\x00" + plain,
        b"\x00" + b'{"result": NaN, "n": 123456789012345678901234}',
        b"\x01" + rk,
        b"\x02" + serializers.msgpack_dumps(meta),
        b"\x03" + b"\x82\xa6status\xa7SUCCESS\xa6result\x01",
        b"\x04" + pickle.dumps({"status": "SUCCESS"}),
        b"\x01" + envelope.sealed_plaintext(b"resultkit-json\0\0" + rk),
    ]
    for method in ("zlib", "zstd", "lz4"):
        body, _ = compress(rk, method)
        seeds.append(b"\x01" + body)
    return seeds


def retention_seeds() -> list[bytes]:
    toml = [
        'default = "1d"\n[[rules]]\ntask = "proj.report*"\nexpires = "30d"\n'
        '[[rules]]\nstate = ["FAILURE"]\nexpires = "forever"\n',
        'default = 3600\nrules = [{task = ["a.*", "b"], state = "SUCCESS", expires = "1h30m"}]\n',
    ]
    js = [
        '{"default": "7d", "rules": [{"task": "a.*", "expires": null}]}',
        '{"rules": [{"state": ["SUCCESS", "FAILURE"], "expires": 60.5}]}',
    ]
    return [b"\x00" + t.encode() for t in toml] + [b"\x01" + j.encode() for j in js]


def checkpoint_seeds() -> list[bytes]:
    from resultkit.checkpoint import FORMAT_VERSION, digest

    base = {
        "version": FORMAT_VERSION,
        "identity": digest("fuzz"),
        "cursors": {"task": [3, "abc"], "group": None},
        "epochs": {"task": "2026-11-24T10:00:00", "group": None},
        "finished": ["group"],
        "counters": {"copied": 10, "skipped": 2},
    }
    return [json.dumps(base).encode(), json.dumps({**base, "cursors": {}}).encode()]


def archive_seeds() -> list[bytes]:
    import base64
    import gzip

    lines = [
        {
            "v": 1,
            "kind": "task",
            "id": "t-1",
            "meta": {
                "status": "SUCCESS",
                "result": 1,
                "traceback": None,
                "children": [],
                "date_done": "2026-11-24T10:11:12",
            },
            "expires_at": 1800000000.0,
            "expires_known": True,
        },
        {"v": 1, "kind": "group", "id": "g-1", "meta": {"result": [["t-1", None]]}},
        {
            "v": 1,
            "kind": "task",
            "id": "t-2",
            "payload": base64.b64encode(b'{"status": "FAILURE", "result": NaN}').decode(),
            "serializer": "json",
        },
        {"v": 2, "kind": "task", "id": "t-3"},
    ]
    text = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    two_members = gzip.compress(text[:200], mtime=0) + gzip.compress(text[200:], mtime=0)
    return [
        b"\x01" + text,
        b"\x00" + gzip.compress(text, mtime=0),
        b"\x00" + two_members,
        b"\x00" + gzip.compress(text, mtime=0)[:-9],
    ]


if __name__ == "__main__":
    main()
