"""The management API over a real aiohttp server and client, against a real started Scheduler."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from aiosched import ConfigError, FakeClock, RunState, Scheduler
from aiosched.config import ApiConfig
from aiosched.metrics import SchedulerMetrics
from aiosched.stores.memory import MemoryStore
from aiosched.web import create_app, serve
from aiosched.web.openapi import document

from .conftest import START, Recorder, SchedulerFactory

SECRET_ARG = "arg-value-s3cr3t"
SECRET_KWARG = "kwarg-value-hunter2"
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
calls: list[str] = []
release = asyncio.Event()


async def job(tag: str = "x", password: str = "") -> str:
    calls.append(tag)
    return "done"


async def failing() -> None:
    raise ValueError("bad things")


async def waits_forever() -> None:
    await asyncio.Event().wait()


ClientFactory = Callable[..., Awaitable[tuple[TestClient[Any, Any], Scheduler, Recorder]]]


@pytest.fixture(autouse=True)
def _clear() -> None:
    calls.clear()


@pytest.fixture
def api(make_scheduler: SchedulerFactory, aiohttp_client: Any, clock: FakeClock) -> ClientFactory:
    """Start a scheduler on the fake clock with jobs 'a' (every 10 s, secret args) and 'b' (failing, paused)."""

    async def factory(**app_options: Any) -> tuple[TestClient[Any, Any], Scheduler, Recorder]:
        store = app_options.pop("store", None)
        s, rec = await make_scheduler(clock=clock, store=store)
        await s.add_job(
            job, "interval", seconds=10, id="a", name="Job A", args=[SECRET_ARG], kwargs={"password": SECRET_KWARG}
        )
        await s.add_job(failing, "cron", hour=9, id="b", paused=True)
        client = await aiohttp_client(create_app(s, **app_options))
        return client, s, rec

    return factory


async def json_of(response: aiohttp.ClientResponse, status: int) -> Any:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


# -- reads ------------------------------------------------------------------------


async def test_status_keeps_the_original_fields(api: ClientFactory) -> None:
    client, s, _ = await api()
    body = await json_of(await client.get("/scheduler/status"), 200)
    assert body["is_running"] is True and body["jobs_count"] == 2 and body["state"] == "running"
    assert body["node_id"] == s.node_id and body["timezone"] == "UTC" and body["store"] == "memory"
    first = body["jobs"][0]
    assert set(first) >= {"id", "name", "next_run_time", "trigger"}
    assert first == {
        "id": "a",
        "name": "Job A",
        "next_run_time": (START + timedelta(seconds=10)).isoformat(),
        "trigger": "every 10s",
        "paused": False,
    }
    assert body["jobs"][1]["next_run_time"] is None  # paused


async def test_job_list_and_detail(api: ClientFactory, clock: FakeClock) -> None:
    client, _, rec = await api()
    jobs = (await json_of(await client.get("/scheduler/jobs"), 200))["jobs"]
    assert [j["id"] for j in jobs] == ["a", "b"]
    assert jobs[0]["state"] == "scheduled" and jobs[1]["state"] == "paused"
    assert jobs[0]["task"] == "tests.test_web:job" and jobs[0]["last_run"] is None
    clock.advance(10)
    await rec.wait_runs(1)
    clock.advance(1)
    detail = await json_of(await client.get("/scheduler/jobs/a?n=3"), 200)
    assert detail["next_fire_times"] == [(START + timedelta(seconds=s)).isoformat() for s in (20, 30, 40)]
    assert detail["policy"]["max_instances"] == 1 and detail["policy"]["retry"]["max_attempts"] == 1
    assert detail["last_run"]["state"] == "succeeded" and detail["last_run"]["result"] == "'done'"
    assert "traceback" not in detail["last_run"]
    b = await json_of(await client.get("/scheduler/jobs/b"), 200)
    assert b["trigger_type"] == "cron" and b["paused"] is True and b["next_run_time"] is None


async def test_runs_filters_and_pages_newest_first(api: ClientFactory, clock: FakeClock) -> None:
    client, s, rec = await api()
    for n in range(1, 6):
        clock.advance(10)
        await rec.wait_runs(n)
    await s.run_job("b", wait=True)  # failed
    body = await json_of(await client.get("/scheduler/jobs/a/runs"), 200)
    fires = [r["fire_time"] for r in body["runs"]]
    assert fires == [(START + timedelta(seconds=10 * n)).isoformat() for n in (5, 4, 3, 2, 1)]
    page = await json_of(await client.get("/scheduler/jobs/a/runs", params={"limit": 2, "offset": 1}), 200)
    assert [r["fire_time"] for r in page["runs"]] == fires[1:3]
    since, until = (START + timedelta(seconds=20)).isoformat(), (START + timedelta(seconds=40)).isoformat()
    window = await json_of(await client.get("/scheduler/jobs/a/runs", params={"since": since, "until": until}), 200)
    assert [r["fire_time"] for r in window["runs"]] == fires[2:4]
    failed = await json_of(await client.get("/scheduler/runs", params={"state": "failed,timed_out"}), 200)
    assert [(r["schedule_id"], r["state"], r["error"]) for r in failed["runs"]] == [
        ("b", "failed", "ValueError: bad things")
    ]
    assert "traceback" not in failed["runs"][0]
    both = await json_of(await client.get("/scheduler/runs?state=succeeded&state=failed"), 200)
    assert len(both["runs"]) == 6


async def test_no_args_or_secrets_in_any_response(api: ClientFactory, clock: FakeClock) -> None:
    client, _, rec = await api(token=TOKEN)
    clock.advance(10)
    await rec.wait_runs(1)
    paths = [
        "/scheduler/status",
        "/scheduler/jobs",
        "/scheduler/jobs/a",
        "/scheduler/jobs/a/runs",
        "/scheduler/runs",
        "/metrics",
        "/healthz",
        "/openapi.json",
        "/",
    ]
    for path in paths:
        response = await client.get(path)
        text = await response.text()
        for secret in (SECRET_ARG, SECRET_KWARG, TOKEN):
            assert secret not in text, (path, secret)
        if response.content_type == "application/json":
            assert "password" not in text, path  # not even the kwargs' names


# -- steering ---------------------------------------------------------------------


async def test_pause_via_api_stops_fires_and_resume_restarts_them(api: ClientFactory, clock: FakeClock) -> None:
    client, s, rec = await api()
    clock.advance(10)
    await rec.wait_runs(1)
    body = await json_of(await client.post("/scheduler/jobs/a/pause"), 200)
    assert body["job"]["paused"] is True and body["job"]["state"] == "paused"
    assert (await s.get_job("a")).paused
    clock.advance(65)
    await s.engine.wait_idle()
    assert len(calls) == 1
    body = await json_of(await client.post("/scheduler/jobs/a/resume"), 200)
    assert body["job"]["paused"] is False
    assert body["job"]["next_fire_time"] == (START + timedelta(seconds=80)).isoformat()
    clock.advance(5)
    await rec.wait_runs(2)
    await s.engine.wait_idle()
    assert len(calls) == 2


async def test_run_now_cancel_and_delete(api: ClientFactory) -> None:
    client, s, rec = await api()
    record = await json_of(await client.post("/scheduler/jobs/a/run"), 202)
    assert record["schedule_id"] == "a" and record["manual"] is True and record["state"] in ("running", "succeeded")
    await rec.wait_runs(1)
    await s.add_job(waits_forever, "cron", hour=9, id="slow")
    await json_of(await client.post("/scheduler/jobs/slow/run"), 202)
    await rec.wait(lambda: bool(rec.of("submitted", "slow")))
    assert (await json_of(await client.get("/scheduler/jobs/slow"), 200))["state"] == "running"
    assert await json_of(await client.post("/scheduler/jobs/slow/cancel"), 200) == {"cancelled": 1}
    assert rec.states("slow") == [RunState.CANCELLED]
    assert await json_of(await client.post("/scheduler/jobs/slow/cancel"), 200) == {"cancelled": 0}
    assert (await json_of(await client.delete("/scheduler/jobs/slow"), 200))["message"] == "job slow removed"
    assert [j.id for j in await s.get_jobs()] == ["a", "b"]


# -- errors -----------------------------------------------------------------------

JOB_ROUTES = [
    ("GET", ""),
    ("GET", "/runs"),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("POST", "/run"),
    ("POST", "/cancel"),
    ("DELETE", ""),
]


async def test_unknown_ids_and_paths_are_json_404(api: ClientFactory) -> None:
    client, _, _ = await api()
    for method, tail in JOB_ROUTES:
        body = await json_of(await client.request(method, f"/scheduler/jobs/nope{tail}"), 404)
        assert body == {"error": "no schedule with id 'nope'"}
    assert "error" in await json_of(await client.get("/nowhere"), 404)
    assert "error" in await json_of(await client.get("/static/../app.py"), 404)
    response = await client.put("/scheduler/jobs/a/pause")
    assert "error" in await json_of(response, 405)
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "path",
    [
        "/scheduler/jobs/a?n=0",
        "/scheduler/jobs/a?n=x",
        "/scheduler/jobs/a?n=101",
        "/scheduler/jobs/a?bogus=1",
        "/scheduler/jobs?n=1",
        "/scheduler/jobs/a/runs?limit=0",
        "/scheduler/jobs/a/runs?offset=-1",
        "/scheduler/jobs/a/runs?state=exploded",
        "/scheduler/jobs/a/runs?since=yesterday",
        "/scheduler/runs?until=2030-13-01",
    ],
)
async def test_bad_queries_are_400(api: ClientFactory, path: str) -> None:
    client, _, _ = await api()
    body = await json_of(await client.get(path), 400)
    assert isinstance(body["error"], str) and body["error"]


async def test_bad_bodies_are_400_and_big_ones_413(api: ClientFactory) -> None:
    client, s, _ = await api()
    assert "JSON" in (await json_of(await client.post("/scheduler/jobs/a/pause", data=b"{not json"), 400))["error"]
    assert "object" in (await json_of(await client.post("/scheduler/jobs/a/pause", json=[1]), 400))["error"]
    assert "unexpected" in (await json_of(await client.post("/scheduler/jobs/a/pause", json={"x": 1}), 400))["error"]
    await json_of(await client.post("/scheduler/jobs/a/pause", json={}), 200)
    big = io.BytesIO(b'{"pad": "' + b"x" * (1024**2 + 10) + b'"}')
    body = await json_of(
        await client.post("/scheduler/jobs/a/resume", data=big, headers={"Content-Type": "application/json"}), 413
    )
    assert body == {"error": "Request Entity Too Large"}
    assert (await s.get_job("a")).paused  # the refused resume changed nothing


class BrokenStore(MemoryStore):
    """A store whose schedule listing fails with a message that must not reach clients."""

    healthy = True

    async def get_schedules(self) -> list[Any]:
        raise RuntimeError("postgresql://admin:dbpassword@db/prod is down")

    async def ping(self) -> bool:
        if not self.healthy:
            raise OSError("connection refused by dbpassword host")
        return True


async def test_internal_errors_are_500_without_details(api: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    client, _, _ = await api(store=BrokenStore())
    response = await client.get("/scheduler/jobs")
    text = await response.text()
    assert response.status == 500 and text == '{"error": "internal server error"}'
    assert "dbpassword" in caplog.text  # the operator sees it in the log


# -- security ---------------------------------------------------------------------


def mutating_routes(app: web.Application) -> list[tuple[str, str]]:
    found = []
    for route in app.router.routes():
        if route.method not in ("GET", "HEAD", "OPTIONS"):
            path = route.resource.canonical if route.resource is not None else ""
            found.append((route.method, path.replace("{id}", "a")))
    return found


async def test_with_a_token_every_mutation_needs_it(api: ClientFactory) -> None:
    client, s, _ = await api(token=TOKEN)
    routes = mutating_routes(client.server.app)
    assert {m for m, _ in routes} == {"POST", "DELETE"} and len(routes) == 5
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = await client.request(method, path, headers=headers)
            body = await json_of(response, 401)
            assert "Bearer" in body["error"] and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not (await s.get_job("a")).paused
    await json_of(await client.get("/scheduler/jobs"), 200)  # reads stay open without auth_reads
    await json_of(await client.post("/scheduler/jobs/a/pause", headers=AUTH), 200)
    assert (await s.get_job("a")).paused


async def test_auth_reads_guards_reads_but_not_healthz(api: ClientFactory) -> None:
    client, _, _ = await api(token=TOKEN, auth_reads=True)
    for path in ("/scheduler/status", "/scheduler/jobs", "/scheduler/jobs/a", "/scheduler/runs", "/metrics"):
        await json_of(await client.get(path), 401)
        assert (await client.get(path, headers=AUTH)).status == 200
    for path in ("/healthz", "/", "/static/app.js", "/openapi.json"):
        assert (await client.get(path)).status == 200, path


async def test_without_a_token_mutations_are_open_but_not_cross_origin(api: ClientFactory) -> None:
    client, s, _ = await api()
    body = await json_of(await client.post("/scheduler/jobs/a/pause", headers={"Origin": "http://evil.example"}), 403)
    assert body == {"error": "cross-origin request refused"}
    assert not (await s.get_job("a")).paused
    same = {"Origin": f"http://{client.host}:{client.port}"}
    await json_of(await client.post("/scheduler/jobs/a/pause", headers=same), 200)


# -- metrics, health, openapi, mounting ---------------------------------------------


async def test_metrics_route_serves_prometheus_text(api: ClientFactory, clock: FakeClock) -> None:
    client, _, rec = await api()
    clock.advance(10)
    await rec.wait_runs(1)
    response = await client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    text = await response.text()
    assert 'scheduler_task_executions_total{status="success",task_name="a"} 1.0' in text
    assert 'scheduler_state{scheduler_state="running"} 1.0' in text


async def test_healthz_ok_then_degraded(api: ClientFactory) -> None:
    store = BrokenStore()
    client, s, _ = await api(store=store)
    body = await json_of(await client.get("/healthz"), 200)
    assert body["status"] == "ok" and body["loop_lag_seconds"] < 1
    store.healthy = False
    body = await json_of(await client.get("/healthz"), 503)
    assert body["status"] == "degraded" and body["reasons"] == ["store is not answering"]
    assert "dbpassword" not in str(body)
    await s.shutdown()
    body = await json_of(await client.get("/healthz"), 503)
    assert "scheduler is not running" in body["reasons"]


async def test_openapi_is_valid_and_matches_the_router(api: ClientFactory) -> None:
    client, _, _ = await api()
    doc = await json_of(await client.get("/openapi.json"), 200)
    assert doc == document()
    validate(doc)
    documented = {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item if method != "parameters"
    }
    routed = {(r.method, r.resource.canonical) for r in client.server.app.router.routes() if r.resource is not None}
    assert documented == routed
    names = {op["operationId"] for item in doc["paths"].values() for key, op in item.items() if key != "parameters"}
    assert names == {r.name for r in client.server.app.router.routes()}


async def test_mounts_as_a_sub_app(make_scheduler: SchedulerFactory, aiohttp_client: Any) -> None:
    s, _ = await make_scheduler()
    await s.add_job(job, "interval", seconds=10, id="a")
    parent = web.Application()
    parent.add_subapp("/aiosched", create_app(s, token=TOKEN))
    client = await aiohttp_client(parent)
    assert (await json_of(await client.get("/aiosched/scheduler/status"), 200))["jobs_count"] == 1
    page = await client.get("/aiosched/")
    assert page.status == 200 and 'src="static/app.js"' in await page.text()
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert (await client.get("/aiosched/static/style.css")).content_type == "text/css"
    await json_of(await client.post("/aiosched/scheduler/jobs/a/pause"), 401)
    await json_of(await client.post("/aiosched/scheduler/jobs/a/pause", headers=AUTH), 200)


# -- serve ---------------------------------------------------------------------------


async def test_serve_binds_loopback_and_refuses_open_binds_without_token(
    make_scheduler: SchedulerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIOSCHED_API_TOKEN", raising=False)
    s, _ = await make_scheduler()
    assert ApiConfig().host == "127.0.0.1"
    for host in ("0.0.0.0", "::", "192.0.2.7", "example.com"):
        with pytest.raises(ConfigError, match="token"):
            await serve(s, ApiConfig(host=host, port=0))
    metrics = SchedulerMetrics(s)
    async with await serve(s, ApiConfig(port=0), metrics) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}healthz") as response:
                assert response.status == 200
            # a token-less loopback API answers only requests addressed to a loopback name (DNS rebinding)
            async with http.get(f"{server.url}scheduler/status", headers={"Host": "evil.example"}) as response:
                assert response.status == 403
    await metrics.close()


async def test_serve_takes_the_token_from_the_environment(
    make_scheduler: SchedulerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOSCHED_API_TOKEN", TOKEN)
    s, _ = await make_scheduler()
    await s.add_job(job, "interval", seconds=10, id="a")
    async with await serve(s, ApiConfig(port=0)) as server, aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}scheduler/jobs/a/pause") as response:
            assert response.status == 401
        async with http.post(f"{server.url}scheduler/jobs/a/pause", headers=AUTH) as response:
            assert response.status == 200
        async with http.get(f"{server.url}metrics") as response:
            text = await response.text()
        assert re.search(r"^scheduler_loop_lag_seconds \S+$", text, re.M)  # the app's own metrics, started
    assert (await s.get_job("a")).paused
