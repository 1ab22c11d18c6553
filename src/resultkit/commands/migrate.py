"""``resultkit migrate``: copy stored results from one backend to another, verified."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import encryption
from ..boundary import from_outside, translating, what_failed
from ..checkpoint import Checkpoint, default_checkpoint_path
from ..checks.audit import check_settings
from ..choices import require_compression
from ..codec import ENCRYPTED, require_serializer
from ..encryption import KeyRing, keyring_for, sealing_for
from ..errors import ConfigurationError, MigrationError, ResultkitError, UsageError
from ..offload import Offloader, OffloadSettings, check_url, parse_size
from ..records import MAX_BATCH_RECORDS, Filters
from ..stores import Codec, OnConflict, StoreSettings, open_store, store_class
from ..transfer import Progress, SourceFailed, Tally, Transfer, TransferOptions, stop_on_ctrl_c
from ..urls import MASK, mask_url

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["DEFAULT_BATCH_SIZE", "MigrationReport", "Progress", "migrate"]

#: Records read, written and checkpointed together.
DEFAULT_BATCH_SIZE = 1000


@dataclass
class MigrationReport(Tally):
    """The outcome of a migration (or of a dry run): the transfer's tally, and
    where it ran."""

    source: str
    target: str
    dry_run: bool = False
    seconds: float = 0.0
    resumed: bool = False
    checkpoint: str | None = None
    #: The command that finishes this migration, when it must be finished.
    resume_command: str | None = None

    @property
    def ok(self) -> bool:
        return (
            not (self.failed or self.mismatched or self.unverified)
            and not (self.unaccounted or self.missing)
            and self.complete
        )

    def as_dict(self) -> dict[str, Any]:
        out = {
            "ok": self.ok,
            "source": self.source,
            "target": self.target,
            "dry_run": self.dry_run,
            "copied": self.copied,
            "skipped": self.skipped,
            "expired": self.expired,
            "failed": self.failed,
            "verified": self.verified,
            "mismatched": self.mismatched,
            "unverified": self.unverified,
            "deleted": self.deleted,
            "kept": self.kept,
            "seconds": round(self.seconds, 3),
            "resumed": self.resumed,
            "checkpoint": self.checkpoint,
            "failures": self.failures,
            "mismatches": self.mismatches,
            "scanned": self.scanned,
            "filtered": self.filtered,
            "vanished": self.vanished,
            "unaccounted": self.unaccounted,
            "rescans": self.rescans,
            "complete": self.complete,
            "missing": self.missing,
            "resume_command": self.resume_command,
            "notes": self.notes,
            "unverified_records": self.unverified_records,
            "kept_records": self.kept_records,
        }
        if self.dry_run:
            out.update(
                by_state=self.by_state, bytes=self.bytes, estimated_seconds=self.estimated_seconds
            )
        return out


def migrate(
    source: str,
    target: str,
    *,
    app: Celery | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    resume: bool = False,
    verify: bool = False,
    move: bool = False,
    on_conflict: OnConflict | str = OnConflict.SKIP,
    states: Sequence[str] = (),
    tasks: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    source_serializer: str | None = None,
    target_serializer: str | None = None,
    target_compression: str | None = None,
    accept_pickle: bool = False,
    source_keys_env: str | None = None,
    target_keys_env: str | None = None,
    checkpoint: str | Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
    inline_offloaded: bool = False,
    offload: str | None = None,
    offload_threshold: str | int = "256KB",
) -> MigrationReport:
    """Copy the task and group results of *source* into *target*.

    Without *move* the source is never modified.  Records are written in
    batches, each one transaction (or pipeline); after each batch a
    checkpoint is saved, so a crash loses nothing and *resume* continues
    after the last finished batch.  Writing is idempotent, so running the same
    migration twice is harmless.  *verify* reads every copied record back
    through Celery's backend class for the target and compares it; *move*
    deletes from the source only records verified in the target.

    A resumed run, or a run whose source changes under it, never trusts a scan
    cursor of a source that restarted or failed over since (see
    :attr:`Page.epoch`): that pass starts again, and the results already in the
    target are skipped.  The report reconciles what was scanned with what became
    of it; when the run cannot vouch that every result was seen it is not
    ``complete``, keeps its checkpoint and names the command that finishes it:
    *command* (how the caller ran this migration, passwords masked), else one
    made from these arguments.
    """
    started = time.monotonic()
    on_conflict = OnConflict(on_conflict)
    if not 1 <= batch_size <= MAX_BATCH_RECORDS:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_RECORDS:,}")
    if source == target:
        raise UsageError("the source and the target are the same: nothing to migrate")
    if app is not None:
        check_settings(app)
    filters = Filters.build(states, tasks, since, until)
    if target_compression:
        require_compression(target_compression, "--target-compression")
    for name in filter(None, (source_serializer, target_serializer)):
        if name != ENCRYPTED:  # it needs keys: checked with them below
            require_serializer(name)
    hint = source_serializer or (app.conf.result_serializer if app is not None else "json")
    conf = app.conf if app is not None else None
    source_keys = _keys(conf, source_keys_env, "--source-keys-env")
    target_keys = _keys(conf, target_keys_env, "--target-keys-env")
    sealing = sealing_for(conf, target_keys)
    if target_serializer == ENCRYPTED and sealing is None:
        raise UsageError(
            "--target-serializer resultkit-encrypted needs the target's keys: "
            "--target-keys-env VAR, or resultkit_encryption_keys in the app"
        )
    reading: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if sealing is not None:
        # Celery's backend reads the target back (--verify) with these keys; the
        # source's open what the target does not know.  Only for this call.
        ring = sealing.keys + source_keys if source_keys else sealing.keys
        reading = encryption.scoped(dataclasses.replace(sealing, keys=ring))
    # Lifetimes are read from the source only for a target that keeps them (not
    # SQL tables, nor files).
    source_settings = StoreSettings.from_app(app, read_lifetimes=_keeps_lifetimes(target))
    source_codec = Codec(hint=hint, accept_pickle=accept_pickle, keys=source_keys)
    src = open_store(source, codec=source_codec, settings=source_settings)
    if target_serializer is None and app is not None and source_serializer is not None:
        target_serializer = app.conf.result_serializer
    dst = open_store(
        target,
        app,
        Codec(
            serializer=target_serializer,
            compression=target_compression,
            accept_pickle=accept_pickle,
            hint=target_serializer or hint,
            keys=target_keys,
            sealing=sealing,
        ),
    )
    # Offloaded results: their references are carried as they are (the same objects)
    # where the target takes the source's bytes, unless they are to be written inline.
    dst.inline_offloaded = inline_offloaded
    if offload is not None:
        # Task results above the threshold go to object storage as they are written.
        dst.offloader = _offloader(offload, offload_threshold)
    # Both ends answer (and the source exists) before anything is read or written.
    src.check_source()
    dst.ping()
    if move and not src.deletable:
        raise UsageError(
            f"--move cannot delete from {src.masked_url}: {src.layout}s are append-only"
        )
    report = MigrationReport(mask_url(source), mask_url(target), dry_run=dry_run)
    # Masked URLs: the identity's digest names the checkpoint, and no password
    # is needed to recognise the same migration (nor changes it).
    identity = "\x00".join(
        [
            mask_url(source),
            mask_url(target),
            repr(sorted(filters.describe().items())),
            on_conflict.value,
            str(target_serializer),
            str(target_compression),
            str(move),
        ]
    )
    path = Path(checkpoint) if checkpoint else default_checkpoint_path(identity)
    try:
        state = Checkpoint.load(path, identity) if resume and not dry_run else None
    except UsageError:
        src.close()
        dst.close()
        raise
    report.resumed = state is not None
    if state is None:
        if resume and not dry_run:
            report.notes.append(
                f"no checkpoint at {path}: started from the beginning "
                "(results already in the target are skipped)"
            )
        state = Checkpoint(path, identity)
    else:
        report.restore(state.counters)
    report.checkpoint = None if dry_run else str(path)
    if command is None:
        command = _command(
            source,
            target,
            app=app,
            batch_size=batch_size,
            verify=verify,
            move=move,
            on_conflict=on_conflict,
            filters=(states, tasks, since, until),
            serializers=(source_serializer, target_serializer, target_compression),
            accept_pickle=accept_pickle,
            keys_env=(source_keys_env, target_keys_env),
            checkpoint=checkpoint,
        )
    finish = _resuming(command)
    # Each batch allocates many small containers, most of them alive until the
    # batch is written: without this, the collector rescans every long-lived
    # object (Celery, SQLAlchemy) and every record in flight over and over.
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 50 * batch_size), *threshold[1:])
    try:
        # The stores translate their own errors: an OS error left is the checkpoint's.
        with reading, stop_on_ctrl_c() as stop, translating(str(path), "save the checkpoint"):
            options = TransferOptions(filters, batch_size, on_conflict, verify, move, dry_run)
            transfer = Transfer(
                src, dst, options, report, state, finish_command=finish, progress=progress
            )
            transfer.run(stop)
            if stop.is_set():
                raise KeyboardInterrupt
    except SourceFailed as failed:
        cause = failed.__cause__
        assert cause is not None
        if not from_outside(cause):
            raise cause from None
        raise _stopped(cause, src.masked_url, report, dry_run, finish) from cause
    except (KeyboardInterrupt, MigrationError):
        raise
    except Exception as exc:
        if not from_outside(exc):
            raise
        raise _stopped(exc, None, report, dry_run, finish) from exc
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        src.close()
        dst.close()
    if not report.complete:
        report.resume_command = finish
    elif not dry_run:
        state.remove()
    report.seconds = time.monotonic() - started
    return report


def _stopped(
    exc: BaseException, where: str | None, report: MigrationReport, dry_run: bool, finish: str
) -> MigrationError:
    """The one-line error of a migration that a server or the system stopped part-way."""
    what = what_failed(exc, where)
    if dry_run:
        return MigrationError(f"{what}; the dry run stopped part-way (nothing was written)")
    return MigrationError(
        f"{what}. The migration stopped part-way; the {report.copied + report.skipped:,} "
        f"results written so far are in the target, nothing is lost: finish it with: {finish}"
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _command(
    source: str,
    target: str,
    *,
    app: Celery | None,
    batch_size: int,
    verify: bool,
    move: bool,
    on_conflict: OnConflict,
    filters: tuple[Sequence[str], Sequence[str], datetime | None, datetime | None],
    serializers: tuple[str | None, str | None, str | None],
    accept_pickle: bool,
    keys_env: tuple[str | None, str | None],
    checkpoint: str | Path | None,
) -> str:
    """The ``resultkit migrate`` command line of these arguments (passwords masked)."""
    words = ["resultkit", "migrate", mask_url(source), mask_url(target)]
    if app is not None:
        words += ["-A", app.main or "APP"]
    if batch_size != DEFAULT_BATCH_SIZE:
        words += ["--batch-size", str(batch_size)]
    if on_conflict is not OnConflict.SKIP:
        words += ["--on-conflict", on_conflict.value]
    states, tasks, since, until = filters
    words += [w for state in states for w in ("--state", state)]
    words += [w for task in tasks for w in ("--task", task)]
    if since is not None:
        words += ["--since", since.isoformat()]
    if until is not None:
        words += ["--until", until.isoformat()]
    for option, value in zip(
        ("--source-serializer", "--target-serializer", "--target-compression"),
        serializers,
        strict=True,
    ):
        if value is not None:
            words += [option, value or "none"]
    if accept_pickle:
        words.append("--accept-pickle")
    for option, value in zip(("--source-keys-env", "--target-keys-env"), keys_env, strict=True):
        if value is not None:
            words += [option, value]
    if checkpoint is not None:
        words += ["--checkpoint", str(checkpoint)]
    words += [flag for flag, wanted in (("--verify", verify), ("--move", move)) if wanted]
    return shlex.join(words)


def _resuming(command: str) -> str:
    """*command* with ``--resume``, as told to the user who must finish a migration."""
    if "--resume" not in shlex.split(command):
        command += " --resume"
    if MASK in command:
        command += f" (with the passwords where {MASK} is)"
    return command


def _keeps_lifetimes(target: str) -> bool:
    try:
        return store_class(target).native_ttl
    except ResultkitError:
        return True  # opening the target says what is wrong with it


def _keys(conf: Any, env: str | None, option: str) -> KeyRing | None:
    """The keys named by *option* (an environment variable), else the app's or the default's."""
    if env is None:
        return keyring_for(conf)
    if not os.environ.get(env, "").strip():
        raise UsageError(f"{option} {env}: that environment variable is not set or empty")
    return KeyRing.from_settings(None, env=env)  # the variable named, not the app's setting


def _offloader(url: str, threshold: str | int) -> Offloader:
    """The offloader of ``--offload URL --offload-threshold SIZE``; one line when wrong."""
    try:
        check_url(url)
    except ConfigurationError as exc:
        raise UsageError(str(exc).replace("resultkit_offload url", "--offload")) from None
    try:
        size = parse_size(threshold)
    except ValueError:
        raise UsageError(
            f"--offload-threshold {threshold!r} is not a size: write bytes or 256KB, 5MB"
        ) from None
    return Offloader(OffloadSettings(url.rstrip("/"), size))
