"""Sessions beyond the main test run (``scripts/test``): the compatibility matrix,
and Celery's own integration suite (``celery_suite``, docs/celery-suite.md).

    nox -l                              # list the sessions
    nox -s "celery(5.4)"                # one Celery minor, its newest patch
    nox -t matrix                       # every session of the matrix

Each session is a virtualenv of its own under ``.nox/`` (made by uv when it is
installed, else by virtualenv), with the project installed from this folder
(C extension included) and pinned versions of what the session is about.
The matrix runs the tests marked ``compat`` (``-m compat``): the backends, the
store contract, the serializers, migrations and the layouts written by real
Celery and django-celery-results releases (``tests/test_compat_layouts.py``).
Extra arguments after ``--`` go to pytest.

To add a session: write a function decorated with ``@nox.session``; install
the project with :func:`install_project` and run pytest with :func:`pytest`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
# `nox` alone runs the matrix; sessions added for other purposes pick their own tags.
nox.options.tags = ["matrix"]

ROOT = Path(__file__).resolve().parent

# Interpreters come from this machine, never downloaded: pyenv's (as on the CI machines)
# are found without activating them.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
_PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
if _PYENV_VERSIONS.is_dir():
    _bins = [str(path / "bin") for path in sorted(_PYENV_VERSIONS.iterdir())]
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *_bins])

#: Each supported Celery minor: its newest patch release and the kombu release made for it.
CELERY_RELEASES = {
    "5.4": ("5.4.0", "5.4.2"),
    "5.5": ("5.5.3", "5.5.4"),
    "5.6": ("5.6.3", "5.6.2"),
    "5.7": ("5.7.0", "5.7.0"),
}
#: The Python of the Celery matrix; the lowest-direct session runs on the oldest we support.
PYTHON = "3.11"
OLDEST_PYTHON = "3.10"
NEWEST_PYTHON = "3.13"

#: What the tests need beyond the project's extras (the same bounds as the ``dev`` extra).
TEST_TOOLS = ("pytest>=8.0", "pytest-xdist>=3.5", "pytest-timeout>=2.3")


def install_project(session: nox.Session, *requirements: str, extras: str = "all") -> None:
    """Install this project (built from this folder) with *requirements* pinned beside it.

    The project is reinstalled on every run (its wheel is rebuilt only when a
    source file changed; see ``[tool.uv] cache-keys``), the rest is reused.
    """
    args = [f".[{extras}]", *requirements]
    if session.venv_backend == "uv":
        args.append("--reinstall-package=celery-resultkit")
    else:
        args.append("--force-reinstall")
    session.install(*args)


def pytest(session: nox.Session, *args: str) -> None:
    """Run pytest with *args*, then the session's own arguments (``nox -s NAME -- -k x``)."""
    session.run("python", "-m", "pytest", *args, *session.posargs, env=_test_env())


def _test_env() -> dict[str, str]:
    # The tests import the installed copy (C extension included), never ./src; the
    # console scripts they run are the session's own.
    return {"PYTHONDONTWRITEBYTECODE": "1"}


#: The tests of the matrix: the backends, the store contract, the serializers, migrations,
#: and the layouts that real releases write (read, migrated and written back through each
#: release).  Of these files, the tests marked ``compat`` run (docs/compatibility.md says
#: which are left out, and why).
MATRIX_TESTS = (
    "tests/test_compat_layouts.py",
    "tests/test_store_contract.py",
    "tests/test_resultkit_db.py",
    "tests/test_resultkit_redis.py",
    "tests/test_dual.py",
    "tests/test_serializers.py",
    "tests/test_serializers_worker.py",
    "tests/test_migrate.py",
    "tests/test_migrate_matrix.py",
)


#: Left out of the matrix: assertions on wall-clock time (the main run keeps them).  With
#: the sessions running at once on a small machine they measure its load, not the code.
WALL_CLOCK_TESTS = (
    "tests/test_resultkit_db.py::test_get_wakes_on_notify_within_milliseconds",
    "tests/test_serializers.py::test_hostile_payloads_never_hang",
)


def _matrix_tests(session: nox.Session) -> None:
    session.run("python", "-c", _VERSIONS)
    # Test files after ``--`` replace the selection (``-- -n 2`` keeps it).
    deselected = [f"--deselect={test}" for test in WALL_CLOCK_TESTS]
    selection = ["-m", "compat", *deselected, *MATRIX_TESTS]
    if any(arg.startswith("tests/") for arg in session.posargs):
        selection = []
    pytest(session, "-p", "no:cacheprovider", "-q", *selection)


#: Prints the versions a session runs with (the support table quotes them).
_VERSIONS = """
import importlib.metadata as m, platform, re
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
installed = {norm(d.metadata["Name"]): d.version for d in m.distributions()}
names = ["celery", "kombu", "redis", "SQLAlchemy", "psycopg", "PyMySQL", "click", "rich",
         "orjson", "msgspec", "cryptography", "django", "django-celery-results"]
print("python", platform.python_version(),
      *(f"{n} {installed[norm(n)]}" for n in names if norm(n) in installed), sep=" | ")
"""


@nox.session(python=PYTHON, tags=["matrix"])
@nox.parametrize("minor", list(CELERY_RELEASES), ids=list(CELERY_RELEASES))
def celery(session: nox.Session, minor: str) -> None:
    """The compat tests on one Celery minor (newest patch) with its kombu; the rest newest."""
    celery_version, kombu_version = CELERY_RELEASES[minor]
    install_project(
        session, f"celery=={celery_version}", f"kombu=={kombu_version}", *TEST_TOOLS, extras="dev"
    )
    _matrix_tests(session)


def declared_requirements(extra: str) -> list[str]:
    """The project's dependencies with those of *extra*, its own extras expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    found: list[str] = list(project["dependencies"])
    pending, seen = [extra], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in extras[name]:
            if requirement.startswith(f"{project['name']}["):
                pending.extend(requirement.split("[", 1)[1].rstrip("]").split(","))
            else:
                found.append(requirement)
    return found


@nox.session(python=OLDEST_PYTHON, tags=["matrix"])
def lowest(session: nox.Session) -> None:
    """The compat tests with every direct dependency at its declared lower bound."""
    if session.venv_backend != "uv":
        session.error("the lowest-direct resolution needs uv: pip install uv")
    # Every requirement of pyproject.toml is direct here, so each gets its lower bound;
    # the project itself then goes in without resolving anything again.
    session.install("--resolution=lowest-direct", *declared_requirements("dev"))
    session.install("--no-deps", "--reinstall-package=celery-resultkit", ".")
    _matrix_tests(session)


@nox.session(name="celery_suite", tags=["celery-suite"])
def celery_suite(session: nox.Session) -> None:
    """Celery's own integration tests (from the sdist of the installed celery) on
    every resultkit backend, with Celery's backends as the baseline.

    The session's virtualenv holds the project with its ``dev`` extra; arguments
    after ``--`` go to ``scripts/celery-suite``::

        nox -s celery_suite                     # every backend
        nox -s celery_suite -- --subset ci      # the subset CI runs
    """
    session.install("-e", ".[dev]")
    session.run("python", "scripts/celery-suite", *session.posargs)
