"""Results about people, written by Celery's own backends (as a worker with
result_extended writes them), for the export and erase tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery.app.task import Context

from resultkit.records import Kind, Payload, Record
from resultkit.stores import OnConflict, open_store
from tests.celery_view import celery_app
from tests.samples import NOW

#: Values that appear only inside results' args, kwargs and results: none may
#: ever reach an audit line.
SECRETS = ("alice@example.com", "bob@example.com", "4111-1111-1111-1111", "Secret Street 9")

#: Stores whose results Celery's own backend writes in these tests (django-celery-results
#: needs Django: its tables are written by resultkit's store, as django-celery-results would).
CELERY_WRITTEN = ("redis", "postgres", "mysql", "sqlite", "file")


@dataclass
class Subjects:
    """Which result ids belong to user 42, and which to everyone else."""

    user_42: set[str] = field(default_factory=set)
    others: set[str] = field(default_factory=set)

    @property
    def all(self) -> set[str]:
        return self.user_42 | self.others


def _request(task_id: str, name: str, user: int, email: str) -> Context:
    return Context(
        id=task_id,
        task=name,
        args=[email, {"card": "4111-1111-1111-1111"}],
        kwargs={"user_id": user, "address": "Secret Street 9"},
        hostname="celery@w1",
        retries=0,
        delivery_info={"routing_key": "mail"},
    )


def store_through_celery(
    app: Any, task_id: str, user: int, *, fail: bool = False, state: str = "SUCCESS"
) -> None:
    """Store one result of *user* with Celery's backend, as its worker would
    (*state* STARTED: a task still running, which its worker stores again)."""
    email = "alice@example.com" if user == 42 else "bob@example.com"
    name = "billing.charge" if fail else "mail.send"
    request = _request(task_id, name, user, email)
    if fail:
        try:
            raise ValueError(f"card declined for {email}")
        except ValueError as exc:
            app.backend.mark_as_failure(
                task_id, exc, traceback=f"ValueError: {email}", request=request, call_errbacks=False
            )
        return
    value = {"sent_to": email, "body": "Secret Street 9"} if state == "SUCCESS" else None
    app.backend.store_result(task_id, value, state, request=request)


def subject_record(task_id: str, user: int, *, fail: bool = False) -> Record:
    """The same result as a record, for layouts Celery cannot write here (django)."""
    email = "alice@example.com" if user == 42 else "bob@example.com"
    meta = {
        "task_id": task_id,
        "status": "FAILURE" if fail else "SUCCESS",
        "result": {
            "exc_type": "ValueError",
            "exc_message": [f"card declined for {email}"],
            "exc_module": "builtins",
        }
        if fail
        else {"sent_to": email, "body": "Secret Street 9"},
        "traceback": f"ValueError: {email}" if fail else None,
        "children": None,
        "date_done": NOW,
        "name": "billing.charge" if fail else "mail.send",
        "args": [email, {"card": "4111-1111-1111-1111"}],
        "kwargs": {"user_id": user, "address": "Secret Street 9"},
        "worker": "celery@w1",
        "retries": 0,
        "queue": "mail",
    }
    return Record(Kind.TASK, task_id, Payload(meta))


def fresh_store(kind: str, request: Any, folder: Any) -> str:
    """A store URL of *kind* of this test's own (the filesystem backend's folder made,
    as Celery's FilesystemBackend needs it to exist)."""
    from tests.conftest import store_url_for

    url = store_url_for(kind, request, folder)
    if kind == "file":
        (folder / "results").mkdir(parents=True, exist_ok=True)
    return url


def write_subjects(kind: str, url: str, *, count: int = 6) -> Subjects:
    """Results of user 42 (successes and a failure) among results of user 7."""
    subjects = Subjects()
    plan = []
    for i in range(count):
        plan.append((f"u42-{i}", 42, i == 0))
        plan.append((f"u7-{i}", 7, i == 1))
    plan.append(("u420-0", 420, False))  # 420 is not 42
    if kind in CELERY_WRITTEN:
        app = celery_app(url)
        for task_id, user, fail in plan:
            store_through_celery(app, task_id, user, fail=fail)
        app.close()
    else:
        store = open_store(url)
        store.write_many([subject_record(t, u, fail=f) for t, u, f in plan], OnConflict.SKIP)
        store.close()
    for task_id, user, _ in plan:
        (subjects.user_42 if user == 42 else subjects.others).add(task_id)
    return subjects


def task_ids(url: str) -> set[str]:
    store = open_store(url)
    try:
        return {r.id for page in store.pages(Kind.TASK, 500) for r in page.records}
    finally:
        store.close()


def archived(path: Any) -> dict[str, Record]:
    """What an archive holds, by id (every line must be a record)."""
    store = open_store(f"jsonl://{path}")
    try:
        out: dict[str, Record] = {}
        for kind in Kind:
            for page in store.pages(kind, 500):
                for record in page.records:
                    assert not record.damaged, record
                    out[record.id] = record
        return out
    finally:
        store.close()
