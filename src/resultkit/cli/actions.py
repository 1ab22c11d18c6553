"""The commands that act on the results a query selects: ``export``, ``erase``, ``retry``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .common import (
    app_from_context,
    emit,
    handle_errors,
    json_option,
    progress_for,
    target_options,
)
from .filters import filter_options

__all__ = ["erase_command", "export_command", "retry_command"]

#: ``filter_options(groups=True)``, typed (called, it is typed Any).
_filters_and_groups: Callable[[Callable[..., None]], Callable[..., None]] = filter_options(
    groups=True
)


@click.command("export")
@target_options
@_filters_and_groups
@click.option(
    "--to",
    "to",
    required=True,
    metavar="PATH",
    help="The file to write: PATH.jsonl.gz (an archive migrate restores) or PATH.csv.",
)
@click.option(
    "--format",
    "format",
    type=click.Choice(["jsonl", "csv"]),
    help="jsonl (a gzip'd JSON-lines archive) or csv; default: from the path's suffix.",
)
@click.option("--overwrite", is_flag=True, help="Replace PATH when it exists.")
@json_option
@handle_errors
def export_command(url: str | None, app: str | None, as_json: bool, **options: Any) -> None:
    """Write the results the filters select to an archive or a CSV file.

    With no filter, every task and group result.  The file appears only when
    it is complete (written aside, then renamed); an archive is restored with
    resultkit migrate jsonl:///PATH TARGET.
    """
    from ..commands import export
    from ..render import render_export

    with progress_for("exporting") as progress:
        report = export(url, app=app_from_context(app), progress=progress, **options)
    emit(report, as_json, render_export)
    sys.exit(0 if report.complete else 1)


@click.command("erase")
@target_options
@filter_options
@click.option("--dry-run", is_flag=True, help="Count what would be erased; delete nothing.")
@click.option("--yes", is_flag=True, help="Erase: delete every result the filters match.")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Allow no filter at all: erase every task result.",
)
@click.option(
    "--archive",
    metavar="PATH",
    help="Write every matched result to this gzip'd JSON-lines archive before deleting it.",
)
@click.option(
    "--audit-log",
    metavar="PATH",
    help="Append one line for this run (who, when, store, filters, counts; no result data).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Results archived and deleted at a time.",
)
@click.option(
    "--accept-pickle",
    is_flag=True,
    help="Decode pickle payloads to match them (only if you trust everyone who can write them).",
)
@json_option
@handle_errors
def erase_command(url: str | None, app: str | None, as_json: bool, **options: Any) -> None:
    """Delete every result of a subject (e.g. --kwarg user_id=42), for data-protection requests.

    Needs --dry-run (count only) or --yes.  Deletes exactly the results the
    filters match, archived first with --archive; a result a worker rewrote
    meanwhile is left alone.  --audit-log records the run, never the data.
    """
    from ..commands import erase
    from ..render import render_erase

    with progress_for("erasing") as progress:
        report = erase(url, app=app_from_context(app), progress=progress, **options)
    emit(report, as_json, render_erase)


@click.command("retry")
@click.argument("task_id", required=False, metavar="[TASK_ID]")
@click.option(
    "-A",
    "--app",
    "app",
    metavar="MODULE",
    help="The Celery app: its result backend holds the tasks, its broker sends them.",
)
@filter_options
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing.")
@click.option("--yes", is_flag=True, help="Send every task the filters select.")
@click.option(
    "--to-queue",
    "send_queue",
    metavar="NAME",
    help="Send every task to this queue (default: the queue it was delivered through; "
    "--queue is the filter, as in every command).",
)
@click.option(
    "--accept-pickle",
    is_flag=True,
    help="Decode pickle payloads (only if you trust everyone who can write them).",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(1, None),
    default=10_000,
    show_default=True,
    help="Refuse filters that select more tasks than this.",
)
@json_option
@handle_errors
def retry_command(
    task_id: str | None,
    app: str | None,
    as_json: bool,
    query: Any,
    send_queue: str | None,
    **options: Any,
) -> None:
    """Send a stored task again (TASK_ID), or every task the filters select.

    Uses the task's stored name, args, kwargs and queue, which Celery keeps
    only with result_extended; sends through the app's broker and prints the
    new task ids.  Filters need --yes (or --dry-run).
    """
    from ..commands import retry
    from ..render import render_retry

    with progress_for("sending") as progress:
        report = retry(
            app_from_context(app),
            task_id=task_id,
            query=query,
            queue=send_queue,
            progress=progress,
            **options,
        )
    emit(report, as_json, render_retry)
    sys.exit(0)
