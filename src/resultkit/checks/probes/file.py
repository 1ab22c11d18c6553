"""Doctor probe for Celery's filesystem backend: result files past their lifetime."""

from __future__ import annotations

import os
import time

from ...report import CheckResult
from .base import Probe

__all__ = ["FileProbe"]


class FileProbe(Probe):
    label = "the filesystem result backend"

    def server_checks(self) -> list[CheckResult]:
        path = self.backend.path.decode()
        prefix = self.backend.task_keyprefix
        prefix = prefix.decode() if isinstance(prefix, bytes) else prefix
        expires = self.expires_s
        now = time.time()
        count = expired = 0
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    count += 1
                    if expires and now - entry.stat().st_mtime > expires:
                        expired += 1
        if expired:
            return [
                CheckResult.warned(
                    "file.results",
                    f"{count:,} result files in {path}; {expired:,} are past result_expires",
                    "run `resultkit cleanup`, or celery beat (its backend_cleanup task)",
                    files=count,
                    expired=expired,
                )
            ]
        return [
            CheckResult.passed(
                "file.results", f"{count:,} result files in {path}", files=count, expired=0
            )
        ]
