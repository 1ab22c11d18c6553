"""What each column of the result tables holds, defined once.

The SQL store (:mod:`.celery`) makes its rows from these definitions, the COPY
writer (:mod:`.pgcopy`) hands their roles to the C row maker, whose codes
(``_speedups.COLUMN_CODES``) a test compares with :class:`Role`, and the
django-celery-results tables are declared here too.
"""

from __future__ import annotations

import enum
import pickle
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from ...records import EXTENDED_FIELDS, Kind, naive_utc

__all__ = [
    "DJANGO_GROUP_TABLE",
    "DJANGO_OPTIONAL_COLUMNS",
    "DJANGO_TASK_TABLE",
    "GROUP_COLUMNS",
    "TASK_COLUMNS",
    "Column",
    "Role",
    "celery_table_names",
    "columns_of",
    "django_tables",
    "pickled",
    "row_values",
]


class Role(enum.IntEnum):
    """What a column holds, and how its value is made from a result's meta.

    The numbers are the C row maker's column codes (``_speedups.COLUMN_CODES``).
    """

    #: The row's id from the table's sequence (given with the row, not in the meta).
    ROW_ID = 0
    #: The result's id.
    ID = 1
    #: Text as it is (or NULL).
    TEXT = 2
    #: Always encoded with the result's serializer.
    ENCODED = 3
    #: Encoded, or NULL for None.
    ENCODED_OPT = 4
    #: Encoded, or NULL when empty (``children``).
    ENCODED_IF = 5
    #: A naive UTC timestamp.
    TIMESTAMP = 6
    #: An integer.
    INT = 7
    #: NULL unless the meta holds stamps: then ``{"stamped_headers", "stamps"}`` encoded.
    NULL_UNLESS = 8


_TEXT = frozenset({"varchar", "text", "bpchar"})
_BYTES = frozenset({"bytea"})
INT_WIDTHS = {"int2": 2, "int4": 4, "int8": 8}


@dataclass(frozen=True)
class Column:
    """One column of Celery's result tables."""

    name: str
    role: Role
    #: PostgreSQL types binary COPY writes this column as, from what the row holds.
    binary: frozenset[str]
    #: The meta key its value is read from.
    key: str = ""

    @property
    def meta_key(self) -> str:
        return self.key or self.name


#: Celery's task table, in the order rows are made (optional columns included).
TASK_COLUMNS = (
    Column("task_id", Role.ID, _TEXT),
    Column("status", Role.TEXT, _TEXT),
    Column("result", Role.ENCODED, _BYTES),
    Column("traceback", Role.TEXT, _TEXT),
    Column("date_done", Role.TIMESTAMP, frozenset({"timestamp"})),
    Column("children", Role.ENCODED_IF, _BYTES),
    Column("name", Role.TEXT, _TEXT),
    Column("args", Role.ENCODED_OPT, _BYTES),
    Column("kwargs", Role.ENCODED_OPT, _BYTES),
    Column("worker", Role.TEXT, _TEXT),
    Column("retries", Role.INT, frozenset(INT_WIDTHS)),
    Column("queue", Role.TEXT, _TEXT),
    Column("stamps", Role.NULL_UNLESS, _BYTES, key="stamped_headers"),
)
#: Celery's group table.
GROUP_COLUMNS = (
    Column("taskset_id", Role.ID, _TEXT),
    Column("result", Role.ENCODED, _BYTES),
    Column("date_done", Role.TIMESTAMP, frozenset({"timestamp"})),
)
#: Every column by name (a name means the same in both tables).
BY_NAME = {column.name: column for column in (*TASK_COLUMNS, *GROUP_COLUMNS)}
#: Columns a task table may lack: the older layout has no children, only the
#: extended layout has the extended fields, Celery 5.3+ adds stamps.
_OPTIONAL = frozenset({"children", "stamps", *EXTENDED_FIELDS})

assert {c.name for c in TASK_COLUMNS} - _OPTIONAL == {
    "task_id",
    "status",
    "result",
    "traceback",
    "date_done",
}


def celery_table_names(conf: Mapping[str, Any]) -> dict[Kind, tuple[str | None, str]]:
    """(schema, table) of Celery's task and group tables, from the app's settings."""
    names = conf.get("database_table_names") or {}
    schemas = conf.get("database_table_schemas") or {}
    return {
        Kind.TASK: (schemas.get("task"), names.get("task", "celery_taskmeta")),
        Kind.GROUP: (schemas.get("group"), names.get("group", "celery_tasksetmeta")),
    }


def columns_of(kind: Kind, present: Collection[str]) -> tuple[Column, ...]:
    """The columns of *kind* that a table with the columns *present* fills."""
    if kind is Kind.GROUP:
        return GROUP_COLUMNS
    return tuple(c for c in TASK_COLUMNS if c.name not in _OPTIONAL or c.name in present)


def pickled(value: Any) -> bytes:
    """The older layout's ``PickleType`` column value."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def row_values(
    result_id: str,
    meta: Mapping[str, Any],
    columns: tuple[Column, ...],
    encode: Callable[[Any], bytes],
    encode_result: Callable[[Any], bytes | None] | None = None,
) -> list[Any]:
    """The values of one row for *columns*: the Python twin of the C row maker.

    *encode_result*, when given, encodes the ``result`` column alone (the
    older layout pickles the result, while args and kwargs are in the app's
    serializer all the same).

    A group without a date gets the time it is written: Celery's Redis backend
    keeps no date in a group, and without one the row would never expire
    (Celery's own SQL backend dates a group by the time it is saved).
    """
    get = meta.get
    row: list[Any] = []
    for column in columns:
        role = column.role
        value = get(column.meta_key)
        if role is Role.ID:
            row.append(result_id)
        elif role is Role.TEXT or role is Role.INT:
            row.append(value)
        elif role is Role.ENCODED:
            row.append((encode_result or encode)(value))
        elif role is Role.ENCODED_OPT:
            row.append(None if value is None else encode(value))
        elif role is Role.ENCODED_IF:
            row.append(encode(value) if value else None)
        elif role is Role.TIMESTAMP:
            done = naive_utc(value)
            if done is None and columns is GROUP_COLUMNS:
                done = datetime.now(timezone.utc).replace(tzinfo=None)
            row.append(done)
        elif role is Role.NULL_UNLESS:
            if value:
                row.append(encode({"stamped_headers": value, "stamps": {h: get(h) for h in value}}))
            else:
                row.append(None)
        else:  # pragma: no cover - ROW_ID is never a meta column
            raise ValueError(f"column {column.name} has no value in a meta")
    return row


# ------------------------------------------------------ django-celery-results

DJANGO_TASK_TABLE = "django_celery_results_taskresult"
DJANGO_GROUP_TABLE = "django_celery_results_groupresult"


#: Columns that only some releases' migrations make: ``date_started`` came in 2.6.
DJANGO_OPTIONAL_COLUMNS = frozenset({"date_started"})


def django_tables(
    metadata: sa.MetaData, absent: frozenset[str] = frozenset()
) -> dict[Kind, sa.Table]:
    """django-celery-results' tables, as its newest migrations create them, less the
    optional columns *absent* (tables of an older release)."""
    when = sa.DateTime(timezone=True)
    task = sa.Table(
        DJANGO_TASK_TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(255), nullable=False, unique=True),
        sa.Column("periodic_task_name", sa.String(255), nullable=True),
        sa.Column("task_name", sa.String(255), nullable=True),
        sa.Column("task_args", sa.Text, nullable=True),
        sa.Column("task_kwargs", sa.Text, nullable=True),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("worker", sa.String(100), nullable=True),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("content_encoding", sa.String(64), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("date_created", when, nullable=False),
        *(() if "date_started" in absent else (sa.Column("date_started", when, nullable=True),)),
        sa.Column("date_done", when, nullable=False, index=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("meta", sa.Text, nullable=True),
    )
    group = sa.Table(
        DJANGO_GROUP_TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.String(255), nullable=False, unique=True),
        sa.Column("date_created", when, nullable=False),
        sa.Column("date_done", when, nullable=False, index=True),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("content_encoding", sa.String(64), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
    )
    return {Kind.TASK: task, Kind.GROUP: group}
