"""Doctor probes for Redis and Redis Sentinel: eviction, persistence, memory,
result keys without a TTL."""

from __future__ import annotations

import time
from typing import Any

from ...errors import ConfigurationError
from ...report import CheckResult
from .base import Probe

__all__ = ["RedisProbe", "SentinelProbe"]

#: Result keys SCAN visits before the count becomes an estimate.
SCAN_LIMIT_KEYS = 200_000
#: Result keys whose TTL is read to find keys that never expire.
TTL_SAMPLE_KEYS = 1_000


class RedisProbe(Probe):
    label = "a Redis result backend"

    def check_url(self) -> list[CheckResult]:
        url = self.url
        if url.scheme.startswith("rediss") or url.raw.lower().split("+")[-1].startswith("rediss"):
            ssl_conf = self.target.app.conf.redis_backend_use_ssl or {}
            if "ssl_cert_reqs" not in url.query and "ssl_cert_reqs" not in ssl_conf:
                raise ConfigurationError(
                    "a rediss:// URL needs ssl_cert_reqs: add ?ssl_cert_reqs=required"
                    "&ssl_ca_certs=/path/to/ca.pem (CERT_NONE disables certificate checks)"
                )
        return []

    def tighten(self, conf: Any, seconds: float) -> None:
        conf.redis_socket_connect_timeout = min(
            float(conf.redis_socket_connect_timeout or seconds), seconds
        )
        conf.redis_socket_timeout = min(float(conf.redis_socket_timeout or seconds), seconds)
        conf.redis_retry_on_timeout = False

    def connect(self) -> str:
        client = self.build_backend().client
        client.ping()
        return f"Redis {client.info('server').get('redis_version', '?')}"

    def server_checks(self) -> list[CheckResult]:
        return self.checks_on(self.backend.client)

    def checks_on(self, client: Any) -> list[CheckResult]:
        """The checks of one Redis server: eviction, persistence, memory, result keys."""
        memory = client.info("memory")
        return [
            _eviction(memory),
            _persistence(client),
            _memory(memory),
            self._result_keys(client),
        ]

    def _result_keys(self, client: Any) -> CheckResult:
        from ...stores.redis import match_prefix

        prefix = self.backend.task_keyprefix
        if isinstance(prefix, bytes):
            prefix = prefix.decode()
        budget_end = time.monotonic() + max(0.2, self.deadline.remaining() * 0.3)
        count = 0
        sample: list[bytes] = []
        complete = True
        for key in client.scan_iter(match=match_prefix(prefix), count=1000):
            count += 1
            if len(sample) < TTL_SAMPLE_KEYS:
                sample.append(key)
            if count >= SCAN_LIMIT_KEYS or (count % 1000 == 0 and time.monotonic() > budget_end):
                complete = False
                break
        pipe = client.pipeline(transaction=False)
        for key in sample:
            pipe.ttl(key)
        no_ttl = sum(1 for ttl in pipe.execute() if ttl == -1)
        counted = (
            f"{count:,}" if complete else f"at least {count:,} (estimated: scan stopped early)"
        )
        data = {
            "keys": count,
            "exact": complete,
            "sampled": len(sample),
            "no_ttl_in_sample": no_ttl,
        }
        if no_ttl:
            return CheckResult.warned(
                "redis.result-keys",
                f"{counted} result keys; {no_ttl} of {len(sample)} sampled never expire (no TTL)",
                "run `resultkit cleanup --fix-missing-ttl` to give them the lifetime "
                "result_expires calls for",
                **data,
            )
        return CheckResult.passed(
            "redis.result-keys",
            f"{counted} result keys; all {len(sample)} sampled have a TTL",
            **data,
        )


class SentinelProbe(RedisProbe):
    label = "a Redis Sentinel result backend"

    def check_url(self) -> list[CheckResult]:
        for chunk in self.url.raw.split(";"):
            path = chunk.partition("://")[2].partition("/")[2].partition("?")[0]
            if path and not path.isdigit():
                raise ConfigurationError(
                    f"sentinel URL path {path!r} is not a database number: Celery reads the "
                    "master name from result_backend_transport_options = "
                    f"{{'master_name': {path!r}}} (or ?master_name={path} for resultkit), "
                    "and the path is the database number, e.g. /0"
                )
        options = self.target.app.conf.result_backend_transport_options or {}
        if not options.get("master_name"):
            raise ConfigurationError(
                "a sentinel:// backend needs a master name: set "
                "result_backend_transport_options = {'master_name': 'mymaster'} "
                "(or add ?master_name=mymaster to the URL for resultkit)"
            )
        return []

    def tighten(self, conf: Any, seconds: float) -> None:
        super().tighten(conf, seconds)
        options = dict(conf.result_backend_transport_options or {})
        sentinel_kwargs = dict(options.get("sentinel_kwargs") or {})
        sentinel_kwargs.setdefault("socket_timeout", seconds)
        sentinel_kwargs.setdefault("socket_connect_timeout", seconds)
        options["sentinel_kwargs"] = sentinel_kwargs
        conf.result_backend_transport_options = options


def _eviction(memory: dict[str, Any]) -> CheckResult:
    policy = memory.get("maxmemory_policy", "noeviction")
    if policy.startswith("allkeys"):
        return CheckResult.failed(
            "redis.maxmemory-policy",
            f"maxmemory-policy is {policy}: when memory is full Redis evicts result keys, "
            "so finished tasks read back as PENDING",
            "CONFIG SET maxmemory-policy noeviction (or volatile-ttl), and put the broker "
            "and results on an instance of their own",
            policy=policy,
        )
    if policy.startswith("volatile"):
        return CheckResult.warned(
            "redis.maxmemory-policy",
            f"maxmemory-policy is {policy}: result keys carry a TTL, so they can be "
            "evicted before they expire when memory is full",
            "prefer noeviction for a result database, and size maxmemory for result_expires",
            policy=policy,
        )
    return CheckResult.passed(
        "redis.maxmemory-policy", f"maxmemory-policy is {policy}", policy=policy
    )


def _persistence(client: Any) -> CheckResult:
    import redis

    try:
        save = client.config_get("save").get("save", "")
        appendonly = client.config_get("appendonly").get("appendonly", "no")
    except redis.ResponseError:
        return CheckResult.skipped(
            "redis.persistence", "CONFIG GET is not allowed on this server (managed Redis)"
        )
    if not save and appendonly != "yes":
        return CheckResult.warned(
            "redis.persistence",
            "persistence is off (no RDB snapshots, no AOF): a restart loses every result",
            "CONFIG SET appendonly yes (and CONFIG REWRITE), if results must survive a restart",
        )
    how = "AOF" if appendonly == "yes" else f"RDB snapshots ({save})"
    return CheckResult.passed("redis.persistence", f"persistence: {how}")


def _memory(memory: dict[str, Any]) -> CheckResult:
    used = int(memory.get("used_memory", 0))
    limit = int(memory.get("maxmemory", 0))
    human = memory.get("used_memory_human", f"{used} B")
    if limit and used > 0.9 * limit:
        return CheckResult.warned(
            "redis.memory",
            f"{human} used of maxmemory {memory.get('maxmemory_human', limit)} "
            f"({used / limit:.0%})",
            "lower result_expires, run `resultkit cleanup --fix-missing-ttl`, or raise maxmemory",
            used_bytes=used,
            maxmemory_bytes=limit,
        )
    cap = f" of {memory.get('maxmemory_human')}" if limit else " (no maxmemory limit)"
    return CheckResult.passed(
        "redis.memory", f"{human} used{cap}", used_bytes=used, maxmemory_bytes=limit
    )
