"""Doctor probe for ``resultkit-dual://``: both sides of the cutover are reached.

The round trip goes through the dual backend itself (it writes both sides);
this probe adds one check per side.  ``new`` is authoritative: out of reach, it
fails.  ``old`` out of reach only warns, as the dual backend keeps working
without it (it logs, counts and retries the old side later).
"""

from __future__ import annotations

from ...apps import Target, app_for_url, user_settings
from ...backends.dual import dual_write_settings
from ...report import CheckResult
from ...urls import mask_url, parse_backend_url
from .base import Probe

__all__ = ["DualProbe"]


class DualProbe(Probe):
    label = "the resultkit dual-write backend"

    def server_checks(self) -> list[CheckResult]:
        from . import probe_for

        settings = dual_write_settings(self.app.conf.get("resultkit_dual_write"))
        results = []
        for side in ("new", "old"):
            url = str(settings[side])
            self.target.redactor.add_url(url)
            app = app_for_url(url, **user_settings(self.app))
            target = Target(app, url, "url", mask_url(url), self.target.redactor)
            probe = probe_for(target, self.deadline, parse_backend_url(url))
            try:
                reached = probe.connect()
            except Exception as exc:
                failed = probe.fail(f"dual.{side}", exc)
                if side == "old":
                    failed = CheckResult.warned(
                        failed.id,
                        f"the old backend: {failed.message}; the dual backend writes the new "
                        "one only until it is back",
                        failed.fix,
                    )
                results.append(failed)
                continue
            finally:
                probe.close()
            results.append(CheckResult.passed(f"dual.{side}", f"{side}: {probe.where}: {reached}"))
        return results
