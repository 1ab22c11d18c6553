"""Durations as users write them: ``90``, ``30s``, ``15m``, ``12h``, ``7d`` (and back)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from .errors import ConfigurationError

__all__ = ["expiry_seconds", "format_duration", "parse_duration", "parse_when"]

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration accepted: longer ones overflow dates (Python's, and the
#: databases'); keep results forever with None instead.
MAX_DURATION_S = 100 * 365 * 86400
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
        if value > MAX_DURATION_S:
            raise ConfigurationError(
                f"{value!r} s is longer than 100 years (36500d): dates that far away cannot "
                "be stored; use None (or 'forever') to keep results for ever"
            )
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
    seconds = float(sum(float(n) * _UNITS_S[unit] for n, unit in parts))
    if seconds > MAX_DURATION_S:
        raise ConfigurationError(
            f"{value!r} is longer than 100 years (36500d): dates that far away cannot be "
            "stored; use None (or 'forever') to keep results for ever"
        )
    return seconds


def expiry_seconds(
    value: float | timedelta | str | None, setting: str = "result_expires"
) -> float | None:
    """A Celery expiry setting (``result_expires``...) in seconds; None when disabled.

    Raises :class:`ConfigurationError`, naming *setting*, for a value Celery's
    backends cannot use (text that is not a number, a negative number).
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{setting} = {value!r} is not a number of seconds: write 86400 or "
            "timedelta(days=1) (None never expires)"
        ) from None
    if seconds != seconds or seconds < 0:
        raise ConfigurationError(f"{setting} = {value!r} must be zero or a positive number")
    return seconds or None


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
