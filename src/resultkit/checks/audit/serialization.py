"""Rules on how results are serialized, compressed and encrypted."""

from __future__ import annotations

from ...errors import ConfigurationError
from ...report import CheckResult
from .base import (
    AuditContext,
    Rule,
    backend_class,
)


def _accept_content(ctx: AuditContext) -> set[str]:
    from kombu.serialization import registry

    accept = ctx.get("result_accept_content")
    if accept is None:
        accept = ctx.get("accept_content") or ["json"]
    types = set()
    for name in accept:
        types.add(name if "/" in name else registry.name_to_type.get(name, name))
    return types


class PickleAccepted(Rule):
    id = "config.pickle"

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        pickle_type = "application/x-python-serialize"
        uses = ctx.get("result_serializer") == "pickle"
        accepts = pickle_type in _accept_content(ctx)
        if uses or accepts:
            what = "results are serialized with pickle" if uses else "pickle results are accepted"
            return CheckResult.warned(
                self.id,
                f"{what}: anyone who can write to the result backend can run code in every "
                "client that reads a result",
                "set result_serializer = 'json' and remove 'pickle' from result_accept_content "
                "and accept_content",
            )
        return CheckResult.passed(self.id, "pickle is neither used nor accepted for results")


class SerializerAccepted(Rule):
    id = "config.serializer-accepted"

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from kombu.serialization import registry

        serializer = ctx.get("result_serializer") or "json"
        content_type = registry.name_to_type.get(serializer)
        if content_type is None:
            return CheckResult.failed(
                self.id,
                f"result_serializer {serializer!r} is not registered with kombu",
                "use json, msgpack, yaml or pickle, or import the module that registers it "
                "in every worker and client",
            )
        accepted = _accept_content(ctx)
        if content_type not in accepted:
            return CheckResult.failed(
                self.id,
                f"results are written as {serializer} but clients accept only "
                f"{', '.join(sorted(accepted))}: every AsyncResult.get() raises ContentDisallowed",
                f"add {serializer!r} to result_accept_content",
            )
        return CheckResult.passed(self.id, f"result_serializer {serializer!r} is accepted")


class ResultCompression(Rule):
    id = "config.result-compression"

    def applies(self, ctx: AuditContext) -> bool:
        return bool(ctx.get("result_compression"))

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        import celery.backends.base as base

        method = ctx.get("result_compression")
        if not hasattr(base, "COMPRESSED_PAYLOAD_MAGIC"):
            return CheckResult.warned(
                self.id,
                f"result_compression = {method!r} is ignored by Celery {ctx.celery_version}: "
                "results are stored uncompressed",
                "upgrade Celery to 5.7 or later, or remove result_compression",
            )
        import kombu.compression

        try:
            kombu.compression.get_encoder(method)
        except KeyError:
            names = sorted(getattr(kombu.compression, "_aliases", {}))
            return CheckResult.failed(
                self.id,
                f"result_compression = {method!r} is not a kombu compression method: "
                "the backend refuses to start",
                f"use one of {', '.join(names or kombu.compression.encoders())}",
            )
        backend_cls = backend_class(ctx)
        if backend_cls is not None and not getattr(
            backend_cls, "supports_result_compression", False
        ):
            return CheckResult.warned(
                self.id,
                f"result_compression = {method!r} is ignored by {backend_cls.__name__}: "
                "results are stored uncompressed",
                "remove result_compression, or use a backend that stores bytes (Redis, file)",
            )
        return CheckResult.passed(self.id, f"results are compressed with {method}")


class Encryption(Rule):
    id = "config.encryption"

    def applies(self, ctx: AuditContext) -> bool:
        from ...encryption import uses_encryption

        return uses_encryption(ctx)  # type: ignore[arg-type]

    def evaluate(self, ctx: AuditContext) -> CheckResult:
        from ...encryption import KeyRing, _settings_from

        try:
            settings = _settings_from(KeyRing.from_settings(ctx), ctx)  # type: ignore[arg-type]
        except ConfigurationError as exc:
            return CheckResult.failed(
                self.id,
                str(exc),
                "give every worker and client the same keys, newest first, in "
                "resultkit_encryption_keys or RESULTKIT_ENCRYPTION_KEYS (docs/encryption.md)",
            )
        if ctx.get("result_compression"):
            return CheckResult.warned(
                self.id,
                "result_compression compresses ciphertext, which does not shrink",
                "move the method to resultkit_encryption_compression (compressed before "
                "encryption) and unset result_compression",
            )
        return CheckResult.passed(
            self.id,
            f"results sealed with AES-256-GCM under key {settings.keys.primary.label} "
            f"({len(settings.keys.keys)} key(s)), inner serializer {settings.serializer}",
        )
