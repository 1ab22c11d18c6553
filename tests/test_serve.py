"""``resultkit serve``: the JSON API, the pages and /metrics of a real uvicorn server.

Each test starts ``resultkit serve`` (the real CLI, uvicorn inside) in a
subprocess on a free port and talks to it over HTTP with httpx.  The results
are written by Celery's own backends (``tests/find_writer.py``, and the hostile
writer below, in subprocesses).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from resultkit.records import Kind
from resultkit.stores import open_store
from tests.conftest import BIN, ROOT, free_port, run, store_url_for
from tests.test_find import ALL, STORES, write_dataset, written_in
from tests.test_retry import FLAKY, failed_builds
from tests.worker import celery_worker, load, write_app

pytestmark = pytest.mark.timeout(300)

HOSTILE = "<script>alert(1)</script>"

#: Writes results whose task name, args, result and traceback hold markup.
HOSTILE_WRITER = f"""
import sys
from celery import Celery
from tests.find_writer import fail, request

app = Celery("hostile", set_as_current=False)
app.conf.update(broker_url="memory://", result_backend=sys.argv[1], result_extended=True)
h = {HOSTILE!r}
app.backend.mark_as_done(
    "ok-" + h, {{"html": h}},
    request=request(app, "ok-" + h, "evil." + h, args=[h], kwargs={{"k": h}}, worker="celery@" + h),
)
fail(app.backend, request(app, "bad", "evil." + h, args=[h]), ValueError(h))
"""


@dataclass
class Server:
    """A running ``resultkit serve``."""

    base: str
    process: subprocess.Popen[str]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=60, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=60, **kwargs)


def start_server(
    *args: str,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    cwd: Path | None = None,
    program: tuple[str, ...] = ("resultkit",),
) -> Server:
    """Start ``resultkit serve ARGS`` (in *cwd*) on a free port; wait until it answers."""
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / program[0]), *program[1:], "serve", *args, "--host", host, "--port", str(port)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd or ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"resultkit serve ended: {process.stdout.read()}")  # type: ignore[union-attr]
        try:
            httpx.get(base + "/openapi.json", timeout=2)
            return Server(base, process)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("resultkit serve did not answer within 60 s")


@pytest.fixture
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start servers; each is stopped after the test.

    A server runs in a folder of the test's own unless told otherwise: what it
    writes there by default (the audit log) never lands in the checkout.
    """
    started: list[Server] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        cwd: Path | None = None,
        program: tuple[str, ...] = ("resultkit",),
    ) -> Server:
        if cwd is None:
            cwd = tmp_path_factory.mktemp("serve")
            env = {"PYTHONPATH": str(ROOT), **(env or {})}
        server = start_server(*args, env=env, host=host, cwd=cwd, program=program)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()


@pytest.fixture(params=STORES)
def written_url(request: Any, tmp_path: Path) -> str:
    """A store of each kind holding the find dataset, written through Celery (an
    archive: what the filesystem backend wrote, copied)."""
    return written_in(request.param, request, tmp_path).url


@pytest.fixture
def sqlite_url(sqlite_db: Any) -> str:
    write_dataset(sqlite_db.url)
    return str(sqlite_db.url)


def every_page(server: Server, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of every page of /api/results, following the cursors."""
    rows: list[dict[str, Any]] = []
    cursor: dict[str, str] = {}
    for _ in range(200):
        response = server.get("/api/results", params={**params, **cursor})
        assert response.status_code == 200, response.text
        document = response.json()
        rows.extend(document["results"])
        if document["cursor"] is None:
            return rows
        cursor = {"cursor": document["cursor"]}
    raise AssertionError("no last page")


# ------------------------------------------------------------------ JSON API


def test_api_lists_filters_shows_and_counts_on_every_store(serve: Any, written_url: str) -> None:
    # Given a server over a store written by Celery
    server = serve(written_url)
    # When every page of 3 is read, then each result comes once
    rows = every_page(server, {"limit": 3})
    assert sorted(row["task_id"] for row in rows) == sorted(ALL)
    # Filters are the CLI's, with the same names; repeated ones are ORed
    failed = every_page(server, {"state": ["FAILURE", "RETRY"], "limit": 50})
    assert {r["task_id"] for r in failed} == {"w1-fail", "w2-c2", "w3-weekly", "w3-retry"}
    chosen = every_page(server, {"state": "FAILURE", "task": "reports.*", "kwarg": "user_id=42"})
    assert [r["task_id"] for r in chosen] == ["w3-weekly"]
    # One result is what show reports; its children carry their states
    shown = server.get("/api/results/w1-fail").json()
    assert shown["status"] == "FAILURE"
    assert shown["exception"] == {"type": "ValueError", "message": "report 2 failed"}
    root = server.get("/api/results/w2-root").json()
    assert {c["task_id"]: c["status"] for c in root["children"]} == {
        "w2-c1": "SUCCESS",
        "w2-c2": "FAILURE",
    }
    # Failures are grouped, stats counted
    groups = server.get("/api/failures").json()
    assert groups["total"] == 3
    assert {(g["name"], g["exception"]) for g in groups["groups"]} == {
        ("reports.daily", "ValueError"),
        ("reports.weekly", "ValueError"),
        ("flows.step", "KeyError"),
    }
    stats = server.get("/api/stats").json()
    assert stats["by_state"] == {"FAILURE": 3, "RETRY": 1, "SUCCESS": 6}


def test_api_answers_bad_input_with_one_line_and_never_500(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url)
    cases = {
        "/api/results?state=BOGUS": 400,
        "/api/results?since=yesterday": 400,
        "/api/results?limit=0": 400,
        "/api/results?limit=x": 400,
        "/api/results?cursor=not-a-cursor": 400,
        "/api/results?nonsense=1": 400,
        "/api/results?kwarg=novalue": 400,
        "/api/results?since=2026-01-02&until=2026-01-01": 400,
        "/api/results?worker=a&worker=b": 400,
        "/api/results/no-such-id": 404,
        "/api/nowhere": 404,
    }
    for path, status in cases.items():
        response = server.get(path)
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert "\n" not in error, error
        assert "Traceback" not in error, error
    # A cursor of another query is refused, not followed
    cursor = server.get("/api/results", params={"limit": 1}).json()["cursor"]
    other = server.get("/api/results", params={"limit": 1, "state": "FAILURE", "cursor": cursor})
    assert other.status_code == 400


def test_openapi_document_names_every_filter(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url)
    document = server.get("/openapi.json").json()
    names = {p["name"] for p in document["paths"]["/api/results"]["get"]["parameters"]}
    assert {"state", "task", "since", "until", "worker", "queue", "group", "parent"} <= names
    assert {"exception", "arg", "kwarg", "limit", "cursor"} <= names


def test_secrets_are_masked_in_every_answer(serve: Any, postgres_db: Any) -> None:
    # Given a store URL with a password in it (trust auth accepts any password)
    write_dataset(postgres_db.url)
    url = postgres_db.url.replace("://postgres@", "://postgres:hunter2secret@")
    assert "hunter2secret" in url, url
    server = serve(url)
    for path in ("/api/results", "/api/results/w1-fail", "/api/stats", "/", "/health"):
        body = server.get(path).text
        assert "hunter2secret" not in body, path


def test_schemathesis_finds_no_server_error(serve: Any, sqlite_url: str, tmp_path: Path) -> None:
    # Given a server over a store, when schemathesis fuzzes every operation of its
    # OpenAPI document (the writes answer 403: read-only server)
    server = serve(sqlite_url)
    done = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            server.base + "/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=tmp_path,  # schemathesis keeps a cache (.schemathesis/) in its folder
    )
    # Then no answer is a 5xx
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


# ------------------------------------------------------------------ metrics


def test_metrics_in_prometheus_format_from_a_cached_scan(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url, "--cache-seconds", "3600")
    text = server.get("/metrics").text
    assert 'resultkit_results{state="FAILURE"} 3.0' in text
    assert 'resultkit_results_by_task{task="reports.daily"} 3.0' in text
    assert "resultkit_oldest_result_age_seconds" in text
    assert "resultkit_scrape_duration_seconds" in text
    # When more results are written, a scrape within the cache time still says 3
    subprocess.run(
        [sys.executable, "-c", HOSTILE_WRITER, sqlite_url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=60,
    )
    again = server.get("/metrics").text
    assert 'resultkit_results{state="FAILURE"} 3.0' in again


def test_metrics_scan_again_after_the_cache_time(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url, "--cache-seconds", "0")
    assert 'resultkit_results{state="FAILURE"} 3.0' in server.get("/metrics").text
    subprocess.run(
        [sys.executable, "-c", HOSTILE_WRITER, sqlite_url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=60,
    )
    assert 'resultkit_results{state="FAILURE"} 4.0' in server.get("/metrics").text


def scraped(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The samples of a Prometheus text: metric name -> labels -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


@pytest.mark.parametrize("kind", ["postgres", "mysql", "sqlite", "django"])
def test_sql_metrics_counted_natively_equal_the_stats_figures(
    serve: Any, kind: str, request: Any, tmp_path: Path
) -> None:
    """SQL stores give /metrics from one GROUP BY: the same figures as ``stats``."""
    written = written_in(kind, request, tmp_path)
    url = written.url
    # Three results done two days ago: past Celery's default lifetime of a day
    store = open_store(url, settings=written.settings)
    table = store.table(Kind.TASK)  # type: ignore[attr-defined]
    old = datetime.now(timezone.utc) - timedelta(days=2)
    with store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            table.update()
            .where(table.c.task_id.in_(["w1-report", "w1-fail", "w1-mail"]))
            .values(date_done=old if store.aware_dates else old.replace(tzinfo=None))  # type: ignore[attr-defined]
        )
    store.close()
    counted = run("resultkit", "stats", url, "--json")
    assert counted.code == 0, counted.stderr
    expected = json.loads(counted.stdout)
    samples = scraped(serve(url, "--cache-seconds", "3600").get("/metrics").text)
    by_state = {dict(k)["state"]: v for k, v in samples["resultkit_results"].items()}
    assert by_state == expected["by_state"]
    by_task = {dict(k)["task"]: v for k, v in samples["resultkit_results_by_task"].items()}
    assert by_task == expected["by_task"]
    assert samples["resultkit_results_total"][()] == expected["total"]
    assert samples["resultkit_groups"][()] == expected["groups"]
    assert samples["resultkit_bytes"][()] == expected["bytes"]
    assert samples["resultkit_past_lifetime"][()] == expected["past_lifetime"] == 3
    age = samples["resultkit_oldest_result_age_seconds"][()]
    assert 2 * 86400 <= age < 2 * 86400 + 3600  # the three made two days old


# ------------------------------------------------------------------ pages


def test_pages_list_filter_page_and_open_a_result(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url)
    # The list holds the filters in its URL (deep links), and a next-page link
    page = server.get("/", params={"state": "FAILURE", "limit": 2})
    assert page.status_code == 200
    assert 'value="FAILURE"' in page.text
    found = re.search(r'href="(/\?[^"]*cursor=[^"]*)" id="next"', page.text)
    assert found, page.text
    next_url = found.group(1).replace("&amp;", "&")
    second = server.get(next_url)
    assert second.status_code == 200
    listed = set(re.findall(r'href="/results/([^"]+)"', page.text + second.text))
    assert listed == {"w1-fail", "w2-c2", "w3-weekly"}
    assert "last page" in second.text
    # A result page: exception, traceback, extended fields, group members with states
    result = server.get("/results/w1-fail").text
    assert "report 2 failed" in result
    assert 'id="traceback"' in result
    assert "q-reports" in result
    root = server.get("/results/w2-root").text
    assert 'href="/results/w2-c1"' in root
    assert "SUCCESS" in root
    assert "FAILURE" in root
    # Failures and health pages
    assert "reports.weekly" in server.get("/failures").text
    health = server.get("/health").text
    assert "<svg" in health
    assert "reports.daily" in health
    # A bad filter on a page is a 400 page with one line
    bad = server.get("/", params={"state": "BOGUS"})
    assert bad.status_code == 400
    assert "no such state" in bad.text
    assert server.get("/results/nope").status_code == 404


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres", "mysql"])
def test_hostile_strings_render_as_text_on_every_page(
    serve: Any, kind: str, request: Any, tmp_path: Path
) -> None:
    # Given results whose task name, args, result, worker and traceback hold a script tag
    url = store_url_for(kind, request, tmp_path / "store")
    subprocess.run(
        [sys.executable, "-c", HOSTILE_WRITER, url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=60,
    )
    server = serve(url)
    hostile_id = "ok-" + HOSTILE
    pages = [
        server.get("/"),
        server.get("/", params={"task": "evil.*"}),
        server.get("/results/" + hostile_id),
        server.get("/results/bad"),
        server.get("/failures"),
        server.get("/health"),
        server.get("/", params={"task": HOSTILE + "["}),
    ]
    assert pages[2].status_code == 200, pages[2].text
    for page in pages:
        assert "<script" not in page.text.lower(), page.url
    assert "&lt;script&gt;" in pages[2].text
    assert "&lt;script&gt;" in pages[3].text
    assert "&lt;script&gt;" in pages[4].text
    assert "&lt;script&gt;" in pages[5].text  # the task name in largest and retention


def section(page: str, element_id: str) -> str:
    """The markup of the element with *element_id* (a table or an svg)."""
    found = re.search(rf'<(table|svg) id="{element_id}".*?</\1>', page, re.S)
    assert found, f"no #{element_id} on the page"
    return found.group(0)


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres", "mysql", "django"])
def test_health_page_shows_days_largest_retention_and_doctor(
    serve: Any, kind: str, request: Any, tmp_path: Path
) -> None:
    url = written_in(kind, request, tmp_path).url
    counted = run("resultkit", "stats", url, "--json")
    assert counted.code == 0, counted.stderr
    expected = json.loads(counted.stdout)
    page = serve(url).get("/health")
    assert page.status_code == 200, page.text
    # Results by day: fourteen bars, today's last, adding up to every dated result
    days = re.findall(r"<title>(\d{4}-\d\d-\d\d): (\d+)</title>", section(page.text, "by-day"))
    assert len(days) == 14
    dated = expected["total"] - expected["age"].get("no date", 0)
    assert sum(int(n) for _, n in days) == dated, expected["age"]
    # The largest results, as stats lists them
    largest = section(page.text, "largest")
    assert [item["id"] for item in expected["largest"]] == re.findall(
        r'<a href="/results/[^"]*">([^<]*)</a>', largest
    )
    # Each task's lifetime under the policy (Celery's default: a day)
    retention = section(page.text, "retention")
    for task in expected["by_task"]:
        assert f"<td>{task}</td>" in retention
    assert "<td>1d</td>" in retention or "<td>1 day</td>" in retention, retention
    # doctor's checks with their status and fix
    checks = re.findall(r'<tr class="(pass|warn|fail|skip)"><td>([^<]+)</td>', page.text)
    assert len(checks) >= 3
    if kind != "django":  # doctor checks Celery's backends; it fails django+ URLs
        assert not [c for c in checks if c[0] == "fail"], checks


# ------------------------------------------------------------------ security


def test_binding_beyond_loopback_without_auth_is_refused(sqlite_url: str) -> None:
    result = run(
        "resultkit",
        "serve",
        sqlite_url,
        "--host",
        "0.0.0.0",
        env={"RESULTKIT_SERVE_TOKEN": "", "RESULTKIT_SERVE_USER": ""},
    )
    assert result.code == 2
    assert "RESULTKIT_SERVE_TOKEN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_token_is_required_when_configured(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url, host="0.0.0.0", env={"RESULTKIT_SERVE_TOKEN": "s3cret-token"})
    assert server.get("/api/results").status_code == 401
    assert server.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = server.get("/api/results", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200


def test_basic_auth_when_user_and_password_are_configured(serve: Any, sqlite_url: str) -> None:
    env = {"RESULTKIT_SERVE_USER": "ops", "RESULTKIT_SERVE_PASSWORD": "pw-123"}
    server = serve(sqlite_url, host="0.0.0.0", env=env)
    refused = server.get("/")
    assert refused.status_code == 401
    assert "Basic" in refused.headers["www-authenticate"]
    assert server.get("/", auth=("ops", "nope")).status_code == 401
    assert server.get("/", auth=("ops", "pw-123")).status_code == 200


def test_writes_are_refused_without_allow_writes(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url)
    for path in ("/api/export", "/api/erase", "/api/retry"):
        response = server.post(path)
        assert response.status_code == 403, path
        assert "--allow-writes" in response.json()["error"]
    # And nothing was erased
    assert len(every_page(server, {"limit": 50})) == len(ALL)


# ------------------------------------------------------------------ writes


def session(server: Server) -> tuple[httpx.Client, str]:
    """A client holding the CSRF cookie of the list page, and the token its forms carry."""
    client = httpx.Client(base_url=server.base, timeout=60)
    page = client.get("/")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return client, found.group(1)


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_need_the_csrf_token_of_the_cookie(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url, "--allow-writes")
    client, token = session(server)
    # No cookie at all (another site's form), or a wrong token: refused
    bare = server.post("/api/erase", data={"state": "FAILURE", "csrf": token, "confirm": "yes"})
    assert bare.status_code == 403
    assert "CSRF" in bare.json()["error"]
    wrong = client.post("/api/erase", data={"state": "FAILURE", "csrf": "x", "confirm": "yes"})
    assert wrong.status_code == 403
    # Nothing was erased
    assert len(every_page(server, {"state": "FAILURE"})) == 3
    # The token in a header does as well as the form field
    counted = client.post("/api/erase", data={"state": "FAILURE"}, headers={"X-CSRF-Token": token})
    assert counted.status_code == 200, counted.text
    assert counted.json()["matched"] == 3


def test_export_downloads_the_filtered_results(serve: Any, sqlite_url: str, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    server = serve(sqlite_url, "--allow-writes", "--audit-log", str(audit))
    client, token = session(server)
    # When the failures are exported as CSV, then the download holds those three
    response = client.post("/api/export", data={"state": "FAILURE", "format": "csv", "csrf": token})
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["task_id"] for row in rows} == {"w1-fail", "w2-c2", "w3-weekly"}
    # As an archive: gzip'd JSON lines that the jsonl store reads back
    archive = client.post("/api/export", data={"task": "reports.*", "csrf": token})
    assert archive.status_code == 200
    (tmp_path / "out.jsonl.gz").write_bytes(archive.content)
    lines = gzip.decompress(archive.content).decode().splitlines()
    assert len(lines) == 4
    # And each export is in the audit log, with its filters and count, no data
    entries = audit_lines(audit)
    assert [e["event"] for e in entries] == ["export", "export"]
    assert entries[0]["exported"] == 3
    assert entries[0]["filters"]["state"] == ["FAILURE"]
    assert "w1-fail" not in audit.read_text()


def test_erase_counts_first_then_erases_on_confirmation(
    serve: Any, sqlite_url: str, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    server = serve(sqlite_url, "--allow-writes", "--audit-log", str(audit))
    client, token = session(server)
    # When the erase form is sent, then the count is shown and nothing is deleted
    asked = client.post("/erase", data={"state": "FAILURE", "csrf": token})
    assert asked.status_code == 200, asked.text
    assert "Erase 3 results?" in asked.text
    assert len(every_page(server, {"state": "FAILURE"})) == 3
    # When confirmed, then exactly those are gone, and the rest is there
    done = client.post("/erase", data={"state": "FAILURE", "csrf": token, "confirm": "yes"})
    assert done.status_code == 200, done.text
    assert "3 of 3 results erased" in done.text
    assert every_page(server, {"state": "FAILURE"}) == []
    assert len(every_page(server, {})) == len(ALL) - 3
    # And the audit log holds the count and the erasure
    entries = audit_lines(audit)
    assert [(e["event"], e["dry_run"], e["deleted"]) for e in entries] == [
        ("erase", True, 0),
        ("erase", False, 3),
    ]


def test_an_empty_filter_is_not_erased_from_the_web(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url, "--allow-writes")
    client, token = session(server)
    refused = client.post("/api/erase", data={"csrf": token, "confirm": "yes"})
    assert refused.status_code == 400
    assert len(every_page(server, {})) == len(ALL)


def test_retry_one_result_and_the_filtered_set_through_the_apps_broker(
    serve: Any, amqp_url: str, redis_db: Any, tmp_path: Path
) -> None:
    # Given tasks that failed, stored with result_extended by a real worker
    write_app(tmp_path, "proj", amqp_url, redis_db.url, tasks=FLAKY, result_extended=True)
    app = load(tmp_path, "proj")
    flag = tmp_path / "ready"
    audit = tmp_path / "audit.log"
    with celery_worker(tmp_path, "proj"):
        first, second, third = failed_builds(app, flag, [1, 2, 3])
        flag.write_text("")
        server = serve("-A", "proj", "--allow-writes", "--audit-log", str(audit), cwd=tmp_path)
        client, token = session(server)
        # When one result is retried from its page's form
        page = client.get(f"/results/{first.id}")
        assert 'id="retry-one"' in page.text
        one = client.post("/api/retry", data={"task_id": first.id, "csrf": token})
        assert one.status_code == 200, one.text
        new_id = one.json()["mapping"][first.id]
        # Then the worker runs it again with the stored arguments
        assert app.AsyncResult(new_id).get(timeout=60) == {"report": 1, "built": True}
        # When the filtered set is asked for, it is listed first, sent only when confirmed
        listed = client.post("/retry", data={"state": "FAILURE", "csrf": token})
        assert listed.status_code == 200, listed.text
        assert "Retry 3 tasks?" in listed.text
        sent = client.post("/api/retry", data={"state": "FAILURE", "csrf": token, "confirm": "yes"})
        assert sent.status_code == 200, sent.text
        mapping = sent.json()["mapping"]
        assert set(mapping) == {first.id, second.id, third.id}
        for new in mapping.values():
            assert app.AsyncResult(new).get(timeout=60)["built"] is True
    # And each retry is in the audit log, counted
    entries = [e for e in audit_lines(audit) if e["event"] == "retry"]
    assert [(e["dry_run"], e["sent"]) for e in entries] == [(False, 1), (True, 0), (False, 3)]


def test_celery_results_serve_uses_the_apps_backend(
    serve: Any, amqp_url: str, sqlite_db: Any, tmp_path: Path
) -> None:
    # Given an app whose result backend holds the dataset
    write_dataset(sqlite_db.url)
    write_app(tmp_path, "proj", amqp_url, sqlite_db.url, result_extended=True)
    # When Celery's own command serves it
    server = serve(cwd=tmp_path, program=("celery", "-A", "proj", "results"))
    # Then the API answers from that backend
    assert server.get("/api/stats").json()["total"] == len(ALL)


def test_retry_without_an_app_is_one_line(serve: Any, sqlite_url: str) -> None:
    server = serve(sqlite_url, "--allow-writes")
    client, token = session(server)
    refused = client.post("/api/retry", data={"task_id": "w1-fail", "csrf": token})
    assert refused.status_code == 400
    assert "-A APP" in refused.json()["error"]
