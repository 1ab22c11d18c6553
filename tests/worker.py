"""A real Celery worker in a subprocess, with an app module written by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

TASKS = """
import time as _time

@app.task(name="audit.log")
def audit(x):
    return {"audited": x}

@app.task(name="reports.daily")
def daily(x):
    return x * 2

@app.task(name="reports.fail")
def fail(x):
    raise ValueError(f"report {x} failed")

@app.task(name="misc.add")
def add(x, y):
    return x + y

@app.task(name="misc.sum")
def total(values):
    return sum(values)

@app.task(name="misc.sleep")
def sleep(seconds):
    _time.sleep(seconds)
    return seconds
"""


def write_app(
    folder: Path, name: str, broker: str, backend: str, *, tasks: str = TASKS, **settings: Any
) -> str:
    """Write an importable app module *name* in *folder* (with *tasks*); return its queue."""
    queue = f"rk-{uuid.uuid4().hex[:10]}"
    lines = [
        "from celery import Celery",
        f"app = Celery({name!r}, broker={broker!r}, backend={backend!r})",
        f"app.conf.task_default_queue = {queue!r}",
        "app.conf.broker_connection_retry_on_startup = True",
    ]
    lines += [f"app.conf.{key} = {value!r}" for key, value in settings.items()]
    (folder / f"{name}.py").write_text("\n".join(lines) + "\n" + textwrap.dedent(tasks))
    return queue


@contextmanager
def celery_worker(
    folder: Path,
    module: str,
    *,
    pool: str = "solo",
    concurrency: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celery -A module worker`` until the block ends (then a warm shutdown)."""
    command = [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        module,
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "WARNING",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        # A node name of its own: parallel tests' workers must not share a pidbox queue.
        "--hostname",
        f"rk-{uuid.uuid4().hex[:8]}@%h",
    ]
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}", **(extra_env or {})}
    log = open(folder / f"worker-{module}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def load(folder: Path, module: str) -> Any:
    """Import the app module the test wrote (fresh each time)."""
    import importlib

    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop(module, None)
        return importlib.import_module(module).app
    finally:
        sys.path.remove(str(folder))


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)
