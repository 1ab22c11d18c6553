"""Stores: results in each backend's native layout, behind one contract.

:func:`open_store` picks the store for a URL:

==========================================  =========================
``redis://``, ``rediss://``, ``sentinel://``  :class:`RedisStore`
``db+<SQLAlchemy URL>``                       :class:`SqlStore`
``django+<SQLAlchemy URL>``                   :class:`DjangoStore`
``file:///folder``                            :class:`FilesystemStore`
``jsonl:///path/archive.jsonl.gz``            :class:`ArchiveStore`
==========================================  =========================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..boundary import translating
from ..drivers import require_driver
from ..errors import ConfigurationError
from ..urls import BackendKind, Redactor, mask_url, parse_backend_url
from .base import Codec, OnConflict, Page, Store, WriteResult

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["Codec", "OnConflict", "Page", "Store", "WriteResult", "open_store"]

RPC_REFUSAL = (
    "rpc:// keeps no stored results (each result is a message to the client that sent the "
    "task), so there is nothing to read or write: migrate from or to a stored backend"
)


def open_store(url: str, app: Celery | None = None, codec: Codec | None = None) -> Store:
    """Open the store for *url*; *app* lends its settings (table names, key prefix,
    serializer, ``result_expires``).

    Opening connects to nothing; a setting Celery refuses for this backend is a
    :class:`~resultkit.errors.ConfigurationError`.
    """
    redactor = Redactor()
    redactor.add_url(url)
    with translating(mask_url(url), "open the store", redactor):
        return _open(url, app, codec)


def _open(url: str, app: Celery | None, codec: Codec | None) -> Store:
    from ..apps import app_for_url, user_settings

    scheme = url.partition("://")[0].lower()
    if scheme == "jsonl" or scheme.startswith("jsonl+"):
        from .archive import ArchiveStore

        return ArchiveStore(url, app_for_url("cache+memory://", **user_settings(app)), codec)
    if scheme.startswith("django+"):
        from ..drivers import require_sql_driver
        from .django import DjangoStore

        require_sql_driver(parse_backend_url("db+" + url.split("+", 1)[1]))
        return DjangoStore(url, app_for_url("cache+memory://", **user_settings(app)), codec)
    parsed = parse_backend_url(url)
    require_driver(parsed)
    if parsed.kind is BackendKind.REDIS_CLUSTER:
        from .rediscluster import RedisClusterStore

        return RedisClusterStore(url, app_for_url(url, **user_settings(app)), codec)
    store_app = app_for_url(url, **user_settings(app))
    if parsed.kind is BackendKind.RPC:
        raise ConfigurationError(RPC_REFUSAL)
    if parsed.kind in (BackendKind.REDIS, BackendKind.SENTINEL):
        from .redis import RedisStore

        return RedisStore(url, store_app, codec)
    if parsed.kind is BackendKind.SQL:
        from .sql import SqlStore

        return SqlStore(url, store_app, codec)
    if parsed.kind is BackendKind.FILE:
        from .filesystem import FilesystemStore

        return FilesystemStore(url, store_app, codec)
    raise ConfigurationError(
        f"resultkit cannot read or write {mask_url(url)} yet: stores exist for redis://, "
        "rediss://, sentinel://, rediscluster://, db+..., django+..., file:// and jsonl://"
    )
