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
    write("json_row", [json.dumps(m).encode() for m in metas] + [serializers.json_dumps(m) for m in metas])
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


if __name__ == "__main__":
    main()
