"""Checkpoints: where a long operation stopped, written atomically after every batch."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Checkpoint", "default_checkpoint_path"]

#: Folder (under the current one) that holds checkpoints by default.
CHECKPOINT_DIR = ".resultkit"


def default_checkpoint_path(*parts: str) -> Path:
    """A checkpoint file named after what the operation is (its URLs and options)."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
    return Path(CHECKPOINT_DIR) / f"migrate-{digest}.json"


@dataclass
class Checkpoint:
    """Progress of one migration: a cursor per kind, the kinds finished, the counters."""

    path: Path
    identity: str
    cursors: dict[str, Any] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, identity: str) -> Checkpoint | None:
        """The checkpoint at *path*, if it is one for this same operation."""
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if data.get("identity") != identity:
            return None
        return cls(path, identity, data["cursors"], data["finished"], data["counters"])

    def save(self) -> None:
        """Write atomically: a crash leaves the previous checkpoint or this one, whole."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["path"] = str(self.path)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoint-")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
