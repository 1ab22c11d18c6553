"""The OpenAPI document of the JSON API (``/openapi.json``), written by hand."""

from __future__ import annotations

from typing import Any

from .. import __version__

__all__ = ["FILTERS", "openapi_document"]

#: The filter parameters, named as the command-line options; True: repeatable.
FILTERS: dict[str, bool] = {
    "state": True,
    "task": True,
    "since": False,
    "until": False,
    "worker": False,
    "queue": False,
    "group": False,
    "parent": False,
    "root": False,
    "id": False,
    "exception": False,
    "arg": True,
    "kwarg": True,
    "groups": False,
    "oldest-first": False,
}

_DESCRIPTIONS = {
    "state": "Only results in this state (repeatable): PENDING, STARTED, SUCCESS, FAILURE...",
    "task": "Only tasks whose name matches this glob (repeatable; needs result_extended).",
    "since": "Only results done at or after this time (ISO 8601, or 7d for 7 days ago).",
    "until": "Only results done before this time.",
    "worker": "Only results of this worker (a glob).",
    "queue": "Only tasks delivered through this queue.",
    "group": "Only the tasks of this group id.",
    "parent": "Only the tasks sent by this task id.",
    "root": "Only this task and every task below it in its workflow.",
    "id": "Only results whose id starts with this.",
    "exception": "Only results holding this exception type.",
    "arg": "Only tasks whose args or kwargs hold this value (repeatable).",
    "kwarg": "Only tasks whose kwargs hold KEY equal to VALUE (KEY=VALUE; repeatable).",
    "groups": "1: select group results too.",
    "oldest-first": "1: oldest first (default: newest first).",
}


def _parameter(name: str, repeatable: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if repeatable:
        schema = {"type": "array", "items": {"type": "string"}}
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": _DESCRIPTIONS[name],
        "schema": schema,
        **({"style": "form", "explode": True} if repeatable else {}),
    }


_ERROR = {
    "description": "One line saying what is wrong and what to do.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                "required": ["error", "status"],
            }
        }
    },
}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """The API's description, OpenAPI 3.0."""
    filters = [_parameter(name, repeatable) for name, repeatable in FILTERS.items()]
    paging = [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Results per page (1 to 10000, default 50).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "The cursor of the previous page.",
            "schema": {"type": "string"},
        },
    ]
    result_row = {
        "type": "object",
        "properties": {
            "task_id": {"type": "string"},
            "status": {"type": "string", "nullable": True},
            "name": {"type": "string", "nullable": True},
            "date_done": {"type": "string", "nullable": True},
        },
        "required": ["task_id", "status", "name", "date_done"],
    }
    errors = {"400": _ERROR, "503": _ERROR}
    writes = {
        "post": {
            "summary": "A write (only with --allow-writes; not served yet).",
            "responses": {"403": _ERROR, "501": _ERROR},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "resultkit serve", "version": __version__},
        "paths": {
            "/api/results": {
                "get": {
                    "summary": "One page of the results the filters select, newest first.",
                    "parameters": filters + paging,
                    "responses": {
                        "200": _ok(
                            "A page; cursor is null on the last page.",
                            {
                                "type": "object",
                                "properties": {
                                    "results": {"type": "array", "items": result_row},
                                    "cursor": {"type": "string", "nullable": True},
                                },
                                "required": ["results", "cursor"],
                            },
                        ),
                        **errors,
                    },
                }
            },
            "/api/results/{task_id}": {
                "get": {
                    "summary": "Everything stored about one result (what resultkit show prints).",
                    "parameters": [
                        {
                            "name": "task_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _ok("The result.", {"type": "object"}),
                        "404": _ERROR,
                        **errors,
                    },
                }
            },
            "/api/failures": {
                "get": {
                    "summary": "Failures grouped by task name and exception type.",
                    "parameters": filters,
                    "responses": {
                        "200": _ok(
                            "The groups, most failures first.",
                            {
                                "type": "object",
                                "properties": {
                                    "total": {"type": "integer"},
                                    "groups": {"type": "array", "items": {"type": "object"}},
                                },
                                "required": ["total", "groups"],
                            },
                        ),
                        **errors,
                    },
                }
            },
            "/api/stats": {
                "get": {
                    "summary": "What resultkit stats reports (cached).",
                    "responses": {
                        "200": _ok(
                            "The store's stats.",
                            {
                                "type": "object",
                                "properties": {
                                    "total": {"type": "integer"},
                                    "by_state": {"type": "object"},
                                },
                                "required": ["total", "by_state"],
                            },
                        ),
                        "503": _ERROR,
                    },
                }
            },
            "/api/export": writes,
            "/api/erase": writes,
            "/api/retry": writes,
        },
    }
