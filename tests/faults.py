"""Faults caused for real: servers restarted and failed over, processes killed and
stopped, connections terminated, disks full.  Helpers shared by the fault tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import services
from tests.celery_view import stored_through_celery
from tests.conftest import ROOT, RedisServer, SqlDB

RESULTKIT = str(Path(sys.executable).parent / "resultkit")
NOW = "2026-01-02T03:04:05+00:00"


def fill(client: Any, prefix: str, total: int, *, done: str = NOW, pad: str = "") -> list[str]:
    """Store *total* results as Celery's json serializer writes them (result = their
    number), with a day to live; return their ids."""
    ids = [f"{prefix}{i:06d}" for i in range(total)]
    pipe = client.pipeline(transaction=False)
    for i, task_id in enumerate(ids):
        meta = {
            "status": "SUCCESS",
            "result": i,
            "traceback": None,
            "children": [],
            "date_done": done,
            "task_id": task_id,
        }
        if pad:
            meta["pad"] = pad
        pipe.set(f"celery-task-meta-{task_id}", json.dumps(meta), ex=86400)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()
    return ids


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``resultkit ARGS`` in the background, as a user starts it."""
    return subprocess.Popen(
        [RESULTKIT, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def checkpointed(path: Path, counter: str = "copied") -> int:
    """A counter of the checkpoint at *path* (0 while there is none)."""
    try:
        return int(json.loads(path.read_text())["counters"].get(counter, 0))
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def stop_after(
    process: subprocess.Popen[str], path: Path, at_least: int, sig: signal.Signals
) -> None:
    """Send *sig* to *process* once its checkpoint counts *at_least* records copied;
    fail when it finishes first."""
    wait_until(
        lambda: checkpointed(path) >= at_least or process.poll() is not None,
        what=f"{at_least} records checkpointed",
    )
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(sig)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def restart_from_rdb(own_redis: Any, server: RedisServer) -> RedisServer:
    """SHUTDOWN SAVE, then a new redis-server on the same port loading the RDB file."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = server.client(retry=Retry(NoBackoff(), 0))  # no reconnecting to a server gone
    client.shutdown(save=True)
    client.close()
    server.process.wait(10)
    return own_redis(port=server.port)  # type: ignore[no-any-return]


def one_line(stderr: str) -> str:
    """The single line a failing command printed (asserting it is one, and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    return lines[0]


def rows_and_ids(db: SqlDB, table: str = "celery_taskmeta") -> tuple[int, int]:
    """Rows in the task table, and distinct task ids among them."""
    with db.engine.connect() as conn:
        query = f"SELECT count(*), count(DISTINCT task_id) FROM {table}"
        rows, distinct = conn.execute(sa.text(query)).one()
    return int(rows), int(distinct)


def assert_every_result_once(url: str, ids: list[str], db: SqlDB | None = None) -> None:
    """Each of *ids* (result = its number) reads back through Celery, once; nothing else."""
    stored = stored_through_celery(url, ids)
    missing = [i for i in ids if i not in stored]
    assert not missing, f"{len(missing)} of {len(ids)} results missing, e.g. {missing[:3]}"
    wrong = [i for n, i in enumerate(ids) if stored[i]["result"] != n]
    assert not wrong, f"{len(wrong)} results differ, e.g. {wrong[:3]}"
    assert {stored[i]["status"] for i in ids} == {"SUCCESS"}
    if db is not None:
        assert rows_and_ids(db) == (len(ids), len(ids))


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "256k") -> Iterator[Path]:
    """A file system of *size* mounted at *folder*: writing past it fails with ENOSPC."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        message = f"cannot mount a small tmpfs for a full disk: {done.stderr.strip()}"
        if services.in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_disk(folder: Path, leave: int = 0) -> None:
    """Fill the file system of *folder*, leaving about *leave* bytes."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler", "wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(0, free - leave))
        handle.flush()
        os.fsync(handle.fileno())


def with_application_name(db: SqlDB, name: str) -> str:
    """*db*'s Celery URL, its connections named *name* in pg_stat_activity."""
    url = sa.make_url(db.sqlalchemy_url).update_query_dict({"application_name": name})
    return "db+" + url.render_as_string(hide_password=False)


def terminate_backends(admin: sa.Engine, name: str) -> int:
    """pg_terminate_backend every connection named *name*; return how many."""
    with admin.connect() as conn:
        query = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :name AND pid <> pg_backend_pid()"
        )
        return int(conn.execute(sa.text(query), {"name": name}).scalar_one())


def with_session_timeouts(db: SqlDB, ms: int) -> str:
    """*db*'s Celery URL, whose sessions PostgreSQL closes after *ms* idle (in a
    transaction or not)."""
    url = sa.make_url(db.sqlalchemy_url)
    options = url.query.get("options", "")
    options = f"{options} -cidle_session_timeout={ms} -cidle_in_transaction_session_timeout={ms}"
    return "db+" + url.update_query_dict({"options": options.strip()}).render_as_string(
        hide_password=False
    )
