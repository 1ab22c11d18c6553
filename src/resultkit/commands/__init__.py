"""One public function per command; each returns a result object and never prints."""

from __future__ import annotations

from .bench import BenchCase, BenchReport, bench
from .cleanup import DEFAULT_CLEANUP_BATCH_ROWS, CleanupReport, cleanup
from .config import ConfigCheckReport, config_check, config_new
from .cutover import CutoverReport, cutover_status
from .doctor import DEFAULT_TIMEOUT_S, DoctorReport, doctor
from .erase import EraseReport, erase
from .export import ExportReport, export
from .failures import FailuresReport, failures
from .find import FindReport, find
from .migrate import DEFAULT_BATCH_SIZE, MigrationReport, Progress, migrate
from .retry import RetryReport, retry
from .show import ShowReport, show
from .stats import StatsReport, stats

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLEANUP_BATCH_ROWS",
    "DEFAULT_TIMEOUT_S",
    "BenchCase",
    "BenchReport",
    "CleanupReport",
    "ConfigCheckReport",
    "CutoverReport",
    "DoctorReport",
    "EraseReport",
    "ExportReport",
    "FailuresReport",
    "FindReport",
    "MigrationReport",
    "Progress",
    "RetryReport",
    "ShowReport",
    "StatsReport",
    "bench",
    "cleanup",
    "config_check",
    "config_new",
    "cutover_status",
    "doctor",
    "erase",
    "export",
    "failures",
    "find",
    "migrate",
    "retry",
    "show",
    "stats",
]
