"""Fixtures: real Redis, PostgreSQL, MariaDB/MySQL, SQLite and RabbitMQ, each test isolated.

A test that needs a server takes its fixture; when the server does not answer
the test is skipped on a developer machine and *fails* under ``CI=true``.
Isolation: each test gets its own Redis database number, its own PostgreSQL
schema, its own MySQL database and its own SQLite file, removed afterwards.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from resultkit._celery_compat import CELERY_VERSION, tables_pickle_results
from resultkit.codec import Codec
from resultkit.stores import Store, open_store
from tests import services

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def require(name: str) -> None:
    """Skip (or fail under CI) when the service *name* does not answer."""
    if services.reachable(name):
        return
    message = (
        f"{name} is not reachable at {services.SERVICES[name]}: start it "
        "(see CONTRIBUTING.md) or set RESULTKIT_TEST_{name.upper()}_URL"
    )
    if services.in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# ------------------------------------------------------------------ the CLI


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self, check_id: str) -> dict[str, Any]:
        for check in self.json["checks"]:
            if check["id"] == check_id:
                return check  # type: ignore[no-any-return]
        raise AssertionError(f"no check {check_id!r} in {[c['id'] for c in self.json['checks']]}")


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> CliResult:
    """Run a console script of this virtualenv (``resultkit``, ``celery``) in a subprocess."""
    command = [str(BIN / args[0]), *args[1:]]
    full_env = {**os.environ, "PYTHONPATH": str(cwd or ROOT), **(env or {})}
    done = subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def run_on_terminal(command: str, cwd: Path) -> CliResult:
    """Run ``resultkit ARGS`` (a shell string) under script(1), which gives it a pseudo-terminal."""
    done = subprocess.run(
        ["script", "-qec", f"{BIN / 'resultkit'} {command}", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """Run ``resultkit ARGS`` in a fresh folder."""

    def invoke(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        return run("resultkit", *args, cwd=tmp_path, env=env, timeout=timeout)

    return invoke


# ------------------------------------------------------------------- Redis

REDIS_DATABASES = range(1, 16)
_LOCK = "resultkit-test:lock:db:{}"


@dataclass
class RedisDB:
    """One Redis database number, claimed for one test."""

    url: str
    number: int
    client: Any


@contextlib.contextmanager
def redis_database() -> Iterator[RedisDB]:
    """Claim a Redis database number of its own (flushed before and after)."""
    import redis

    require("redis")
    base = services.REDIS_URL.rstrip("/")
    locks = redis.Redis.from_url(f"{base}/0")
    token = f"{os.getpid()}-{uuid.uuid4()}"
    deadline = time.monotonic() + 60
    while True:
        number = next(
            (n for n in REDIS_DATABASES if locks.set(_LOCK.format(n), token, nx=True, ex=900)),
            None,
        )
        if number is not None:
            break
        if time.monotonic() > deadline:
            pytest.fail("no free Redis database number for this test")
        time.sleep(0.1)
    client = redis.Redis.from_url(f"{base}/{number}")
    client.flushdb()
    try:
        yield RedisDB(f"{base}/{number}", number, client)
    finally:
        client.flushdb()
        client.close()
        if locks.get(_LOCK.format(number)) == token.encode():
            locks.delete(_LOCK.format(number))
        locks.close()


@pytest.fixture
def redis_db() -> Iterator[RedisDB]:
    """A Redis database of this test's own (flushed before and after)."""
    with redis_database() as db:
        yield db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server process of this test's own, for server-wide settings."""

    port: int
    process: subprocess.Popen[bytes]
    #: Where its RDB file (``dump-<port>.rdb``) is saved and loaded from.
    folder: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)


def start_redis_server(tmp_path: Path, *extra: str, port: int | None = None) -> RedisServer:
    """Start redis-server on *port* (a free one by default); it loads
    ``dump-<port>.rdb`` from *tmp_path* when that file exists."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed; the tests that need a server of their own fail"
        if services.in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = port or free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--dbfilename",
            f"dump-{port}.rdb",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process, tmp_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe:
                probe.sendall(b"PING\r\n")
                # +PONG, or -NOAUTH from a server with a password (-LOADING: not yet)
                if probe.recv(64)[:8] not in (b"", b"-LOADING"):
                    return server
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail(f"redis-server on port {port} did not start")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """Start redis-server processes of this test's own; all stopped afterwards."""
    started: list[RedisServer] = []

    def start(*extra: str, port: int | None = None) -> RedisServer:
        server = start_redis_server(tmp_path, *extra, port=port)
        started.append(server)
        return server

    yield start
    # Result objects still alive would unsubscribe from these servers when collected.
    gc.collect()
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)  # a stopped server ignores SIGTERM
            server.process.terminate()
            server.process.wait(10)


# -------------------------------------------------------------- PostgreSQL


@dataclass
class SqlDB:
    """A database slice of this test's own: a schema (PostgreSQL) or a database (MySQL)."""

    #: The SQLAlchemy URL (no ``db+``).
    sqlalchemy_url: str
    engine: sa.Engine
    name: str

    @property
    def url(self) -> str:
        """The Celery result_backend URL."""
        return f"db+{self.sqlalchemy_url}"


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _with_query(url: str, **params: str) -> str:
    parsed = sa.make_url(url)
    return parsed.update_query_dict(params).render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_schema() -> Iterator[SqlDB]:
    """A PostgreSQL schema of its own, first on the search_path of every connection."""
    require("postgres")
    schema = _unique("rk")
    admin = sa.create_engine(services.POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = _with_query(services.POSTGRES_URL, options=f"-csearch_path={schema}")
    engine = sa.create_engine(url)
    try:
        yield SqlDB(url, engine, schema)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_db() -> Iterator[SqlDB]:
    """A PostgreSQL schema of this test's own."""
    with postgres_schema() as db:
        yield db


@contextlib.contextmanager
def mysql_database() -> Iterator[SqlDB]:
    """A MySQL/MariaDB database of its own."""
    require("mysql")
    name = _unique("rk")
    admin = sa.create_engine(services.MYSQL_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    url = sa.make_url(services.MYSQL_URL).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        yield SqlDB(url, engine, name)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def mysql_db() -> Iterator[SqlDB]:
    """A MySQL/MariaDB database of this test's own."""
    with mysql_database() as db:
        yield db


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[SqlDB]:
    """A SQLite database file in this test's own folder."""
    url = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    engine = sa.create_engine(url)
    try:
        yield SqlDB(url, engine, "main")
    finally:
        engine.dispose()


@pytest.fixture
def amqp_url() -> str:
    """The RabbitMQ broker (tests isolate themselves by unique queue names)."""
    require("rabbitmq")
    return services.AMQP_URL


@pytest.fixture
def sentinel(own_redis: Any, tmp_path: Path) -> Iterator[tuple[int, RedisServer]]:
    """A Redis Sentinel of this test's own watching a master of its own (``mymaster``)."""
    master = own_redis()
    port = free_port()
    config = tmp_path / f"sentinel-{port}.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen(
        [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    import redis

    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                masters = redis.Redis(port=port, socket_connect_timeout=0.2).sentinel_masters()
                if "mymaster" in masters:
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("redis sentinel did not start")
            time.sleep(0.1)
        yield port, master
    finally:
        process.terminate()
        process.wait(10)


# ------------------------------------------------------------------ stores

#: The installed Celery's SQL tables pickle results (5.4-5.6): the stores read them
#: only with accept_pickle, as a user passes --accept-pickle.
PICKLED_LAYOUT = tables_pickle_results()


def accepts_pickle(url: str) -> bool:
    """Whether a store at *url* is opened with accept_pickle in the tests: Celery's SQL
    tables when the installed Celery pickles their result column."""
    return PICKLED_LAYOUT and url.startswith("db+")


def accept_pickle_args(*urls: str) -> tuple[str, ...]:
    """``--accept-pickle`` when one of *urls* is such a store, else nothing."""
    return ("--accept-pickle",) if any(accepts_pickle(url) for url in urls) else ()


def open_test_store(url: str) -> Store:
    """The store at *url*, with accept_pickle where :func:`accepts_pickle` says."""
    return open_store(url, codec=Codec(accept_pickle=accepts_pickle(url)))


@pytest.fixture(autouse=True)
def _one_database_per_celery_session_manager() -> None:
    """Celery 5.4's ``db+`` backend keeps one ``SessionManager`` per process, which
    creates the tables in the first database it meets only (fixed in Celery 5.5).
    Each test has databases of its own, as a process of its own would: the manager
    forgets the earlier ones before each test.  The limitation itself is proven by
    ``test_resultkit_db.py::test_celerys_backend_makes_its_tables_in_a_second_database``.
    """
    if CELERY_VERSION == (5, 4):
        from celery.backends.database import DatabaseBackend

        defaults = DatabaseBackend.ResultSession.__defaults__ or ()
        for manager in defaults:
            if hasattr(manager, "prepared"):
                manager.prepared = False


STORE_KINDS = ("redis", "postgres", "mysql", "sqlite", "django", "file", "archive")


def store_url_for(kind: str, request: Any, tmp_path: Path) -> str:
    """A fresh, isolated URL of the given store kind."""
    if kind == "redis":
        return str(request.getfixturevalue("redis_db").url)
    if kind in ("postgres", "mysql", "sqlite"):
        return str(request.getfixturevalue(f"{kind}_db").url)
    if kind == "django":
        return "django+" + request.getfixturevalue("postgres_db").sqlalchemy_url
    if kind == "file":
        return f"file://{tmp_path / 'results'}"
    if kind == "archive":
        return f"jsonl://{tmp_path / 'archive.jsonl.gz'}"
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_url(request: Any, tmp_path: Path) -> str:
    """Each store in turn: the contract suite runs on every one."""
    return store_url_for(request.param, request, tmp_path / "store")


@dataclass
class SentinelSet:
    """A Sentinel of this test's own watching ``mymaster``, which has one replica."""

    port: int
    master: RedisServer
    replica: RedisServer

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}/0?master_name=mymaster"

    def sentinel(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=0.5, decode_responses=True)

    def master_port(self) -> int:
        return int(self.sentinel().sentinel_get_master_addr_by_name("mymaster")[1])

    def fail_over(self, timeout: float = 20) -> None:
        """The master dies (SIGKILL) and the Sentinel promotes the replica."""
        import redis

        old, new = self.master, self.replica
        old.process.kill()
        old.process.wait(10)
        self.sentinel().execute_command("SENTINEL FAILOVER mymaster")
        deadline = time.monotonic() + timeout
        while True:
            try:
                role = new.client(decode_responses=True).info("replication").get("role")
                if self.master_port() == new.port and role == "master":
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the sentinel failover did not complete")
            time.sleep(0.05)
        self.master, self.replica = new, old


@pytest.fixture
def sentinel_with_replica(own_redis: Any, tmp_path: Path) -> Iterator[SentinelSet]:
    """A master, a replica of it, and a Sentinel watching both, all of this test's own."""
    import redis

    # No delay before a full sync: the replica links at once, not after 5 s.
    master = own_redis("--repl-diskless-sync-delay", "0")
    replica = own_redis(
        "--replicaof", "127.0.0.1", str(master.port), "--repl-diskless-sync-delay", "0"
    )
    deadline = time.monotonic() + 15
    # Linked before the Sentinel starts: its first look at the master finds the replica.
    while (
        replica.client(decode_responses=True).info("replication").get("master_link_status") != "up"
    ):
        if time.monotonic() > deadline:
            pytest.fail("the replica did not link to its master")
        time.sleep(0.05)
    port = free_port()
    config = tmp_path / f"sentinel-{port}.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 2000\n"
        "sentinel failover-timeout mymaster 10000\n"
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen(
        [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    watched = SentinelSet(port, master, replica)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                replicas = watched.sentinel().sentinel_slaves("mymaster")
                if any(int(r["port"]) == replica.port for r in replicas):
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the sentinel did not find the replica")
            time.sleep(0.1)
        yield watched
    finally:
        process.terminate()
        process.wait(10)


# ----------------------------------------------------------- Redis Cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: Any) -> Iterator[Any]:
    """A six-node Redis Cluster (three masters, three replicas) of this test session's own.

    Tests share it; each keeps to its own key prefix (:func:`cluster_keys`), and a
    test that kills or moves something leaves the cluster healthy again.
    """
    from tests.cluster import ClusterUnavailable, start_cluster

    try:
        cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    except ClusterUnavailable as exc:
        if services.in_ci():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        gc.collect()  # results still alive unsubscribe while the nodes answer
        cluster.stop()


@contextlib.contextmanager
def cluster_keys(cluster: Any) -> Iterator[str]:
    """A key prefix of its own on *cluster*; every key under it is deleted afterwards."""
    prefix = f"rk{uuid.uuid4().hex[:8]}-"
    try:
        yield prefix
    finally:
        cluster.wait_healthy()
        for node in cluster.masters():
            client = node.client()
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            keys += list(client.scan_iter(match=f"{{{prefix}*", count=1000))
            for key in keys:
                client.delete(key)
            client.close()


@pytest.fixture
def cluster_prefix(redis_cluster: Any) -> Iterator[str]:
    """This test's own key prefix on the session's cluster (``global_keyprefix``)."""
    with cluster_keys(redis_cluster) as prefix:
        yield prefix


# ------------------------------------------------------- S3 (SeaweedFS)


def _start_seaweed(folder: Path) -> Any:
    from tests.seaweed import SeaweedUnavailable, start_seaweed

    try:
        return start_seaweed(folder)
    except SeaweedUnavailable as exc:
        if services.in_ci():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: Any) -> Iterator[Any]:
    """A SeaweedFS S3 server of this test session's own (tests.seaweed); each test
    keeps to its own bucket (:func:`s3_bucket`)."""
    server = _start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class S3Bucket:
    """A bucket of this test's own on a SeaweedFS server, and the AWS environment to reach it."""

    name: str
    server: Any

    @property
    def env(self) -> dict[str, str]:
        return dict(self.server.env())

    def url(self, prefix: str = "results") -> str:
        return f"s3://{self.name}/{prefix}"

    @property
    def client(self) -> Any:
        return self.server.client()

    def object_keys(self) -> list[str]:
        """Every object key in the bucket."""
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.name)
            for item in page.get("Contents", [])
        ]


def make_bucket(server: Any) -> S3Bucket:
    bucket = S3Bucket(f"rk-{uuid.uuid4().hex[:12]}", server)
    bucket.client.create_bucket(Bucket=bucket.name)
    return bucket


def drop_bucket(bucket: S3Bucket) -> None:
    if bucket.server.process.poll() is not None:
        return
    client = bucket.client
    for key in bucket.object_keys():
        client.delete_object(Bucket=bucket.name, Key=key)
    uploads = client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    for upload in uploads:
        client.abort_multipart_upload(
            Bucket=bucket.name, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    client.delete_bucket(Bucket=bucket.name)


@pytest.fixture
def s3_bucket(seaweed: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A bucket of this test's own (emptied and removed afterwards); the standard AWS
    variables of this process point at its server."""
    bucket = make_bucket(seaweed)
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    try:
        yield bucket
    finally:
        drop_bucket(bucket)


@pytest.fixture
def own_seaweed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A SeaweedFS server of this test's own (one it may kill), with one bucket."""
    server = _start_seaweed(tmp_path / "seaweed")
    try:
        bucket = make_bucket(server)
        for name, value in bucket.env.items():
            monkeypatch.setenv(name, value)
        yield bucket
    finally:
        server.stop()
