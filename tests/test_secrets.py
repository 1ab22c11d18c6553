"""Secrets never leave the process: no command prints a password, in any form.

The passwords hold every character URLs make special, and unicode.  Each
command runs against a password-protected Redis of the test's own (with the
right password, a wrong one, and written raw), through URLs, Celery settings
(-A) and Sentinel's multi-URLs; text, --json and error lines are searched for
the password as written, decoded, percent-encoded (urllib's and SQLAlchemy's
ways) and escaped by repr().
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from resultkit.errors import ResultkitError
from tests.conftest import CliResult, free_port, run

PASSWORD = "Sëcr#t @/?%:;結 x"
OTHER = "0th3r#@/?%: ✓"


def forms(secret: str) -> set[str]:
    """Every way the secret may be printed; and its distinctive pieces."""
    out = {secret, quote(secret, safe=""), quote(secret, safe=" +"), quote_plus(secret)}
    out.add(repr(secret)[1:-1])
    out.update(part for part in ("Sëcr", "結 x", "0th3r") if part in secret)
    return out


def leaks(text: str, *secrets: str) -> list[str]:
    return [form for secret in secrets for form in forms(secret) if form in text]


@pytest.fixture
def protected(own_redis: Any) -> Any:
    """A Redis whose password is PASSWORD."""
    return own_redis("--requirepass", PASSWORD)


def test_no_command_prints_the_password(
    protected: Any, tmp_path: Path, sqlite_db: Any, postgres_db: Any
) -> None:
    # Given URLs with the password percent-encoded (right and wrong), raw, and in -A settings
    port = protected.port
    good = f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/0"
    wrong = f"redis://:{quote(OTHER, safe='')}@127.0.0.1:{port}/0"
    raw = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    closed = [free_port(), free_port()]
    sentinels = (
        ";".join(f"sentinel://:{quote(PASSWORD, safe='')}@127.0.0.1:{p}/0" for p in closed)
        + "?master_name=mymaster"
    )
    pg = postgres_db.url.replace("postgres@", f"postgres:{quote(OTHER, safe='')}@")
    broker = f"amqp://u:{quote(OTHER, safe='')}@127.0.0.1:1//"
    (tmp_path / "secretapp.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('secretapp', broker={broker!r})\n"
        f"app.conf.result_backend = {good!r}\n"
        f"app.conf.resultkit_dual_write = {{'new': {good!r}, 'old': {pg!r}}}\n"
    )
    archive = tmp_path / "a.jsonl.gz"
    audit = tmp_path / "erasures.log"
    commands: list[tuple[str, ...]] = []
    # Sentinels that do not answer cost redis-py's retries (seconds each): doctor and stats
    commands += [("doctor", sentinels, "--timeout", "3"), ("stats", sentinels, "--json")]
    commands += [
        ("doctor", good, "--timeout", "30"),
        ("doctor", good, "--json", "--timeout", "30"),
        ("stats", good),
        ("stats", good, "--json"),
        ("migrate", good, sqlite_db.url, "--verify"),
        ("migrate", sqlite_db.url, good, "--json"),
        ("cleanup", good, "--older-than", "1d", "--archive", str(archive)),
        ("cleanup", good, "--json", "--dry-run"),
        ("bench", good, "--seconds", "0.3", "--no-compare", "--json"),
        ("export", good, "--to", str(tmp_path / "export.jsonl.gz"), "--json"),
        ("erase", good, "--kwarg", "k=v", "--dry-run", "--audit-log", str(audit), "--json"),
    ]
    for url in (wrong, raw):  # refused: every command's one error line
        commands += [
            ("doctor", url, "--json", "--timeout", "3"),
            ("stats", url),
            ("migrate", sqlite_db.url, url, "--json"),
            ("cleanup", url, "--older-than", "1d"),
            ("bench", url, "--seconds", "0.3", "--no-compare"),
            ("export", url, "--to", str(tmp_path / f"export-{len(commands)}.csv")),
            ("erase", url, "--kwarg", "k=v", "--yes", "--audit-log", str(audit)),
        ]
    # PostgreSQL here trusts every client, so the password is accepted, and must still hide
    commands += [
        ("doctor", pg, "--json", "--timeout", "3"),
        ("stats", pg, "--json"),
        ("migrate", pg, f"jsonl://{tmp_path / 'pg.jsonl.gz'}"),
    ]
    commands += [
        ("doctor", "-A", "secretapp"),
        ("doctor", "-A", "secretapp", "--json"),
        ("stats", "-A", "secretapp", "--json"),
        ("cleanup", "-A", "secretapp", "--dry-run"),
        ("config", "check", "-A", "secretapp"),
        ("config", "check", "-A", "secretapp", "--json"),
        ("cutover", "status", "-A", "secretapp"),
        ("cutover", "status", "-A", "secretapp", "--json"),
        ("bench", "-A", "secretapp", "--seconds", "0.3", "--no-compare"),
        ("erase", "-A", "secretapp", "--kwarg", "k=v", "--dry-run", "--audit-log", str(audit)),
        ("retry", "-A", "secretapp", "--state", "FAILURE", "--dry-run"),
        ("retry", "-A", "secretapp", "--state", "FAILURE", "--dry-run", "--json"),
    ]

    def one(args: tuple[str, ...]) -> CliResult:
        return run("resultkit", *args, cwd=tmp_path, timeout=60)

    # When every command runs on each of them
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, commands))
    # Then no output holds the password, in any form, and every run ended on purpose
    problems = []
    for args, result in zip(commands, results, strict=True):
        found = leaks(result.output, PASSWORD, OTHER)
        if found:
            problems.append(f"{args[0]} {args[1][:30]}: shows {found}\n{result.output[:400]}")
        if "internal error" in result.output or "Traceback" in result.output:
            problems.append(f"{args[0]} {args[1][:30]}: {result.output[:400]}")
    problems += [f"the audit log shows {f}" for f in leaks(audit.read_text(), PASSWORD, OTHER)]
    assert not problems, "\n".join(problems)
    # ... and the commands given the right password did their work
    assert results[2].code == 0, results[2].output  # doctor
    assert results[4].code == 0, results[4].output  # stats


MARKED = st.text(min_size=1, max_size=24).map(lambda text: f"Zq{text}Xw")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=MARKED, encoded=st.booleans(), scheme=st.sampled_from(["redis", "sql", "sentinel"]))
def test_property_no_report_or_error_holds_the_password(
    password: str, encoded: bool, scheme: str
) -> None:
    """Whatever the password, written raw or percent-encoded: doctor's report (text and
    JSON) and the one-line error of stats never hold it."""
    from resultkit import doctor
    from resultkit.commands import stats
    from resultkit.render import render_doctor

    written = quote(password, safe="") if encoded else password
    port = free_port()  # nothing listens there
    url = {
        "redis": f"redis://:{written}@127.0.0.1:{port}/0",
        "sql": f"db+postgresql+psycopg://app:{written}@127.0.0.1:{port}/results",
        "sentinel": f"sentinel://:{written}@127.0.0.1:{port}/0;"
        f"sentinel://:{written}@127.0.0.1:{free_port()}/0?master_name=m",
    }[scheme]
    report = doctor(url, timeout=2)
    buffer = io.StringIO()
    render_doctor(report, Console(file=buffer, width=120))
    outputs = [json.dumps(report.as_dict(), ensure_ascii=False), buffer.getvalue()]
    if scheme != "sentinel":  # unanswered Sentinels cost redis-py's retries: seconds each
        try:
            stats(url)
        except ResultkitError as exc:
            outputs.append(str(exc))
    for text in outputs:
        assert not leaks(text, password), text
