"""A node whose clock is off fires by the database's clock (RELIABILITY S9, CI size).

The PostgreSQL store measures this node's clock against ``clock_timestamp()`` and the
scheduler's clock is the system clock plus that offset (``StoreClock``). The integration
test runs one node under libfaketime 30 s ahead on the real server: without the offset it
would claim every fire of the next 30 s at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiosched import Scheduler
from aiosched._clock import StoreClock
from aiosched.stores._pg_clock import ClockSync
from aiosched.stores.memory import MemoryStore

from ..reliability.harness import faketime_env
from ._harness import Cluster, until
from .test_cluster import add_load, options


def test_the_shortest_round_trip_wins_and_a_moved_clock_starts_afresh() -> None:
    sync = ClockSync("pg")
    woken: list[int] = []
    sync.on_change(lambda: woken.append(1))
    assert sync.offset == 0.0 and sync.rtt is None
    sync.add(1000.0, 10.0, 10.2)  # database - midpoint = 989.9, +-0.1
    sync.add(1000.0, 10.05, 10.07)  # 989.94, +-0.01: better, and agrees within the bounds
    assert sync.rtt == pytest.approx(0.02)
    assert woken == [1]  # the first sample; the second moved it by 0.04 s only
    sync.add(1010.0, 20.0, 20.5)  # a slow sample (989.75 +-0.25) does not displace the good one
    assert sync.rtt == pytest.approx(0.02)
    sync.add(2000.0, 30.0, 30.01)  # 1969.995: the clocks moved apart (a suspend, a step): start afresh
    assert sync.rtt == pytest.approx(0.01)
    assert woken == [1, 1]


def test_the_offset_follows_the_database_whatever_the_wall_clock_does(caplog: pytest.LogCaptureFixture) -> None:
    import time

    sync = ClockSync("pg")
    mono, wall = time.monotonic(), time.time()
    with caplog.at_level(logging.WARNING, "aiosched.stores.postgres"):
        sync.add(wall - 30.0, mono - 0.001, mono + 0.001)  # this node is 30 s ahead
    assert sync.offset == pytest.approx(-30.0, abs=0.05)
    assert "node clock is 30.0 s ahead of the database; using database time" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "aiosched.stores.postgres"):
        sync.add(time.time() - 30.0, time.monotonic(), time.monotonic())  # the same again: said once
    assert caplog.text == ""


def test_a_local_store_keeps_the_system_clock() -> None:
    store = MemoryStore()
    assert store.clock_offset == 0.0
    scheduler = Scheduler(store=store, timezone="UTC")
    assert isinstance(scheduler.clock, StoreClock)
    assert abs((scheduler.clock.now() - datetime.now(UTC)).total_seconds()) < 0.1


@pytest.fixture
async def cluster(pg_url: str) -> AsyncIterator[Cluster]:
    made = Cluster(options(pg_url, batch=50))
    await made.open()
    yield made
    await made.close()


@pytest.mark.postgres
async def test_a_node_30s_ahead_fires_on_time_by_the_database_clock(
    cluster: Cluster, faketime: str, tmp_path: Path
) -> None:
    log = tmp_path / "ahead.log"
    with log.open("w") as sink:
        node = await cluster.start("ahead", env=faketime_env(faketime, FAKETIME="+30s"), stderr=sink)
    try:
        offset = (await node.ask("stats", "stats"))["stats"]["clock_offset"]
        assert offset == pytest.approx(-30.0, abs=0.5)
        first, fires = await add_load(cluster.url, 10, 3)  # the admin (this process) has the real clock
        expected = {(f"s{i:03d}", t) for i in range(10) for t in fires}

        async def complete() -> bool:
            return len(await cluster.ledger_keys()) >= len(expected)

        await until(complete, (fires[-1] - datetime.now(UTC)).total_seconds() + 5, "every fire")
        late = await cluster.query("SELECT extract(epoch FROM at - fire_time)::float8 FROM {ledger} ORDER BY 1")
        earliest, latest = late[0][0], late[-1][0]
        print(f"\nnode 30 s ahead: offset {offset:.3f}s; start - fire from {earliest:.3f}s to {latest:.3f}s")  # noqa: T201
        assert await cluster.duplicates() == []
        assert await cluster.ledger_keys() == expected
        assert earliest >= 0.0  # never before the fire time by the database's clock
        assert latest < 1.0
        assert first - datetime.now(UTC) < timedelta(0)
        assert await node.stop() == 0
    finally:
        if node.alive:
            node.kill()
    assert "node clock is 30.0 s ahead of the database; using database time" in log.read_text()


async def test_the_gauge_shows_the_offset() -> None:
    from aiosched.metrics import SchedulerMetrics

    scheduler = Scheduler(store="memory://", timezone="UTC")
    metrics = SchedulerMetrics(scheduler)
    text = (await metrics.exposition()).decode()
    assert "aiosched_clock_offset_seconds 0.0" in text
    await metrics.close()
    await asyncio.sleep(0)
