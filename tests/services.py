"""Real servers for the tests: where they are, whether they answer, and isolated slices of them.

Every URL can be overridden with an environment variable, so the suite runs
against servers elsewhere:

=============================  ================================================
RESULTKIT_TEST_REDIS_URL       redis://127.0.0.1:6379
RESULTKIT_TEST_POSTGRES_URL    postgresql+psycopg://postgres@127.0.0.1:5432/test
RESULTKIT_TEST_MYSQL_URL       mysql+pymysql://root@127.0.0.1:3306/test
RESULTKIT_TEST_AMQP_URL        amqp://guest:guest@127.0.0.1:5672//
=============================  ================================================
"""

from __future__ import annotations

import os
import socket
import urllib.parse

REDIS_URL = os.environ.get("RESULTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES_URL = os.environ.get(
    "RESULTKIT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("RESULTKIT_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
AMQP_URL = os.environ.get("RESULTKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

SERVICES = {
    "redis": REDIS_URL,
    "postgres": POSTGRES_URL,
    "mysql": MYSQL_URL,
    "rabbitmq": AMQP_URL,
}

DEFAULT_PORTS = {"redis": 6379, "postgres": 5432, "mysql": 3306, "rabbitmq": 5672}


def address(name: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(SERVICES[name])
    return parsed.hostname or "127.0.0.1", parsed.port or DEFAULT_PORTS[name]


def reachable(name: str, timeout_s: float = 2.0) -> bool:
    """True when something accepts TCP connections at the service's address."""
    try:
        with socket.create_connection(address(name), timeout=timeout_s):
            return True
    except OSError:
        return False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}
