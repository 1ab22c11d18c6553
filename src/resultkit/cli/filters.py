"""The filter options every command that selects results shares, made into a :class:`Query`.

Decorate a command with :func:`filter_options`; it receives one ``query``
argument (a :class:`~resultkit.query.Query`) instead of the options.  A bad
filter (an unknown state, a malformed date, ``--kwarg`` without ``=``) is one
line and exit 2, before the store is opened.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

import click

from ..errors import UsageError
from ..records import Kind
from .common import when_value

__all__ = ["filter_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: (option, parameter name, help, extra click settings), in the order --help lists them.
_OPTIONS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("--state", "states", "Only results in this state (repeatable).", {"multiple": True}),
    (
        "--task",
        "tasks",
        "Only tasks whose name matches this glob, e.g. 'reports.*' "
        "(needs result_extended; repeatable).",
        {"multiple": True, "metavar": "GLOB"},
    ),
    (
        "--since",
        "since",
        "Only results done at or after WHEN (ISO time, or 7d for 7 days ago).",
        {"callback": when_value, "metavar": "WHEN"},
    ),
    (
        "--until",
        "until",
        "Only results done before WHEN.",
        {"callback": when_value, "metavar": "WHEN"},
    ),
    (
        "--worker",
        "worker",
        "Only results of this worker (celery@host; a glob; needs result_extended).",
        {"metavar": "NAME"},
    ),
    (
        "--queue",
        "queue",
        "Only tasks delivered through this queue (needs result_extended).",
        {"metavar": "NAME"},
    ),
    ("--group", "group", "Only the tasks of this group id.", {"metavar": "ID"}),
    ("--parent", "parent", "Only the tasks sent by this task id.", {"metavar": "ID"}),
    (
        "--root",
        "root",
        "Only this task and every task below it in its workflow.",
        {"metavar": "ID"},
    ),
    ("--id", "id_prefix", "Only results whose id starts with this.", {"metavar": "PREFIX"}),
    (
        "--exception",
        "exception",
        "Only results holding this exception type (ValueError, myapp.errors.Gone).",
        {"metavar": "TYPE"},
    ),
    (
        "--arg",
        "args",
        "Only tasks whose args or kwargs hold this value (needs result_extended; repeatable).",
        {"multiple": True, "metavar": "VALUE"},
    ),
    (
        "--kwarg",
        "kwargs",
        "Only tasks whose kwargs hold KEY equal to VALUE, e.g. user_id=42 "
        "(needs result_extended; repeatable).",
        {"multiple": True, "metavar": "KEY=VALUE"},
    ),
)


@overload
def filter_options(fn: F) -> F: ...
@overload
def filter_options(*, groups: bool = ..., order: bool = ...) -> Callable[[F], F]: ...
def filter_options(fn: F | None = None, *, groups: bool = False, order: bool = False) -> Any:
    """Add the shared filter options to a command; it gets them as ``query``.

    *groups* adds ``--groups`` (select group results too); *order* adds
    ``--oldest-first``.  Usable bare (``@filter_options``) or called.
    """

    def decorate(command: F) -> F:
        names = [name for _, name, _, _ in _OPTIONS]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            with_groups = kwargs.pop("with_groups", False) if groups else False
            oldest = kwargs.pop("oldest_first", False) if order else False
            kwargs["query"] = build_query(values, with_groups=with_groups, oldest_first=oldest)
            return command(*args, **kwargs)

        decorated: Any = wrapper
        if order:
            decorated = click.option(
                "--oldest-first", is_flag=True, help="Oldest first (default: newest first)."
            )(decorated)
        if groups:
            decorated = click.option(
                "--groups", "with_groups", is_flag=True, help="Select group results too."
            )(decorated)
        for option, name, help_text, extra in reversed(_OPTIONS):
            decorated = click.option(option, name, help=help_text, **extra)(decorated)
        result: F = decorated
        return result

    return decorate(fn) if fn is not None else decorate


def build_query(
    values: dict[str, Any], *, with_groups: bool = False, oldest_first: bool = False
) -> Any:
    """The query of parsed option values; a bad one is a one-line usage error (exit 2)."""
    from ..query import Query

    kinds = (Kind.TASK, Kind.GROUP) if with_groups else (Kind.TASK,)
    try:
        return Query.build(
            values.get("states") or (),
            values.get("tasks") or (),
            values.get("since"),
            values.get("until"),
            id_prefix=values.get("id_prefix"),
            worker=values.get("worker"),
            queue=values.get("queue"),
            group=values.get("group"),
            parent=values.get("parent"),
            root=values.get("root"),
            exception=values.get("exception"),
            args=values.get("args") or (),
            kwargs=values.get("kwargs") or (),
            kinds=kinds,
            oldest_first=oldest_first,
        )
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
