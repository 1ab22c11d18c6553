"""The command line: parse arguments, call a library function, render, exit.

Exit codes: 0 when everything passed, 1 when a check or operation found
problems, 2 for usage errors (bad options, an app that cannot be loaded, a
URL and ``-A`` given together).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import AppNotFound, ConfigurationError, ResultkitError, UsageError
from .report import dumps_json
from .urls import Redactor

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
    if as_json:
        click.echo(dumps_json(report.as_dict()))
    else:
        render_doctor(report, _console())
    sys.exit(0 if report.ok else 1)


COMMANDS: tuple[click.Command, ...] = (doctor_command,)

_HELP = """Configure, check, bound, migrate and speed up Celery result backends.

Every command takes a result backend URL or -A APP; with neither, the embedded
SQLite default (celery-results.sqlite3 in this folder) is used.
"""


@click.group(help=_HELP, context_settings={"help_option_names": ["-h", "--help"]})
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
