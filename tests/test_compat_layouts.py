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

from resultkit._celery_compat import CELERY_VERSION
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


def _release(name: str) -> tuple[int, int]:
    major, minor = name.rsplit("-", 1)[1].split(".")
    return int(major), int(minor)


# (writer, database, extended): each Celery release on each dialect, extended on PostgreSQL
# and MariaDB, plain on SQLite; django-celery-results on PostgreSQL and MariaDB.  A table
# of a Celery newer than the one installed is no case: Celery itself does not read it
# (5.4's models unpickle the result column that 5.7 fills with JSON).
CASES = [
    *(
        (name, db, db != "sqlite")
        for name in WRITERS
        if name.startswith("celery-") and _release(name) <= CELERY_VERSION
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


def run_writer(name: str, db: SqlDB, extended: bool, *extra: str) -> dict[str, Any]:
    """Run ``compat_writer.py`` of writer *name* on *db*; the JSON document it prints."""
    layout = WRITERS[name][0]
    command = [str(writer_python(name)), str(ROOT / "tests" / "compat_writer.py"), layout]
    command.append(db.sqlalchemy_url)
    if extended and layout == "celery":
        command.append("--extended")
    # Not the project's folder on the path: the writer sees only its own release.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=db_folder(db),
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def assert_holds(manifest: dict[str, Any], tasks: dict[str, Any], groups: dict[str, Any]) -> None:
    """*tasks* (id -> meta) and *groups* (id -> member ids) are what the manifest wrote."""
    assert set(tasks) == {task["task_id"] for task in manifest["tasks"]}
    for expected in manifest["tasks"]:
        task_id = expected["task_id"]
        meta = tasks[task_id]
        assert meta["status"] == expected["status"], task_id
        if expected["status"] == "FAILURE":
            assert meta["exc_type"] == expected["exc_type"], task_id
            assert list(meta["exc_message"]) == expected["exc_message"], task_id
            assert "ValueError: it broke" in meta["traceback"], task_id
        else:
            assert meta["result"] == expected["result"], task_id
        if "name" in expected and manifest["extended"]:
            assert meta["name"] == expected["name"], task_id
            assert list(meta["args"]) == expected["args"], task_id
            assert meta["kwargs"] == expected["kwargs"], task_id
    assert groups == {group["group_id"]: group["members"] for group in manifest["groups"]}


def archived(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tasks (id -> meta, failures flattened) and groups (id -> members) of an archive."""
    tasks, groups = {}, {}
    for record_id, entry in read_archive(path).items():
        meta = entry["meta"]
        if entry["kind"] == "group":
            groups[record_id] = [member[0][0] for member in meta["result"][1]]
            continue
        if meta["status"] == "FAILURE":
            meta = {**meta, **meta["result"]}
        tasks[record_id] = meta
    return tasks, groups


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


# The first case of a run may make the writers' virtualenvs (one at a time, under a lock).
@pytest.mark.timeout(len(WRITERS) * WRITER_SETUP_TIMEOUT_S + 300)
@pytest.mark.parametrize(
    ("writer", "database", "extended"),
    CASES,
    ids=[f"{w}-{d}-{'extended' if e else 'plain'}" for w, d, e in CASES],
)
def test_a_table_written_by_a_real_release_is_read_migrated_and_written_back(
    writer: str, database: str, extended: bool, cli: Any, request: Any, tmp_path: Path
) -> None:
    # Given results stored by the release itself: successes, a failure, a started task,
    # a custom state and a group
    db: SqlDB = request.getfixturevalue(f"{database}_db")
    manifest = run_writer(writer, db, extended)
    url = store_url(manifest["layout"], db)
    records = len(manifest["tasks"]) + len(manifest["groups"])

    # When resultkit counts them
    stats: CliResult = cli("stats", url, "--json")

    # Then every task and every state is counted
    assert stats.code == 0, stats.output
    assert stats.json["total"] == len(manifest["tasks"])
    assert stats.json["by_state"] == dict(Counter(t["status"] for t in manifest["tasks"]))

    # When they are migrated into an archive, verified through Celery's reading of the
    # source (older Celery tables pickle the result column: the test trusts its writer)
    archive = tmp_path / "copy.jsonl.gz"
    moved: CliResult = cli(
        "migrate", url, f"jsonl://{archive}", "--verify", "--accept-pickle", "--json"
    )

    # Then everything is copied and verified, nothing failed, and each record in the
    # archive holds what the release wrote
    assert moved.code == 0, moved.output
    summary = moved.json
    assert summary["failed"] == 0, summary["failures"]
    assert summary["copied"] == summary["verified"] == records
    assert_holds(manifest, *archived(archive))

    # When the archive is written back over the release's own rows
    back: CliResult = cli(
        "migrate", f"jsonl://{archive}", url, "--on-conflict", "overwrite", "--json"
    )

    # Then the release reads every result as it wrote it
    assert back.code == 0, back.output
    assert back.json["copied"] == records
    manifest_file = tmp_path / "manifest.json"
    manifest_file.write_text(json.dumps(manifest))
    seen = run_writer(writer, db, extended, "--read", str(manifest_file))
    assert_holds(
        manifest,
        {task["task_id"]: task for task in seen["tasks"]},
        {group["group_id"]: group["members"] for group in seen["groups"]},
    )
