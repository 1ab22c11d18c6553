"""Checkpoints: where a long operation stopped, written atomically after every batch.

A checkpoint keeps no credentials: the operation it belongs to is named by a
digest of its identity (URLs with their passwords masked, and the options),
which is all a resume needs to recognise it.  Per kind of record it keeps the
scan cursor and the *epoch* of the source that cursor belongs to (see
:attr:`resultkit.stores.Page.epoch`): a cursor of another epoch means nothing
and the scan starts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["FORMAT_VERSION", "Checkpoint", "default_checkpoint_path", "digest"]

#: Folder (under the current one) that holds checkpoints by default.
CHECKPOINT_DIR = ".resultkit"
#: Version of the checkpoint file's layout.
FORMAT_VERSION = 2


def digest(identity: str) -> str:
    """The hex SHA-256 of *identity*: what a checkpoint file keeps of it."""
    return hashlib.sha256(identity.encode()).hexdigest()


def default_checkpoint_path(identity: str) -> Path:
    """A checkpoint file named after what the operation is (its URLs and options)."""
    return Path(CHECKPOINT_DIR) / f"migrate-{digest(identity)[:16]}.json"


@dataclass
class Checkpoint:
    """Progress of one migration: a cursor and its epoch per kind, the kinds
    finished, the counters."""

    path: Path
    #: The operation's identity (kept in memory only; the file keeps its digest).
    identity: str
    cursors: dict[str, Any] = field(default_factory=dict)
    epochs: dict[str, str | None] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, identity: str) -> Checkpoint | None:
        """The checkpoint at *path* (None when there is no file).

        A file that cannot be read, is damaged, or belongs to another operation
        is a :class:`UsageError` that says which file and what to do: resuming
        from it would either fail or silently start somewhere else.
        """
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise _unusable(path, f"cannot be read ({_reason(exc)})") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise _unusable(path, "is damaged (not valid JSON, perhaps cut short)") from exc
        if not isinstance(data, dict) or "identity" not in data:
            raise _unusable(path, "is not a resultkit checkpoint")
        if data.get("version") != FORMAT_VERSION:
            raise _unusable(
                path, f"is a checkpoint of another resultkit version ({data.get('version')!r})"
            )
        if data["identity"] != digest(identity):
            raise _unusable(
                path, "belongs to another migration (another source, target or options)"
            )
        try:
            cursors = dict(data["cursors"])
            epochs = dict(data["epochs"])
            finished = [str(kind) for kind in data["finished"]]
            counters = {str(k): int(v) for k, v in dict(data["counters"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise _unusable(path, f"is damaged ({type(exc).__name__}: {exc})") from exc
        return cls(path, identity, cursors, epochs, finished, counters)

    def save(self) -> None:
        """Write atomically: a crash leaves the previous checkpoint or this one, whole.

        Raises OSError (a full disk, a folder that cannot be written) with no
        temporary file left behind; the previous checkpoint is then intact.
        """
        data = {
            "version": FORMAT_VERSION,
            "identity": digest(self.identity),
            "cursors": self.cursors,
            "epochs": self.epochs,
            "finished": self.finished,
            "counters": self.counters,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=self._temp_prefix)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def remove(self) -> None:
        """Delete the checkpoint, and any temporary file a killed run left beside it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            for leftover in self.path.parent.glob(self._temp_prefix + "*"):
                leftover.unlink()

    @property
    def _temp_prefix(self) -> str:
        return f".{self.path.name}.tmp-"


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _unusable(path: Path, problem: str) -> UsageError:
    return UsageError(
        f"--resume: the checkpoint {path} {problem}: delete it, or run without --resume "
        "to start over (results already in the target are skipped)"
    )
