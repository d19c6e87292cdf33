"""A PostgreSQL restart under load (RELIABILITY S10 in CI size), on a throwaway server.

The server is made with initdb/pg_ctl in a temporary directory on a spare port (never
the machine's shared server), stopped for a few seconds mid-run and started again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ._harness import Cluster, Node, until
from ._pgctl import ThrowawayServer
from .test_cluster import HEARTBEAT, LEASE, add_load, in_flight

pytestmark = pytest.mark.postgres

DOWN = 4.0  # seconds the server stays stopped


async def health(node: Node) -> tuple[bool, bool]:
    line = await node.ask("stats", "healthy")
    return bool(line["healthy"]), bool(line["ping"])


async def test_a_postgres_restart_duplicates_nothing_loses_nothing_and_every_node_recovers(
    server: ThrowawayServer,
) -> None:
    url = f"{server.url}?schema=outage&lease={LEASE:g}&heartbeat={HEARTBEAT:g}&batch=20"
    cluster = Cluster(url)
    await cluster.open()
    try:
        nodes = [await cluster.start(f"node{i}") for i in range(3)]
        first, fires = await add_load(url, 50, 12, max_instances=5, coalesce=False, kwargs={"hold": 0.1})
        expected = {(f"s{i:03d}", t) for i in range(50) for t in fires}
        await asyncio.sleep((first + timedelta(seconds=3.3) - datetime.now(UTC)).total_seconds())

        await server.stop()
        down_at = datetime.now(UTC)

        async def all_degraded() -> bool:
            states = [await health(node) for node in nodes]
            return all(not healthy and not ping for healthy, ping in states)

        degraded_in = await until(all_degraded, 5.0, "every node to report degraded", every=0.1)
        await asyncio.sleep(max(0.0, DOWN - (datetime.now(UTC) - down_at).total_seconds()))
        await server.start()
        up_at = datetime.now(UTC)
        await cluster.reconnect()

        async def all_healthy() -> bool:
            return all(state == (True, True) for state in [await health(node) for node in nodes])

        healthy_in = await until(all_healthy, 5.0 + 5.0, "every node to report healthy again", every=0.1)

        async def complete() -> bool:
            return len(await cluster.ledger_keys()) >= len(expected) and not any(
                [await in_flight(cluster, node.node_id) for node in nodes]
            )

        await until(complete, (fires[-1] - datetime.now(UTC)).total_seconds() + 15, "every fire started and ended")
        assert await cluster.duplicates() == []
        assert await cluster.ledger_keys() == expected
        states = dict(await cluster.db.fetch("SELECT state, count(*) FROM outage.runs GROUP BY 1"))
        assert states == {"succeeded": len(expected)}  # results of runs that ended during the outage were written
        [(resumed,)] = await cluster.query("SELECT min(at) FROM {ledger} WHERE fire_time > $1", up_at)
        [(caught_up,)] = await cluster.query(
            "SELECT max(at) FROM {ledger} WHERE fire_time BETWEEN $1 AND $2", down_at, up_at
        )
        print(  # noqa: T201 - shown with -s
            f"\nserver down {DOWN:g}s: all degraded after {degraded_in:.2f}s; all healthy {healthy_in:.2f}s after"
            f" the restart; first fire due after the restart started {(resumed - up_at).total_seconds():.2f}s"
            f" after it; the fires due during the outage all started {(caught_up - up_at).total_seconds():.2f}s"
            " after it"
        )
        for node in nodes:
            assert node.alive
            assert await node.stop() == 0
    finally:
        await cluster.close()
