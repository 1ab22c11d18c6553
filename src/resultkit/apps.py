"""Find the Celery app and backend URL a command works on.

Every command accepts a backend URL or ``-A/--app``; with neither it uses the
embedded SQLite default.  :func:`resolve_target` turns those inputs into a
:class:`Target`: a Celery app whose ``result_backend`` is the URL to use.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode

from .errors import AppNotFound, UsageError
from .urls import DEFAULT_RESULT_BACKEND, Redactor, mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "Target",
    "app_for_url",
    "load_app",
    "private_copy",
    "resolve_target",
    "user_settings",
]

Origin = Literal["url", "app", "default"]


@dataclass
class Target:
    """The result backend a command works on, and the app that configures it."""

    app: Celery
    #: The ``result_backend`` URL ('' when the app has none).
    url: str
    origin: Origin
    #: What the user named: the module for ``-A``, the masked URL otherwise.
    label: str
    redactor: Redactor = field(default_factory=Redactor)

    @property
    def masked_url(self) -> str:
        """The backend URL with its password hidden."""
        return mask_url(self.url)


def load_app(spec: str) -> Celery:
    """Import the Celery app named *spec* (``proj``, ``proj.celery``, ``proj:app``).

    The current folder is importable, as it is for ``celery -A``.  A module
    that cannot be imported, or raises while it is (a ``SyntaxError``, any
    exception at import), is :class:`AppNotFound`, a usage error.
    """
    from celery import Celery
    from celery.bin.celery import find_app

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = find_app(spec)
    except AttributeError:
        # A plain configuration module (celeryconfig): build an app from it.
        import importlib

        try:
            module = importlib.import_module(spec)
        except Exception as exc:
            raise _import_failed(spec, exc) from exc
        if not hasattr(module, "result_backend") and not hasattr(module, "broker_url"):
            raise AppNotFound(
                f"{spec!r} defines no Celery app and no Celery settings; give -A the module "
                "that defines the app, e.g. -A proj.celery:app"
            ) from None
        app = Celery(spec, set_as_current=False)
        app.config_from_object(module)
        return app
    except ImportError as exc:
        if not isinstance(exc, ModuleNotFoundError) or exc.name not in _module_names(spec):
            raise _import_failed(spec, exc) from exc
        raise AppNotFound(
            f"cannot load the Celery app {spec!r}: {exc}. "
            "Give -A the module that defines it, e.g. -A proj or -A proj.celery:app"
        ) from exc
    except Exception as exc:
        raise _import_failed(spec, exc) from exc
    if not isinstance(app, Celery):
        raise AppNotFound(f"{spec!r} is a {type(app).__name__}, not a Celery app")
    return app


def _module_names(spec: str) -> set[str]:
    """Every module *spec* names: ``a.b.c:app`` names ``a``, ``a.b`` and ``a.b.c``."""
    parts = spec.partition(":")[0].split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def _import_failed(spec: str, exc: BaseException) -> AppNotFound:
    """The one line for a module that raised while it was imported: what, and where."""
    import traceback

    where = ""
    if isinstance(exc, SyntaxError):
        where = ""  # its message names the file and line already
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        cwd = os.getcwd()
        ours = [f for f in frames if f.filename.startswith(cwd)] or frames[-1:]
        if ours:
            last = ours[-1]
            where = f" ({os.path.relpath(last.filename, cwd)}, line {last.lineno})"
    module = spec.partition(":")[0]
    return AppNotFound(
        f"cannot load the Celery app {spec!r}: importing it raised "
        f"{type(exc).__name__}: {exc}{where}; fix the module "
        f"(python -c 'import {module}' shows the traceback)"
    )


def app_for_url(url: str, *, broker: str | None = None, **settings: Any) -> Celery:
    """Build a throw-away Celery app whose result backend is *url*.

    resultkit accepts ``?master_name=NAME`` on ``sentinel://`` URLs, since
    Celery reads the master name only from the transport options; it is moved
    there before Celery sees the URL.  ``rediscluster://`` becomes
    ``resultkit-redis+rediscluster://``.
    """
    from celery import Celery

    app = Celery("resultkit", set_as_current=False)
    url, transport_options = _split_sentinel_master(url)
    if url.partition("://")[0].lower() == "rediscluster":
        # resultkit's store URL for a cluster; Celery knows the backend by its alias.
        url = "resultkit-redis+" + url
    conf: dict[str, Any] = {"result_backend": url}
    if transport_options:
        conf["result_backend_transport_options"] = transport_options
    if broker:
        conf["broker_url"] = broker
    conf.update(settings)
    app.conf.update(conf)
    return app


def private_copy(app: Celery, **changes: Any) -> Celery:
    """A new app with *app*'s settings and *changes*: what resultkit may change
    (a doctor's timeouts, a broker given on the command line) and the backends
    it builds stay out of the caller's app."""
    from celery import Celery

    copy = Celery(app.main or "resultkit", set_as_current=False)
    settings = dict(app.conf.table(with_defaults=False, censored=False))
    settings.pop("deprecated_settings", None)
    copy.conf.update(settings, **changes)
    return copy


def user_settings(app: Celery | None) -> dict[str, Any]:
    """The settings the user gave *app* (no defaults), without its result_backend.

    What one app lends another built for a different URL.
    """
    if app is None:
        return {}
    settings = dict(app.conf.table(with_defaults=False, censored=False))
    for key in ("result_backend", "CELERY_RESULT_BACKEND", "deprecated_settings"):
        settings.pop(key, None)
    return settings


def _split_sentinel_master(url: str) -> tuple[str, dict[str, str]]:
    if not url.lower().startswith("sentinel://") or "master_name=" not in url:
        return url, {}
    chunks = []
    options: dict[str, str] = {}
    for chunk in url.split(";"):
        base, _, query = chunk.partition("?")
        params = parse_qsl(query)
        options.update((k, v) for k, v in params if k == "master_name")
        rest = urlencode([(k, v) for k, v in params if k != "master_name"])
        chunks.append(f"{base}?{rest}" if rest else base)
    return ";".join(chunks), options


def resolve_target(
    url: str | None = None,
    app: Celery | str | None = None,
    *,
    broker: str | None = None,
) -> Target:
    """Decide which backend a command works on.

    *app* may be a Celery app or the ``-A`` string naming one.  Giving both a
    URL and an app is a usage error: the app already names its backend.
    """
    if url and app is not None:
        raise UsageError("give either a backend URL or -A/--app, not both")
    redactor = Redactor()
    if app is not None:
        label = app if isinstance(app, str) else (app.main or "app")
        celery_app = load_app(app) if isinstance(app, str) else app
        if broker:
            celery_app = private_copy(celery_app, broker_url=broker)
        backend = celery_app.conf.result_backend
        backend_url = backend if isinstance(backend, str) else ""
        redactor.add_url(backend_url)
        redactor.add_url(_broker_url(celery_app))
        return Target(celery_app, backend_url, "app", label, redactor)
    origin: Origin = "url" if url else "default"
    backend_url = url or DEFAULT_RESULT_BACKEND
    redactor.add_url(backend_url)
    redactor.add_url(broker)
    celery_app = app_for_url(backend_url, broker=broker)
    return Target(celery_app, backend_url, origin, mask_url(backend_url), redactor)


def _broker_url(app: Celery) -> str:
    try:
        return str(app.conf.broker_url or "")
    except Exception:  # a broken broker setting is the doctor's to report
        return ""
