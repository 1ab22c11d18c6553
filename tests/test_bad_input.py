"""The bad-input matrix: every command against every kind of bad input.

Each command meets a closed port, a host name that does not resolve, a wrong
password on a password-protected Redis, a PostgreSQL database or user that
does not exist, a read-only user (a Redis ACL user with read commands only, a
PostgreSQL role with SELECT only), malformed archives and invalid settings.
Every case must end with the right exit code, one line on stderr (doctor: its
report, with the failing check), no traceback and no password in any form.

The cases of one command run at once, each the real CLI in a subprocess.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from resultkit.stores import OnConflict, open_store
from tests import services
from tests.conftest import CliResult, SqlDB, free_port, run
from tests.samples import NOW, task

#: Passwords with every character URLs make special; written percent-encoded.
PASSWORD = "Sëcret#Pw/1@?%"
WRONG = "Wrong#Pw/2@?%"
RO_PASSWORD = "Ro:Pw#3/x"
SECRETS = (PASSWORD, WRONG, RO_PASSWORD)


def _q(text: str) -> str:
    return quote(text, safe="")


@dataclass
class Env:
    """Every bad (and one good) input, made for one test."""

    folder: Path
    urls: dict[str, str] = field(default_factory=dict)
    good: str = ""

    def run(self, *args: str) -> CliResult:
        return run("resultkit", *args, cwd=self.folder, timeout=60)


@dataclass
class Case:
    name: str
    args: tuple[str, ...]
    code: int
    #: What the one line (or the failing doctor check) must say.
    says: str = ""


def _app(folder: Path, name: str, backend: str, **settings: Any) -> None:
    lines = ["from celery import Celery", f"app = Celery({name!r}, broker='memory://')"]
    lines.append(f"app.conf.result_backend = {backend!r}")
    lines += [f"app.conf.{key} = {value!r}" for key, value in settings.items()]
    (folder / f"{name}.py").write_text("\n".join(lines) + "\n")


@pytest.fixture
def env(tmp_path: Path, own_redis: Any, postgres_db: SqlDB, sqlite_db: SqlDB) -> Iterator[Env]:
    """The faults of the matrix, with the servers and files they need."""
    env = Env(tmp_path)
    # A key without a TTL: there until a cleanup deletes it
    old = task("old-1", done=NOW - timedelta(days=3)).replace(expires_known=True)
    # A good store to migrate from and to: SQLite with an old and a new result.
    store = open_store(sqlite_db.url)
    store.write_many([old, task("new-1")], OnConflict.SKIP)
    store.close()
    env.good = sqlite_db.url
    # A Redis with a password and a read-only ACL user, holding one old result.
    server = own_redis(
        "--requirepass",
        "Right#Pw/9",
        "--user",
        "ro",
        "on",
        f">{RO_PASSWORD}",
        "~*",
        "+@read",
        "+@connection",
    )
    admin = f"redis://:{_q('Right#Pw/9')}@127.0.0.1:{server.port}/0"
    store = open_store(admin)
    store.write_many([old], OnConflict.SKIP)
    store.close()
    # PostgreSQL: Celery's tables with one old result, and a role that may only read them.
    store = open_store(postgres_db.url)
    store.write_many([old], OnConflict.SKIP)
    store.close()
    role = f"rk_ro_{uuid.uuid4().hex[:8]}"
    admin_engine = sa.create_engine(services.POSTGRES_URL)
    with admin_engine.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA "{postgres_db.name}" TO "{role}"'))
        conn.execute(
            sa.text(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{postgres_db.name}" TO "{role}"')
        )
    pg = sa.make_url(postgres_db.sqlalchemy_url)
    host = f"127.0.0.1:{free_port()}"
    env.urls = {
        "closed-port": f"redis://:{_q(PASSWORD)}@{host}/0",
        "unknown-host": f"redis://:{_q(PASSWORD)}@rk-no-such-host.invalid:6379/0",
        "wrong-password": f"redis://:{_q(WRONG)}@127.0.0.1:{server.port}/0",
        "missing-database": "db+"
        + pg.set(database="rk_no_such_db", password=PASSWORD).render_as_string(False),
        "missing-user": "db+"
        + pg.set(username="rk_no_such_user", password=PASSWORD).render_as_string(False),
        "read-only-redis": f"redis://ro:{_q(RO_PASSWORD)}@127.0.0.1:{server.port}/0",
        "read-only-postgres": "db+"
        + pg.set(username=role, password=RO_PASSWORD).render_as_string(False),
    }
    # Archives: missing, not gzip at all, cut short, and with lines no reader knows.
    lines = [
        json.dumps({"v": 1, "kind": "task", "id": f"a-{i}", "meta": {"status": "SUCCESS"}})
        for i in range(50)
    ]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "plain.jsonl.gz").write_text("\n".join(lines))
    odd = [
        *lines[:3],
        "{not json",
        json.dumps({"v": 99, "kind": "task", "id": "from-the-future", "meta": {}}),
        json.dumps({"v": 1, "kind": "task", "meta": {"status": "SUCCESS"}}),
    ]
    (tmp_path / "odd.jsonl.gz").write_bytes(gzip.compress(("\n".join(odd) + "\n").encode()))
    # Apps: a module that does not import, and settings Celery or resultkit refuse.
    (tmp_path / "broken_app.py").write_text("from celery import Celery\napp = Celery(\n")
    _app(tmp_path, "bad_expires", sqlite_db.url, result_expires="1 day")
    _app(
        tmp_path,
        "bad_retention",
        sqlite_db.url,
        resultkit_retention={"rules": [{"state": "FAILUR", "expires": "1 day"}]},
    )
    try:
        yield env
    finally:
        with admin_engine.begin() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin_engine.dispose()


URL_FAULTS = (
    "closed-port",
    "unknown-host",
    "wrong-password",
    "missing-database",
    "missing-user",
    "read-only-redis",
    "read-only-postgres",
)
#: What each fault's line says (the reason resultkit found).
SAYS = {
    "closed-port": "connection refused",
    "unknown-host": "cannot resolve the host name",
    "wrong-password": "authentication failed",
    "missing-database": "database does not exist",
    "missing-user": "user does not exist",
    "read-only-redis": "permission denied",
    "read-only-postgres": "permission denied",
}
READ_ONLY = ("read-only-redis", "read-only-postgres")


def cases_for(command: str, env: Env) -> list[Case]:
    """The cases of one command, with the exit code and words each must give."""
    cases: list[Case] = []
    for fault in URL_FAULTS:
        url, says = env.urls[fault], SAYS[fault]
        reads_only = fault in READ_ONLY
        if command == "doctor":
            # A bound for a busy machine: each fault is found long before it
            cases.append(Case(fault, ("doctor", url, "--json", "--timeout", "30"), 1, says))
        elif command == "stats":
            cases.append(Case(fault, ("stats", url), 0 if reads_only else 1, says))
        elif command == "migrate-from":
            target = f"jsonl://{env.folder / f'out-{fault}.jsonl.gz'}"
            cases.append(Case(fault, ("migrate", url, target), 0 if reads_only else 1, says))
        elif command == "migrate-to":
            cases.append(Case(fault, ("migrate", env.good, url), 1, says))
        elif command == "cleanup":
            cases.append(Case(fault, ("cleanup", url, "--older-than", "1d"), 1, says))
        elif command == "bench":
            cases.append(Case(fault, ("bench", url, "--seconds", "0.3", "--no-compare"), 1, says))
        elif command == "export":
            args = ("export", url, "--to", str(env.folder / f"export-{fault}.jsonl.gz"))
            cases.append(Case(fault, args, 0 if reads_only else 1, says))
        elif command == "erase":
            # the stored result's kwargs hold k=v: a read-only user may find it, not delete it
            cases.append(Case(fault, ("erase", url, "--kwarg", "k=v", "--yes"), 1, says))
        elif command == "cutover":
            args = ("cutover", "status", "--new", env.good, "--old", url)
            # Old holds what new has, so a reader may learn that old can be dropped.
            cases.append(Case(fault, args, 0 if reads_only else 1, says))
    app_commands = {
        "doctor": ("doctor", "--json", "-A"),
        "stats": ("stats", "-A"),
        "migrate-from": ("migrate", env.good, f"jsonl://{env.folder / 'app.jsonl.gz'}", "-A"),
        "cleanup": ("cleanup", "-A"),
        "bench": ("bench", "--seconds", "0.3", "--no-compare", "-A"),
        "config-check": ("config", "check", "-A"),
        "cutover": ("cutover", "status", "-A"),
        "export": ("export", "--to", str(env.folder / "app-export.csv"), "-A"),
        "erase": ("erase", "--kwarg", "k=v", "--dry-run", "-A"),
    }
    if command in app_commands:
        prefix = app_commands[command]
        cases.append(Case("broken-module", (*prefix, "broken_app"), 2, "broken_app.py"))
        invalid = 1 if command in ("doctor", "config-check") else 2
        if command != "cutover":
            cases.append(Case("bad-expires", (*prefix, "bad_expires"), invalid, "result_expires"))
        if command in ("doctor", "stats", "cleanup", "config-check"):
            says = "unknown state 'FAILUR'"
            cases.append(Case("bad-retention", (*prefix, "bad_retention"), invalid, says))
    if command == "migrate-from":
        for name, code, says in (
            ("missing.jsonl.gz", 2, "does not exist"),
            ("plain.jsonl.gz", 2, "not a gzip"),
            ("cut.jsonl.gz", 1, "truncated"),
            ("odd.jsonl.gz", 1, "line 4"),
        ):
            target = f"db+sqlite:///{env.folder / f'restored-{name}.sqlite3'}"
            args = ("migrate", f"jsonl://{env.folder / name}", target, "--json")
            cases.append(Case(f"archive {name}", args, code, says))
    if command == "cleanup":
        args = ("cleanup", env.good, "--older-than", "1d", "--archive", "plain.jsonl.gz")
        cases.append(Case("damaged archive to append to", args, 1, "damaged"))
    return cases


COMMANDS = (
    "doctor",
    "stats",
    "migrate-from",
    "migrate-to",
    "cleanup",
    "bench",
    "cutover",
    "config-check",
    "export",
    "erase",
)


def problems_of(case: Case, result: CliResult) -> list[str]:
    """What is wrong with how one case ended (empty: nothing)."""
    problems = []
    if result.code != case.code:
        problems.append(f"exit {result.code}, expected {case.code}")
    for secret in SECRETS:
        for form in {secret, _q(secret), quote(secret, safe=" +")}:
            if form in result.output:
                problems.append(f"the password {form!r} is shown")
    if "Traceback" in result.output or "internal error" in result.output:
        problems.append("a traceback or an internal error")
    if case.args[0] == "doctor" and case.code == 1:
        failed = [c for c in result.json["checks"] if c["status"] == "fail"]
        if not failed:
            problems.append("no check failed")
        elif case.says and not any(case.says in c["message"] for c in failed):
            problems.append(f"no failing check says {case.says!r}: {failed}")
        if result.stderr.strip():
            problems.append(f"stderr is not empty: {result.stderr!r}")
    elif case.code:
        lines = result.stderr.strip().splitlines()
        text = lines[0] if len(lines) == 1 else result.stdout
        if len(lines) > 1:
            problems.append(f"{len(lines)} lines on stderr")
        if case.says and case.says not in text:
            problems.append(f"does not say {case.says!r}")
    return problems


@pytest.mark.parametrize("command", COMMANDS)
def test_every_bad_input_is_one_clear_line_with_the_right_exit_code(command: str, env: Env) -> None:
    # Given every bad input this command can meet
    cases = cases_for(command, env)
    # When the command runs on each (all at once, each its own process)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: env.run(*case.args), cases))
    # Then each ends as promised
    report = []
    for case, result in zip(cases, results, strict=True):
        problems = problems_of(case, result)
        if problems:
            report.append(f"{case.name}: {'; '.join(problems)}\n    {result.output.strip()[:600]}")
    assert not report, "\n".join(report)
