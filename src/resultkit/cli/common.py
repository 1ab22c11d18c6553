"""What every ``resultkit`` command shares: one-line errors and exit codes,
the console, the URL/``-A`` options, option parsers and the progress bar."""

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

from ..errors import AppNotFound, ConfigurationError, ResultkitError, UsageError
from ..report import dumps_json
from ..urls import Redactor

__all__ = [
    "CELERY_APP",
    "app_from_context",
    "as_typed",
    "console",
    "die",
    "duration_value",
    "emit",
    "handle_errors",
    "json_option",
    "progress_for",
    "sizes_value",
    "target_options",
    "when_value",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Key under which the ``celery results`` group leaves Celery's app for its commands.
CELERY_APP = "resultkit.celery_app"
USAGE_ERRORS = (UsageError, ConfigurationError, AppNotFound)


#: Width used when output is not a terminal (a pipe, a file, a CI log).
PIPE_WIDTH_COLUMNS = 120


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH_COLUMNS
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def die(message: str, code: int) -> NoReturn:
    console(stderr=True).print(
        f"[bold red]error:[/] {escape(Redactor().redact(message))}", markup=True, soft_wrap=True
    )
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Map resultkit errors to a one-line message and exit code 2 (usage) or 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USAGE_ERRORS as exc:
            die(str(exc), 2)
        except ResultkitError as exc:
            die(str(exc), 1)
        except KeyboardInterrupt:
            die("interrupted", 130)
        except Exception as exc:
            if os.environ.get("RESULTKIT_DEBUG"):
                raise
            die(
                f"internal error: {type(exc).__name__}: {exc} "
                "(set RESULTKIT_DEBUG=1 to see the traceback, and please report it)",
                1,
            )

    return wrapper  # type: ignore[return-value]


def as_typed() -> str:
    """The command line this process runs, as typed, with every password masked."""
    words = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    return shlex.join(Redactor().redact(word) for word in words)


def emit(report: Any, as_json: bool, render: Callable[[Any, Console], None]) -> None:
    """Print *report* as one JSON document, or for people."""
    if as_json:
        click.echo(dumps_json(report.as_dict()))
    else:
        render(report, console())


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


def app_from_context(app: str | None) -> Any:
    """The ``-A`` value, or the app Celery loaded when running as ``celery results``."""
    if app:
        return app
    return click.get_current_context().meta.get(CELERY_APP)


def when_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from ..durations import parse_when
    from ..errors import ConfigurationError

    if value is None:
        return None
    try:
        return parse_when(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def duration_value(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from ..durations import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def sizes_value(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[int, ...]:
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


@contextlib.contextmanager
def progress_for(label: str) -> Iterator[Callable[[Any], None] | None]:
    """A progress bar with rate and ETA on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from ..render import progress_bar

    with progress_bar(console(stderr=True), label) as update:
        yield update
