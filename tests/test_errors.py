"""One error boundary: driver and OS errors become one line, with the right exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resultkit.boundary import translate
from resultkit.errors import AccessDenied, BackendUnavailable, MissingDatabase, StorageFull
from resultkit.stores import Store
from resultkit.stores.archive import ArchiveStore
from resultkit.stores.base import GUARDED
from resultkit.stores.filesystem import FilesystemStore
from resultkit.stores.redis import RedisStore
from resultkit.stores.sql import DjangoStore, SqlStore


@pytest.mark.parametrize(
    "store_class", [Store, RedisStore, SqlStore, DjangoStore, FilesystemStore, ArchiveStore]
)
def test_every_store_primitive_translates_driver_errors(store_class: type) -> None:
    # Every primitive a store defines or inherits passes through the one boundary
    for name in GUARDED:
        method = getattr(store_class, name)
        assert getattr(method, "__resultkit_guarded__", False), f"{store_class.__name__}.{name}"


@pytest.mark.parametrize(
    ("error", "expected", "words"),
    [
        (ConnectionRefusedError(111, "Connection refused"), BackendUnavailable, "refused"),
        (OSError(28, "No space left on device"), StorageFull, "no space left"),
        (PermissionError(13, "Permission denied"), AccessDenied, "permission denied"),
    ],
)
def test_os_errors_become_resultkit_errors_that_say_where_and_what_to_do(
    error: OSError, expected: type, words: str
) -> None:
    translated = translate(error, "/var/backups/a.jsonl.gz", "write results")
    assert isinstance(translated, expected)
    text = str(translated)
    assert text.startswith("cannot write results: ")
    assert words in text
    assert "/var/backups/a.jsonl.gz" in text
    assert "; " in text  # followed by what to do


def test_a_bug_of_ours_is_not_translated() -> None:
    assert translate(TypeError("bad operand"), "redis://h/0", "read results") is None
    assert translate(KeyError("x"), "redis://h/0", "read results") is None


def test_a_missing_postgresql_database_is_named_with_its_fix() -> None:
    import sqlalchemy as sa

    from tests.conftest import require
    from tests.services import POSTGRES_URL

    require("postgres")
    url = sa.make_url(POSTGRES_URL).set(database="rk_no_such_database")
    engine = sa.create_engine(url)
    with pytest.raises(sa.exc.OperationalError) as info:
        engine.connect()
    translated = translate(info.value, "db+postgresql://h/rk_no_such_database", "connect")
    assert isinstance(translated, MissingDatabase)
    assert "CREATE DATABASE" in str(translated)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import (\n", "importing it raised SyntaxError: "),
        ("x = 1\nraise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
        ("import no_such_dependency_rk\n", "No module named 'no_such_dependency_rk'"),
    ],
)
def test_an_app_module_that_fails_to_import_is_a_one_line_usage_error(
    cli: Any, tmp_path: Path, source: str, message: str
) -> None:
    # Given an -A module that cannot be imported
    (tmp_path / "brokenapp.py").write_text(source)
    for command in (["doctor"], ["stats"], ["cleanup"], ["config", "check"]):
        # When a command loads it
        result = cli(*command, "-A", "brokenapp")
        # Then one line says what is wrong and where, and the exit code is 2
        assert result.code == 2, (command, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert message in lines[0]
        assert "brokenapp.py" in lines[0]
        assert "internal error" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("migrate", "redis://h/0", "db+sqlite:///x", "--batch-size", "1e11"),
        ("migrate", "redis://h/0", "db+sqlite:///x", "--batch-size", "100000000000"),
        ("cleanup", "--batch-size", "0"),
        ("doctor", "--no-such-option"),
        ("no-such-command",),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(cli: Any, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "--help" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("config", "new", "--backend", "redis", "--folder", "/proc/rk-no-folder"),
        ("bench", "db+sqlite:///b.sqlite3", "--seconds", "0.3", "--plot", "/proc/rk/plot.png"),
        (
            "migrate",
            "db+sqlite:///a.sqlite3",
            "db+sqlite:///b.sqlite3",
            "--checkpoint",
            "/proc/rk/checkpoint.json",
        ),
    ],
)
def test_a_file_the_command_cannot_write_is_one_line(cli: Any, args: tuple[str, ...]) -> None:
    # When a command must write a file where no file can be (/proc refuses even root)
    result = cli(*args)
    # Then one line says which path, why and what to do; exit 1
    assert result.code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "/proc/rk" in lines[0]
    assert "internal error" not in lines[0]


def test_a_source_folder_that_does_not_exist_is_a_usage_error(cli: Any, tmp_path: Path) -> None:
    # A typo in a file:// source would otherwise "copy" nothing and pass
    result = cli("migrate", f"file://{tmp_path / 'no-such-folder'}", "db+sqlite:///x.sqlite3")
    assert result.code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "does not exist" in lines[0]
    assert not (tmp_path / "x.sqlite3").exists()
