"""JSON handlers for the paths of DESIGN.md section 4; errors are JSON, never a traceback.

Every view is built from the Scheduler's public API. A job view shows the task reference,
trigger, policy and state, never the schedule's ``args``/``kwargs``; a run view leaves out
the task's traceback (it may quote argument values): the error line stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from ..events import Event, EventType
from ..metrics import CONTENT_TYPE_LATEST, SchedulerMetrics
from ..models import RunRecord, RunState, Schedule
from ..scheduler import Scheduler

logger = logging.getLogger("aiosched.web")

MAX_BODY: Final = 1024**2
MAX_PREVIEW: Final = 100
MAX_LIMIT: Final = 1000
HEALTH_LAG_LIMIT: Final = 1.0  # seconds of loop lag beyond which /healthz says degraded
STORE_PING_TIMEOUT: Final = 2.0


class ApiError(Exception):
    """A client error with its HTTP status; the message is shown to the client as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- views ---------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 in UTC, or None."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def run_view(record: RunRecord) -> dict[str, Any]:
    """A run record for clients: everything but the traceback."""
    view = record.to_dict()
    del view["traceback"]
    for key in ("fire_time", "started_at", "ended_at"):
        value = getattr(record, key)
        view[key] = iso(value)
    return view


def policy_view(schedule: Schedule) -> dict[str, Any]:
    """A schedule's policy as plain JSON values."""
    p, r = schedule.policy, schedule.policy.retry
    return {
        "executor": p.executor,
        "max_instances": p.max_instances,
        "overlap": p.overlap.value,
        "catchup": p.catchup.value,
        "max_catchup": p.max_catchup,
        "misfire_grace_time": p.misfire_grace_time,
        "timeout": p.timeout,
        "jitter": p.jitter,
        "recover": p.recover,
        "retry": {
            "max_attempts": r.max_attempts,
            "retry_delay": r.retry_delay,
            "backoff": r.backoff,
            "max_delay": r.max_delay,
            "jitter": r.jitter,
            "retry_on": list(r.retry_on),
        },
    }


def job_state(schedule: Schedule, running: int) -> str:
    """``running``, ``paused``, ``finished`` (no next fire time) or ``scheduled``."""
    if running:
        return "running"
    if schedule.paused:
        return "paused"
    return "finished" if schedule.next_fire_time is None else "scheduled"


def job_view(scheduler: Scheduler, schedule: Schedule, last_run: RunRecord | None) -> dict[str, Any]:
    """One schedule for clients (no args or kwargs)."""
    trigger = schedule.trigger
    running = scheduler.running_count(schedule.id)
    return {
        "id": schedule.id,
        "name": schedule.name,
        "task": schedule.task_ref,
        "trigger": trigger.describe(),
        "trigger_type": trigger.spec.type if trigger.spec is not None else None,
        "timezone": trigger.spec.timezone if trigger.spec is not None else str(trigger.timezone),
        "next_run_time": iso(schedule.next_run_time),
        "next_fire_time": iso(schedule.next_fire_time),
        "paused": schedule.paused,
        "state": job_state(schedule, running),
        "running": running,
        "source": schedule.source,
        "policy": policy_view(schedule),
        "last_run": run_view(last_run) if last_run is not None else None,
    }


class LastRuns:
    """The newest run of each schedule, from this node's events or read from the store.

    An entry is re-read from the store after ``ttl`` seconds, so runs made by other nodes
    of a shared store show up too.
    """

    TYPES: Final = (
        EventType.SUBMITTED,
        EventType.EXECUTED,
        EventType.ERROR,
        EventType.RETRY,
        EventType.MISSED,
        EventType.SKIPPED,
        EventType.CANCELLED,
        EventType.ABANDONED,
    )

    def __init__(self, scheduler: Scheduler, ttl: float = 10.0) -> None:
        self._scheduler = scheduler
        self._ttl = ttl
        self._runs: dict[str, tuple[RunRecord | None, float]] = {}

    def on_event(self, event: Event) -> None:
        """Keep the event's run if it is the newest of its schedule."""
        run = event.run
        if run is None:
            return
        old = self._runs.get(run.schedule_id)
        if old is None or old[0] is None or run.fire_time >= old[0].fire_time:
            self._runs[run.schedule_id] = (run, time.monotonic())

    async def get(self, schedule_id: str) -> RunRecord | None:
        """The newest run of a schedule (None if it never ran)."""
        entry = self._runs.get(schedule_id)
        if entry is not None and time.monotonic() - entry[1] < self._ttl:
            return entry[0]
        runs = await self._scheduler.get_runs(schedule_id=schedule_id, limit=1)
        found = runs[0] if runs else None
        self._runs[schedule_id] = (found, time.monotonic())
        return found

    def forget(self, schedule_id: str) -> None:
        """Drop a removed schedule's entry."""
        self._runs.pop(schedule_id, None)


SCHEDULER: Final = web.AppKey("aiosched.scheduler", Scheduler)
METRICS: Final = web.AppKey("aiosched.metrics", SchedulerMetrics)
LAST_RUNS: Final = web.AppKey("aiosched.last_runs", LastRuns)


# -- request parsing -------------------------------------------------------------


def _only(query: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}")


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return value


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 date-time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_RUN_QUERY = frozenset({"state", "since", "until", "limit", "offset"})


def run_filters(request: web.Request) -> dict[str, Any]:
    """The filters of a runs query: ``state`` (repeatable or comma-separated), ``since``,
    ``until`` (ISO; naive means UTC), ``limit`` (1-1000, default 100), ``offset``."""
    query = request.query
    _only(query, _RUN_QUERY)
    states: set[RunState] | None = None
    raw_states = [part for value in query.getall("state", []) for part in value.split(",") if part]
    if raw_states:
        try:
            states = {RunState(s) for s in raw_states}
        except ValueError:
            known = ", ".join(s.value for s in RunState)
            raise ApiError(400, f"state must be one of {known}") from None
    return {
        "states": states,
        "since": _time(query, "since"),
        "until": _time(query, "until"),
        "limit": _int(query, "limit", 100, 1, MAX_LIMIT),
        "offset": _int(query, "offset", 0, 0, 10**9),
    }


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body ({} when empty); 413 over 1 MiB, 400 if not a JSON object."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(raw))
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


async def _no_body(request: web.Request) -> None:
    body = await read_body(request)
    if body:
        raise ApiError(400, f"unexpected field(s): {', '.join(sorted(map(str, body)))}")


def _job_id(request: web.Request) -> str:
    return request.match_info["id"]


# -- handlers ----------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    """``GET /scheduler/status``: the original fields plus node, zone, store and state."""
    from .. import __version__

    scheduler = request.app[SCHEDULER]
    jobs = await scheduler.get_jobs()
    return web.json_response(
        {
            "is_running": scheduler.running,
            "state": "running" if scheduler.running else "stopped",
            "jobs_count": len(jobs),
            "jobs": [
                {
                    "id": job.id,
                    "name": job.name,
                    "next_run_time": iso(job.next_run_time),
                    "trigger": job.trigger.describe(),
                    "paused": job.paused,
                }
                for job in jobs
            ],
            "node_id": scheduler.node_id,
            "timezone": str(scheduler.timezone),
            "store": scheduler.store.name,
            "version": __version__,
        }
    )


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /scheduler/jobs``: every schedule, soonest first, each with its last run."""
    _only(request.query, frozenset())
    scheduler, last = request.app[SCHEDULER], request.app[LAST_RUNS]
    jobs = await scheduler.get_jobs()
    views = [job_view(scheduler, job, await last.get(job.id)) for job in jobs]
    return web.json_response({"jobs": views, "count": len(views)})


async def get_job(request: web.Request) -> web.Response:
    """``GET /scheduler/jobs/{id}?n=5``: one schedule with its next ``n`` fire times."""
    _only(request.query, frozenset({"n"}))
    n = _int(request.query, "n", 5, 1, MAX_PREVIEW)
    scheduler, last = request.app[SCHEDULER], request.app[LAST_RUNS]
    job = await scheduler.get_job(_job_id(request))
    view = job_view(scheduler, job, await last.get(job.id))
    view["next_fire_times"] = [iso(t) for t in await scheduler.next_fire_times(job.id, n)]
    return web.json_response(view)


async def job_runs(request: web.Request) -> web.Response:
    """``GET /scheduler/jobs/{id}/runs``: the schedule's runs, newest first."""
    filters = run_filters(request)
    scheduler = request.app[SCHEDULER]
    job = await scheduler.get_job(_job_id(request))
    runs = await scheduler.get_runs(schedule_id=job.id, **filters)
    return web.json_response(
        {"runs": [run_view(r) for r in runs], "limit": filters["limit"], "offset": filters["offset"]}
    )


async def all_runs(request: web.Request) -> web.Response:
    """``GET /scheduler/runs``: runs of every schedule, newest first (the dashboard's list)."""
    filters = run_filters(request)
    runs = await request.app[SCHEDULER].get_runs(**filters)
    return web.json_response(
        {"runs": [run_view(r) for r in runs], "limit": filters["limit"], "offset": filters["offset"]}
    )


async def pause(request: web.Request) -> web.Response:
    """``POST /scheduler/jobs/{id}/pause``: stop firing (runs in flight go on)."""
    await _no_body(request)
    scheduler = request.app[SCHEDULER]
    job = await scheduler.pause_job(_job_id(request))
    last = await request.app[LAST_RUNS].get(job.id)
    return web.json_response({"message": f"job {job.id} paused", "job": job_view(scheduler, job, last)})


async def resume(request: web.Request) -> web.Response:
    """``POST /scheduler/jobs/{id}/resume``: fire again from the next fire time after now."""
    await _no_body(request)
    scheduler = request.app[SCHEDULER]
    job = await scheduler.resume_job(_job_id(request))
    last = await request.app[LAST_RUNS].get(job.id)
    return web.json_response({"message": f"job {job.id} resumed", "job": job_view(scheduler, job, last)})


async def run_now(request: web.Request) -> web.Response:
    """``POST /scheduler/jobs/{id}/run``: start a run now; 202 with its record."""
    await _no_body(request)
    record = await request.app[SCHEDULER].run_job(_job_id(request))
    return web.json_response(run_view(record), status=202)


async def cancel(request: web.Request) -> web.Response:
    """``POST /scheduler/jobs/{id}/cancel``: cancel its runs in flight; returns how many."""
    await _no_body(request)
    count = await request.app[SCHEDULER].cancel_job_run(_job_id(request))
    return web.json_response({"cancelled": count})


async def delete(request: web.Request) -> web.Response:
    """``DELETE /scheduler/jobs/{id}``: remove the schedule (its history stays)."""
    await _no_body(request)
    job_id = _job_id(request)
    await request.app[SCHEDULER].remove_job(job_id)
    request.app[LAST_RUNS].forget(job_id)
    return web.json_response({"message": f"job {job_id} removed"})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format."""
    body = await request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 when running, the loop answers in time and the store answers; else 503."""
    scheduler = request.app[SCHEDULER]
    reasons: list[str] = []
    if not scheduler.running:
        reasons.append("scheduler is not running")
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(0)
    lag = loop.time() - start
    watched = request.app[METRICS].loop_lag_seconds
    lag = max(lag, watched or 0.0)
    if lag > HEALTH_LAG_LIMIT:
        reasons.append(f"event loop lag {lag:.3f}s")
    try:
        async with asyncio.timeout(STORE_PING_TIMEOUT):
            store_ok = await scheduler.store.ping()
    except Exception:
        logger.warning("healthz: the store did not answer", exc_info=True)
        store_ok = False
    if not store_ok:
        reasons.append("store is not answering")
    body: dict[str, Any] = {"status": "degraded" if reasons else "ok", "loop_lag_seconds": round(lag, 6)}
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body, status=503 if reasons else 200)
