"""The management API as an aiohttp Application, and hosting it with AppRunner/TCPSite.

Standalone::

    server = await serve(scheduler, config.api, metrics)   # binds config.api.host:port
    ...
    await server.close()

Embedded in an existing aiohttp app (paths then start with the prefix)::

    parent.add_subapp("/aiosched", create_app(scheduler, token=token))
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ..config import ApiConfig
from ..exceptions import ConfigError, ConfigProblem, ScheduleError, ScheduleNotFound, SchedulerNotRunning
from ..metrics import SchedulerMetrics
from ..scheduler import Scheduler
from . import handlers as h
from .auth import auth_middleware, is_loopback
from .openapi import document

__all__ = ["LAST_RUNS", "METRICS", "SCHEDULER", "ApiServer", "create_app", "serve"]

logger = logging.getLogger("aiosched.web")

SCHEDULER: Final = h.SCHEDULER
METRICS: Final = h.METRICS
LAST_RUNS: Final = h.LAST_RUNS
TOKEN_ENV: Final = "AIOSCHED_API_TOKEN"
STATIC_DIR: Final = Path(__file__).parent / "static"
STATIC_FILES: Final = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_CSP: Final = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as ``{"error": text}`` with its status; never a traceback or an argument value."""
    try:
        response = await handler(request)
    except h.ApiError as exc:
        response = _error(exc.status, exc.message)
    except ScheduleNotFound as exc:
        response = _error(404, str(exc))
    except (SchedulerNotRunning, ScheduleError) as exc:
        response = _error(409, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        response = _error(exc.status, exc.reason, kept)
    except Exception:
        logger.exception("API error on %s %s", request.method, request.path)
        response = _error(500, "internal server error")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _dashboard(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html",
        headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": _CSP},
    )


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = STATIC_FILES.get(name)
    if kind is None:
        raise h.ApiError(404, "no such file")
    return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": kind})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


def create_app(
    scheduler: Scheduler,
    *,
    token: str | None = None,
    auth_reads: bool = False,
    metrics: SchedulerMetrics | None = None,
    local_only: bool = False,
) -> web.Application:
    """The management API and dashboard for ``scheduler``, mountable as a sub-app.

    Args:
        scheduler: the scheduler to show and steer (started or not).
        token: when set, mutations need ``Authorization: Bearer <token>`` (401 otherwise).
        auth_reads: with a token, reads need it too (``/healthz``, ``/``, ``/static/*`` and
            ``/openapi.json`` stay open).
        metrics: the SchedulerMetrics behind ``/metrics`` and the lag check of ``/healthz``.
            When None, the app makes its own, started and closed with the app.
        local_only: refuse requests whose ``Host`` is not a loopback name (``serve`` sets it
            for a token-less loopback bind, against DNS rebinding).

    Request bodies over 1 MiB are refused with 413.
    """
    app = web.Application(
        client_max_size=h.MAX_BODY,
        middlewares=[
            errors_middleware,
            auth_middleware(token=token or None, auth_reads=auth_reads, local_only=local_only),
        ],
    )
    app[SCHEDULER] = scheduler
    app[LAST_RUNS] = last_runs = h.LastRuns(scheduler)
    owned = metrics is None
    app[METRICS] = metrics = metrics if metrics is not None else SchedulerMetrics(scheduler)

    async def startup(_: web.Application) -> None:
        scheduler.add_listener(last_runs.on_event, h.LastRuns.TYPES)
        if owned:
            await metrics.start()

    async def cleanup(_: web.Application) -> None:
        scheduler.remove_listener(last_runs.on_event)
        if owned:
            await metrics.close()

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    r = app.router
    r.add_get("/", _dashboard, name="dashboard", allow_head=False)
    r.add_get("/static/{name}", _static, name="static", allow_head=False)
    r.add_get("/openapi.json", _openapi, name="openapi", allow_head=False)
    r.add_get("/healthz", h.healthz, name="healthz", allow_head=False)
    r.add_get("/metrics", h.metrics, name="metrics", allow_head=False)
    r.add_get("/scheduler/status", h.status, name="status", allow_head=False)
    r.add_get("/scheduler/jobs", h.list_jobs, name="list_jobs", allow_head=False)
    r.add_get("/scheduler/runs", h.all_runs, name="all_runs", allow_head=False)
    r.add_get("/scheduler/jobs/{id}", h.get_job, name="get_job", allow_head=False)
    r.add_delete("/scheduler/jobs/{id}", h.delete, name="delete")
    r.add_get("/scheduler/jobs/{id}/runs", h.job_runs, name="job_runs", allow_head=False)
    r.add_post("/scheduler/jobs/{id}/pause", h.pause, name="pause")
    r.add_post("/scheduler/jobs/{id}/resume", h.resume, name="resume")
    r.add_post("/scheduler/jobs/{id}/run", h.run_now, name="run_now")
    r.add_post("/scheduler/jobs/{id}/cancel", h.cancel, name="cancel")
    return app


class ApiServer:
    """A running management API (see :func:`serve`).

    Attributes:
        app: the Application served.
        host: the host it is bound to.
        port: the port it is bound to (the real one when 0 was asked).
        url: ``http://host:port/``.
    """

    def __init__(self, app: web.Application, runner: web.AppRunner, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner = runner
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"

    async def close(self) -> None:
        """Stop accepting, finish open requests (up to a few seconds), run the app's cleanup. Idempotent."""
        await self._runner.cleanup()

    async def __aenter__(self) -> ApiServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def api_token(api: ApiConfig) -> str | None:
    """The configured token: ``api.token``, else the ``AIOSCHED_API_TOKEN`` variable; empty means none."""
    return api.token or os.environ.get(TOKEN_ENV) or None


async def serve(scheduler: Scheduler, api: ApiConfig, metrics: SchedulerMetrics | None = None) -> ApiServer:
    """Host the management API on ``api.host:api.port`` and return once it listens.

    Raises:
        ConfigError: the host is not a loopback address and no token is set (a management
            API open to the network without a token is refused, before anything binds).
        OSError: the address cannot be bound (in use, not permitted).
    """
    token = api_token(api)
    if token is None and not is_loopback(api.host):
        raise ConfigError(
            [
                ConfigProblem(
                    "config",
                    None,
                    "scheduler.api.host",
                    f"binding {api.host!r} exposes the API beyond this machine: set "
                    f"scheduler.api.token (or {TOKEN_ENV}), or bind 127.0.0.1",
                )
            ]
        )
    app = create_app(scheduler, token=token, auth_reads=api.auth_reads, metrics=metrics, local_only=token is None)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, api.host, api.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = next((addr[1] for addr in runner.addresses if isinstance(addr, tuple)), api.port)
    server = ApiServer(app, runner, api.host, port)
    logger.info("management API on %s (%s)", server.url, "token required for changes" if token else "no token")
    return server
