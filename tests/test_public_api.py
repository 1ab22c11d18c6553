"""The package root offers the public API, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import resultkit


def test_every_name_of_the_public_api_is_importable_from_the_package_root() -> None:
    for name in resultkit.__all__:
        assert getattr(resultkit, name) is not None, name
    assert callable(resultkit.migrate)
    assert callable(resultkit.open_store)


def test_importing_the_package_loads_no_command_and_no_store() -> None:
    # kombu imports resultkit (its serializers) in every Celery process
    code = (
        "import sys, resultkit; "
        "print(sorted(m for m in sys.modules if m.startswith(('resultkit.commands', "
        "'resultkit.stores', 'resultkit.transfer', 'sqlalchemy'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        resultkit.nothing_here  # noqa: B018
