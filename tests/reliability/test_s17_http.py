"""S17 (I): HTTP security of the management API, over a real aiohttp server and client.

Passes when the API binds 127.0.0.1 by default; with a token, every mutating route enumerated
from the router answers 401 without it (also when a huge body comes along: it is never read);
with the token, a body over 1 MiB answers 413 on every mutating route (declared or chunked)
and changes nothing; no route adds a schedule (only the configured, registered tasks exist);
and no argument, keyword argument or token shows in /metrics or the job and run listings.
tests/test_web.py covers the rest (loopback-only Host, cross-origin refusal, auth_reads, 500s
without details, a non-loopback bind without a token refused).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

from aiosched.config import ApiConfig, load_config

from ..test_web import AUTH, SECRET_ARG, SECRET_KWARG, TOKEN, ClientFactory, api, json_of, mutating_routes
from .conftest import FigureRecorder

__all__ = ["api"]  # the fixture, used by name below

BIG = 1024**2 + 10


async def chunks() -> AsyncIterator[bytes]:
    """A body over 1 MiB without a Content-Length (sent chunked)."""
    yield b'{"pad": "'
    for _ in range(BIG // 65536 + 1):
        yield b"x" * 65536
    yield b'"}'


def test_s17_the_api_binds_loopback_by_default(tmp_path: Path) -> None:
    assert ApiConfig().host == "127.0.0.1"
    path = tmp_path / "c.yaml"
    path.write_text("scheduler:\n  tasks_package: tests.cli_tasks\n  api: {enabled: true}\n")
    assert load_config([path]).api.host == "127.0.0.1"


async def test_s17_every_mutation_needs_the_token_and_a_small_body(api: ClientFactory, figure: FigureRecorder) -> None:
    client, s, _ = await api(token=TOKEN)
    routes = mutating_routes(client.app)
    refused_401 = refused_413 = 0
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            await json_of(await client.request(method, path, headers=headers), 401)
            refused_401 += 1
        big = io.BytesIO(b"x" * BIG)
        await json_of(await client.request(method, path, data=big), 401)  # auth first: the body is never read
        refused_401 += 1
        for body in (io.BytesIO(b"x" * BIG), chunks()):
            await json_of(await client.request(method, path, data=body, headers=AUTH), 413)
            refused_413 += 1
    job = await s.get_job("a")
    unchanged = not job.paused and s.running_count("a") == 0 and await s.get_runs() == []
    figure("S17", "mutating routes (from the router)", f"{len(routes)}: {sorted(routes)}", "all of them")
    figure(
        "S17",
        "401 without the token / 413 over 1 MiB with it",
        f"{refused_401} / {refused_413}",
        f"{len(routes) * 4} / {len(routes) * 2}",
    )
    assert {m for m, _ in routes} == {"POST", "DELETE"} and len(routes) == 5
    assert refused_401 == len(routes) * 4 and refused_413 == len(routes) * 2
    assert unchanged  # not paused, not removed, no run started
    await json_of(await client.post("/scheduler/jobs/a/pause", headers=AUTH), 200)  # the token works


async def test_s17_no_route_adds_a_schedule(api: ClientFactory) -> None:
    client, s, _ = await api(token=TOKEN)
    body = {"func": "os:system", "trigger": "interval", "args": {"seconds": 1}}
    for path, status in (("/scheduler/jobs", 405), ("/scheduler/jobs/new", 405)):
        await json_of(await client.post(path, json=body, headers=AUTH), status)
        await json_of(await client.put(path, json=body, headers=AUTH), status)
    await json_of(await client.post("/scheduler/jobs/new/run", headers=AUTH), 404)  # only stored schedules run
    assert sorted(j.id for j in await s.get_jobs()) == ["a", "b"]


async def test_s17_no_args_or_secrets_in_metrics_or_listings(api: ClientFactory) -> None:
    client, s, _ = await api(token=TOKEN)
    record = await s.run_job("a", wait=True)  # a run exists, so the listings carry a last run
    assert record.state == "succeeded"
    for path in ("/metrics", "/scheduler/jobs", "/scheduler/jobs/a", "/scheduler/runs", "/scheduler/status"):
        text = await (await client.get(path)).text()
        for secret in (SECRET_ARG, SECRET_KWARG, TOKEN):
            assert secret not in text, (path, secret)
