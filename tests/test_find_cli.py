"""``resultkit find``, ``show`` and ``failures`` from the command line, in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from resultkit.encryption import generate_key, key_label
from tests.conftest import run
from tests.test_find import ALL, USER_42, write_dataset

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def sqlite_url(sqlite_db: Any) -> str:
    write_dataset(sqlite_db.url)
    return str(sqlite_db.url)


def pages(cli: Any, *args: str) -> list[dict[str, Any]]:
    """Every page of ``find ARGS --json``, following the cursors."""
    out: list[dict[str, Any]] = []
    cursor: list[str] = []
    for _ in range(100):
        result = cli("find", *args, "--json", *cursor)
        assert result.code == 0, result.output
        document = result.json
        out.append(document)
        if document["cursor"] is None:
            return out
        cursor = ["--cursor", document["cursor"]]
    raise AssertionError("no last page")


# ------------------------------------------------------------------ find


def test_find_json_pages_through_every_result(cli: Any, sqlite_url: str) -> None:
    # When every page of 3 is read through the cursors
    documents = pages(cli, sqlite_url, "--limit", "3")
    # Then each result is listed once, with the keys scripts rely on, newest first
    rows = [row for document in documents for row in document["results"]]
    assert [row["task_id"] for row in rows].count("w1-report") == 1
    assert {row["task_id"] for row in rows} == ALL
    assert all({"task_id", "status", "name", "date_done"} <= set(row) for row in rows)
    assert [len(d["results"]) for d in documents] == [3, 3, 3, 1]
    assert documents[-1]["cursor"] is None
    # A RETRY has no date_done (Celery dates the ready states): it comes last.
    dates = [row["date_done"] or "" for row in rows]
    assert dates == sorted(dates, reverse=True)


def test_find_filters_from_the_command_line(cli: Any, sqlite_url: str) -> None:
    result = cli(
        "find",
        sqlite_url,
        "--state",
        "FAILURE",
        "--task",
        "reports.*",
        "--kwarg",
        "user_id=42",
        "--json",
    )
    assert result.code == 0, result.output
    (row,) = result.json["results"]
    assert row["task_id"] == "w3-weekly"
    assert row["exception"] == "ValueError"
    assert row["message"] == "week 3 failed"
    assert row["kwargs"] == {"user_id": 42}


def test_find_jsonl_and_csv(cli: Any, sqlite_url: str) -> None:
    jsonl = cli("find", sqlite_url, "--arg", "42", "--jsonl")
    assert jsonl.code == 0, jsonl.output
    lines = jsonl.stdout.splitlines()
    assert {json.loads(line)["task_id"] for line in lines} == USER_42
    table = cli("find", sqlite_url, "--worker", "celery@beta", "--csv")
    assert table.code == 0, table.output
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert {row["task_id"] for row in rows} == {"w1-mail", "w2-leaf"}
    assert rows[0]["worker"] == "celery@beta"


def test_find_prints_a_table_and_the_next_cursor(cli: Any, sqlite_url: str) -> None:
    result = cli("find", sqlite_url, "--limit", "2")
    assert result.code == 0, result.output
    assert "w3-add" in result.stdout
    assert "next page: --cursor " in result.stdout
    cursor = result.stdout.split("next page: --cursor ", 1)[1].split()[0]
    following = cli("find", sqlite_url, "--limit", "2", "--cursor", cursor, "--json")
    assert following.code == 0, following.output
    assert "w3-add" not in {r["task_id"] for r in following.json["results"]}


def test_find_explain_and_create_indexes_on_sqlite(cli: Any, sqlite_url: str) -> None:
    # Given Celery's table, with only its own indexes
    before = cli("find", sqlite_url, "--state", "FAILURE", "--explain", "--json")
    assert before.code == 0, before.output
    assert before.json["plan"]
    assert not all(index["exists"] for index in before.json["indexes"])
    # When the recommended indexes are created
    made = cli("find", sqlite_url, "--create-indexes", "--json")
    assert made.code == 0, made.output
    assert made.json["created"]
    assert all(index["exists"] for index in made.json["indexes"])
    # Then the plan of a state filter uses one of them, and a second run creates none
    after = cli("find", sqlite_url, "--state", "FAILURE", "--explain", "--json")
    assert any("ix_rk_" in line for line in after.json["plan"]), after.json["plan"]
    again = cli("find", sqlite_url, "--create-indexes", "--json")
    assert again.json["created"] == []


def test_find_masks_the_password(cli: Any, postgres_db: Any) -> None:
    url = sa.make_url(postgres_db.sqlalchemy_url).set(password="s3cr3t-pw")
    full = "db+" + url.render_as_string(hide_password=False)
    write_dataset(postgres_db.url)
    result = cli("find", full, "--json")
    assert result.code == 0, result.output
    assert "s3cr3t-pw" not in result.output
    assert len(result.json["results"]) == len(ALL)


# ------------------------------------------------------------------ show


def test_show_a_failure_with_its_group(cli: Any, redis_db: Any) -> None:
    write_dataset(redis_db.url)
    result = cli("show", "w1-fail", redis_db.url, "--json")
    assert result.code == 0, result.output
    shown = result.json
    assert shown["status"] == "FAILURE"
    assert shown["exception"] == {"type": "ValueError", "message": "report 2 failed"}
    assert "ValueError: report 2 failed" in shown["fields"]["traceback"]
    assert shown["fields"]["kwargs"] == {"user_id": 7}
    assert shown["group"]["group_id"] == "g-1"
    members = {m["task_id"]: m["status"] for m in shown["group"]["members"]}
    assert members == {"w1-report": "SUCCESS", "w1-fail": "FAILURE"}
    assert shown["lifetime"] == "ttl"
    assert 0 < shown["lifetime_s"] <= 86400
    text = cli("show", "w1-fail", redis_db.url)
    assert text.code == 0
    assert "ValueError: report 2 failed" in text.stdout
    assert "group g-1" in text.stdout


def test_show_children_and_lifetime_on_sql(cli: Any, sqlite_url: str) -> None:
    result = cli("show", "w2-root", sqlite_url, "--json")
    assert result.code == 0, result.output
    children = {c["task_id"]: c["status"] for c in result.json["children"]}
    assert children == {"w2-c1": "SUCCESS", "w2-c2": "FAILURE"}
    assert result.json["lifetime"] == "policy"


def test_show_a_missing_result_exits_1(cli: Any, sqlite_url: str) -> None:
    result = cli("show", "no-such-id", sqlite_url)
    assert result.code == 1
    assert "no result no-such-id" in result.stdout
    assert "Traceback" not in result.output


def test_show_never_unpickles_without_accept_pickle(cli: Any, redis_db: Any) -> None:
    from celery import Celery

    app = Celery("pickler", set_as_current=False)
    app.conf.update(
        result_backend=redis_db.url, result_serializer="pickle", accept_content=["pickle"]
    )
    app.backend.store_result("pickled", {"answer": 42}, "SUCCESS")
    refused = cli("show", "pickled", redis_db.url, "--json")
    assert refused.code == 0, refused.output
    assert refused.json["unreadable"]
    assert "accept-pickle" in refused.json["unreadable"]
    assert refused.json["fields"] == {}
    opened = cli("show", "pickled", redis_db.url, "--json", "--accept-pickle")
    assert opened.json["fields"]["result"] == {"answer": 42}


def test_show_and_find_encrypted_results(cli: Any, redis_db: Any) -> None:
    # Given results Celery stored with resultkit-encrypted
    key = generate_key()
    write_dataset(
        redis_db.url,
        "--setting",
        'result_serializer="resultkit-encrypted"',
        "--setting",
        'accept_content=["json", "resultkit-encrypted"]',
        "--setting",
        'result_accept_content=["resultkit-encrypted"]',
        env={"RESULTKIT_ENCRYPTION_KEYS": key},
    )
    # When shown without the key: sealed, with its key id
    sealed = cli("show", "w1-report", redis_db.url, "--json")
    assert sealed.code == 0, sealed.output
    assert sealed.json["sealed"] == {"key_id": key_label(key), "opened": False}
    # When shown and found with the key: opened, and filtered by what they hold
    env = {"RESULTKIT_ENCRYPTION_KEYS": key}
    opened = cli("show", "w1-report", redis_db.url, "--json", env=env)
    assert opened.json["sealed"]["opened"] is True
    assert opened.json["fields"]["result"] == {"rows": 10}
    found = cli("find", redis_db.url, "--kwarg", "user_id=42", "--json", env=env)
    assert {r["task_id"] for r in found.json["results"]} == USER_42
    assert key not in found.output + opened.output


# ------------------------------------------------------------------ failures


def test_failures_groups_by_task_and_exception(cli: Any, sqlite_url: str) -> None:
    result = cli("failures", sqlite_url, "--json")
    assert result.code == 0, result.output
    groups = {(g["name"], g["exception"]): g for g in result.json["groups"]}
    assert set(groups) == {
        ("reports.daily", "ValueError"),
        ("flows.step", "KeyError"),
        ("reports.weekly", "ValueError"),
    }
    daily = groups[("reports.daily", "ValueError")]
    assert daily["count"] == 1
    assert daily["example_id"] == "w1-fail"
    assert daily["example_message"] == "report 2 failed"
    assert daily["first_seen"]
    assert daily["last_seen"]
    assert result.json["total"] == 3
    recent = cli("failures", sqlite_url, "--task", "reports.*", "--state", "RETRY", "--json")
    (retry,) = recent.json["groups"]
    assert (retry["name"], retry["exception"], retry["count"]) == (
        "reports.daily",
        "TimeoutError",
        1,
    )


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_failures_counted_by_the_database(kind: str, request: Any) -> None:
    from resultkit.commands import failures
    from resultkit.query import Query

    db = request.getfixturevalue(f"{kind}_db")
    write_dataset(db.url)
    report = failures(db.url, query=Query.build(since=None))
    got = {(g.name, g.exception): (g.count, g.example_id) for g in report.groups}
    assert got == {
        ("reports.daily", "ValueError"): (1, "w1-fail"),
        ("flows.step", "KeyError"): (1, "w2-c2"),
        ("reports.weekly", "ValueError"): (1, "w3-weekly"),
    }


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["find", "--state", "NOPE"], "no such state"),
        (["find", "--since", "last tuesday"], "--since"),
        (["find", "--kwarg", "user_id"], "KEY=VALUE"),
        (["find", "--cursor", "garbage!"], "not a cursor"),
        (["find", "--limit", "0"], "--limit"),
        (["find", "--json", "--csv"], "one output format"),
        (["find", "--since", "2026-02-01", "--until", "2026-01-01"], "before --until"),
        (["failures", "--state", "DONE"], "no such state"),
        (["show"], "TASK_ID"),
    ],
)
def test_bad_filters_are_one_line_and_exit_2(
    cli: Any, sqlite_url: str, args: list[str], says: str
) -> None:
    where = [] if args == ["show"] else [sqlite_url]
    result = cli(*args[:1], *where, *args[1:])
    assert result.code == 2, result.output
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_name_glob_without_result_extended_names_the_setting(cli: Any, sqlite_db: Any) -> None:
    write_dataset(sqlite_db.url, "--setting", "result_extended=false")
    result = cli("find", sqlite_db.url, "--task", "reports.*")
    assert result.code == 2, result.output
    assert "result_extended" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_queue_on_django_tables_is_refused(cli: Any, postgres_db: Any) -> None:
    write_dataset("django", postgres_db.sqlalchemy_url)
    result = cli("find", "django+" + postgres_db.sqlalchemy_url, "--queue", "q-reports")
    assert result.code == 2, result.output
    assert "--queue" in result.stderr


# ------------------------------------------------------------------ celery results


def test_the_commands_run_inside_celery(tmp_path: Path, sqlite_db: Any) -> None:
    write_dataset(sqlite_db.url)
    (tmp_path / "findapp.py").write_text(
        textwrap.dedent(
            f"""
            from celery import Celery
            app = Celery("findapp", broker="memory://", backend={sqlite_db.url!r})
            app.conf.result_extended = True
            """
        )
    )
    found = run(
        "celery", "-A", "findapp", "results", "find", "--state", "FAILURE", "--json", cwd=tmp_path
    )
    assert found.code == 0, found.output
    assert {r["task_id"] for r in found.json["results"]} == {"w1-fail", "w2-c2", "w3-weekly"}
    shown = run("resultkit", "show", "w3-add", "-A", "findapp", "--json", cwd=tmp_path)
    assert shown.code == 0, shown.output
    assert shown.json["fields"]["result"] == 42
    grouped = run("celery", "-A", "findapp", "results", "failures", "--json", cwd=tmp_path)
    assert grouped.code == 0, grouped.output
    assert grouped.json["total"] == 3
