"""Check results and their rendering, for people (rich) and for scripts (JSON)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["CheckResult", "Status", "dumps_json"]


class Status(str, enum.Enum):
    """The outcome of one check."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One finding: a stable ``id``, a status, one line saying what, one saying how to fix."""

    id: str
    status: Status
    message: str
    fix: str = ""
    #: Figures behind the message (counts, timings), for ``--json``.
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def passed(cls, id: str, message: str, **data: Any) -> CheckResult:
        return cls(id, Status.PASS, message, "", data)

    @classmethod
    def warned(cls, id: str, message: str, fix: str, **data: Any) -> CheckResult:
        return cls(id, Status.WARN, message, fix, data)

    @classmethod
    def failed(cls, id: str, message: str, fix: str, **data: Any) -> CheckResult:
        return cls(id, Status.FAIL, message, fix, data)

    @classmethod
    def skipped(cls, id: str, message: str, **data: Any) -> CheckResult:
        return cls(id, Status.SKIP, message, "", data)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``id``, ``status``, ``message``, ``fix`` and any ``data``."""
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "message": self.message,
            "fix": self.fix,
        }
        if self.data:
            out["data"] = dict(self.data)
        return out


def dumps_json(document: Mapping[str, Any], *, indent: bool = True) -> str:
    """Serialise a report document: indented (or on one line), keys in order, any
    value made printable."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(document, option=option, default=str).decode()
