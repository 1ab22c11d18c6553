"""Durations written the way users write them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resultkit.durations import format_duration, parse_duration
from resultkit.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("30s", 30.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        (timedelta(days=1), 86400.0),
    ],
)
def test_parse_duration_accepts_seconds_and_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["soon", "7x", "-5", "1h and a bit", True, ""])
def test_parse_duration_rejects_anything_else_with_the_accepted_forms(text: object) -> None:
    with pytest.raises(
        ConfigurationError, match=r"30s, 15m, 12h, 7d|cannot be negative|not a duration"
    ):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (5400, "1h30m"), (86400, "1d"), (90061, "1d1h1m1s")],
)
def test_format_duration_writes_the_short_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
