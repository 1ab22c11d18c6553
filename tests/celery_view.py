"""Read results back the way an application does: a plain Celery app and AsyncResult."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

from celery import Celery

from resultkit._celery_compat import decode_stored_result
from resultkit.records import Kind, Record


def celery_app(url: str, **settings: Any) -> Celery:
    app = Celery("reader", set_as_current=False)
    app.conf.update(result_backend=url, result_extended=True, **settings)
    return app


def assert_celery_reads(
    url: str,
    records: list[Record],
    extended: tuple[str, ...],
    *,
    children: bool = True,
    **settings: Any,
) -> None:
    """Every record reads back through AsyncResult / GroupResult.restore as it was
    (the children too unless *children* is false: Celery 5.4-5.6's tables keep none)."""
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
        if children and meta.get("children"):
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


def stored_through_celery(url: str, ids: Sequence[str], **settings: Any) -> dict[str, Any]:
    """The meta of each of *ids* stored at *url*, read in bulk by Celery's own backend
    class and decoded as it decodes them (ids not stored are left out)."""
    app = celery_app(url, **settings)
    backend = app.backend
    out: dict[str, Any] = {}
    chunks = [list(ids[at : at + 1000]) for at in range(0, len(ids), 1000)]
    if hasattr(backend, "ResultSession"):  # DatabaseBackend: its session, model and decoding
        session = backend.ResultSession()
        try:
            for chunk in chunks:
                query = session.query(backend.task_cls).filter(backend.task_cls.task_id.in_(chunk))
                for task in query:
                    data = task.to_dict()
                    data["result"] = decode_stored_result(backend, data["result"])
                    data.pop("stamps", None)
                    for name in ("args", "kwargs", "children"):
                        if data.get(name) is not None:
                            data[name] = backend.decode(data[name])
                    out[task.task_id] = backend.meta_from_decoded(data)
        finally:
            session.close()
    else:  # a key-value backend (Redis, Sentinel): its keys, mget and decoding
        for chunk in chunks:
            values = backend.mget([backend.get_key_for_task(i) for i in chunk])
            for task_id, value in zip(chunk, values, strict=True):
                if value is not None:
                    out[task_id] = backend.decode_result(value)
    return out
