"""resultkit-encrypted: sealing, tampering, keys, rotation; what doctor, stats and migrate do."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kombu.serialization import registry

from resultkit import encryption
from resultkit.encryption import (
    MAGIC,
    KeyRing,
    UnknownKey,
    generate_key,
    key_label,
    open_payload,
    seal,
)
from resultkit.errors import ConfigurationError, SerializationError
from tests.conftest import run
from tests.worker import celery_worker, load

SECRET = "patient-4471-diagnosis"


@pytest.fixture
def keys() -> list[str]:
    return [generate_key(), generate_key()]


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(encryption.ENV_VAR, raising=False)
    encryption.reset()
    yield
    encryption.reset()


def roundtrip(value: Any) -> Any:
    content_type, encoding, payload = registry.dumps(value, "resultkit-encrypted")
    return registry.loads(payload, content_type, encoding, accept={content_type}), payload


# ------------------------------------------------------------------ sealing


def test_types_survive_and_the_plaintext_does_not_appear(keys: list[str]) -> None:
    encryption.configure(keys)
    value = {
        "who": SECRET,
        "when": dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc),
        "n": (1, Decimal("2.5")),
    }
    back, payload = roundtrip(value)
    assert back == value
    assert type(back["n"]) is tuple
    assert payload.startswith(MAGIC)
    assert SECRET.encode() not in payload
    assert key_label(keys[0]) == payload[5:9].hex()


def test_compression_happens_before_encryption(keys: list[str]) -> None:
    value = {"rows": [SECRET] * 2000}
    encryption.configure(keys)
    _, plain = roundtrip(value)
    encryption.configure(keys, compression="zstd")
    back, packed = roundtrip(value)
    assert back == value
    assert len(packed) < len(plain) / 20  # ciphertext does not compress: this was compressed first


def test_encrypt_with_the_first_key_decrypt_with_any(keys: list[str]) -> None:
    encryption.configure([keys[1]])
    _, old = roundtrip({"v": 1})
    encryption.configure(keys)  # rotated: a new key first, the old one kept
    back, new = roundtrip({"v": 2})
    assert new[5:9].hex() == key_label(keys[0])
    assert old[5:9].hex() == key_label(keys[1])
    assert registry.loads(old, encryption.CONTENT_TYPE, "binary") == {"v": 1}
    assert back == {"v": 2}


def test_each_payload_has_its_own_nonce(keys: list[str]) -> None:
    ring = KeyRing(keys)
    first, second = seal(b"same", ring, "json"), seal(b"same", ring, "json")
    assert first != second


@pytest.mark.parametrize(
    ("position", "message"),
    [
        (5, "which this process does not have"),  # the key id
        (12, "failed authentication"),  # the nonce
        (30, "failed authentication"),  # the ciphertext
        (-1, "failed authentication"),  # the GCM tag
    ],
)
def test_tampering_is_detected(keys: list[str], position: int, message: str) -> None:
    ring = KeyRing(keys)
    payload = bytearray(seal(b'{"status": "SUCCESS", "result": 1}' * 3, ring, "json"))
    payload[position] ^= 0x01
    with pytest.raises(SerializationError, match=message):
        open_payload(bytes(payload), ring)


def test_truncated_and_foreign_payloads_fail_clearly(keys: list[str]) -> None:
    ring = KeyRing(keys)
    sealed = seal(b"[1, 2, 3]", ring, "json")
    with pytest.raises(SerializationError, match="truncated"):
        open_payload(sealed[:20], ring)
    with pytest.raises(SerializationError, match="failed authentication"):
        open_payload(sealed[:-3], ring)
    with pytest.raises(SerializationError, match="not a resultkit-encrypted payload"):
        open_payload(b'{"status": "SUCCESS"}', ring)


def test_a_payload_naming_pickle_inside_is_refused(keys: list[str]) -> None:
    ring = KeyRing(keys)
    with pytest.raises(SerializationError, match="inner serializer 'pickle', which is refused"):
        open_payload(seal(b"\x80\x04K\x01.", ring, "pickle"), ring)


def test_unknown_key_names_the_key(keys: list[str]) -> None:
    sealed = seal(b"1", KeyRing([keys[1]]), "json")
    with pytest.raises(
        UnknownKey, match=f"under key {key_label(keys[1])}, which this process does not have"
    ):
        open_payload(sealed, KeyRing([keys[0]]))


# --------------------------------------------------------------------- keys


def test_keys_are_never_made_up() -> None:
    with pytest.raises(
        ConfigurationError,
        match="has no key: set resultkit_encryption_keys or RESULTKIT_ENCRYPTION_KEYS",
    ):
        encryption.configure(conf={})
    with pytest.raises(Exception, match="has no key"):
        registry.dumps({"x": 1}, "resultkit-encrypted")


@pytest.mark.parametrize(
    "bad",
    ["", "short", "a" * 44, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g"],
    ids=["empty", "short", "not-base64-32", "33-bytes"],
)
def test_malformed_keys_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        KeyRing([generate_key(), bad] if bad else [])
    if bad:
        assert "key #2 is not a URL-safe base64 256-bit key" in str(caught.value)
        assert bad not in str(caught.value)


def test_duplicate_keys_are_refused(keys: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="listed twice"):
        KeyRing([keys[0], keys[1], keys[0]])


def test_keys_from_the_environment(keys: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(encryption.ENV_VAR, ",".join(keys))
    ring = KeyRing.from_settings({})
    assert ring.labels == [key_label(k) for k in keys]
    # The setting wins over the environment.
    assert KeyRing.from_settings({"resultkit_encryption_keys": [keys[1]]}).labels == [
        key_label(keys[1])
    ]


def test_key_new_prints_a_usable_key() -> None:
    result = run("resultkit", "key", "new")
    assert result.code == 0
    key = result.stdout.strip()
    assert KeyRing([key]).labels == [key_label(key)]
    assert key_label(key) in result.stderr


# ------------------------------------------------------------ real workers

APP = """
from celery import Celery
import os

app = Celery("{name}", broker={broker!r}, backend={backend!r})
app.conf.update(
    task_default_queue={queue!r},
    broker_connection_retry_on_startup=True,
    result_serializer="resultkit-encrypted",
    accept_content=["json", "resultkit-encrypted"],
    result_accept_content=["resultkit-encrypted"],
    resultkit_encryption_compression={compression!r},
    result_extended=True,
)
if os.environ.get("APP_KEYS"):
    app.conf.resultkit_encryption_keys = os.environ["APP_KEYS"].split(",")


@app.task(name="vault.diagnose")
def diagnose(n):
    import datetime, decimal
    return {{"patient": "{secret}-" + str(n), "seen": datetime.date(2026, 11, n % 28 + 1),
             "cost": decimal.Decimal("12.50"), "codes": ("A1", "B2")}}


@app.task(name="vault.fail")
def fail():
    raise ValueError("{secret} leaked into an error")
"""


def write_app(folder: Path, broker: str, backend: str, compression: str | None = None) -> str:
    name = f"vault_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(
        APP.format(
            name=name,
            broker=broker,
            backend=backend,
            queue=f"rk-{name}",
            secret=SECRET,
            compression=compression,
        )
    )
    return name


def expected(n: int) -> dict[str, Any]:
    return {
        "patient": f"{SECRET}-{n}",
        "seen": dt.date(2026, 11, n % 28 + 1),
        "cost": Decimal("12.50"),
        "codes": ("A1", "B2"),
    }


def stored_payloads(backend: str, request: Any, url: str) -> list[bytes]:
    if backend == "redis":
        client = request.getfixturevalue("redis_db").client
        return [client.get(k) for k in client.keys("celery-task-meta-*")]
    if backend == "file":
        return [p.read_bytes() for p in Path(url.removeprefix("file://")).iterdir()]
    import sqlalchemy as sa

    db = request.getfixturevalue("postgres_db")
    with db.engine.connect() as conn:
        return [bytes(r) for r in conn.scalars(sa.text("SELECT result FROM celery_taskmeta"))]


@pytest.mark.parametrize("backend", ["redis", "postgres", "resultkit-db", "file"])
def test_worker_results_are_encrypted_at_rest(
    backend: str, request: Any, tmp_path: Path, amqp_url: str, keys: list[str]
) -> None:
    if backend == "redis":
        url = request.getfixturevalue("redis_db").url
    elif backend == "file":
        (tmp_path / "results").mkdir()
        url = f"file://{tmp_path / 'results'}"
    else:
        url = request.getfixturevalue("postgres_db").url
        if backend == "resultkit-db":
            url = "resultkit-" + url
    compression = "zstd" if backend in ("redis", "file") else None
    module = write_app(tmp_path, amqp_url, url, compression)
    env = {encryption.ENV_VAR: ",".join(keys)}
    app = load(tmp_path, module)
    encryption.configure(keys, conf=app.conf)
    with celery_worker(tmp_path, module, extra_env=env):
        results = [app.send_task("vault.diagnose", args=[n]) for n in range(5)]
        assert [r.get(timeout=60) for r in results] == [expected(n) for n in range(5)]
        failed = app.send_task("vault.fail")
        with pytest.raises(ValueError, match="leaked into an error"):
            failed.get(timeout=60)
    payloads = stored_payloads(
        "redis" if backend == "redis" else backend.replace("resultkit-db", "postgres"), request, url
    )
    assert len(payloads) == 6
    for payload in payloads:
        assert payload.startswith(MAGIC), payload[:40]
        assert SECRET.encode() not in payload


def test_a_worker_without_keys_refuses_to_start(
    tmp_path: Path, amqp_url: str, redis_db: Any
) -> None:
    module = write_app(tmp_path, amqp_url, redis_db.url)
    env = {k: v for k, v in os.environ.items() if k != encryption.ENV_VAR}
    result = run(
        "celery",
        "-A",
        module,
        "worker",
        "--pool",
        "solo",
        "--loglevel",
        "WARNING",
        cwd=tmp_path,
        env={**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"},
        timeout=60,
    )
    assert result.code != 0
    assert "the worker cannot start: resultkit-encrypted has no key" in result.output


def test_rotation_end_to_end(
    tmp_path: Path, amqp_url: str, redis_db: Any, postgres_db: Any
) -> None:
    old_key, new_key = generate_key(), generate_key()
    module = write_app(tmp_path, amqp_url, redis_db.url)
    app = load(tmp_path, module)

    # 1. Running on the old key.
    encryption.configure([old_key], conf=app.conf)
    with celery_worker(tmp_path, module, extra_env={"APP_KEYS": old_key}):
        before = [app.send_task("vault.diagnose", args=[n]) for n in range(4)]
        assert [r.get(timeout=60) for r in before] == [expected(n) for n in range(4)]

    # 2. Rotated: the new key first, the old one kept; old results still read.
    rotated = f"{new_key},{old_key}"
    encryption.configure([new_key, old_key], conf=app.conf)
    with celery_worker(tmp_path, module, extra_env={"APP_KEYS": rotated}):
        after = [app.send_task("vault.diagnose", args=[n]) for n in range(10, 13)]
        assert [r.get(timeout=60) for r in after] == [expected(n) for n in range(10, 13)]
    for result, n in zip(before, range(4), strict=True):
        assert app.AsyncResult(result.id).get(timeout=10) == expected(n)
    heads = {redis_db.client.get(f"celery-task-meta-{r.id}")[5:9].hex() for r in before + after}
    assert heads == {key_label(old_key), key_label(new_key)}

    # 3. stats and doctor, holding only the new key, count what the old key sealed.
    only_new = {"APP_KEYS": new_key}
    stats = run("resultkit", "stats", "-A", module, "--json", cwd=tmp_path, env=only_new)
    assert stats.code == 0, stats.output
    assert stats.json["undecryptable"] == {key_label(old_key): 4}
    assert stats.json["unreadable"] == 4
    doctor = run("resultkit", "doctor", "-A", module, "--json", cwd=tmp_path, env=only_new)
    check = doctor.check("encryption.unreadable")
    assert check["status"] == "warn"
    assert (
        "4 stored results are encrypted under keys this process does not have" in check["message"]
    )
    assert new_key not in doctor.stdout
    assert old_key not in doctor.stdout

    # 4. migrate re-encrypts everything under the new key alone, verified through Celery.
    env = {"APP_KEYS": rotated, "TARGET_KEYS": new_key}
    migrated = run(
        "resultkit",
        "migrate",
        redis_db.url,
        postgres_db.url,
        "-A",
        module,
        "--target-keys-env",
        "TARGET_KEYS",
        "--verify",
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert migrated.code == 0, migrated.output
    summary = migrated.json
    assert (summary["copied"], summary["verified"], summary["failed"]) == (7, 7, 0)
    import sqlalchemy as sa

    with postgres_db.engine.connect() as conn:
        stored = [bytes(r) for r in conn.scalars(sa.text("SELECT result FROM celery_taskmeta"))]
    assert {p[5:9].hex() for p in stored} == {key_label(new_key)}
    # A client holding only the new key reads every result from the target.
    target = load(tmp_path, module)
    target.conf.update(result_backend=postgres_db.url, resultkit_encryption_keys=[new_key])
    encryption.configure(conf=target.conf)
    for result, n in zip(before + after, [*range(4), *range(10, 13)], strict=True):
        assert target.AsyncResult(result.id).get(timeout=10) == expected(n)
    stats = run(
        "resultkit",
        "stats",
        postgres_db.url,
        "--json",
        cwd=tmp_path,
        env={encryption.ENV_VAR: new_key},
    )
    assert stats.code == 0, stats.output
    assert stats.json["undecryptable"] == {}
    assert stats.json["encrypted_by_key"] == {key_label(new_key): 7}


def test_migrate_refuses_to_encrypt_without_target_keys(tmp_path: Path, redis_db: Any) -> None:
    result = run(
        "resultkit",
        "migrate",
        redis_db.url,
        f"file://{tmp_path}",
        "--target-serializer",
        "resultkit-encrypted",
        cwd=tmp_path,
        env={encryption.ENV_VAR: ""},
    )
    assert result.code == 2
    assert "needs the target's keys" in result.output
    missing = run(
        "resultkit",
        "migrate",
        redis_db.url,
        f"file://{tmp_path}",
        "--target-keys-env",
        "NOPE_NOT_SET",
        cwd=tmp_path,
    )
    assert missing.code == 2
    assert "NOPE_NOT_SET: that environment variable is not set or empty" in missing.output


def test_config_check_audits_the_keys(tmp_path: Path, redis_db: Any, keys: list[str]) -> None:
    module = write_app(tmp_path, "memory://", redis_db.url)
    missing = run("resultkit", "config", "check", "-A", module, "--json", cwd=tmp_path)
    assert missing.code == 1
    assert missing.check("config.encryption")["status"] == "fail"
    assert "has no key" in missing.check("config.encryption")["message"]
    ok = run(
        "resultkit",
        "config",
        "check",
        "-A",
        module,
        "--json",
        cwd=tmp_path,
        env={"APP_KEYS": ",".join(keys)},
    )
    assert ok.check("config.encryption")["status"] == "pass"
    assert key_label(keys[0]) in ok.check("config.encryption")["message"]
    assert keys[0] not in ok.stdout


def test_bench_measures_the_encrypted_serializer_and_refuses_without_keys(
    tmp_path: Path, redis_db: Any, keys: list[str]
) -> None:
    refused = run(
        "resultkit",
        "bench",
        redis_db.url,
        "--serializer",
        "resultkit-encrypted",
        "--seconds",
        "0.3",
        cwd=tmp_path,
        env={encryption.ENV_VAR: ""},
    )
    assert refused.code == 2
    assert (
        "the 'resultkit-encrypted' serializer cannot be used here: resultkit-encrypted has no key"
        in refused.output
    )
    measured = run(
        "resultkit",
        "bench",
        redis_db.url,
        "--serializer",
        "resultkit-encrypted",
        "--serializer",
        "resultkit-json",
        "--seconds",
        "0.3",
        "--json",
        cwd=tmp_path,
        env={encryption.ENV_VAR: keys[0]},
    )
    assert measured.code == 0, measured.output
    cases = {case["serializer"]: case for case in measured.json["cases"]}
    assert set(cases) == {"resultkit-encrypted", "resultkit-json"}
    assert all(case["throughput"]["roundtrip"] > 0 for case in cases.values())
    assert redis_db.client.dbsize() == 0  # bench forgot what it wrote


def test_target_keys_env_wins_over_the_apps_keys(
    tmp_path: Path, redis_db: Any, own_redis: Any
) -> None:
    old_key, new_key = generate_key(), generate_key()
    module = write_app(tmp_path, "memory://", redis_db.url)
    app = load(tmp_path, module)
    encryption.configure([old_key], conf=app.conf)
    app.backend.store_result("sealed-old", {"v": SECRET}, "SUCCESS")
    target = own_redis()
    migrated = run(
        "resultkit",
        "migrate",
        redis_db.url,
        target.url,
        "-A",
        module,
        "--target-keys-env",
        "TARGET_KEYS",
        "--json",
        cwd=tmp_path,
        env={"APP_KEYS": old_key, "TARGET_KEYS": new_key},
    )
    assert migrated.code == 0, migrated.output
    assert migrated.json["copied"] == 1
    stored = target.client().get("celery-task-meta-sealed-old")
    assert stored[5:9].hex() == key_label(new_key)
