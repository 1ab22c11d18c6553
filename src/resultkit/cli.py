"""The command line: parse arguments, call a library function, render, exit.

Exit codes: 0 when everything passed, 1 when a check or operation found
problems, 2 for usage errors (bad options, an app that cannot be loaded, a
URL and ``-A`` given together).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from . import __version__
from .encryption import install_worker_check
from .errors import AppNotFound, ConfigurationError, ResultkitError, UsageError
from .records import MAX_BATCH_RECORDS
from .report import dumps_json
from .urls import Redactor

# The `celery` command loads this module as its `results` plugin: from here every
# `celery worker` whose app uses resultkit-encrypted refuses to start without keys.
install_worker_check()

__all__ = ["celery_results", "main"]

F = TypeVar("F", bound=Callable[..., Any])

#: Key under which the ``celery results`` group leaves Celery's app for its commands.
_CELERY_APP = "resultkit.celery_app"
_USAGE_ERRORS = (UsageError, ConfigurationError, AppNotFound)


#: Width used when output is not a terminal (a pipe, a file, a CI log).
PIPE_WIDTH_COLUMNS = 120


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH_COLUMNS
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def _die(message: str, code: int) -> NoReturn:
    _console(stderr=True).print(
        f"[bold red]error:[/] {escape(Redactor().redact(message))}", markup=True, soft_wrap=True
    )
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Map resultkit errors to a one-line message and exit code 2 (usage) or 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _USAGE_ERRORS as exc:
            _die(str(exc), 2)
        except ResultkitError as exc:
            _die(str(exc), 1)
        except KeyboardInterrupt:
            _die("interrupted", 130)
        except Exception as exc:
            if os.environ.get("RESULTKIT_DEBUG"):
                raise
            _die(
                f"internal error: {type(exc).__name__}: {exc} "
                "(set RESULTKIT_DEBUG=1 to see the traceback, and please report it)",
                1,
            )

    return wrapper  # type: ignore[return-value]


def _as_typed() -> str:
    """The command line this process runs, as typed, with every password masked."""
    words = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    return shlex.join(Redactor().redact(word) for word in words)


def _emit(report: Any, as_json: bool, render: Callable[[Any, Console], None]) -> None:
    """Print *report* as one JSON document, or for people."""
    if as_json:
        click.echo(dumps_json(report.as_dict()))
    else:
        render(report, _console())


def target_options(fn: F) -> F:
    """The URL argument and ``-A/--app`` option every command shares."""
    fn = click.option(
        "-A",
        "--app",
        "app",
        metavar="MODULE",
        help="A Celery app (proj, proj.celery:app) whose result_backend and settings to use.",
    )(fn)
    return click.argument("url", required=False, metavar="[URL]")(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(fn)


def _app_from_context(app: str | None) -> Any:
    """The ``-A`` value, or the app Celery loaded when running as ``celery results``."""
    if app:
        return app
    return click.get_current_context().meta.get(_CELERY_APP)


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
    from .commands import doctor
    from .render import render_doctor

    report = doctor(url, app=_app_from_context(app), broker=broker, timeout=timeout)
    _emit(report, as_json, render_doctor)
    sys.exit(0 if report.ok else 1)


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from .durations import parse_when
    from .errors import ConfigurationError

    if value is None:
        return None
    try:
        return parse_when(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from .durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


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
    callback=_when,
    metavar="WHEN",
    help="Only results done at or after WHEN (ISO time, or 7d for 7 days ago).",
)
@click.option("--until", callback=_when, metavar="WHEN", help="Only results done before WHEN.")
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
    from .commands import migrate
    from .render import render_migration

    celery_app = _app_from_context(app)
    if isinstance(celery_app, str):
        from .apps import load_app

        celery_app = load_app(celery_app)
    if target_compression == "none":
        target_compression = ""
    with _progress_bar("migrating") as progress:
        report = migrate(
            source,
            target,
            app=celery_app,
            target_compression=target_compression,
            progress=progress,
            command=_as_typed(),
            **options,
        )
    _emit(report, as_json, render_migration)
    sys.exit(0 if report.ok else 1)


@click.command("stats")
@target_options
@click.option(
    "--policy",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Retention policy for 'past lifetime' (default: the app's resultkit_retention).",
)
@json_option
@handle_errors
def stats_command(url: str | None, app: str | None, as_json: bool, policy: str | None) -> None:
    """What is stored: totals by state and task, ages, sizes, keys without TTL."""
    from .commands import stats
    from .render import render_stats

    report = stats(url, app=_app_from_context(app), policy=policy)
    _emit(report, as_json, render_stats)


@click.command("cleanup")
@target_options
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=_duration,
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
    help="Write every result to this gzip'd JSON-lines archive before deleting it.",
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
    from .commands import cleanup
    from .render import render_cleanup

    with _progress_bar("deleting") as progress:
        report = cleanup(url, app=_app_from_context(app), progress=progress, **options)
    _emit(report, as_json, render_cleanup)


def _sizes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[int, ...]:
    out = []
    for value in values or ("1KB",):
        text = value.strip().upper().removesuffix("B")
        factor = {"K": 1024, "M": 1024 * 1024, "G": 1024**3}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in ("K", "M", "G") else text
        try:
            size = int(float(digits) * factor)
        except (ValueError, OverflowError):
            size = -1
        if not 0 < size <= 1024**3:
            raise click.BadParameter(f"{value!r}: write a size from 1 byte to 1GB: 100, 1KB, 2MB")
        out.append(size)
    return tuple(out)


@click.command("bench")
@click.argument("urls", nargs=-1, metavar="[URL ...]")
@click.option("-A", "--app", "app", metavar="MODULE", help="Measure this app's result backend.")
@click.option(
    "--size",
    "sizes",
    multiple=True,
    callback=_sizes,
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
    from .commands import bench
    from .render import render_bench

    report = bench(
        list(urls) or None,
        app=_app_from_context(app),
        sizes=sizes,
        serializers=tuple(serializers) or (None,),
        compressions=tuple(compressions) or (None,),
        concurrency=tuple(concurrency) or (1,),
        mode=mode,
        seconds=seconds,
        compare=not no_compare,
    )
    if plot:
        from .plot import write_plot

        write_plot(report, plot)
    _emit(report, as_json, render_bench)


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
    from .commands import config_new

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
    from .commands import config_check
    from .render import render_config_check

    chosen = _app_from_context(app)
    if chosen is None:
        raise UsageError(
            "config check needs -A APP (or run it as celery -A APP results config check)"
        )
    report = config_check(chosen)
    _emit(report, as_json, render_config_check)
    sys.exit(0 if report.ok else 1)


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
    from .commands import cutover_status
    from .render import render_cutover

    report = cutover_status(_app_from_context(app), new=new, old=old)
    _emit(report, as_json, render_cutover)
    sys.exit(0 if report.old_can_be_dropped else 1)


@click.group("key")
def key_group() -> None:
    """Encryption keys for the resultkit-encrypted serializer."""


@key_group.command("new")
def key_new_command() -> None:
    """Print a new random 256-bit key (URL-safe base64) and its key id.

    Store it where your secrets live and put it first in
    resultkit_encryption_keys (or RESULTKIT_ENCRYPTION_KEYS): see docs/encryption.md.
    """
    from .encryption import generate_key, key_label

    key = generate_key()
    click.echo(key)
    click.echo(f"key id: {key_label(key)}", err=True)


@contextlib.contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[Any], None] | None]:
    """A progress bar with rate and ETA on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from .render import progress_bar

    with progress_bar(_console(stderr=True), label) as update:
        yield update


COMMANDS: tuple[click.Command, ...] = (
    doctor_command,
    migrate_command,
    stats_command,
    cleanup_command,
    cutover_group,
    bench_command,
    config_group,
    key_group,
)

_HELP = """Configure, check, bound, migrate and speed up Celery result backends.

Every command takes a result backend URL or -A APP; with neither, the embedded
SQLite default (celery-results.sqlite3 in this folder) is used.
"""


class _OneLineErrors(click.Group):
    """The ``resultkit`` group: a bad option or value is one line on stderr, exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `resultkit` alone: the help
                exc.show()
                sys.exit(exc.exit_code)
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            _die(exc.format_message().rstrip(".") + where, exc.exit_code)
        except click.ClickException as exc:
            _die(exc.format_message(), exc.exit_code)
        except click.Abort:
            _die("interrupted", 130)
        except BrokenPipeError:
            sys.exit(0)  # the reader went away (resultkit ... | head)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(
    cls=_OneLineErrors, help=_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="resultkit")
def main() -> None:
    """The ``resultkit`` console script."""


@click.group("results", help=_HELP.replace("-A APP", "the app given to celery -A"))
@click.pass_context
def celery_results(ctx: click.Context) -> None:
    """``celery -A proj results ...``: the same commands, configured by Celery's app."""
    celery_app = getattr(ctx.obj, "app", None)
    if celery_app is not None:
        ctx.meta[_CELERY_APP] = celery_app


for _command in COMMANDS:
    main.add_command(_command)
    celery_results.add_command(_command)
