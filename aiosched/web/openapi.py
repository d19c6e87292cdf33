"""The OpenAPI 3.1 document of the management API; a test checks it against the router.

Paths are relative to where the app is mounted (``/`` standalone, ``/aiosched`` as a
sub-app), so the document has a relative server URL.
"""

from __future__ import annotations

import copy
from typing import Any, Final

_ISO = {"type": ["string", "null"], "format": "date-time"}
_NUM = {"type": ["number", "null"]}
_ID = {"name": "id", "in": "path", "required": True, "description": "schedule id", "schema": {"type": "string"}}
_RUN_FILTERS = [
    {
        "name": "state",
        "in": "query",
        "description": "run states, comma-separated or repeated",
        "schema": {"type": "string"},
    },
    {
        "name": "since",
        "in": "query",
        "description": "fire time >= (ISO 8601; naive means UTC)",
        "schema": {"type": "string", "format": "date-time"},
    },
    {
        "name": "until",
        "in": "query",
        "description": "fire time < (ISO 8601; naive means UTC)",
        "schema": {"type": "string", "format": "date-time"},
    },
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/E{code}"} for code in codes}


def _op(
    name: str,
    summary: str,
    schema: dict[str, Any],
    *errors: str,
    code: str = "200",
    mutation: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """One operation answering ``code`` with a JSON ``schema``, plus the listed error responses."""
    if mutation:
        errors = (*errors, "401", "403", "413")
    op: dict[str, Any] = {
        "operationId": name,
        "summary": summary,
        "responses": {code: _json(schema), **_errors(*sorted(set(errors)))},
    }
    if mutation:
        op["security"] = [{"bearer": []}, {}]
        op["requestBody"] = {
            "required": False,
            "description": "none, or an empty JSON object",
            "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
        }
    op.update(extra)
    return op


_RUN = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string"},
        "schedule_id": {"type": "string"},
        "fire_time": {"type": "string", "format": "date-time"},
        "state": {
            "type": "string",
            "enum": [
                "queued",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled",
                "missed",
                "skipped",
                "abandoned",
            ],
        },
        "attempt": {"type": "integer"},
        "started_at": _ISO,
        "ended_at": _ISO,
        "duration": _NUM,
        "lateness": _NUM,
        "error": {"type": ["string", "null"]},
        "result": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]},
        "manual": {"type": "boolean"},
        "node": {"type": ["string", "null"]},
    },
    "required": ["run_id", "schedule_id", "fire_time", "state"],
}
_JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "task": {"type": ["string", "null"]},
        "trigger": {"type": "string"},
        "trigger_type": {"type": ["string", "null"]},
        "timezone": {"type": "string"},
        "next_run_time": _ISO,
        "next_fire_time": _ISO,
        "paused": {"type": "boolean"},
        "state": {"type": "string", "enum": ["running", "paused", "scheduled", "finished"]},
        "running": {"type": "integer"},
        "source": {"type": "string"},
        "policy": {"type": "object"},
        "last_run": {"oneOf": [_ref("Run"), {"type": "null"}]},
        "next_fire_times": {"type": "array", "items": {"type": "string", "format": "date-time"}},
    },
    "required": ["id", "name", "trigger", "paused", "state"],
}
_RUNS = {
    "type": "object",
    "properties": {
        "runs": {"type": "array", "items": _ref("Run")},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
    },
}
_MESSAGE = {"type": "object", "properties": {"message": {"type": "string"}, "job": _ref("Job")}}
_STATUS = {
    "type": "object",
    "properties": {
        "is_running": {"type": "boolean"},
        "state": {"type": "string", "enum": ["running", "stopped"]},
        "jobs_count": {"type": "integer"},
        "jobs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "next_run_time": _ISO,
                    "trigger": {"type": "string"},
                    "paused": {"type": "boolean"},
                },
            },
        },
        "node_id": {"type": "string"},
        "timezone": {"type": "string"},
        "store": {"type": "string"},
        "version": {"type": "string"},
    },
    "required": ["is_running", "jobs_count", "jobs"],
}
_HEALTH = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "loop_lag_seconds": {"type": "number"},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["status"],
}

_COUNT = {"type": "object", "properties": {"cancelled": {"type": "integer"}}}
_JOBS = {
    "type": "object",
    "properties": {"jobs": {"type": "array", "items": _ref("Job")}, "count": {"type": "integer"}},
}
_N = {
    "name": "n",
    "in": "query",
    "description": "how many fire times to list",
    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
}

_PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": {
            "operationId": "dashboard",
            "summary": "The dashboard page",
            "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
        }
    },
    "/static/{name}": {
        "get": {
            "operationId": "static",
            "summary": "A file of the dashboard",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the file"}, **_errors("404")},
        }
    },
    "/openapi.json": {"get": _op("openapi", "This document", {"type": "object"})},
    "/healthz": {
        "get": _op(
            "healthz",
            "Health of the loop, the scheduler and the store",
            _ref("Health"),
            responses={"200": _json(_ref("Health")), "503": _json(_ref("Health"), "degraded")},
        )
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text format)",
            "responses": {"200": {"description": "text", "content": {"text/plain": {}}}, **_errors("401")},
        }
    },
    "/scheduler/status": {
        "get": _op("status", "Scheduler status (the original fields and more)", _ref("Status"), "401")
    },
    "/scheduler/jobs": {"get": _op("list_jobs", "Every schedule, soonest first", _JOBS, "400", "401")},
    "/scheduler/runs": {
        "get": _op("all_runs", "Runs of every schedule, newest first", _RUNS, "400", "401", parameters=_RUN_FILTERS)
    },
    "/scheduler/jobs/{id}": {
        "parameters": [_ID],
        "get": _op(
            "get_job",
            "One schedule, its next fire times and last run",
            _ref("Job"),
            "400",
            "401",
            "404",
            parameters=[_N],
        ),
        "delete": _op("delete", "Remove the schedule (its history stays)", _MESSAGE, "400", "404", mutation=True),
    },
    "/scheduler/jobs/{id}/runs": {
        "parameters": [_ID],
        "get": _op(
            "job_runs", "The schedule's runs, newest first", _RUNS, "400", "401", "404", parameters=_RUN_FILTERS
        ),
    },
    "/scheduler/jobs/{id}/pause": {
        "parameters": [_ID],
        "post": _op("pause", "Pause the schedule (runs in flight go on)", _MESSAGE, "400", "404", mutation=True),
    },
    "/scheduler/jobs/{id}/resume": {
        "parameters": [_ID],
        "post": _op("resume", "Resume from the next fire time after now", _MESSAGE, "400", "404", mutation=True),
    },
    "/scheduler/jobs/{id}/run": {
        "parameters": [_ID],
        "post": _op(
            "run_now",
            "Run now, under the schedule's limits; returns the run record",
            _ref("Run"),
            "400",
            "404",
            "409",
            code="202",
            mutation=True,
        ),
    },
    "/scheduler/jobs/{id}/cancel": {
        "parameters": [_ID],
        "post": _op(
            "cancel", "Cancel the schedule's runs in flight; returns how many", _COUNT, "400", "404", mutation=True
        ),
    },
}

DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "aiosched management API",
        "version": "1",
        "description": 'JSON in and out; datetimes are ISO 8601 in UTC; errors are {"error": text}. '
        "With a token configured, mutations (and with auth_reads every route but /healthz, /, /static "
        "and /openapi.json) need 'Authorization: Bearer <token>'.",
    },
    "servers": [{"url": "."}],
    "paths": _PATHS,
    "components": {
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "Run": _RUN,
            "Job": _JOB,
            "Status": _STATUS,
            "Health": _HEALTH,
        },
        "responses": {
            f"E{code}": _json(_ref("Error"), text)
            for code, text in {
                "400": "bad query or body",
                "401": "token missing or wrong",
                "403": "cross-origin or non-local request",
                "404": "not found",
                "409": "conflict",
                "413": "body over 1 MiB",
            }.items()
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


def document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI document (callers may change it)."""
    return copy.deepcopy(DOCUMENT)
