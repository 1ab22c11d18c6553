"""``resultkit config new`` and ``resultkit config check``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..apps import load_app
from ..boundary import translating
from ..checks.audit import AuditContext, audit
from ..durations import format_duration, parse_duration
from ..errors import UsageError
from ..report import CheckResult, Status
from ..urls import parse_backend_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["BACKENDS", "ConfigCheckReport", "config_check", "config_new"]

BACKENDS = ("redis", "rediss", "sentinel", "rediscluster", "postgresql", "mysql", "sqlite", "rpc")

_HEADER = '''"""Celery configuration written by `resultkit config new --backend {backend}`.

Credentials come from the environment, or from the file .env beside this one
(cp .env.example .env; a variable set in the environment wins over the file);
nothing secret is written here, and every credential is percent-encoded into
its URL, whatever characters it holds.  Load it with
app.config_from_object("celeryconfig").  Check it with
`resultkit config check -A celeryconfig` and `resultkit doctor -A celeryconfig`.
"""

import os
from pathlib import Path
from urllib.parse import quote


def _read_dotenv(path):
    """The KEY=VALUE lines of a .env file: # comments, 'export ', quotes around values."""
    values = {{}}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in ("'", '"'):
            value = value[1:-1]
        values[key] = value
    return values


_DOTENV = _read_dotenv(Path(__file__).with_name(".env"))


def _env(name, default=""):
    return os.environ.get(name, _DOTENV.get(name, default))


def _quoted(name, default=""):
    """A credential from the environment, percent-encoded for a URL."""
    return quote(_env(name, default), safe="")

'''

_BROKER = """
# The broker (RabbitMQ here; any kombu transport works): CELERY_BROKER_URL as a
# whole (percent-encode its password yourself), or built from its parts.
broker_url = _env("CELERY_BROKER_URL") or "amqp://{auth}{host}:{port}/{vhost}".format(
    auth=(
        f"{_quoted('CELERY_BROKER_USER')}:{_quoted('CELERY_BROKER_PASSWORD')}@"
        if _env("CELERY_BROKER_USER")
        else ""
    ),
    host=_env("CELERY_BROKER_HOST", "localhost"),
    port=_env("CELERY_BROKER_PORT", "5672"),
    vhost=_quoted("CELERY_BROKER_VHOST", "/"),
)
"""

_COMMON = """
# JSON only: a pickle payload can run code in every client that reads it.
result_serializer = {serializer!r}
accept_content = [{serializer!r}]
result_accept_content = [{serializer!r}]

# Store task name, args, worker and queue with each result: needed to find
# results by task and for per-task retention.
result_extended = True

# Results live {expires_text} unless a retention rule says otherwise.
result_expires = {expires}
"""

_BACKEND_BLOCKS: dict[str, str] = {
    "redis": """
# Results in Redis ({alias}); a database of their own, apart from the broker.
_password = _quoted("RESULT_REDIS_PASSWORD")
result_backend = "{scheme}redis://{{auth}}{{host}}:{{port}}/{{db}}".format(
    auth=f":{{_password}}@" if _password else "",
    host=_env("RESULT_REDIS_HOST", "localhost"),
    port=_env("RESULT_REDIS_PORT", "6379"),
    db=_env("RESULT_REDIS_DB", "1"),
)
# Fail fast instead of hanging when Redis is unreachable.
redis_socket_connect_timeout = 5
redis_socket_timeout = 10
redis_retry_on_timeout = True
result_backend_always_retry = True
result_backend_max_retries = 10
""",
    "rediss": """
# Results in Redis over TLS ({alias}): certificates are verified.
_password = _quoted("RESULT_REDIS_PASSWORD")
result_backend = (
    "{scheme}rediss://{{auth}}{{host}}:{{port}}/{{db}}?ssl_cert_reqs=required&ssl_ca_certs={{ca}}"
).format(
    auth=f":{{_password}}@" if _password else "",
    host=_env("RESULT_REDIS_HOST", "localhost"),
    port=_env("RESULT_REDIS_PORT", "6380"),
    db=_env("RESULT_REDIS_DB", "1"),
    ca=_env("RESULT_REDIS_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"),
)
redis_socket_connect_timeout = 5
redis_socket_timeout = 10
redis_retry_on_timeout = True
result_backend_always_retry = True
result_backend_max_retries = 10
""",
    "sentinel": """
# Results in Redis behind Sentinel ({alias}): the master name is a transport option.
_password = _quoted("RESULT_REDIS_PASSWORD")
result_backend = ";".join(
    "{scheme}sentinel://{{auth}}{{address}}/{{db}}".format(
        auth=f":{{_password}}@" if _password else "",
        address=address.strip(),
        db=_env("RESULT_REDIS_DB", "1"),
    )
    for address in _env("RESULT_SENTINELS", "localhost:26379").split(",")
)
result_backend_transport_options = {{"master_name": _env("RESULT_SENTINEL_MASTER", "mymaster")}}
redis_socket_connect_timeout = 5
redis_socket_timeout = 10
result_backend_always_retry = True
result_backend_max_retries = 10
""",
    "rediscluster": """
# Results on a Redis Cluster through resultkit-redis (docs/redis-cluster.md): any
# reachable nodes find the rest; Celery's key names; get() woken by sharded pub/sub.
_user, _password = _quoted("RESULT_REDIS_USER"), _quoted("RESULT_REDIS_PASSWORD")
result_backend = "resultkit-redis+rediscluster://{{auth}}{{nodes}}{{tls}}".format(
    auth=f"{{_user}}:{{_password}}@" if _password else "",
    nodes=",".join(n.strip() for n in _env("RESULT_REDIS_NODES", "localhost:6379").split(",")),
    tls="?ssl=true&ssl_cert_reqs=required" if _env("RESULT_REDIS_TLS") == "yes" else "",
)
# Each store waits for one replica, so that an acknowledged result survives its
# master's death (0 to store faster and accept losing the last writes then).
resultkit_redis_wait_replicas = int(_env("RESULT_REDIS_WAIT_REPLICAS", "1"))
resultkit_redis_wait_timeout = 1.0
redis_socket_connect_timeout = 5
redis_socket_timeout = 10
# A failover takes about cluster-node-timeout: stores are retried through it.
result_backend_transport_options = {{"retry_policy": {{"max_retries": 30, "interval_max": 1}}}}
""",
    "postgresql": """
# Results in PostgreSQL through resultkit-db: Celery's own tables, pooled
# connections, one upsert per result, get() woken by LISTEN/NOTIFY.
result_backend = "resultkit-db+postgresql+psycopg://{{user}}:{{password}}@{{host}}:{{port}}/{{name}}{{options}}".format(
    user=_quoted("RESULT_DB_USER", "celery"),
    password=_quoted("RESULT_DB_PASSWORD"),
    host=_env("RESULT_DB_HOST", "localhost"),
    port=_env("RESULT_DB_PORT", "5432"),
    name=_env("RESULT_DB_NAME", "celery_results"),
    options=("?" + _env("RESULT_DB_OPTIONS")) if _env("RESULT_DB_OPTIONS") else "",
)
database_engine_options = {{"pool_size": 5, "max_overflow": 5, "pool_recycle": 3600}}
result_backend_always_retry = True
result_backend_max_retries = 10
# Delete expired rows hourly from celery beat (resultkit-db deletes in short batches);
# or run `resultkit cleanup -A celeryconfig` from cron instead of beat.
beat_schedule = {{"results-cleanup": {{"task": "celery.backend_cleanup", "schedule": 3600}}}}
""",
    "mysql": """
# Results in MySQL/MariaDB through resultkit-db (PyMySQL driver).
result_backend = "resultkit-db+mysql+pymysql://{{user}}:{{password}}@{{host}}:{{port}}/{{name}}".format(
    user=_quoted("RESULT_DB_USER", "celery"),
    password=_quoted("RESULT_DB_PASSWORD"),
    host=_env("RESULT_DB_HOST", "localhost"),
    port=_env("RESULT_DB_PORT", "3306"),
    name=_env("RESULT_DB_NAME", "celery_results"),
)
# resultkit-db runs each statement in autocommit, so a polling get() never keeps
# seeing PENDING the way MySQL's REPEATABLE READ can make Celery's db+ backend do.
database_engine_options = {{"pool_recycle": 3600}}
result_backend_always_retry = True
result_backend_max_retries = 10
beat_schedule = {{"results-cleanup": {{"task": "celery.backend_cleanup", "schedule": 3600}}}}
""",
    "sqlite": """
# Results in a SQLite file through resultkit-db: one machine, no server.
result_backend = "resultkit-db+sqlite:///" + _env("RESULT_DB_PATH", "celery-results.sqlite3")
beat_schedule = {{"results-cleanup": {{"task": "celery.backend_cleanup", "schedule": 3600}}}}
""",
    "rpc": """
# Results as messages back to the client that sent the task (rpc://): nothing
# is stored, only that client can read a result, and chords are not supported.
result_backend = "rpc://"
result_persistent = False
""",
}

_ENV: dict[str, str] = {
    "redis": "RESULT_REDIS_HOST=localhost\nRESULT_REDIS_PORT=6379\nRESULT_REDIS_DB=1\n"
    "RESULT_REDIS_PASSWORD=\n",
    "rediss": "RESULT_REDIS_HOST=redis.example.com\nRESULT_REDIS_PORT=6380\nRESULT_REDIS_DB=1\n"
    "RESULT_REDIS_PASSWORD=\nRESULT_REDIS_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\n",
    "sentinel": "RESULT_SENTINELS=sentinel-1:26379,sentinel-2:26379\n"
    "RESULT_SENTINEL_MASTER=mymaster\nRESULT_REDIS_DB=1\nRESULT_REDIS_PASSWORD=\n",
    "rediscluster": "RESULT_REDIS_NODES=redis-1:6379,redis-2:6379,redis-3:6379\n"
    "RESULT_REDIS_USER=default\nRESULT_REDIS_PASSWORD=\nRESULT_REDIS_TLS=no\n"
    "RESULT_REDIS_WAIT_REPLICAS=1\n",
    "postgresql": "RESULT_DB_HOST=localhost\nRESULT_DB_PORT=5432\nRESULT_DB_NAME=celery_results\n"
    "RESULT_DB_USER=celery\nRESULT_DB_PASSWORD=\nRESULT_DB_OPTIONS=\n",
    "mysql": "RESULT_DB_HOST=localhost\nRESULT_DB_PORT=3306\nRESULT_DB_NAME=celery_results\n"
    "RESULT_DB_USER=celery\nRESULT_DB_PASSWORD=\n",
    "sqlite": "RESULT_DB_PATH=celery-results.sqlite3\n",
    "rpc": "",
}

_ENV_HEADER = """\
# Copy to .env beside celeryconfig.py (never commit it) and fill in the values:
# celeryconfig.py reads it, and a variable set in the environment wins over it.
# Write passwords as they are: celeryconfig.py percent-encodes them into URLs.
CELERY_BROKER_HOST=localhost
CELERY_BROKER_PORT=5672
CELERY_BROKER_VHOST=/
CELERY_BROKER_USER=
CELERY_BROKER_PASSWORD=
# Or the whole broker URL (then percent-encode its password yourself):
# CELERY_BROKER_URL=
"""


def config_new(
    backend: str,
    *,
    folder: str | Path = ".",
    serializer: str = "json",
    expires: str = "1d",
    retention: str | None = None,
    offload: str | None = None,
    offload_threshold: str = "256KB",
    force: bool = False,
) -> list[Path]:
    """Write ``celeryconfig.py`` and ``.env.example`` for *backend*; return their paths.

    *retention* (a duration) adds a ``resultkit_retention`` policy: failures kept
    30 days, everything else *retention*; on Redis it selects ``resultkit-redis``
    so the policy applies at write time.  *offload* (``s3://bucket/prefix`` or
    ``file:///path``) adds ``resultkit_offload`` with *offload_threshold*, and
    selects resultkit's backend on Redis.
    """
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
    if serializer not in ("json", "msgpack"):
        raise UsageError(
            "--serializer must be json or msgpack (pickle lets anyone who can write results "
            "run code in every client)"
        )
    seconds = parse_duration(expires)
    if offload is not None:
        _check_offload(backend, offload, offload_threshold)
    folder = Path(folder)
    config, env = folder / "celeryconfig.py", folder / ".env.example"
    for path in (config, env):
        if path.exists() and not force:
            raise UsageError(f"{path} exists: pass --force to replace it")
    redis_like = backend in ("redis", "rediss", "sentinel")
    scheme = "resultkit-redis+" if (retention or offload) and redis_like else ""
    alias = "resultkit-redis: per-task lifetimes, offload" if scheme else "Celery's Redis backend"
    text = _HEADER.format(backend=backend) + _BROKER
    text += _BACKEND_BLOCKS[backend].format(scheme=scheme, alias=alias)
    if backend != "rpc":
        text += _COMMON.format(
            serializer=serializer, expires=int(seconds), expires_text=format_duration(seconds)
        )
    else:
        text += (
            f"\nresult_serializer = {serializer!r}\naccept_content = [{serializer!r}]\n"
            f"result_accept_content = [{serializer!r}]\n"
        )
    if retention and backend != "rpc":
        parse_duration(retention)
        text += (
            "\n# Per-task lifetimes (first match wins); see `resultkit cleanup`.\n"
            "resultkit_retention = {\n"
            '    "rules": [{"state": "FAILURE", "expires": "30d"}],\n'
            f'    "default": {retention!r},\n'
            "}\n"
        )
    if offload is not None:
        text += (
            "\n# Results above the threshold (after compression and encryption) live in object\n"
            "# storage, the backend keeps a small reference (docs/offload.md). Endpoint, region\n"
            "# and credentials come from the AWS environment (AWS_ENDPOINT_URL, AWS_PROFILE...).\n"
            "resultkit_offload = {\n"
            f'    "url": _env("RESULT_OFFLOAD_URL", {offload!r}),\n'
            f'    "threshold": {offload_threshold!r},\n'
            "}\n"
        )
    with translating(str(folder), "write the configuration"):
        folder.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
        env.write_text(
            _ENV_HEADER
            + _ENV[backend]
            + (f"RESULT_OFFLOAD_URL={offload}\nAWS_ENDPOINT_URL=\nAWS_REGION=\n" if offload else "")
        )
    return [config, env]


def _check_offload(backend: str, url: str, threshold: str) -> None:
    from ..errors import ConfigurationError
    from ..offload import check_url, parse_size

    if backend == "rpc":
        raise UsageError("--offload needs a backend that stores results; rpc:// stores none")
    try:
        check_url(url)
    except ConfigurationError as exc:
        raise UsageError(str(exc).replace("resultkit_offload url", "--offload")) from None
    try:
        parse_size(threshold)
    except ValueError:
        raise UsageError(
            f"--offload-threshold {threshold!r} is not a size: write bytes or 256KB, 5MB"
        ) from None


@dataclass
class ConfigCheckReport:
    app: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status is Status.FAIL for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "app": self.app, "checks": [c.as_dict() for c in self.checks]}


def config_check(app: Celery | str) -> ConfigCheckReport:
    """Audit an app's configuration without connecting to anything."""
    celery_app = load_app(app) if isinstance(app, str) else app
    backend = celery_app.conf.result_backend
    try:
        url = parse_backend_url(backend) if isinstance(backend, str) and backend else None
        checks: list[CheckResult] = []
    except Exception as exc:
        url = None
        checks = [CheckResult.failed("url", str(exc), "correct result_backend")]
    checks.extend(audit(AuditContext.from_app(celery_app, url)))
    return ConfigCheckReport(app if isinstance(app, str) else (celery_app.main or "app"), checks)
