"""nox sessions beyond the main test run (``scripts/test``).

    nox -s celery_suite                     # Celery's integration tests, every backend
    nox -s celery_suite -- --subset ci      # the subset CI runs
    nox -s celery_suite -- --backends resultkit-db-postgresql,celery-db-postgresql -- -k chord

See docs/celery-suite.md.
"""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True


@nox.session(name="celery_suite", tags=["celery-suite"])
def celery_suite(session: nox.Session) -> None:
    """Celery's own integration tests (from the sdist of the installed celery) on
    every resultkit backend, with Celery's backends as the baseline.

    The session's virtualenv holds the project with its ``dev`` extra; arguments
    after ``--`` go to ``scripts/celery-suite``.
    """
    session.install("-e", ".[dev]")
    session.run("python", "scripts/celery-suite", *session.posargs)
