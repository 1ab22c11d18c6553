"""One public function per command; each returns a result object and never prints."""

from __future__ import annotations

from .doctor import DEFAULT_TIMEOUT_S, DoctorReport, doctor

__all__ = ["DEFAULT_TIMEOUT_S", "DoctorReport", "doctor"]
