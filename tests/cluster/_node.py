"""One scheduler node of a cluster test: ``python -m tests.cluster._node STORE_URL NODE_ID [MAX_SLEEP]``.

Run from the repository root, in its own process (the tests SIGKILL it). It prints JSON
lines (flushed): ``{"ready": node_id}`` once started, or ``{"error": ...}`` and exit code 3
if the store refuses it. It reads commands from stdin, one per line, answering each:
``pause ID`` → ``{"paused": ID, "at": ISO}`` (after the commit), ``stats`` →
``{"healthy": bool, "stats": {...}}``, ``stop`` → graceful shutdown (as SIGTERM),
``claim on|off`` → ``{"claim": bool}`` (see ``NODE_CLAIM``), ``stop-at-claim N`` →
``{"armed": N}``: the next claim of at least N schedules prints ``{"stopping": N, "ids":
[...], "fire": ISO}`` and SIGSTOPs this process while it holds those leases (RELIABILITY S2;
the test sends SIGCONT). The environment gives ``LEDGER_DSN``/``LEDGER_SCHEMA`` to the
ledger tasks, and optionally: ``NODE_API=1`` serves the management API and ``/metrics`` on a
free loopback port (named in the ready line as ``"port"``); ``NODE_ENGINE=0`` opens the store
and serves the API without starting the engine (a node that changes schedules but never
claims them); ``NODE_CLAIM=0`` starts the engine (heartbeats, settling dead nodes' runs)
but claims nothing until ``claim on`` (so a test can steer a batch of runs onto one node);
``NODE_GRACE`` is the shutdown grace in seconds (5).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from aiosched import Event, EventType, Scheduler, StoreError
from aiosched.config import ApiConfig
from aiosched.metrics import SchedulerMetrics
from aiosched.web import serve

from ._tasks import CURRENT, warm_up


def say(**data: Any) -> None:
    print(json.dumps(data, default=str), flush=True)  # noqa: T201 - stdout is this node's report to the test


class Hooks:
    """Test-only switches around the store's claim (``claim on|off``, ``stop-at-claim N``)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.claiming = os.environ.get("NODE_CLAIM", "1") == "1"
        self.stop_at = 0
        store: Any = scheduler.store
        acquire, next_fire = store.acquire_due, store.next_fire_time

        async def acquire_due(now: datetime, limit: int) -> Any:
            if not self.claiming:
                return []
            claims = await acquire(now, limit)
            if self.stop_at and len(claims) >= self.stop_at:
                self.stop_at = 0
                fires = sorted({c.next_fire_time for c in claims})
                say(stopping=len(claims), ids=[c.schedule.id for c in claims], fire=fires[0].isoformat())
                os.kill(os.getpid(), signal.SIGSTOP)  # stopped here, holding the leases just taken
            return claims

        async def next_fire_time() -> Any:
            return await next_fire() if self.claiming else None

        store.acquire_due, store.next_fire_time = acquire_due, next_fire_time

    def claim(self, on: bool) -> None:
        self.claiming = on
        if on:
            self.scheduler.engine.wakeup()


def on_submitted(event: Event) -> None:
    if event.run is not None:  # called in the run's own task, right before the task itself
        CURRENT.set((event.run.schedule_id, event.run.fire_time))


async def commands(scheduler: Scheduler, stop: asyncio.Event, hooks: Hooks) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "stop":
            stop.set()
        elif line[0] == "pause":
            await scheduler.pause_job(line[1])
            say(paused=line[1], at=datetime.now(UTC).isoformat())
        elif line[0] == "stats":
            store: Any = scheduler.store
            stats = {**getattr(store, "stats", {}), "clock_offset": store.clock_offset}
            say(healthy=scheduler.store_healthy, ping=await store.ping(), stats=stats)
        elif line[0] == "claim":
            hooks.claim(line[1] == "on")
            say(claim=hooks.claiming)
        elif line[0] == "stop-at-claim":
            hooks.stop_at = int(line[1])
            say(armed=hooks.stop_at)


async def main(url: str, node_id: str, max_sleep: float) -> int:
    os.environ["NODE_ID"] = node_id
    scheduler = Scheduler(store=url, node_id=node_id, timezone="UTC", max_sleep=max_sleep)
    scheduler.add_listener(on_submitted, [EventType.SUBMITTED])
    hooks = Hooks(scheduler)
    metrics = SchedulerMetrics(scheduler) if os.environ.get("NODE_API") == "1" else None
    try:
        if os.environ.get("NODE_ENGINE", "1") == "1":
            await scheduler.start()
        else:
            await scheduler.get_jobs()  # opens the store (registers the node) without firing anything
    except StoreError as exc:
        say(error=str(exc))
        return 3
    await warm_up()  # the ledger's connections, before the first run needs them
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reading = loop.create_task(commands(scheduler, stop, hooks))
    server = None
    if metrics is not None:
        await metrics.start()
        server = await serve(scheduler, ApiConfig(enabled=True, port=0), metrics)
    say(ready=node_id, port=server.port if server is not None else None, pid=os.getpid())
    await stop.wait()
    say(shutdown=node_id, at=datetime.now(UTC).isoformat())
    reading.cancel()
    await scheduler.shutdown(grace=float(os.environ.get("NODE_GRACE", "5")))
    if server is not None:
        await server.close()
    if metrics is not None:
        await metrics.close()
    say(stopped=node_id)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format=f"{sys.argv[2]} %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 30.0)))
