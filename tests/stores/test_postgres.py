"""The PostgreSQL store beyond the shared contract: schema, nodes, leases, fencing, NOTIFY, outages.

Each test gets a fresh schema (``pg_url``); processes and real faults are in tests/cluster/.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from aiosched import RunState, Scheduler, StoreError
from aiosched.stores import MemoryStore, Release, open_store
from aiosched.stores.postgres import PostgresStore

from .test_contract import at, run, sched

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
Factory = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[Factory]:
    """Started stores on the test's schema (``node_id`` and URL options as keywords); closed after."""
    made: list[PostgresStore] = []

    async def factory(node_id: str = "n1", **options: Any) -> PostgresStore:
        store = PostgresStore.from_url(pg_url + "".join(f"&{k}={v}" for k, v in options.items()))
        await store.start(node_id=node_id)
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.close()


async def sql(store: PostgresStore, statement: str, *args: Any) -> Any:
    async with store._connection() as conn:
        return await conn.fetch(statement.replace("{s}", store.sql.schema), *args)


# -- URL and schema ----------------------------------------------------------------------


def test_url_options_and_refusals() -> None:
    store = open_store("postgresql://u:secret@db:5433/app?schema=jobs&lease=12&heartbeat=3&pool_size=4&sslmode=prefer")
    assert isinstance(store, PostgresStore)
    assert (store.lease, store.heartbeat, store.maintenance_interval) == (12.0, 3.0, 3.0)
    assert store.name == "postgresql://u@db:5433/app?schema=jobs"  # no password in logs
    assert store._dsn == "postgresql://u:secret@db:5433/app?sslmode=prefer"  # the rest goes to asyncpg
    assert isinstance(open_store("postgres://db/app"), PostgresStore)
    for bad, reason in (
        ("postgresql://db/app?schema=Bad-Name", "schema name"),
        ("postgresql://db/app?lease=soon", "not a valid float"),
        ("postgresql://db/app?lease=5&heartbeat=5", "heartbeat < lease"),
    ):
        with pytest.raises(StoreError, match=reason):
            open_store(bad)


async def test_a_newer_or_foreign_schema_is_refused_untouched(stores: Factory, pg_url: str) -> None:
    store = await stores()
    await sql(store, "UPDATE {s}.schema_version SET version = 99")
    second = PostgresStore.from_url(pg_url)
    with pytest.raises(StoreError, match="schema is version 99, written by a newer aiosched"):
        await second.start(node_id="n2")
    await sql(store, "CREATE SCHEMA foreign_t")
    await sql(store, "CREATE TABLE foreign_t.x (a int)")
    try:
        third = PostgresStore.from_url(pg_url.split("?")[0] + "?schema=foreign_t")
        with pytest.raises(StoreError, match="holds 1 table"):
            await third.start(node_id="n3")
    finally:
        await sql(store, "DROP SCHEMA foreign_t CASCADE")


async def test_nodes_are_unique_while_alive(stores: Factory, pg_url: str) -> None:
    """S20 in one process: a live node id is refused naming its holder; a dead one is taken over."""
    await stores("a", lease=5, heartbeat=1)
    with pytest.raises(StoreError, match=r"node id 'a' is in use by another live aiosched process \(pid \d+ on host"):
        await stores("a", lease=5, heartbeat=1)
    await sql(await stores("b"), "UPDATE {s}.nodes SET last_seen = now() - interval '6 seconds' WHERE node_id = 'a'")
    await stores("a", lease=5, heartbeat=1)  # its heartbeat is older than the lease: dead, taken over


# -- leases and fencing -----------------------------------------------------------------------


async def test_a_stale_node_writes_nothing(stores: Factory, caplog: pytest.LogCaptureFixture) -> None:
    """S2 in one process: a lease that expired (database clock) fences every write of its holder."""
    a, b = await stores("a"), await stores("b")
    await a.add_schedule(sched("x", 0))
    await a.add_schedule(sched("y", 0))
    claims = await a.acquire_due(at(0), 10)
    assert [c.schedule.id for c in claims] == ["x", "y"] and await b.acquire_due(at(0), 10) == []
    await sql(a, "UPDATE {s}.schedules SET acquired_until = now() - interval '1 second'")  # a stalled past its lease
    [taken] = await b.acquire_due(at(0), 1)  # b takes x; y stays expired and unclaimed
    assert taken.schedule.id == "x"
    with caplog.at_level(logging.WARNING):
        accepted = await a.release([Release(c, at(60)) for c in claims], [run("x", 0), run("y", 0)])
    assert accepted == [] and a.stats["lease_lost"] == 2
    assert "lease lost on 2 schedule(s)" in caplog.text
    assert [s.next_fire_time for s in await a.get_schedules()] == [at(0), at(0)]  # 0 rows touched
    assert await a.get_runs() == []
    assert [r.schedule_id for r in await b.release([Release(taken, at(60))], [run("x", 0)])] == ["x"]


async def test_claims_count_runs_in_flight_on_other_nodes(stores: Factory) -> None:
    a, b = await stores("a"), await stores("b")
    await a.add_schedule(sched("x", 0, max_instances=2))
    await b.add_run(running_on("b", "x", -60))
    await a.add_run(running_on("a", "x", -120))  # a's own runs are counted by its runner, not here
    [claim] = await a.acquire_due(at(0), 10)
    assert claim.running_elsewhere == 1


def running_on(node: str, sid: str, fire: float) -> Any:
    record = run(sid, fire, RunState.RUNNING)
    record.node = node
    return record


# -- dead nodes -------------------------------------------------------------------------------


async def test_a_survivor_settles_the_runs_of_a_dead_node(stores: Factory) -> None:
    """S4 in one process: abandoned, or handed back once for a re-run (recover: true); the dead node is fenced."""
    survivor, dead = await stores("a", lease=2, heartbeat=1), await stores("b", lease=2, heartbeat=1)
    await survivor.add_schedule(sched("keep", None))
    await survivor.add_schedule(sched("again", None, recover=True))
    in_flight = [running_on("b", "keep", 1), running_on("b", "again", 2), running_on("b", "gone", 3)]
    await dead.release([], in_flight)
    assert await survivor.maintain() == []  # b is alive
    await sql(survivor, "UPDATE {s}.nodes SET last_seen = now() - interval '3 seconds' WHERE node_id = 'b'")
    assert await survivor.maintain() == []  # a itself came up less than a lease ago: it does not judge yet
    survivor._up_since = time.monotonic() - 10
    settled = await survivor.maintain()
    assert [(r.schedule_id, r.state, r.node, r.attempt) for r in settled] == [
        ("keep", RunState.ABANDONED, "b", 1),
        ("again", RunState.RUNNING, "a", 1),  # now a's, to run once more
        ("gone", RunState.ABANDONED, "b", 1),
    ]
    assert settled[0].reason == "node b stopped while the run was in flight"
    assert await sql(survivor, "SELECT node_id FROM {s}.nodes ORDER BY 1") == [("a",)]
    finished = [running_on("b", sid, fire) for sid, fire in (("keep", 1), ("again", 2))]
    for record in finished:
        record.state = RunState.SUCCEEDED
    await dead.update_runs(finished)  # the stale node's late results touch nothing
    assert dead.stats["stale_run_updates"] == 2
    assert [r.state for r in await survivor.get_runs(schedule_id="keep")] == [RunState.ABANDONED]
    assert await survivor.maintain() == []  # settled once


# -- unknown commit outcome (S11) ---------------------------------------------------------------


async def test_a_commit_whose_outcome_is_unknown_is_resolved_by_re_reading(
    stores: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores("a")
    await store.add_schedule(sched("x", 0))
    await store.add_schedule(sched("y", 0))
    original = asyncpg.transaction.Transaction.commit

    async def committed_then_lost(self: Any) -> None:
        await original(self)
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    monkeypatch.setattr(asyncpg.transaction.Transaction, "commit", committed_then_lost)
    claims = await store.acquire_due(at(0), 10)
    batch = [run("x", 0, RunState.RUNNING), run("y", 0, RunState.RUNNING)]
    accepted = await store.release([Release(c, at(60)) for c in claims], batch)
    assert [id(r) for r in accepted] == [id(r) for r in batch] and store.stats["unknown_commits"] == 1

    async def lost_before(self: Any) -> None:
        self._connection.terminate()  # the server never sees COMMIT: it rolls back
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    monkeypatch.setattr(asyncpg.transaction.Transaction, "commit", lost_before)
    claims = await store.acquire_due(at(60), 10)
    with pytest.raises(StoreError, match="did not commit"):
        await store.release([Release(c, at(120)) for c in claims], [run("x", 60, RunState.RUNNING)])
    monkeypatch.setattr(asyncpg.transaction.Transaction, "commit", original)
    assert {r.fire_time for r in await store.get_runs()} == {at(0)}  # nothing of the second batch
    again = await store.acquire_due(at(60), 10)  # the leases were handed back: claimable at once
    assert [c.schedule.id for c in again] == ["x", "y"]


# -- NOTIFY ---------------------------------------------------------------------------------


async def test_changes_wake_other_nodes_and_a_lost_listen_connection_comes_back(stores: Factory) -> None:
    a, b = await stores("a"), await stores("b")
    woken = asyncio.Event()
    b.set_wakeup(woken.set)
    listener = b.listener
    assert listener is not None
    async with asyncio.timeout(5):
        await listener.connected.wait()
    for change in (
        a.add_schedule(sched("x", 50)),
        a.update_schedule(sched("x", 5)),
        a.remove_schedule("x"),
    ):
        woken.clear()
        started = time.monotonic()
        await change
        async with asyncio.timeout(1):
            await woken.wait()
        assert time.monotonic() - started < 0.5
    own = asyncio.Event()
    a.set_wakeup(own.set)
    await a.add_schedule(sched("y", 5))
    await asyncio.sleep(0.2)  # a's own change must not echo back to it (its Scheduler woke itself)
    assert not own.is_set()
    pid = listener.backend_pid
    woken.clear()
    await sql(a, "SELECT pg_terminate_backend($1)", pid)
    async with asyncio.timeout(5):
        await woken.wait()  # woken after the reconnect: changes meanwhile may have been missed
        while listener.backend_pid in (None, pid):
            await asyncio.sleep(0.01)
    assert b.stats["listen_reconnects"] == 1
    woken.clear()
    await a.update_schedule(sched("y", 1))
    async with asyncio.timeout(1):
        await woken.wait()


# -- the engine through an outage -------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A memory store that can be switched off: every engine call raises StoreError meanwhile."""

    down = False
    calls_while_down = 0

    def _check(self) -> None:
        if self.down:
            self.calls_while_down += 1
            raise StoreError("connection refused")

    async def acquire_due(self, now: datetime, limit: int) -> Any:
        self._check()
        return await super().acquire_due(now, limit)

    async def next_fire_time(self) -> datetime | None:
        self._check()
        return await super().next_fire_time()


async def tick() -> None:
    return None


async def test_the_engine_survives_a_store_outage_and_reports_it(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    async with Scheduler(store=store, timezone="UTC") as s:
        await s.add_job(tick, "interval", seconds=0.05, id="t")
        await s.engine.wait_idle()
        store.down = True
        with caplog.at_level(logging.WARNING, logger="aiosched.engine"):
            async with asyncio.timeout(2):
                while s.store_healthy or store.calls_while_down < 4:
                    await asyncio.sleep(0.01)
            assert s.running
            store.down = False
            async with asyncio.timeout(6):
                while not s.store_healthy:
                    await asyncio.sleep(0.01)
        before = len(await s.get_runs(schedule_id="t", limit=10_000))
        async with asyncio.timeout(2):
            while len(await s.get_runs(schedule_id="t", limit=10_000)) < before + 3:
                await asyncio.sleep(0.02)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "unavailable" in r.getMessage()]
    assert len(errors) == 1  # once per outage, however many calls failed
    assert "answers again" in caplog.text


# -- the CLI on PostgreSQL -----------------------------------------------------------------------


async def test_python_m_aiosched_runs_unchanged_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text(f"scheduler:\n  tasks_package: tests.cli_tasks\n  store: {pg_url}&heartbeat=1\n  node_id: cli\n")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text("tasks:\n  echo:\n    trigger: interval\n    args: {seconds: 0.2}\n    kwargs: {n: 1}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosched", "run", "--env", str(env), "--config", str(tasks), cwd=ROOT
    )
    store = PostgresStore.from_url(pg_url)
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    await store.start(node_id="reader")
                    runs = await store.get_runs(schedule_id="echo", states={RunState.SUCCEEDED})
                    if len(runs) >= 3:
                        break
                except StoreError:
                    pass  # the schema may not exist yet
                await asyncio.sleep(0.1)
        assert runs[0].result == "{'echo': {'n': 1}}" and runs[0].node == "cli"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
        assert await store.get_runs(states={RunState.RUNNING, RunState.QUEUED}) == []
        assert [r[0] for r in await sql(store, "SELECT node_id FROM {s}.nodes")] == ["reader"]  # cli unregistered
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.close()


def test_datetimes_round_trip_in_utc() -> None:
    assert at(0).tzinfo is UTC and at(0) - timedelta(0) == at(0)
