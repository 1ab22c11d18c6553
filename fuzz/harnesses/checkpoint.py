"""Migration checkpoints (``migrate --resume``): any file content loads as a
checkpoint or is refused with one UsageError, and a checkpoint that loads is
saved and loaded again unchanged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import canon, fuzz, instrumented

with instrumented(__name__):
    from resultkit.checkpoint import Checkpoint
    from resultkit.errors import UsageError

FOLDER = Path(tempfile.mkdtemp(prefix="resultkit-fuzz-"))
IDENTITY = "fuzz"


def check(data: bytes) -> None:
    path = FOLDER / "checkpoint.json"
    path.write_bytes(data)
    try:
        loaded = Checkpoint.load(path, IDENTITY)
    except UsageError:
        return
    if loaded is None:
        raise AssertionError("an existing file loaded as no checkpoint")
    try:
        loaded.save()
    except (ValueError, TypeError, RecursionError):
        return  # what json cannot write again (the load took it as it is)
    again = Checkpoint.load(path, IDENTITY)
    assert again is not None
    fields = ("cursors", "epochs", "finished", "counters")
    if any(canon(getattr(loaded, f)) != canon(getattr(again, f)) for f in fields):
        raise AssertionError(f"saved and loaded again, {data!r:.200} changed")


if __name__ == "__main__":
    fuzz(check)
