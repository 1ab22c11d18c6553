"""The commands that move and delete: ``migrate``, ``cleanup``, ``cutover``."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..records import MAX_BATCH_RECORDS
from .common import (
    app_from_context,
    as_typed,
    duration_value,
    emit,
    handle_errors,
    json_option,
    progress_for,
    target_options,
    when_value,
)

__all__ = ["cleanup_command", "cutover_group", "migrate_command"]


@click.command("migrate")
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
@click.option(
    "-A",
    "--app",
    "app",
    metavar="MODULE",
    help="A Celery app lending its settings "
    "(serializer, table names, key prefix, result_expires) to both sides.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_RECORDS),
    default=1000,
    show_default=True,
    help="Records per batch (one transaction, one checkpoint).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be copied; write nothing.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint of an interrupted run.")
@click.option(
    "--verify", is_flag=True, help="Read every copied record back through Celery and compare it."
)
@click.option(
    "--move", is_flag=True, help="Delete from the source the records verified in the target."
)
@click.option(
    "--on-conflict",
    type=click.Choice(["skip", "overwrite", "newer"]),
    default="skip",
    show_default=True,
    help="When the target already has a result with the same id.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only results in this state (repeatable).",
)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    metavar="GLOB",
    help="Only tasks whose name matches (needs result_extended; repeatable).",
)
@click.option(
    "--since",
    callback=when_value,
    metavar="WHEN",
    help="Only results done at or after WHEN (ISO time, or 7d for 7 days ago).",
)
@click.option("--until", callback=when_value, metavar="WHEN", help="Only results done before WHEN.")
@click.option(
    "--source-serializer",
    metavar="NAME",
    help="Serializer the source was written with, when it cannot be recognised.",
)
@click.option("--target-serializer", metavar="NAME", help="Transcode results to this serializer.")
@click.option(
    "--target-compression",
    metavar="NAME",
    help="Compress results with this method (gzip, bzip2, lzma...); 'none' to remove.",
)
@click.option(
    "--accept-pickle",
    is_flag=True,
    help="Decode pickle payloads (only if you trust everyone who can write them).",
)
@click.option(
    "--source-keys-env",
    metavar="VAR",
    help="Environment variable holding the keys that open the source's encrypted results "
    "(default: the app's resultkit_encryption_keys, else RESULTKIT_ENCRYPTION_KEYS).",
)
@click.option(
    "--target-keys-env",
    metavar="VAR",
    help="Environment variable holding the target's keys, newest first: results are "
    "(re-)encrypted under the newest.",
)
@click.option(
    "--inline-offloaded",
    is_flag=True,
    help="Write offloaded results inline in TARGET (their objects fetched), instead of "
    "carrying their references as they are.",
)
@click.option(
    "--offload",
    metavar="URL",
    help="Offload task results above --offload-threshold to this s3:// or file:// prefix "
    "while copying (the target keeps references).",
)
@click.option(
    "--offload-threshold",
    metavar="SIZE",
    default="256KB",
    show_default=True,
    help="With --offload: results larger than this (stored bytes) are offloaded.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Where to keep the checkpoint (default: .resultkit/ in this folder).",
)
@json_option
@handle_errors
def migrate_command(
    source: str,
    target: str,
    app: str | None,
    as_json: bool,
    target_compression: str | None,
    **options: Any,
) -> None:
    """Copy stored task and group results from SOURCE to TARGET.

    Without --move the source is never modified.  Every batch is one
    transaction and a checkpoint: an interrupted run loses nothing and
    --resume continues it; running the same migration twice is harmless.
    """
    from ..commands import migrate
    from ..render import render_migration

    celery_app = app_from_context(app)
    if isinstance(celery_app, str):
        from ..apps import load_app

        celery_app = load_app(celery_app)
    if target_compression == "none":
        target_compression = ""
    with progress_for("migrating") as progress:
        report = migrate(
            source,
            target,
            app=celery_app,
            target_compression=target_compression,
            progress=progress,
            command=as_typed(),
            **options,
        )
    emit(report, as_json, render_migration)
    sys.exit(0 if report.ok else 1)


@click.command("cleanup")
@target_options
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=duration_value,
    help="Delete every result older than this (30s, 15m, 12h, 7d), ignoring policies.",
)
@click.option(
    "--policy",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="A retention policy file (TOML or JSON); default: the app's resultkit_retention.",
)
@click.option(
    "--archive",
    metavar="PATH",
    help="Write every result to this gzip'd JSON-lines archive (a path, or "
    "s3://bucket/key.jsonl.gz) before deleting it.",
)
@click.option(
    "--fix-missing-ttl",
    is_flag=True,
    help="Redis: give keys without a TTL the lifetime the policy gives them.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH_RECORDS),
    default=5000,
    show_default=True,
    help="Results per delete (each its own short transaction).",
)
@click.option(
    "--offload",
    metavar="URL",
    help="Sweep orphaned offloaded objects under this s3:// or file:// prefix "
    "(default: the app's resultkit_offload).",
)
@click.option(
    "--orphan-grace",
    metavar="DURATION",
    callback=duration_value,
    default="1h",
    show_default=True,
    help="Offloaded objects younger than this are never swept (their reference may be "
    "about to be written).",
)
@click.option(
    "--dry-run", is_flag=True, help="Show what would go, by state and task; delete nothing."
)
@json_option
@handle_errors
def cleanup_command(url: str | None, app: str | None, as_json: bool, **options: Any) -> None:
    """Delete results past their lifetime, without beat; safe from cron.

    Lifetimes come from --older-than, else --policy, else the app's
    resultkit_retention, else result_expires.  Results stored while the
    cleanup runs are never deleted by it.
    """
    from ..commands import cleanup
    from ..render import render_cleanup

    with progress_for("deleting") as progress:
        report = cleanup(url, app=app_from_context(app), progress=progress, **options)
    emit(report, as_json, render_cleanup)


@click.group("cutover")
def cutover_group() -> None:
    """Follow a move from an old result backend to a new one (resultkit-dual)."""


@cutover_group.command("status")
@click.option(
    "-A",
    "--app",
    "app",
    metavar="MODULE",
    help="The Celery app whose resultkit_dual_write names the two backends.",
)
@click.option("--new", metavar="URL", help="The new backend (default: from the app).")
@click.option("--old", metavar="URL", help="The old backend (default: from the app).")
@json_option
@handle_errors
def cutover_status_command(
    app: str | None, new: str | None, old: str | None, as_json: bool
) -> None:
    """How many results exist only in old, only in new, in both; can old be dropped?

    Exits 0 when old can be dropped (everything in it is also in new), 1 otherwise.
    """
    from ..commands import cutover_status
    from ..render import render_cutover

    report = cutover_status(app_from_context(app), new=new, old=old)
    emit(report, as_json, render_cutover)
    sys.exit(0 if report.old_can_be_dropped else 1)
