"""Tables written by real Celery and django-celery-results releases, read by the stores.

Each writer is a virtualenv of its own holding one release (see
:data:`WRITERS`), made with uv the first time it is needed and reused after.
``tests/compat_writer.py`` runs in it and writes results through that
release's own code into a schema or database of this test's own; then
``resultkit stats`` and ``resultkit migrate --verify`` run on it, and the
archive they produce is compared with the writer's manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, CliResult, SqlDB

pytestmark = pytest.mark.compat

#: The drivers every writer needs beside its release.
DRIVERS = ("SQLAlchemy>=2.0.25", "psycopg[binary]>=3.1.18", "PyMySQL>=1.1")
#: Each writer: the layout it writes and the releases its virtualenv holds.
WRITERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "celery-5.4": ("celery", ("celery==5.4.0", "kombu==5.4.2")),
    "celery-5.5": ("celery", ("celery==5.5.3", "kombu==5.5.4")),
    "celery-5.6": ("celery", ("celery==5.6.3", "kombu==5.6.2")),
    "celery-5.7": ("celery", ("celery==5.7.0", "kombu==5.7.0")),
    "django-celery-results-2.5": (
        "django",
        ("django-celery-results==2.5.1", "django>=4.2,<5", "celery==5.4.0", "kombu==5.4.2"),
    ),
    "django-celery-results-2.6": (
        "django",
        ("django-celery-results==2.6.0", "django>=5.2,<6", "celery==5.7.0", "kombu==5.7.0"),
    ),
}
#: Where the writers' virtualenvs live (kept between runs; uv's cache makes a new one fast).
WRITERS_DIR = Path(os.environ.get("RESULTKIT_WRITERS_DIR", ROOT / ".nox" / "writers"))
#: Creating one writer's virtualenv, downloads included (seconds).
WRITER_SETUP_TIMEOUT_S = 600

# (writer, database): every Celery release on each dialect, extended on PostgreSQL
# and MariaDB, plain on SQLite; django-celery-results on PostgreSQL and MariaDB.
CASES = [
    *(
        (name, db, db != "sqlite")
        for name in WRITERS
        if name.startswith("celery-")
        for db in ("postgres", "mysql", "sqlite")
    ),
    *(
        (name, db, True)
        for name in WRITERS
        if name.startswith("django-")
        for db in ("postgres", "mysql")
    ),
]


def _uv() -> str:
    found = shutil.which(
        "uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if found is None:
        pytest.fail("uv is not installed: pip install 'celery-resultkit[dev]'", pytrace=False)
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on *path* (parallel tests and sessions share the writers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def writer_python(name: str) -> Path:
    """The Python of writer *name*'s virtualenv, made (or remade, when its list changed)."""
    requirements = (*WRITERS[name][1], *DRIVERS)
    python_tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    stamp_text = "\n".join(requirements)
    digest = hashlib.sha256(stamp_text.encode()).hexdigest()[:8]
    venv = WRITERS_DIR / f"{name}-{python_tag}-{digest}"
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    with _locked(WRITERS_DIR / f".{venv.name}.lock"):
        if stamp.exists() and stamp.read_text() == stamp_text:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        uv = _uv()
        for command in (
            [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
            [uv, "pip", "install", "--quiet", "--python", str(python), *requirements],
        ):
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=WRITER_SETUP_TIMEOUT_S
            )
            assert done.returncode == 0, f"{' '.join(command)}:\n{done.stderr}"
        stamp.write_text(stamp_text)
    return python


def write_with(name: str, db: SqlDB, extended: bool) -> dict[str, Any]:
    """Run the writer *name* on *db*; its manifest of what it wrote."""
    layout = WRITERS[name][0]
    command = [str(writer_python(name)), str(ROOT / "tests" / "compat_writer.py"), layout]
    command.append(db.sqlalchemy_url)
    if extended and layout == "celery":
        command.append("--extended")
    # Not the project's folder on the path: the writer sees only its own release.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=env, cwd=db_folder(db)
    )
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads(done.stdout)
    return manifest


def db_folder(db: SqlDB) -> Path:
    """A folder for the writer to run in (the SQLite file's, else the system's temp)."""
    database = db.engine.url.database
    if db.engine.url.get_backend_name() == "sqlite" and database:
        return Path(database).parent
    return Path(os.environ.get("TMPDIR", "/tmp"))


def read_archive(path: Path) -> dict[str, dict[str, Any]]:
    """The records of a jsonl archive, by id (the last line of an id wins)."""
    records: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            records[entry["id"]] = entry
    return records


def store_url(layout: str, db: SqlDB) -> str:
    return f"django+{db.sqlalchemy_url}" if layout == "django" else db.url


@pytest.mark.parametrize(
    ("writer", "database", "extended"),
    CASES,
    ids=[f"{w}-{d}-{'extended' if e else 'plain'}" for w, d, e in CASES],
)
def test_a_table_written_by_a_real_release_is_counted_and_migrated_intact(
    writer: str, database: str, extended: bool, cli: Any, request: Any, tmp_path: Path
) -> None:
    # Given results stored by the release itself: successes, a failure, a started task,
    # a custom state and a group
    db: SqlDB = request.getfixturevalue(f"{database}_db")
    manifest = write_with(writer, db, extended)
    url = store_url(manifest["layout"], db)
    tasks = {task["task_id"]: task for task in manifest["tasks"]}
    groups = {group["group_id"]: group for group in manifest["groups"]}

    # When resultkit counts them
    stats: CliResult = cli("stats", url, "--json")

    # Then every task and every state is counted
    assert stats.code == 0, stats.output
    assert stats.json["total"] == len(tasks)
    assert stats.json["by_state"] == dict(Counter(t["status"] for t in tasks.values()))

    # When they are migrated into an archive, verified through Celery's reading of the
    # source (older Celery tables pickle the result column: the test trusts its writer)
    archive = tmp_path / "copy.jsonl.gz"
    moved: CliResult = cli(
        "migrate", url, f"jsonl://{archive}", "--verify", "--accept-pickle", "--json"
    )

    # Then everything is copied and verified, nothing failed
    assert moved.code == 0, moved.output
    summary = moved.json
    assert summary["failed"] == 0, summary["failures"]
    assert summary["copied"] == summary["verified"] == len(tasks) + len(groups)
    # ... and each record holds what the release wrote
    copied = read_archive(archive)
    assert set(copied) == set(tasks) | set(groups)
    for task_id, expected in tasks.items():
        meta = copied[task_id]["meta"]
        assert meta["status"] == expected["status"], task_id
        if expected["status"] == "FAILURE":
            assert meta["result"]["exc_type"] == expected["exc_type"]
            assert list(meta["result"]["exc_message"]) == expected["exc_message"]
            assert "ValueError: it broke" in meta["traceback"]
        else:
            assert meta["result"] == expected["result"], task_id
        if "name" in expected and manifest["extended"]:
            assert meta["name"] == expected["name"]
            assert list(meta["args"]) == expected["args"]
            assert meta["kwargs"] == expected["kwargs"]
    for group_id, expected in groups.items():
        meta = copied[group_id]["meta"]
        assert [member[0][0] for member in meta["result"][1]] == expected["members"]
