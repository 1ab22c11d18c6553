"""Results in SQL tables: one home for everything SQL.

``layout`` says what each column holds (shared by the stores, ``resultkit-db``,
the COPY writer and the C row maker); ``tables`` is the store base both table
layouts use (read, count, purge, summarize, delete); ``celery`` is Celery's own
tables, ``django`` django-celery-results'; ``pgcopy`` writes batches to
PostgreSQL with COPY; ``statements``, ``purge`` and ``summary`` are the SQL the
stores run.
"""

from .celery import SqlStore
from .django import DjangoStore
from .layout import celery_table_names
from .tables import TableStore

__all__ = ["DjangoStore", "SqlStore", "TableStore", "celery_table_names"]
