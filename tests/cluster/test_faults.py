"""Connections that break at the worst moments (RELIABILITY S11 in CI size).

A proxy between the nodes and PostgreSQL refuses 20 % of connects and drops 20 % of
connections just before, and 20 % just after, a COMMIT reaches the server. Every fire
must still start exactly once: an unknown commit outcome is resolved by re-reading.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from ._harness import Cluster, split_url, until
from ._proxy import FaultyProxy
from .test_cluster import HEARTBEAT, LEASE, add_load, in_flight

pytestmark = pytest.mark.postgres


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[FaultyProxy]:
    dsn, _ = split_url(pg_url)
    host, port = dsn.split("@", 1)[1].split("/", 1)[0].split(":")
    made = FaultyProxy((host, int(port)), connect=0.2, pre_commit=0.2, post_commit=0.2)
    await made.start()
    yield made
    await made.close()


async def test_every_fire_starts_exactly_once_through_a_faulty_connection(pg_url: str, proxy: FaultyProxy) -> None:
    dsn, schema = split_url(pg_url)
    proxied = dsn.replace(dsn.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{proxy.port}")
    url = f"{proxied}?schema={schema}&sslmode=disable&lease={LEASE:g}&heartbeat={HEARTBEAT:g}&batch=20"
    cluster = Cluster(url, ledger_dsn=dsn)  # the ledger (the test's truth) bypasses the proxy
    await cluster.open()
    try:
        proxy.enabled = False  # start cleanly; the faults are for the firing
        nodes = [await cluster.start(f"node{i}") for i in range(2)]
        _, fires = await add_load(pg_url, 100, 4, max_instances=5, coalesce=False)  # the admin: direct
        proxy.enabled = True
        expected = {(f"s{i:03d}", t) for i in range(100) for t in fires}

        async def complete() -> bool:
            return len(await cluster.ledger_keys()) >= len(expected) and not any(
                [await in_flight(cluster, node.node_id) for node in nodes]
            )

        deadline = (fires[-1] - datetime.now(UTC)).total_seconds() + 4 * LEASE + 15
        await until(complete, deadline, "every fire started and recorded", every=0.25)
        proxy.enabled = False
        assert await cluster.duplicates() == []
        assert await cluster.ledger_keys() == expected  # exactly 5 per schedule
        stats = [(await node.ask("stats", "stats"))["stats"] for node in nodes]
        print(f"\nproxy faults {proxy.faults}; node stats {stats}")  # noqa: T201 - shown with -s
        assert proxy.faults["post_commit"] > 0 and proxy.faults["pre_commit"] > 0
        for node in nodes:
            assert node.alive
            # through a faulty connection a graceful exit may wait out statement timeouts:
            # writing the last records (bounded), unregistering and closing the pool
            assert await node.stop(timeout=60) == 0
    finally:
        await cluster.close()
