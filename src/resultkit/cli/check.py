"""The commands that look: ``doctor``, ``stats``, ``bench``, ``config``, ``key``."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import UsageError
from .common import app_from_context, emit, handle_errors, json_option, sizes_value, target_options

__all__ = ["bench_command", "config_group", "doctor_command", "key_group", "stats_command"]


@click.command("doctor")
@target_options
@json_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Upper bound for the whole run.",
)
@click.option("--broker", metavar="URL", help="Broker for rpc:// (default: the app's broker).")
@handle_errors
def doctor_command(
    url: str | None, app: str | None, as_json: bool, timeout: float, broker: str | None
) -> None:
    """Check that a result backend works and is configured well.

    URL is a result_backend URL (redis://, db+postgresql+psycopg://, rpc://,
    file://, ...); with no URL and no -A the embedded SQLite default
    (celery-results.sqlite3 in this folder) is checked.
    """
    from ..commands import doctor
    from ..render import render_doctor

    report = doctor(url, app=app_from_context(app), broker=broker, timeout=timeout)
    emit(report, as_json, render_doctor)
    sys.exit(0 if report.ok else 1)


@click.command("stats")
@target_options
@click.option(
    "--policy",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Retention policy for 'past lifetime' (default: the app's resultkit_retention).",
)
@click.option(
    "--offload",
    metavar="URL",
    help="Count the offloaded objects under this s3:// or file:// prefix "
    "(default: the app's resultkit_offload).",
)
@json_option
@handle_errors
def stats_command(
    url: str | None, app: str | None, as_json: bool, policy: str | None, offload: str | None
) -> None:
    """What is stored: totals by state and task, ages, sizes, keys without TTL."""
    from ..commands import stats
    from ..render import render_stats

    report = stats(url, app=app_from_context(app), policy=policy, offload=offload)
    emit(report, as_json, render_stats)


@click.command("bench")
@click.argument("urls", nargs=-1, metavar="[URL ...]")
@click.option("-A", "--app", "app", metavar="MODULE", help="Measure this app's result backend.")
@click.option(
    "--size",
    "sizes",
    multiple=True,
    callback=sizes_value,
    metavar="SIZE",
    help="Result payload size (1KB, 100KB...; repeatable). Default 1KB.",
)
@click.option(
    "--serializer",
    "serializers",
    multiple=True,
    metavar="NAME",
    help="Result serializer (json, msgpack, pickle...; repeatable).",
)
@click.option(
    "--compression",
    "compressions",
    multiple=True,
    metavar="NAME",
    help="result_compression method (gzip, bzip2...; repeatable).",
)
@click.option(
    "--concurrency",
    multiple=True,
    type=click.IntRange(min=1),
    metavar="N",
    help="Clients at once (repeatable). Default 1.",
)
@click.option(
    "--mode",
    type=click.Choice(["threads", "processes"]),
    default="threads",
    show_default=True,
    help="How concurrent clients run.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.3),
    default=3.0,
    show_default=True,
    help="Time per case (split between store, fetch and store+fetch).",
)
@click.option(
    "--no-compare", is_flag=True, help="Do not add Celery's own counterpart of a resultkit backend."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also draw charts to FILE (.png, .svg or .html).",
)
@json_option
@handle_errors
def bench_command(
    urls: tuple[str, ...],
    app: str | None,
    sizes: tuple[int, ...],
    serializers: tuple[str, ...],
    compressions: tuple[str, ...],
    concurrency: tuple[int, ...],
    mode: str,
    seconds: float,
    no_compare: bool,
    plot: str | None,
    as_json: bool,
) -> None:
    """Measure store, fetch and store+fetch throughput and latency on your servers.

    Cleans up everything it wrote and never touches other results.
    """
    from ..commands import bench
    from ..render import render_bench

    report = bench(
        list(urls) or None,
        app=app_from_context(app),
        sizes=sizes,
        serializers=tuple(serializers) or (None,),
        compressions=tuple(compressions) or (None,),
        concurrency=tuple(concurrency) or (1,),
        mode=mode,
        seconds=seconds,
        compare=not no_compare,
    )
    if plot:
        from ..plot import write_plot

        write_plot(report, plot)
    emit(report, as_json, render_bench)


@click.group("config")
def config_group() -> None:
    """Write a sound Celery result configuration, and check one."""


@config_group.command("new")
@click.option(
    "--backend",
    required=True,
    type=click.Choice(
        ["redis", "rediss", "sentinel", "rediscluster", "postgresql", "mysql", "sqlite", "rpc"]
    ),
    help="Where results are stored.",
)
@click.option(
    "--serializer",
    default="json",
    show_default=True,
    type=click.Choice(["json", "msgpack"]),
    help="Result serializer.",
)
@click.option(
    "--expires", default="1d", show_default=True, metavar="DURATION", help="result_expires."
)
@click.option(
    "--retention",
    metavar="DURATION",
    help="Add a retention policy: failures 30d, everything else DURATION.",
)
@click.option(
    "--offload",
    metavar="URL",
    help="Store results above --offload-threshold in s3://bucket/prefix or file:///path.",
)
@click.option(
    "--offload-threshold",
    metavar="SIZE",
    default="256KB",
    show_default=True,
    help="Results larger than this (stored bytes) are offloaded.",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Where to write celeryconfig.py and .env.example.",
)
@click.option("--force", is_flag=True, help="Replace files that exist.")
@handle_errors
def config_new_command(**options: Any) -> None:
    """Write celeryconfig.py and .env.example for a backend."""
    from ..commands import config_new

    for path in config_new(**options):
        click.echo(f"wrote {path}")
    click.echo("next: resultkit config check -A celeryconfig && resultkit doctor -A celeryconfig")


@config_group.command("check")
@click.option(
    "-A", "--app", "app", metavar="MODULE", help="The Celery app or configuration module to audit."
)
@json_option
@handle_errors
def config_check_command(app: str | None, as_json: bool) -> None:
    """Audit the configuration without connecting; exit 1 when a check fails."""
    from ..commands import config_check
    from ..render import render_config_check

    chosen = app_from_context(app)
    if chosen is None:
        raise UsageError(
            "config check needs -A APP (or run it as celery -A APP results config check)"
        )
    report = config_check(chosen)
    emit(report, as_json, render_config_check)
    sys.exit(0 if report.ok else 1)


@click.group("key")
def key_group() -> None:
    """Encryption keys for the resultkit-encrypted serializer."""


@key_group.command("new")
def key_new_command() -> None:
    """Print a new random 256-bit key (URL-safe base64) and its key id.

    Store it where your secrets live and put it first in
    resultkit_encryption_keys (or RESULTKIT_ENCRYPTION_KEYS): see docs/encryption.md.
    """
    from ..encryption import generate_key, key_label

    key = generate_key()
    click.echo(key)
    click.echo(f"key id: {key_label(key)}", err=True)
