"""``resultkit cutover status``: where results live while a fleet moves between backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..apps import load_app
from ..checks.audit import check_settings
from ..errors import UsageError
from ..records import Kind
from ..stores import open_store
from ..urls import mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["CutoverReport", "cutover_status"]

#: Results read per batch while comparing the two backends.
BATCH_SIZE = 1000


@dataclass
class CutoverReport:
    """How many results exist only in old, only in new, and in both."""

    new: str
    old: str
    only_old: dict[str, int] = field(default_factory=dict)
    only_new: dict[str, int] = field(default_factory=dict)
    both: dict[str, int] = field(default_factory=dict)

    @property
    def old_can_be_dropped(self) -> bool:
        """True when every result in old is also in new."""
        return not any(self.only_old.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "old": self.old,
            "only_old": self.only_old,
            "only_new": self.only_new,
            "both": self.both,
            "old_can_be_dropped": self.old_can_be_dropped,
        }


def cutover_status(
    app: Celery | str | None = None, *, new: str | None = None, old: str | None = None
) -> CutoverReport:
    """Compare the ``new`` and ``old`` backends of ``resultkit_dual_write`` (or those given)."""
    celery_app = load_app(app) if isinstance(app, str) else app
    if celery_app is not None:
        check_settings(celery_app)
    settings = (
        celery_app.conf.get("resultkit_dual_write") if celery_app is not None else None
    ) or {}
    new = new or settings.get("new")
    old = old or settings.get("old")
    if not new or not old:
        raise UsageError(
            "name both backends: -A APP with resultkit_dual_write = {'new': URL, 'old': URL}, "
            "or --new URL --old URL"
        )
    new_store, old_store = open_store(new, celery_app), open_store(old, celery_app)
    report = CutoverReport(mask_url(new), mask_url(old))
    try:
        for kind in (Kind.TASK, Kind.GROUP):
            both = only_old = only_new = 0
            for page in old_store.pages(kind, BATCH_SIZE):
                ids = [r.id for r in page.records]
                present = new_store.read_many(kind, ids)
                both += sum(1 for i in ids if i in present)
                only_old += sum(1 for i in ids if i not in present)
            for page in new_store.pages(kind, BATCH_SIZE):
                ids = [r.id for r in page.records]
                present = old_store.read_many(kind, ids)
                only_new += sum(1 for i in ids if i not in present)
            label = f"{kind.value}s"
            report.both[label], report.only_old[label], report.only_new[label] = (
                both,
                only_old,
                only_new,
            )
    finally:
        new_store.close()
        old_store.close()
    return report
