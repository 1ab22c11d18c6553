"""One public function per command; each returns a result object and never prints."""

from __future__ import annotations

from .doctor import DEFAULT_TIMEOUT_S, DoctorReport, doctor
from .migrate import DEFAULT_BATCH_SIZE, MigrationReport, Progress, migrate
from .stats import StatsReport, stats

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TIMEOUT_S",
    "DoctorReport",
    "MigrationReport",
    "Progress",
    "StatsReport",
    "doctor",
    "migrate",
    "stats",
]
