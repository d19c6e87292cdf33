"""Helpers of the C-tier cluster scenarios (``test_chaos.py``): load, kills, scrapes, figures."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from aiosched import Scheduler

from ._harness import Cluster, Node, until

STARTED = ("success", "failure", "timeout", "cancelled")  # final outcomes of runs that started on the node


async def add_schedules(
    url: str, count: int, seconds: int, *, lead: float = 0.0, prefix: str = "s", **policy: object
) -> tuple[datetime, list[datetime]]:
    """``count`` schedules firing every second for ``seconds`` s, from a whole second after they are all added."""
    admin = Scheduler(store=url, node_id="admin", timezone="UTC")
    first = datetime.fromtimestamp(math.ceil(time.time() + lead + count * 0.01) + 2, UTC)
    try:
        for i in range(count):
            await admin.add_job(
                "tests.cluster._tasks:ledger",
                "interval",
                seconds=1,
                start_date=first,
                end_date=first + timedelta(seconds=seconds),
                id=f"{prefix}{i:03d}",
                **policy,
            )
    finally:
        await admin.shutdown()
    assert datetime.now(UTC) < first, "adding the schedules took longer than planned"
    return first, [first + timedelta(seconds=k) for k in range(seconds + 1)]


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class Kill:
    node: str
    pid: int
    at: datetime
    restarted_at: datetime | None = None


@dataclass
class Faults:
    """SIGKILL a random node every ``every`` s, restart it ``down`` s later (the S1 fault plan)."""

    cluster: Cluster
    live: dict[str, Node]
    env: dict[str, str] | None = None
    every: float = 15.0
    down: float = 5.0
    seed: int = field(default_factory=lambda: random.randrange(1 << 30))
    kills: list[Kill] = field(default_factory=list)

    async def run(self, first: datetime, seconds: float) -> None:
        rng = random.Random(self.seed)
        loop = asyncio.get_running_loop()
        k = 1
        while k * self.every < seconds:
            await asyncio.sleep(max(0.0, (first - datetime.now(UTC)).total_seconds() + k * self.every))
            name = rng.choice(sorted(self.live))
            node = self.live[name]
            node.kill()
            kill = Kill(name, node.proc.pid, datetime.now(UTC))
            self.kills.append(kill)
            back = loop.time() + self.down
            await node.stop(5)
            await asyncio.sleep(max(0.0, back - loop.time()))
            self.live[name] = await self.cluster.start(name, max_sleep=2.0, env=self.env)
            kill.restarted_at = datetime.now(UTC)
            k += 1


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` of a node: {(sample name, sorted labels): value}."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as answer:
        assert answer.status == 200
        text = await answer.text()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def counter_sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **where: str) -> int:
    total = 0.0
    for (sample, labels), value in samples.items():
        if sample == name and all((k, v) in labels for k, v in where.items()):
            total += value
    return round(total)


async def healthz(port: int) -> int:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=4)) as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as answer,
        ):
            return answer.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def wait_settled(cluster: Cluster, runs: str, expected: set[tuple[str, datetime]], timeout: float) -> None:
    """Every expected fire is in the ledger or recorded by the store, and nothing is left in flight."""

    async def settled() -> bool:
        got = await cluster.ledger_keys()
        rows = await cluster.db.fetch(f"SELECT schedule_id, fire_time, state FROM {runs}")
        recorded = {(r[0], r[1]) for r in rows}
        busy = any(r[2] in ("queued", "running") for r in rows)
        return not busy and (got | recorded) >= expected

    await until(settled, timeout, "every fire started or settled, nothing in flight", every=0.5)


async def ledger_rows(cluster: Cluster) -> list[Any]:
    return await cluster.query(
        "SELECT schedule_id, fire_time, node, pid, extract(epoch FROM at - fire_time)::float8 FROM {ledger}"
    )
