"""Durations as users write them: ``90``, ``30s``, ``15m``, ``12h``, ``7d`` (and back)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from .errors import ConfigurationError

__all__ = ["expiry_seconds", "format_duration", "parse_duration", "parse_when"]

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(value: str | float | timedelta) -> float:
    """Return *value* in seconds: a number, a timedelta, or text such as ``1h30m``.

    Raises :class:`ConfigurationError` for anything else, saying what is accepted.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ConfigurationError(f"{value!r} is not a duration: write seconds or 30s/15m/12h/7d")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigurationError(
                f"{value!r} is not a duration: write seconds or 30s/15m/12h/7d"
            )
        if value < 0:
            raise ConfigurationError(f"a duration cannot be negative: {value!r}")
        return float(value)
    text = str(value).strip().lower()
    try:
        return parse_duration(float(text))
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or _PART.sub("", text).strip():
        raise ConfigurationError(
            f"{value!r} is not a duration: write seconds (3600) or 30s, 15m, 12h, 7d, 1h30m"
        )
    return float(sum(float(n) * _UNITS_S[unit] for n, unit in parts))


def expiry_seconds(value: float | timedelta | None) -> float | None:
    """A Celery expiry setting (``result_expires``...) in seconds; None when disabled."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return float(value) if value else None


def format_duration(seconds: float) -> str:
    """Write *seconds* the short way: ``1d``, ``12h``, ``1h30m``, ``45s``."""
    remaining = round(seconds)
    if remaining == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_S[unit]
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """A point in time: ISO 8601 (``2026-01-31``, ``2026-01-31T12:00:00+01:00``,
    UTC when no zone is given) or a duration back from now (``7d`` = 7 days ago)."""
    from datetime import timezone

    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ConfigurationError:
            raise ConfigurationError(
                f"{value!r} is not a time: write 2026-01-31, 2026-01-31T12:00:00Z or a "
                "duration back from now such as 7d"
            ) from None
        return (now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed
