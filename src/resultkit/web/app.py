"""The Starlette application behind ``resultkit serve``: pages, JSON API, metrics.

Every answer comes from a command function (``find``, ``show``, ``failures``,
``stats``); this module only turns request parameters into a
:class:`~resultkit.query.Query` and the reports into JSON, HTML or Prometheus
text.  User input is never a 500: a bad filter is 400, an unknown id 404, a
store that cannot be reached 503, each with one line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from jinja2 import Environment, FileSystemLoader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Route

from ..durations import format_duration
from ..errors import AppNotFound, ConfigurationError, ResultkitError, UsageError
from ..purge import PurgePlan
from ..query import DEFAULT_FIND_LIMIT, MAX_FIND_LIMIT, Query
from ..records import Kind
from ..report import dumps_json
from ..retention import RetentionPolicy
from ..retention import describe as describe_policy
from ..summary import StoreFigures
from ..urls import Redactor
from . import ServeAuth
from .openapi import FILTERS, openapi_document

if TYPE_CHECKING:
    from celery import Celery

    from ..apps import Target
    from ..commands.stats import StatsReport
    from ..stores import Store

__all__ = ["build_app"]

TEMPLATES = Path(__file__).with_name("templates")
#: Parameters of the list that are not filters.
_PAGING = ("limit", "cursor")
#: Flags: present and not "" / "0" / "false" means on.
_FLAGS = ("groups", "oldest-first")
#: Open stores kept between requests.
MAX_IDLE_STORES = 4
#: Fields of a write's form that are not filters.
_WRITE_FIELDS = ("csrf", "confirm", "format", "task_id")
#: The cookie holding the CSRF token, and the header a script sends it back in.
CSRF_COOKIE = "resultkit_csrf"
CSRF_HEADER = "x-csrf-token"


class BadRequest(Exception):
    """A request parameter that cannot be used; the message says which and why."""


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def query_of(params: Iterable[tuple[str, str]]) -> tuple[Query, int, str | None]:
    """The query, limit and cursor of request parameters named as the CLI options."""
    from ..durations import parse_when

    values: dict[str, list[str]] = {}
    for key, value in params:
        if key not in FILTERS and key not in _PAGING and key not in _FLAGS:
            raise BadRequest(f"unknown parameter {key!r}: use {', '.join(FILTERS)}, limit, cursor")
        if value.strip():
            values.setdefault(key, []).append(value.strip())

    def one(name: str) -> str | None:
        given = values.get(name)
        if given and len(given) > 1:
            raise BadRequest(f"{name} is given {len(given)} times: give it once")
        return given[0] if given else None

    def when(name: str) -> datetime | None:
        text = one(name)
        if text is None:
            return None
        try:
            return parse_when(text)
        except ConfigurationError as exc:
            raise BadRequest(f"{name}: {exc}") from None

    limit_text = one("limit")
    try:
        limit = int(limit_text) if limit_text is not None else DEFAULT_FIND_LIMIT
    except ValueError:
        raise BadRequest(
            f"limit {limit_text!r}: give a number from 1 to {MAX_FIND_LIMIT}"
        ) from None
    if not 1 <= limit <= MAX_FIND_LIMIT:
        raise BadRequest(f"limit {limit}: give a number from 1 to {MAX_FIND_LIMIT}")
    kinds = (Kind.TASK, Kind.GROUP) if _flag(one("groups") or "") else (Kind.TASK,)
    try:
        query = Query.build(
            values.get("state", ()),
            values.get("task", ()),
            when("since"),
            when("until"),
            id_prefix=one("id"),
            worker=one("worker"),
            queue=one("queue"),
            group=one("group"),
            parent=one("parent"),
            root=one("root"),
            exception=one("exception"),
            args=values.get("arg", ()),
            kwargs=values.get("kwarg", ()),
            kinds=kinds,
            oldest_first=_flag(one("oldest-first") or ""),
        )
    except (UsageError, ConfigurationError) as exc:
        raise BadRequest(str(exc)) from None
    return query, limit, one("cursor")


class _Cached:
    """The store's stats, computed at most once per *seconds* however often asked."""

    def __init__(self, compute: Callable[[], Any], seconds: float) -> None:
        self._compute = compute
        self.seconds = seconds
        self._lock = threading.Lock()
        self._value: Any = None
        self._at = -float("inf")
        #: How long the last computation took.
        self.took_s = 0.0
        self.computed = 0

    def get(self) -> Any:
        with self._lock:
            if self._value is None or time.monotonic() - self._at >= self.seconds:
                started = time.monotonic()
                self._value = self._compute()
                self.took_s = time.monotonic() - started
                self._at = time.monotonic()
                self.computed += 1
            return self._value


class _StorePool:
    """Stores kept open between requests: one per request at a time (a store is not
    shared by two threads), at most *idle* kept when requests are done."""

    def __init__(self, target: Target, idle: int = MAX_IDLE_STORES) -> None:
        self.target = target
        self._idle: list[Store] = []
        self._keep = idle
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[tuple[Target, Store]]:
        from ..commands._lookup import open_for_reading

        with self._lock:
            store = self._idle.pop() if self._idle else None
        if store is None:
            store = open_for_reading(self.target)
        try:
            yield self.target, store
        except BaseException:
            store.close()  # it may be broken (a connection lost): the next request opens anew
            raise
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(store)
                return
        store.close()

    def warm(self) -> None:
        """Open one store before the first request (its connection, the tables'
        reflection), so the first page or scrape does not wait for it; a store that
        cannot be opened yet is left to the requests, which say why."""
        with contextlib.suppress(Exception), self.borrowed() as (_, store):
            reflect = getattr(store, "table", None)  # SQL stores: reflected once, kept
            if reflect is not None:
                for kind in Kind:
                    reflect(kind)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for store in idle:
            store.close()


#: Days the health page charts (today last).
HEALTH_DAYS = 14


def _life(seconds: float | None) -> str:
    return "forever" if seconds is None else format_duration(seconds)


def _figures_of_stats(report: StatsReport, oldest: datetime | None) -> dict[str, Any]:
    """The metrics' figures from a ``stats`` scan (stores without a native count)."""
    details = report.details
    return {
        "by_state": report.by_state,
        "by_task": details.get("by_task") or {},
        "total": report.total,
        "groups": report.groups,
        "unreadable": report.unreadable,
        "no_ttl": details.get("no_ttl"),
        "past_lifetime": details.get("past_lifetime"),
        "bytes": details["bytes"] if isinstance(details.get("bytes"), (int, float)) else None,
        "oldest": oldest,
    }


def _native_figures(figures: StoreFigures) -> dict[str, Any]:
    """The metrics' figures a store counted natively, in the shape of the above."""
    return {
        "by_state": dict(sorted(figures.by_state.items())),
        "by_task": dict(figures.by_task.most_common()),
        "total": sum(figures.by_state.values()),
        "groups": figures.groups,
        "unreadable": 0,
        "no_ttl": None,
        "past_lifetime": figures.past_lifetime,
        "bytes": figures.bytes,
        "oldest": figures.oldest,
    }


class _StoreCollector(Collector):
    """Prometheus metrics of the store, from the cached figures."""

    def __init__(self, cache: _Cached) -> None:
        self._cache = cache

    def collect(self) -> Any:
        figures = self._cache.get()
        by_state = GaugeMetricFamily(
            "resultkit_results", "Stored task results by state.", labels=["state"]
        )
        for state, count in figures["by_state"].items():
            by_state.add_metric([state], count)
        yield by_state
        by_task = GaugeMetricFamily(
            "resultkit_results_by_task", "Stored task results by task name.", labels=["task"]
        )
        for task, count in figures["by_task"].items():
            by_task.add_metric([str(task)], count)
        yield by_task
        yield GaugeMetricFamily(
            "resultkit_results_total", "Stored task results (any state).", value=figures["total"]
        )
        yield GaugeMetricFamily(
            "resultkit_groups", "Stored group results.", value=figures["groups"]
        )
        yield GaugeMetricFamily(
            "resultkit_unreadable",
            "Stored results that cannot be decoded.",
            value=figures["unreadable"],
        )
        if figures["no_ttl"] is not None:
            yield GaugeMetricFamily(
                "resultkit_no_ttl", "Results stored without a lifetime.", value=figures["no_ttl"]
            )
        if figures["past_lifetime"] is not None:
            yield GaugeMetricFamily(
                "resultkit_past_lifetime",
                "Results the retention policy says should be gone (expired backlog).",
                value=figures["past_lifetime"],
            )
        if figures["bytes"] is not None:
            yield GaugeMetricFamily(
                "resultkit_bytes", "Bytes of stored payloads.", value=figures["bytes"]
            )
        oldest = figures["oldest"]
        if oldest is not None:
            yield GaugeMetricFamily(
                "resultkit_oldest_result_age_seconds",
                "Age of the oldest dated result.",
                value=max(0.0, time.time() - oldest.timestamp()),
            )
        yield GaugeMetricFamily(
            "resultkit_scrape_duration_seconds",
            "How long the last scan of the store took.",
            value=self._cache.took_s,
        )


def _oldest(url: str | None, app: Celery | None) -> datetime | None:
    """The date of the oldest dated result (the query layer, oldest first)."""
    from ..commands import find

    query = Query.build(since=datetime(1970, 1, 2, tzinfo=timezone.utc), oldest_first=True)
    cursor = None
    for _ in range(10_000):  # a store whose work per call is bounded may answer empty pages
        report = find(url, app=app, query=query, limit=1, cursor=cursor)
        if report.results:
            done = report.results[0].get("date_done")
            return datetime.fromisoformat(done) if done else None
        cursor = report.cursor
        if cursor is None:
            return None
    return None


class _Auth(BaseHTTPMiddleware):
    """Every request carries the token (``Authorization: Bearer``) or basic auth."""

    def __init__(self, app: Any, auth: ServeAuth) -> None:
        super().__init__(app)
        self.auth = auth

    def allowed(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if self.auth.token and scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.auth.token.encode())
        if self.auth.user and self.auth.password and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return hmac.compare_digest(
                user.encode(), self.auth.user.encode()
            ) & hmac.compare_digest(password.encode(), self.auth.password.encode())
        return False

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if self.allowed(request.headers.get("authorization", "")):
            return await call_next(request)
        headers = {}
        if self.auth.user:
            headers["WWW-Authenticate"] = 'Basic realm="resultkit"'
        else:
            headers["WWW-Authenticate"] = "Bearer"
        return PlainTextResponse("authentication required\n", 401, headers=headers)


def _given(query: Query) -> dict[str, Any]:
    """The filters given (the empty ones left out), as an audit line names them."""
    return {k: v for k, v in query.describe().items() if v not in (None, [], "") and k != "order"}


def _pretty(value: Any) -> str:
    """A stored value as indented JSON (anything JSON cannot hold as its text)."""
    option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(value, option=option, default=str).decode()


def build_app(
    store_url_or_app: Celery | str | None,
    *,
    allow_writes: bool,
    auth: ServeAuth | None,
    cache_seconds: float,
    audit_log: str | Path | None = None,
) -> Starlette:
    """See :func:`resultkit.web.create_app`."""
    from ..apps import load_app, resolve_target
    from ..commands import doctor, failures, find, show, stats

    url: str | None = None
    app: Celery | None = None
    if isinstance(store_url_or_app, str) and "://" in store_url_or_app:
        url = store_url_or_app
    elif isinstance(store_url_or_app, str):
        app = load_app(store_url_or_app)
    else:
        app = store_url_or_app
    target = resolve_target(url, app)
    redactor: Redactor = target.redactor
    backend = target.masked_url

    def scan() -> tuple[StatsReport, datetime | None]:
        return stats(url, app=app), _oldest(url, app)

    cache = _Cached(scan, cache_seconds)
    pool = _StorePool(target)
    retention = RetentionPolicy.resolve(target.app, None)

    def metric_figures() -> dict[str, Any]:
        # SQL stores count natively (one GROUP BY); the others are scanned by stats.
        with pool.borrowed() as (_, store):
            native = store.figures(PurgePlan(retention, time.time()))
        return _figures_of_stats(*cache.get()) if native is None else _native_figures(native)

    metric_cache = _Cached(metric_figures, cache_seconds)

    def by_day() -> list[tuple[str, int]]:
        # The last HEALTH_DAYS UTC days, today last; SQL stores count with a GROUP BY.
        today = datetime.now(timezone.utc).date()
        days = [(today - timedelta(days=n)).isoformat() for n in range(HEALTH_DAYS - 1, -1, -1)]
        since = datetime.fromisoformat(days[0]).replace(tzinfo=timezone.utc)
        with pool.borrowed() as (_, store):
            counts = store.counts_by_day(since)
        return [(day, counts.get(day, 0)) for day in days]

    day_cache = _Cached(by_day, cache_seconds)
    # doctor writes and forgets its probe results: at most once per cache time.
    doctor_cache = _Cached(lambda: doctor(url, app=app), cache_seconds)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreCollector(metric_cache))

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    env.filters["pretty"] = _pretty
    env.globals["backend"] = backend
    env.globals["allow_writes"] = allow_writes
    # Retry sends through the app's broker: offered only when serving an app.
    env.globals["can_retry"] = allow_writes and app is not None

    def wants_html(request: Request) -> bool:
        return not request.url.path.startswith("/api/")

    def error(request: Request, status: int, message: str) -> Response:
        message = redactor.redact(message)
        if wants_html(request):
            page = env.get_template("error.html").render(status=status, message=message)
            return HTMLResponse(page, status)
        return JSONResponse({"error": message, "status": status}, status)

    def as_json(document: Any, status: int = 200) -> Response:
        return Response(dumps_json(document), status, media_type="application/json")

    def html(name: str, request: Request | None = None, **context: Any) -> Response:
        token = (request.cookies.get(CSRF_COOKIE) if request else None) or secrets.token_urlsafe(32)
        response = HTMLResponse(env.get_template(name).render(csrf=token, **context))
        if request is not None and request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        return response

    def guarded(
        handler: Callable[[Request], Response],
    ) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            try:
                return handler(request)
            except BadRequest as exc:
                return error(request, 400, str(exc))
            except (UsageError, ConfigurationError, AppNotFound) as exc:
                return error(request, 400, str(exc))
            except ResultkitError as exc:
                return error(request, 503, str(exc))

        return run

    # ------------------------------------------------------------ JSON API
    def api_results(request: Request) -> Response:
        query, limit, cursor = query_of(request.query_params.multi_items())
        with pool.borrowed() as reuse:
            report = find(url, app=app, query=query, limit=limit, cursor=cursor, reuse=reuse)
        return as_json(report.as_dict())

    def api_result(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        with pool.borrowed() as reuse:
            report = show(task_id, url, app=app, reuse=reuse)
        if not report.found:
            return error(request, 404, f"no result with id {task_id!r} in {backend}")
        return as_json(report.as_dict())

    def api_failures(request: Request) -> Response:
        query, _, _ = query_of(
            (k, v) for k, v in request.query_params.multi_items() if k not in _PAGING
        )
        with pool.borrowed() as reuse:
            report = failures(url, app=app, query=query, reuse=reuse)
        return as_json(report.as_dict())

    def api_stats(request: Request) -> Response:
        report, oldest = cache.get()
        document = report.as_dict()
        document["oldest_date_done"] = oldest.isoformat() if oldest else None
        return as_json(document)

    audit_path = Path(audit_log) if audit_log is not None else Path("resultkit-audit.log")

    async def writing(request: Request) -> tuple[list[tuple[str, str]], dict[str, str]] | Response:
        """The write's filters and its other fields, once writes are on and CSRF holds."""
        if not allow_writes:
            return error(request, 403, "writes are off: start resultkit serve with --allow-writes")
        form = await request.form()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        items += list(request.query_params.multi_items())
        extra = {k: v for k, v in items if k in _WRITE_FIELDS}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = request.headers.get(CSRF_HEADER) or extra.get("csrf", "")
        if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
            return error(
                request,
                403,
                "CSRF token missing or wrong: reload the page and send the form again",
            )
        params = [(k, v) for k, v in items if k not in _WRITE_FIELDS and v.strip()]
        return params, extra

    async def written_query(
        request: Request,
    ) -> tuple[Query, list[tuple[str, str]], dict[str, str]] | Response:
        """A write's checked form: the query its filters make, the filters and the
        other fields; or the refusal to answer with (403, CSRF, a bad filter)."""
        given = await writing(request)
        if isinstance(given, Response):
            return given
        params, extra = given
        try:
            query, _, _ = query_of((k, v) for k, v in params if k not in _PAGING)
        except BadRequest as exc:
            return error(request, 400, str(exc))
        return query, params, extra

    def audit(event: str, request: Request, fields: dict[str, Any]) -> None:
        from ..commands.erase import append_audit_entry

        client = request.client.host if request.client else None
        append_audit_entry(audit_path, event, {"via": "serve", "client": client, **fields})

    async def write_export(request: Request) -> Response:
        from ..commands import export

        given = await written_query(request)
        if isinstance(given, Response):
            return given
        query, _, extra = given
        kind = extra.get("format", "jsonl") or "jsonl"
        if kind not in ("jsonl", "csv"):
            return error(request, 400, f"format {kind!r}: choose jsonl or csv")
        suffix = ".jsonl.gz" if kind == "jsonl" else ".csv"
        folder = tempfile.mkdtemp(prefix="resultkit-export-")
        path = Path(folder) / f"results{suffix}"
        try:
            report = await run_in_threadpool(
                lambda: export(url, to=path, app=app, query=query, format=kind)  # type: ignore[arg-type]
            )
        except (UsageError, ConfigurationError) as exc:
            return error(request, 400, str(exc))
        except ResultkitError as exc:
            return error(request, 503, str(exc))
        audit(
            "export",
            request,
            {
                "store": backend,
                "filters": _given(query),
                "format": kind,
                "exported": report.exported,
            },
        )

        def remove() -> None:
            path.unlink(missing_ok=True)
            Path(folder).rmdir()

        media = "application/gzip" if kind == "jsonl" else "text/csv"
        return FileResponse(
            path, media_type=media, filename=path.name, background=BackgroundTask(remove)
        )

    async def write_erase(request: Request) -> Response:
        from ..commands import erase

        given = await written_query(request)
        if isinstance(given, Response):
            return given
        query, params, extra = given
        confirmed = extra.get("confirm") == "yes"
        try:
            report = await run_in_threadpool(
                lambda: erase(
                    url,
                    query=query,
                    app=app,
                    dry_run=not confirmed,
                    yes=confirmed,
                    audit_log=audit_path,
                )
            )
        except (UsageError, ConfigurationError) as exc:
            return error(request, 400, str(exc))
        except ResultkitError as exc:
            return error(request, 503, str(exc))
        if request.url.path.startswith("/api/"):
            return as_json(report.as_dict())
        return html(
            "erase.html", request, report=report, params=params, back="/?" + urlencode(params)
        )

    async def write_retry(request: Request) -> Response:
        from ..commands import retry

        given = await written_query(request)
        if isinstance(given, Response):
            return given
        query, params, extra = given
        task_id = extra.get("task_id") or None
        confirmed = extra.get("confirm") == "yes"
        by_filter = task_id is None
        try:
            report = await run_in_threadpool(
                lambda: retry(
                    app,
                    task_id=task_id,
                    query=None if task_id else query,
                    dry_run=by_filter and not confirmed,
                    yes=by_filter and confirmed,
                )
            )
        except (UsageError, ConfigurationError) as exc:
            return error(request, 400, str(exc))
        except ResultkitError as exc:
            return error(request, 503, str(exc))
        audit(
            "retry",
            request,
            {
                "store": backend,
                "filters": {} if task_id else _given(query),
                "by_id": task_id is not None,
                "dry_run": report.dry_run,
                "matched": len(report.tasks),
                "sent": report.sent,
            },
        )
        if request.url.path.startswith("/api/"):
            return as_json(report.as_dict())
        return html(
            "retry.html", request, report=report, params=params, back="/?" + urlencode(params)
        )

    def openapi(request: Request) -> Response:
        return as_json(openapi_document())

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------ pages
    def page_list(request: Request) -> Response:
        params = [(k, v) for k, v in request.query_params.multi_items() if v.strip()]
        query, limit, cursor = query_of(params)
        with pool.borrowed() as reuse:
            report = find(url, app=app, query=query, limit=limit, cursor=cursor, reuse=reuse)
        kept = [(k, v) for k, v in params if k != "cursor"]
        next_url = "/?" + urlencode([*kept, ("cursor", report.cursor)]) if report.cursor else None
        form: dict[str, list[str]] = {}
        for key, value in params:
            form.setdefault(key, []).append(value)
        return html(
            "list.html",
            request,
            report=report,
            form=form,
            next_url=next_url,
            first_url="/?" + urlencode(kept) if cursor else None,
            filters=FILTERS,
            limit=limit,
        )

    def page_result(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        with pool.borrowed() as reuse:
            report = show(task_id, url, app=app, reuse=reuse)
        if not report.found:
            return error(request, 404, f"no result with id {task_id!r} in {backend}")
        fields = dict(report.fields)
        main = {k: fields.pop(k, None) for k in ("status", "result", "traceback", "date_done")}
        return html("result.html", request, report=report, main=main, fields=fields)

    def page_failures(request: Request) -> Response:
        params = [(k, v) for k, v in request.query_params.multi_items() if v.strip()]
        query, _, _ = query_of((k, v) for k, v in params if k not in _PAGING)
        with pool.borrowed() as reuse:
            report = failures(url, app=app, query=query, reuse=reuse)
        return html("failures.html", report=report)

    def page_health(request: Request) -> Response:
        report, oldest = cache.get()
        by_task = list((report.details.get("by_task") or {}).items())[:25]
        return html(
            "health.html",
            report=report,
            oldest=oldest,
            by_state=list(report.by_state.items()),
            by_task=by_task,
            lifetimes=[
                (
                    task,
                    _life(retention.lifetime(task, "SUCCESS")),
                    _life(retention.lifetime(task, "FAILURE")),
                )
                for task, _ in by_task
            ],
            policy=list(describe_policy(retention)),
            by_day=day_cache.get(),
            checks=doctor_cache.get().checks,
            took=cache.took_s,
        )

    routes = [
        Route("/", guarded(page_list)),
        Route("/results/{task_id:path}", guarded(page_result)),
        Route("/failures", guarded(page_failures)),
        Route("/health", guarded(page_health)),
        Route("/api/results", guarded(api_results)),
        Route("/api/results/{task_id:path}", guarded(api_result)),
        Route("/api/failures", guarded(api_failures)),
        Route("/api/stats", guarded(api_stats)),
        Route("/api/export", write_export, methods=["POST"]),
        Route("/api/erase", write_erase, methods=["POST"]),
        Route("/api/retry", write_retry, methods=["POST"]),
        Route("/erase", write_erase, methods=["POST"]),
        Route("/retry", write_retry, methods=["POST"]),
        Route("/openapi.json", openapi),
        Route("/metrics", guarded(metrics)),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(request, getattr(exc, "status_code", 404), getattr(exc, "detail", "not found"))

    async def internal(request: Request, exc: Exception) -> Response:
        return error(request, 500, f"internal error: {type(exc).__name__} (please report it)")

    middleware = [Middleware(_Auth, auth=auth)] if auth is not None and auth.configured else []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        await run_in_threadpool(pool.warm)
        yield
        pool.close()

    web = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found, Exception: internal},
    )
    web.state.cache = cache
    return web
