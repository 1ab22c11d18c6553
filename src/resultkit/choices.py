"""Names the user chooses (states, compression methods), checked before any work.

A name that matches nothing is a :class:`UsageError` with the closest valid
name, rather than a filter that silently matches nothing or a failure per
record halfway through a run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .errors import UsageError

__all__ = ["compression_names", "did_you_mean", "require_compression", "require_state"]


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the choice closest to *value*, or ``""``."""
    options = list(choices)
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(value.lower(), [o.lower() for o in options], n=1)
        close = [o for o in options if o.lower() in close][:1]
    return f" (did you mean {close[0]}?)" if close else ""


def require_state(state: str, option: str = "--state") -> str:
    """*state* in Celery's spelling (upper case), or :class:`UsageError` naming the closest."""
    from celery import states

    known = sorted(states.ALL_STATES)
    upper = state.strip().upper()
    if upper in known:
        return upper
    raise UsageError(
        f"{option} {state}: Celery has no such state{did_you_mean(upper, known)}; "
        f"its states are {', '.join(known)}"
    )


def compression_names() -> list[str]:
    """Every compression method kombu knows here (aliases included)."""
    import kombu.compression

    aliases = getattr(kombu.compression, "_aliases", {})
    return sorted(set(aliases) | set(kombu.compression.encoders()))


def require_compression(name: str, option: str = "--compression") -> str:
    """*name* when kombu can compress with it, else :class:`UsageError` naming the closest."""
    import kombu.compression

    try:
        kombu.compression.get_encoder(name)
    except KeyError:
        names = [n for n in compression_names() if "/" not in n]
        raise UsageError(
            f"{option} {name}: kombu has no such compression method{did_you_mean(name, names)};"
            f" it knows {', '.join(names)} (zstd and lz4 need their libraries installed)"
        ) from None
    return name
