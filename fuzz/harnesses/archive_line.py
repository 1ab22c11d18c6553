"""Archives (``jsonl:///PATH.jsonl.gz``) as restored by ``migrate``: any file
is read as records and damaged records, never an exception.

The first byte chooses what the rest is: the archive file as it is on disk
(gzip members, damage, garbage), or the JSON lines inside it, gzip'd here so
that fuzzing reaches the line reader.  Every record read is also read again by
id (``read_many``), and its count agrees.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from _common import fuzz, instrumented

with instrumented(__name__):
    from resultkit.records import Kind
    from resultkit.stores import open_store

FOLDER = Path(tempfile.mkdtemp(prefix="resultkit-fuzz-"))


def check(data: bytes) -> None:
    if not data:
        return
    path = FOLDER / "archive.jsonl.gz"
    body = data[1:]
    path.write_bytes(body if data[0] % 2 == 0 else gzip.compress(body, mtime=0))
    store = open_store(f"jsonl://{path}")
    try:
        for kind in (Kind.TASK, Kind.GROUP):
            records = [r for page in store.pages(kind, 7) for r in page.records]
            for record in records:
                if record.kind is not kind:
                    raise AssertionError(f"a {record.kind} record in the {kind} scan")
            intact = {r.id for r in records if not r.damaged}
            found = store.read_many(kind, sorted(intact))
            if set(found) != intact:
                raise AssertionError(f"read by id: {sorted(set(found) ^ intact)!r:.200}")
            if store.count(kind) != len(intact):
                raise AssertionError("count() disagrees with the scan")
    finally:
        store.close()


if __name__ == "__main__":
    fuzz(check)
