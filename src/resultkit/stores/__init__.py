"""Stores: results in each backend's native layout, behind one contract.

:func:`open_store` picks the store for a URL:

==========================================  =========================
``redis://``, ``rediss://``, ``sentinel://``  :class:`RedisStore`
``db+<SQLAlchemy URL>``                       :class:`SqlStore`
``django+<SQLAlchemy URL>``                   :class:`DjangoStore`
``file:///folder``                            :class:`FilesystemStore`
``jsonl:///path/archive.jsonl.gz``            :class:`ArchiveStore`
``jsonl+s3://bucket/key.jsonl.gz``            :class:`S3ArchiveStore` (the same format in S3)
==========================================  =========================
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ..boundary import translating
from ..drivers import require_driver, require_sql_driver
from ..errors import ConfigurationError
from ..urls import BackendKind, BackendURL, Redactor, mask_url, parse_backend_url, parse_store_url
from .base import Codec, OnConflict, Page, Store, StoreSettings, WriteResult

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "STORES",
    "Codec",
    "OnConflict",
    "Page",
    "Store",
    "StoreSettings",
    "WriteResult",
    "open_store",
    "store_class",
]

RPC_REFUSAL = (
    "rpc:// keeps no stored results (each result is a message to the client that sent the "
    "task), so there is nothing to read or write: migrate from or to a stored backend"
)

#: The store of each kind of location: (module, class), imported when used.
STORES: dict[BackendKind, tuple[str, str]] = {
    BackendKind.REDIS: (".redis", "RedisStore"),
    BackendKind.SENTINEL: (".redis", "RedisStore"),
    BackendKind.REDIS_CLUSTER: (".rediscluster", "RedisClusterStore"),
    BackendKind.SQL: (".sql", "SqlStore"),
    BackendKind.DJANGO: (".sql", "DjangoStore"),
    BackendKind.FILE: (".filesystem", "FilesystemStore"),
    BackendKind.ARCHIVE: (".archive", "ArchiveStore"),
}


def open_store(
    url: str | BackendURL,
    app: Celery | None = None,
    codec: Codec | None = None,
    *,
    settings: StoreSettings | None = None,
) -> Store:
    """Open the store for *url*; its *settings* (default: those of *app*) say
    what the store needs of the Celery configuration (table names, key prefix,
    serializer, ``result_expires``).

    Opening connects to nothing; a setting Celery refuses for this backend is a
    :class:`~resultkit.errors.ConfigurationError`.
    """
    raw = url.raw if isinstance(url, BackendURL) else url
    redactor = Redactor()
    redactor.add_url(raw)
    with translating(mask_url(raw), "open the store", redactor):
        location = url if isinstance(url, BackendURL) else parse_store_url(url)
        cls = store_class(location)
        if location.kind is BackendKind.DJANGO:
            require_sql_driver(parse_backend_url("db+" + location.raw.split("+", 1)[1]))
        elif location.kind is not BackendKind.ARCHIVE:
            require_driver(location)
        return cls(location, settings or StoreSettings.from_app(app), codec)


def store_class(url: str | BackendURL) -> type[Store]:
    """The store class for *url*'s kind of location."""
    location = url if isinstance(url, BackendURL) else parse_store_url(url)
    if location.kind is BackendKind.RPC:
        raise ConfigurationError(RPC_REFUSAL)
    found = STORES.get(location.kind)
    if found is None:
        raise ConfigurationError(
            f"resultkit cannot read or write {location.masked} yet: stores exist for redis://, "
            "rediss://, sentinel://, rediscluster://, db+..., django+..., file:// and jsonl://"
        )
    module, name = found
    if location.scheme == "jsonl+s3":
        # An archive in object storage: the archive's format, another medium.
        module, name = ".archive_s3", "S3ArchiveStore"
    cls: type[Store] = getattr(import_module(module, __name__), name)
    return cls
