"""Import optional drivers lazily, turning a missing one into one clear line."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ConfigurationError, MissingDriver
from .urls import BackendKind, BackendURL

__all__ = ["import_driver", "require_driver", "require_sql_driver"]

#: SQLAlchemy dialect+driver → (module, extra that installs it, better URL to use).
_SQL_DRIVERS: dict[str, tuple[str, str, str | None]] = {
    "postgresql+psycopg": ("psycopg", "postgres", None),
    "postgresql+psycopg2": ("psycopg2", "postgres", "db+postgresql+psycopg://"),
    "postgresql": ("psycopg2", "postgres", "db+postgresql+psycopg://"),
    "mysql+pymysql": ("pymysql", "mysql", None),
    "mariadb+pymysql": ("pymysql", "mysql", None),
    "mysql": ("MySQLdb", "mysql", "db+mysql+pymysql://"),
    "mysql+mysqldb": ("MySQLdb", "mysql", "db+mysql+pymysql://"),
}


def import_driver(module: str, extra: str, purpose: str) -> ModuleType:
    """Import *module*, or raise :class:`MissingDriver` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDriver(module, extra, purpose) from exc


def require_driver(url: BackendURL) -> None:
    """Make sure the Python driver that *url* needs can be imported."""
    if url.kind in (BackendKind.REDIS, BackendKind.SENTINEL, BackendKind.REDIS_CLUSTER):
        import_driver("redis", "redis", f"{url.scheme}://")
    elif url.kind is BackendKind.SQL:
        require_sql_driver(url)


def require_sql_driver(url: BackendURL) -> None:
    """Make sure the DB-API driver of a ``db+`` URL imports."""
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    assert url.sqlalchemy_url is not None
    try:
        sa_url = sa.make_url(url.sqlalchemy_url)
    except ArgumentError as exc:
        raise ConfigurationError(f"cannot parse the database URL {url.masked!r}: {exc}") from exc
    name = sa_url.drivername
    module, extra, better = _SQL_DRIVERS.get(name, (name.split("+")[-1], "all", None))
    try:
        dialect_cls = sa_url.get_dialect()
    except NoSuchModuleError as exc:
        raise ConfigurationError(
            f"SQLAlchemy has no dialect {name!r}: use postgresql+psycopg, mysql+pymysql or sqlite"
        ) from exc
    try:
        dialect_cls.import_dbapi()
    except ImportError as exc:
        use = f"{better}..." if better else None
        raise MissingDriver(module, extra, f"the {name} database URL", use=use) from exc
