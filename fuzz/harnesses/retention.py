"""Retention policies, as read from a TOML or JSON policy file (``cleanup
--policy FILE``): any content is a policy or one ConfigurationError, and a
policy answers every lookup.

The first byte chooses the file's format (even: TOML, odd: JSON).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import fuzz, instrumented

with instrumented(__name__):
    from resultkit.errors import ConfigurationError
    from resultkit.retention import RetentionPolicy, describe

FOLDER = Path(tempfile.mkdtemp(prefix="resultkit-fuzz-"))
NAMES = [None, "", "proj.add", "proj.tasks.report", "*"]
STATES = [None, "SUCCESS", "FAILURE", "PENDING", "weird"]


def check(data: bytes) -> None:
    if not data:
        return
    path = FOLDER / ("policy.json" if data[0] % 2 else "policy.toml")
    path.write_bytes(data[1:])
    try:
        policy = RetentionPolicy.from_file(path)
    except ConfigurationError:
        return
    for name in NAMES:
        for state in STATES:
            lifetime = policy.lifetime(name, state)
            if lifetime is not None and not lifetime >= 0:
                raise AssertionError(f"a lifetime of {lifetime!r} from {data!r:.200}")
    assert all(v is None or v >= 0 for v in policy.lifetimes)
    list(describe(policy))


if __name__ == "__main__":
    fuzz(check)
