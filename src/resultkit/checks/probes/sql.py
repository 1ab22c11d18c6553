"""Doctor probe for SQL backends: tables, the ``date_done`` index, rows past
their lifetime; connecting with the raw driver, which never creates tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from ...records import Kind, as_datetime
from ...report import CheckResult
from .base import Probe

__all__ = ["SqlProbe", "server_label"]


class SqlProbe(Probe):
    label = "a SQL result backend (SQLAlchemy)"

    #: SQLAlchemy engine for read-only server checks, without a pool.
    engine: Any = None

    def tighten(self, conf: Any, seconds: float) -> None:
        options = dict(conf.database_engine_options or {})
        options["connect_args"] = {
            **_timeouts(self.url.sqlalchemy_url or "", seconds),
            **(options.get("connect_args") or {}),
        }
        conf.database_engine_options = options

    def connect(self) -> str:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        # Celery's backend is built later, by the round trip: building it may
        # create the tables, and the server checks must see them as they are.
        self.tighten(self.app.conf, self.step_timeout())
        options = dict(self.app.conf.database_engine_options or {})
        for pool_only in ("pool_size", "max_overflow", "pool_timeout", "pool_recycle"):
            options.pop(pool_only, None)
        assert self.url.sqlalchemy_url is not None
        self.engine = sa.create_engine(self.url.sqlalchemy_url, poolclass=NullPool, **options)
        dialect = self.engine.dialect.name
        query = "SELECT sqlite_version()" if dialect == "sqlite" else "SELECT version()"
        with self.engine.connect() as conn:
            version = conn.execute(sa.text(query)).scalar()
        return server_label(dialect, str(version))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    def server_checks(self) -> list[CheckResult]:
        import sqlalchemy as sa

        from ...stores.sql import celery_table_names

        tables = celery_table_names(self.app.conf)
        (task_schema, task_table), (group_schema, group_table) = (
            tables[Kind.TASK],
            tables[Kind.GROUP],
        )
        inspector = sa.inspect(self.engine)
        missing = [
            name if schema is None else f"{schema}.{name}"
            for schema, name in ((task_schema, task_table), (group_schema, group_table))
            if not inspector.has_table(name, schema=schema)
        ]
        if missing:
            return [
                CheckResult.warned(
                    "sql.tables",
                    f"tables {', '.join(missing)} do not exist yet: Celery creates them on "
                    "first use",
                    "nothing to do if the database user may CREATE TABLE; otherwise create them "
                    "(set database_create_tables_at_setup = True and start a worker once)",
                    missing=missing,
                )
            ]
        results = [
            CheckResult.passed("sql.tables", f"tables {task_table} and {group_table} exist"),
            _date_done_index(inspector, task_schema, task_table),
        ]
        return results + self._rows(
            sa.table(task_table, sa.column("date_done"), schema=task_schema)
        )

    def _rows(self, table: Any) -> list[CheckResult]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            total, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(table.c.date_done))
            ).one()
            expires = self.expires_s
            expired = 0
            if expires:
                now = datetime.now(timezone.utc).replace(tzinfo=None)
                cutoff = now - timedelta(seconds=expires)
                expired = conn.execute(
                    sa.select(sa.func.count()).where(table.c.date_done < cutoff)
                ).scalar_one()
        oldest = as_datetime(oldest)  # SQLite returns text
        oldest_text = f", oldest from {oldest:%Y-%m-%d %H:%M} UTC" if oldest else ""
        results = [
            CheckResult.passed(
                "sql.rows",
                f"{total:,} task results{oldest_text}",
                rows=total,
                oldest=oldest.isoformat() if oldest else None,
            )
        ]
        if expired:
            results.append(
                CheckResult.warned(
                    "sql.expired-rows",
                    f"{expired:,} rows are past result_expires and still stored: nothing is "
                    "cleaning up",
                    "run `resultkit cleanup` now, and schedule it (cron) or run celery beat",
                    rows=expired,
                )
            )
        elif expires:
            results.append(
                CheckResult.passed("sql.expired-rows", "no rows are past result_expires", rows=0)
            )
        return results


def _date_done_index(inspector: Any, schema: str | None, table: str) -> CheckResult:
    indexed = any(
        list(index.get("column_names") or []) == ["date_done"]
        for index in inspector.get_indexes(table, schema=schema)
    )
    if indexed:
        return CheckResult.passed("sql.date-done-index", "date_done is indexed")
    qualified = table if schema is None else f"{schema}.{table}"
    return CheckResult.warned(
        "sql.date-done-index",
        f"{qualified}.date_done has no index (tables created by older Celery "
        "versions lack it): every cleanup scans the whole table",
        f"CREATE INDEX ix_{table}_date_done ON {qualified} (date_done)",
    )


def _timeouts(sqlalchemy_url: str, seconds: float) -> dict[str, Any]:
    if sqlalchemy_url.startswith("postgresql"):
        return {"connect_timeout": max(2, int(seconds))}
    if sqlalchemy_url.startswith(("mysql", "mariadb")):
        whole = max(1, int(seconds))
        return {"connect_timeout": whole, "read_timeout": whole, "write_timeout": whole}
    if sqlalchemy_url.startswith("sqlite"):
        return {"timeout": seconds}
    return {}


def server_label(dialect: str, version: str) -> str:
    """The server's name and version, once: ``PostgreSQL 16.2``, ``MariaDB 10.11.6``."""
    if dialect == "postgresql":
        return " ".join(version.split()[:2])  # "PostgreSQL 16.2 (Debian ...) on x86_64..."
    if dialect in ("mysql", "mariadb"):
        number, _, rest = version.partition("-")
        return f"{'MariaDB' if 'mariadb' in rest.lower() else 'MySQL'} {number}"
    if dialect == "sqlite":
        return f"SQLite {version}"
    return f"{dialect} {version.split()[0] if version.split() else ''}".strip()
