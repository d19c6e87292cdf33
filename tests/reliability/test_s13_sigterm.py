"""S13 (I scaled down; C at full scale): SIGTERM to ``aiosched run`` with 100 runs in flight.

The real CLI on a SQLite store with its API on: 100 runs are started through the API, 40 that
finish quickly and 60 that would take far longer than the grace period, while a 0.2 s ticker
keeps firing; then SIGTERM. I: grace 3 s, 40 runs of 1 s, 60 of 30 s. C: grace 15 s, 5 s and 60 s.

Passes when no run starts after the node handled SIGTERM (ledger start times against the time
of its "SIGTERM: shutting down" line), the 40 succeed and the 60 are cancelled (ledger and run
records), and the process exits 0 within grace + 2 s of the signal. That leases are released for
another node is the cluster suite's part (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from aiosched import EventType, RunState, should_stop
from aiosched.stores import SQLiteStore

from ..conftest import SchedulerFactory
from .conftest import FigureRecorder, NodeFactory
from .harness import Ledger

SHORT, LONG = 40, 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(tmp_path: Path, ledger: Ledger, port: int, grace: float, short: float, long: float) -> list[str]:
    """``--env`` and ``--config`` arguments for the CLI (explicit, so config/env.yaml stays out)."""
    env = [
        "scheduler:",
        "  timezone: UTC",
        "  tasks_package: tests.reliability",
        f"  store: sqlite:///{tmp_path / 'a.db'}",
        f"  shutdown_grace: {grace}",
        f"  api: {{enabled: true, port: {port}}}",
        "  logging: {level: INFO, format: json}",
    ]
    lines = [
        "tasks:",
        f"  tick: {{module: tasks, trigger: interval, args: {{seconds: 0.2}}, kwargs: {{ledger: '{ledger}'}}}}",
    ]
    for i in range(SHORT + LONG):
        name, seconds = (f"short{i:02}", short) if i < SHORT else (f"long{i:02}", long)
        lines.append(
            f"  {name}: {{module: tasks, trigger: cron, args: {{hour: 3}}, paused: true,"
            f" kwargs: {{ledger: '{ledger}', seconds: {seconds}}}}}"
        )
    (tmp_path / "env.yaml").write_text("\n".join(env) + "\n")
    (tmp_path / "tasks.yaml").write_text("\n".join(lines) + "\n")
    return ["--env", str(tmp_path / "env.yaml"), "--config", str(tmp_path / "tasks.yaml")]


def logged_at(log: str, text: str) -> float:
    """The Unix time of the JSON log line whose message starts with ``text``."""
    for line in log.splitlines():
        if line.startswith("{") and json.loads(line)["message"].startswith(text):
            return datetime.fromisoformat(json.loads(line)["time"]).timestamp()
    raise AssertionError(f"no log line {text!r}")


async def hold_a_request(port: int, http: aiohttp.ClientSession) -> asyncio.StreamWriter:
    """Open a request whose body never comes (a slow client): the API waits for it while it shuts down.

    A request on another connection, answered, proves the server took the held one in hand first.
    """
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /scheduler/jobs/tick/pause HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
    )
    await writer.drain()
    async with http.get("/healthz") as answer:
        assert answer.status == 200
    return writer


async def sigterm_with_runs_in_flight(
    tmp_path: Path,
    ledger: Ledger,
    nodes: NodeFactory,
    figure: FigureRecorder,
    grace: float,
    short: float,
    long: float,
    *,
    slow_client: bool = False,
) -> None:
    port = free_port()
    files = config(tmp_path, ledger, port, grace, short, long)
    node = await nodes(["-m", "aiosched", "run", *files], name="cli", json_stdout=False)
    await node.wait_log("management API and dashboard on", timeout=30)
    await ledger.wait_starts(3, "tick", timeout=10)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        for i in range(SHORT + LONG):
            async with http.post(f"/scheduler/jobs/{'short' if i < SHORT else 'long'}{i:02}/run") as answer:
                assert answer.status == 202, await answer.text()
        await ledger.wait(lambda: len(ledger.starts()) - len(ledger.starts("tick")) == SHORT + LONG, "100 runs start")
        held = await hold_a_request(port, http) if slow_client else None
    sent = node.terminate()
    code = await node.exit_code(timeout=grace + 30)
    took = time.monotonic() - sent
    if held is not None:
        held.close()
    log = node.log_text()

    handled = logged_at(log, "SIGTERM: shutting down")
    late = [r for r in ledger.starts() if r["wall"] > handled + 0.001]  # the log line has millisecond precision
    ended = {r["sid"] for r in ledger.rows("end") if r["sid"] != "tick"}
    cancelled = {r["sid"] for r in ledger.rows("cancelled")}
    case = "with a slow client: " if slow_client else ""
    figure("S13", f"{case}runs started after SIGTERM was handled", len(late), "== 0")
    figure("S13", f"{case}succeeded / cancelled (ledger)", f"{len(ended)} / {len(cancelled)}", f"{SHORT} / {LONG}")
    figure(
        "S13",
        f"{case}exit code; s from SIGTERM to exit (grace {grace:g})",
        f"{code}; {took:.2f}",
        f"0; <= {grace + 2:g}",
    )
    assert late == []
    assert ended == {f"short{i:02}" for i in range(SHORT)}
    assert cancelled == {f"long{i:02}" for i in range(SHORT, SHORT + LONG)}
    assert code == 0
    assert took <= grace + 2

    store = SQLiteStore(tmp_path / "a.db")
    await store.start(node_id="check")
    try:
        runs = [r for r in await store.get_runs(limit=100_000) if r.schedule_id != "tick"]
    finally:
        await store.close()
    states = {(r.schedule_id[:4], r.state) for r in runs}
    assert len(runs) == SHORT + LONG and states == {("shor", RunState.SUCCEEDED), ("long", RunState.CANCELLED)}
    assert {r.reason for r in runs if r.state is RunState.CANCELLED} == {
        f"cancelled by scheduler shutdown (grace period of {grace:g}s over)"
    }


async def test_s13_a_run_waiting_for_a_slot_does_not_start_once_shutdown_began(
    make_scheduler: SchedulerFactory, figure: FigureRecorder
) -> None:
    """A run queued behind a full executor when shutdown begins ends ``cancelled``, its task never called."""
    s, rec = await make_scheduler(executors={"async_limit": 1})
    called: list[int] = []

    async def holder() -> None:  # holds the only slot until shutdown begins, then frees it
        while not should_stop():
            await asyncio.sleep(0.005)

    async def waiter() -> None:
        called.append(1)

    await s.add_job(holder, id="holder", paused=True)
    await s.add_job(waiter, id="waiter", paused=True)
    held = await s.run_job("holder")
    queued = await s.run_job("waiter")  # admitted: it waits for the only slot
    await rec.wait(lambda: len(rec.of(EventType.SUBMITTED)) == 2)
    await s.shutdown(wait=True, grace=5)  # the slot frees during the grace period
    figure("S13", "a run waiting for a slot at shutdown: task calls", len(called), "== 0")
    assert held.state is RunState.SUCCEEDED
    assert (queued.state, queued.reason, queued.attempt) == (
        RunState.CANCELLED,
        "scheduler shut down before it started",
        0,
    )
    assert called == []


async def test_s13_sigterm_scaled_down(
    tmp_path: Path, ledger: Ledger, nodes: NodeFactory, figure: FigureRecorder
) -> None:
    await sigterm_with_runs_in_flight(tmp_path, ledger, nodes, figure, grace=3, short=1, long=30)


async def test_s13_sigterm_while_a_client_holds_a_request(
    tmp_path: Path, ledger: Ledger, nodes: NodeFactory, figure: FigureRecorder
) -> None:
    """The API waits up to 5 s for a request in flight when it closes; no run may start meanwhile."""
    await sigterm_with_runs_in_flight(tmp_path, ledger, nodes, figure, grace=5, short=1, long=30, slow_client=True)


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_s13_sigterm_full_scale(
    tmp_path: Path, ledger: Ledger, nodes: NodeFactory, figure: FigureRecorder
) -> None:
    await sigterm_with_runs_in_flight(tmp_path, ledger, nodes, figure, grace=15, short=5, long=60)
