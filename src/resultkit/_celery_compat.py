"""What differs between the Celery releases resultkit supports (5.4 to 5.7), in one place.

Celery 5.7 changed its SQL backend: the ``result`` columns became
``LargeBinary`` holding the app's serializer (5.4-5.6: SQLAlchemy's
``PickleType``, which pickles the Python value itself), ``celery_taskmeta``
gained ``children`` and ``stamps``, and the backend gained
``_decode_stored_result`` and a retry loop of its own.  Everything that
depends on which of these the installed Celery has asks here; the matrix of
``noxfile.py`` runs the tests on each release.
"""

from __future__ import annotations

import inspect
import io
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import celery
import sqlalchemy as sa
from celery.backends.base import BaseBackend

__all__ = [
    "CELERY_CALLS_RETRY_HOOK",
    "CELERY_VERSION",
    "bytes_table",
    "decode_stored_result",
    "ensure_retryable",
    "model_pickles_results",
    "pickle_group",
    "pickle_result",
    "redis_set_takes_expires",
    "tables_pickle_results",
    "unpickle_group",
]

T = TypeVar("T")

#: The installed Celery's (major, minor).
CELERY_VERSION: tuple[int, int] = tuple(  # type: ignore[assignment]
    int(part) for part in celery.__version__.split(".")[:2]
)


#: Celery's retry loops call ``on_backend_retryable_error`` after each failure (5.6+);
#: before, a backend that must drop lost connections does so itself.
CELERY_CALLS_RETRY_HOOK: bool = hasattr(BaseBackend, "on_backend_retryable_error")


def tables_pickle_results() -> bool:
    """True when the installed Celery's SQL tables pickle results (5.4-5.6: the older
    layout, which tables made with it have)."""
    from celery.backends.database.models import Task

    return model_pickles_results(Task)


def redis_set_takes_expires(backend_class: Any) -> bool:
    """True when Celery's Redis backend ``set()`` takes a lifetime per key (``expires``).

    Celery 5.4-5.6 set every key with the backend's one ``expires``; 5.7 takes a
    lifetime per call, which the retention policies of ``resultkit-redis`` use.
    """
    found = _SET_TAKES_EXPIRES.get(backend_class)
    if found is None:
        found = _SET_TAKES_EXPIRES[backend_class] = (
            "expires" in inspect.signature(backend_class.set).parameters
        )
    return found


_SET_TAKES_EXPIRES: dict[Any, bool] = {}


def model_pickles_results(model: Any) -> bool:
    """True when *model*'s ``result`` column is a ``PickleType`` (Celery 5.4-5.6)."""
    return isinstance(model.__table__.c.result.type, sa.PickleType)


def bytes_table(table: sa.Table) -> sa.Table:
    """*table* with its ``PickleType`` columns as the bytes they hold (``LargeBinary``).

    Code that writes the older layout pickles values itself
    (:func:`pickle_result`), so that every path, SQLAlchemy's or the driver's
    own, sends and receives the same bytes.
    """
    if not any(isinstance(column.type, sa.PickleType) for column in table.c):
        return table
    copy = table.to_metadata(sa.MetaData())
    for column in copy.c:
        if isinstance(column.type, sa.PickleType):
            column.type = sa.LargeBinary()
    return copy


def pickle_result(value: Any) -> bytes | None:
    """A value as a ``PickleType`` column of Celery 5.4-5.6 stores it (None stays NULL)."""
    return None if value is None else pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class _GroupFromTuple:
    """A group in the older layout: it unpickles as Celery's own ``GroupResult``.

    Celery 5.4-5.6 pickle the ``GroupResult`` object itself (its members'
    backend and that backend's URL included) and hand whatever they unpickle
    to the application, so a bare tuple would come back as a tuple.  This
    pickles as a call to ``celery.result.result_from_tuple`` instead: the
    reader gets a ``GroupResult`` bound to its own app, and no URL is stored.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        from celery.result import result_from_tuple

        return result_from_tuple, (self.value,)


def pickle_group(value: Any) -> bytes | None:
    """A group's tuple form (``GroupResult.as_tuple()``) as Celery 5.4-5.6 store a group."""
    return pickle_result(None if value is None else _GroupFromTuple(value))


class _GroupUnpickler(pickle.Unpickler):
    """Unpickles a ``GroupResult`` without making the backend pickled inside it.

    Celery 5.4-5.6 pickle each member's backend with its URL: unpickled, it
    would be built and connect (and Celery 5.5+ would create, 5.7 alter,
    the tables of that URL).  Here each member gets no backend of its own.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("celery.backends.base", "unpickle_backend"):
            return _no_backend
        return super().find_class(module, name)


def _no_backend(*args: Any, **kwargs: Any) -> None:
    return None


def unpickle_group(payload: bytes) -> Any:
    """A group pickled by Celery 5.4-5.6 (or by :func:`pickle_group`), in its tuple form."""
    from celery.result import ResultBase

    value = _GroupUnpickler(io.BytesIO(payload)).load()
    return value.as_tuple() if isinstance(value, ResultBase) else value


def decode_stored_result(backend: Any, value: Any) -> Any:
    """A ``result`` column's value as Celery's database backend *backend* reads it.

    Celery 5.7 decodes the stored bytes (falling back to pickle for rows of
    the older layout); before it, the ``PickleType`` column has unpickled the
    value already.
    """
    decode = getattr(backend, "_decode_stored_result", None)
    if decode is not None:
        return decode(value)
    return value


def ensure_retryable(backend: Any, func: Callable[..., T], *args: Any) -> T:
    """Call *func* under the retry rule of Celery's backend operations.

    Celery 5.7 has it as ``_ensure_retryable`` on every backend; before it,
    the same rule is applied here: retry what ``exception_safe_to_retry``
    accepts while ``always_retry`` is on, up to ``max_retries`` times, with
    Celery's backoff, calling ``on_backend_retryable_error`` after each failure.
    """
    native = getattr(backend, "_ensure_retryable", None)
    if native is not None:
        return native(func, *args)  # type: ignore[no-any-return]
    from celery.utils.time import get_exponential_backoff_interval

    retries = 0
    while True:
        try:
            return func(*args)
        except Exception as exc:
            if not (backend.always_retry and backend.exception_safe_to_retry(exc)):
                raise
            if retries >= backend.max_retries:
                raise
            retries += 1
            backend.on_backend_retryable_error(exc)
            backoff_ms = get_exponential_backoff_interval(
                backend.base_sleep_between_retries_ms,
                retries,
                backend.max_sleep_between_retries_ms,
                True,
            )
            backend._sleep(backoff_ms / 1000)
