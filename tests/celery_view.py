"""Read results back the way an application does: a plain Celery app and AsyncResult."""

from __future__ import annotations

import gc
from typing import Any

from celery import Celery

from resultkit.records import Kind, Record


def celery_app(url: str, **settings: Any) -> Celery:
    app = Celery("reader", set_as_current=False)
    app.conf.update(result_backend=url, result_extended=True, **settings)
    return app


def assert_celery_reads(
    url: str, records: list[Record], extended: tuple[str, ...], **settings: Any
) -> None:
    """Every record reads back through AsyncResult / GroupResult.restore as it was."""
    app = celery_app(url, **settings)
    for record in records:
        meta = record.meta
        assert meta is not None
        if record.kind is Kind.GROUP:
            restored = app.GroupResult.restore(record.id)
            assert restored is not None, record.id
            assert [r.id for r in restored.results] == [m[0][0] for m in meta["result"][1]]
            del restored
            continue
        result = app.AsyncResult(record.id)
        assert result.state == meta["status"], record.id
        if meta["status"] == "FAILURE":
            assert type(result.result).__name__ == meta["result"]["exc_type"]
            assert str(result.result) == meta["result"]["exc_message"][0]
            assert result.traceback == meta["traceback"]
        else:
            assert result.result == meta["result"], record.id
        if meta.get("children"):
            assert [c.id for c in result.children] == [c[0][0] for c in meta["children"]]
        assert result.date_done is not None
        if "name" in extended:
            assert result.name == meta["name"]
            assert list(result.args) == list(meta["args"])
            assert result.kwargs == meta["kwargs"]
            assert result.worker == meta["worker"]
        if "queue" in extended:
            assert result.queue == meta["queue"]
            assert result.retries == meta["retries"]
    # Drop result objects now: left to interpreter exit, they unsubscribe from a closed server.
    gc.collect()
