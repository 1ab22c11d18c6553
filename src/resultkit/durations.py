"""Durations as users write them: ``90``, ``30s``, ``15m``, ``12h``, ``7d`` (and back)."""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import ConfigurationError

__all__ = ["format_duration", "parse_duration"]

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
