"""The commands that look into stored results: ``find``, ``show``, ``failures``."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click

from ..errors import UsageError
from ..query import DEFAULT_FIND_LIMIT, MAX_FIND_LIMIT
from ..report import dumps_json
from .common import app_from_context, emit, handle_errors, json_option, target_options
from .filters import filter_options

__all__ = ["failures_command", "find_command", "show_command"]

#: The columns of ``find --csv``, in order.
CSV_COLUMNS = (
    "task_id",
    "status",
    "name",
    "date_done",
    "worker",
    "queue",
    "group_id",
    "parent_id",
    "exception",
    "message",
)


def _pickle_option(fn: Any) -> Any:
    return click.option(
        "--accept-pickle",
        is_flag=True,
        help="Decode pickle payloads (only if you trust everyone who can write them).",
    )(fn)


@click.command("find")
@target_options
@filter_options(groups=True, order=True)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_FIND_LIMIT),
    default=DEFAULT_FIND_LIMIT,
    show_default=True,
    help="Results per page.",
)
@click.option("--cursor", metavar="C", help="Continue after the page that printed this cursor.")
@json_option
@click.option("--jsonl", "as_jsonl", is_flag=True, help="One JSON object per result and line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header line.")
@click.option("--explain", is_flag=True, help="Also show how the store answers: plan and indexes.")
@click.option(
    "--create-indexes",
    is_flag=True,
    help="Create the indexes that make find fast on SQL stores, then stop.",
)
@_pickle_option
@handle_errors
def find_command(
    url: str | None,
    app: str | None,
    query: Any,
    limit: int,
    cursor: str | None,
    as_json: bool,
    as_jsonl: bool,
    as_csv: bool,
    explain: bool,
    create_indexes: bool,
    accept_pickle: bool,
) -> None:
    """List the stored results that the filters select, newest first, a page at a time.

    The last line gives the cursor of the next page (--cursor); with --json it
    is the "cursor" key, null on the last page.
    """
    from ..commands import find
    from ..render import render_find

    if sum((as_json, as_jsonl, as_csv)) > 1:
        raise UsageError("choose one output format: --json, --jsonl or --csv")
    report = find(
        url,
        app=app_from_context(app),
        query=query,
        limit=limit,
        cursor=cursor,
        accept_pickle=accept_pickle,
        explain=explain,
        create_indexes=create_indexes,
    )
    if as_jsonl:
        for row in report.results:
            click.echo(dumps_json(row, indent=False))
        if report.cursor:
            click.echo(f"next page: --cursor {report.cursor}", err=True)
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in report.results:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
        if report.cursor:
            click.echo(f"next page: --cursor {report.cursor}", err=True)
    else:
        emit(report, as_json, render_find)


@click.command("show")
@click.argument("task_id", metavar="TASK_ID")
@target_options
@json_option
@_pickle_option
@handle_errors
def show_command(
    task_id: str, url: str | None, app: str | None, as_json: bool, accept_pickle: bool
) -> None:
    """Show everything stored about one result: state, result or exception, traceback,
    dates, extended fields, its children and group with their states, lifetime left.

    Exits 1 when the store holds no result with that id.
    """
    from ..commands import show
    from ..render import render_show

    report = show(task_id, url, app=app_from_context(app), accept_pickle=accept_pickle)
    emit(report, as_json, render_show)
    sys.exit(0 if report.found else 1)


@click.command("failures")
@target_options
@filter_options
@json_option
@_pickle_option
@handle_errors
def failures_command(
    url: str | None, app: str | None, query: Any, as_json: bool, accept_pickle: bool
) -> None:
    """Failed results grouped by task name and exception type: how many, first and
    last seen, the latest one's id and message (state FAILURE unless --state says)."""
    from ..commands import failures
    from ..render import render_failures

    report = failures(url, app=app_from_context(app), query=query, accept_pickle=accept_pickle)
    emit(report, as_json, render_failures)
