"""The command line: parse arguments, call a library function, render, exit.

Exit codes: 0 when everything passed, 1 when a check or operation found
problems, 2 for usage errors (bad options, an app that cannot be loaded, a
URL and ``-A`` given together).  The only package that talks to click:
``common`` (errors, options, console), ``check`` (doctor, stats, bench,
config, key), ``move`` (migrate, cleanup, cutover), ``find`` (find, show,
failures), ``actions`` (export, erase, retry), ``serve`` and ``filters`` (the filter
options they share).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from ..encryption import install_worker_check
from .actions import erase_command, export_command, retry_command
from .check import bench_command, config_group, doctor_command, key_group, stats_command
from .common import CELERY_APP, die
from .find import failures_command, find_command, show_command
from .move import cleanup_command, cutover_group, migrate_command
from .serve import serve_command

# The `celery` command loads this module as its `results` plugin: from here every
# `celery worker` whose app uses resultkit-encrypted refuses to start without keys.
install_worker_check()

__all__ = ["celery_results", "main"]

COMMANDS: tuple[click.Command, ...] = (
    doctor_command,
    migrate_command,
    stats_command,
    cleanup_command,
    cutover_group,
    bench_command,
    config_group,
    key_group,
    find_command,
    show_command,
    failures_command,
    export_command,
    erase_command,
    retry_command,
    serve_command,
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
            die(exc.format_message().rstrip(".") + where, exc.exit_code)
        except click.ClickException as exc:
            die(exc.format_message(), exc.exit_code)
        except click.Abort:
            die("interrupted", 130)
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
        ctx.meta[CELERY_APP] = celery_app


for _command in COMMANDS:
    main.add_command(_command)
    celery_results.add_command(_command)
