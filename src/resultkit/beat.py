"""Run ``resultkit cleanup`` from Celery beat, for those who want it there rather than cron.

::

    from resultkit.beat import install_cleanup

    install_cleanup(app, every=3600)           # hourly, with the app's retention policy
    install_cleanup(app, every=86400, archive="/backups/results.jsonl.gz")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["CLEANUP_TASK_NAME", "install_cleanup"]

CLEANUP_TASK_NAME = "resultkit.cleanup"


def install_cleanup(app: Celery, *, every: float = 3600.0, **options: Any) -> Any:
    """Register the ``resultkit.cleanup`` task on *app* and schedule it every *every* seconds.

    *options* are passed to :func:`resultkit.commands.cleanup` (``archive``,
    ``batch_size``, ``fix_missing_ttl``, ``policy``, ``older_than``).  Returns the task.
    """

    @app.task(name=CLEANUP_TASK_NAME, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def cleanup_results() -> dict[str, Any]:
        from .commands import cleanup

        return cleanup(app=app, **options).as_dict()

    schedule = dict(app.conf.beat_schedule or {})
    schedule.setdefault("resultkit-cleanup", {"task": CLEANUP_TASK_NAME, "schedule": every})
    app.conf.beat_schedule = schedule
    return cleanup_results
