"""The three peers behind one small interface.

floor
    The least a trigger-driven asyncio scheduler must do, written here: a heap of
    (fire timestamp, seq, job), one ``loop.call_at`` timer, one task per fire, APScheduler 3
    triggers for the fire-time math.
apscheduler
    APScheduler 3.11 ``AsyncIOScheduler`` (MemoryJobStore, AsyncIOExecutor,
    ``misfire_grace_time=None``, ``coalesce=False``: every fire runs).
aiosched
    This project's ``Scheduler`` with its defaults (events, run history; metrics when the
    variant says so), on the memory store unless the variant names another one. Every fire
    runs here too (``misfire_grace_time=None``, ``coalesce=False``).

Jobs are added to the *running* scheduler, the usual way jobs reach a live asyncio app.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from _common import PG_DSN, Variant, drop_pg_schema, ensure_paths
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

JobFunc = Callable[..., Coroutine[Any, Any, None]]


class Peer(Protocol):
    """What a workload asks of a scheduler."""

    async def start(self) -> None: ...
    async def add_date(self, func: JobFunc, run_date: datetime, job_id: str) -> None: ...
    async def add_interval(
        self, func: JobFunc, seconds: float, start: datetime, args: tuple[Any, ...], job_id: str
    ) -> None: ...
    async def stop(self) -> None: ...
    def counters(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------------------
# floor
# --------------------------------------------------------------------------------------------


class _FloorJob:
    __slots__ = ("args", "fire_time", "func", "trigger")

    def __init__(self, func: JobFunc, args: tuple[Any, ...], trigger: Any, fire_time: datetime) -> None:
        self.func = func
        self.args = args
        self.trigger = trigger
        self.fire_time = fire_time


class FloorScheduler:
    """Heap of fire times, one timer, one task per fire."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[float, int, _FloorJob]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._tasks: set[asyncio.Task[None]] = set()
        self.wakeups = 0

    def add_job(self, func: JobFunc, trigger: Any, args: tuple[Any, ...] = ()) -> None:
        fire_time: datetime | None = trigger.get_next_fire_time(None, datetime.now(UTC))
        if fire_time is not None:
            self._push(_FloorJob(func, args, trigger, fire_time))

    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()

    def _push(self, job: _FloorJob) -> None:
        ts = job.fire_time.timestamp()
        heapq.heappush(self._heap, (ts, next(self._seq), job))
        if ts < self._timer_at:
            self._arm(ts)

    def _arm(self, ts: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = ts
        self._timer = self._loop.call_at(self._loop.time() + max(0.0, ts - time.time()), self._wake)

    def _wake(self) -> None:
        self.wakeups += 1
        self._timer, self._timer_at = None, math.inf
        now_ts = time.time()
        now = datetime.fromtimestamp(now_ts, UTC)
        heap, again = self._heap, []
        while heap and heap[0][0] <= now_ts:
            job = heapq.heappop(heap)[2]
            task = self._loop.create_task(job.func(*job.args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            next_fire: datetime | None = job.trigger.get_next_fire_time(job.fire_time, now)
            if next_fire is not None:
                job.fire_time = next_fire
                again.append(job)
        for job in again:
            heapq.heappush(heap, (job.fire_time.timestamp(), next(self._seq), job))
        if heap:
            self._arm(heap[0][0])


class FloorPeer:
    """The floor behind the :class:`Peer` interface."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant

    async def start(self) -> None:
        self._sched = FloorScheduler()

    async def add_date(self, func: JobFunc, run_date: datetime, job_id: str) -> None:
        self._sched.add_job(func, DateTrigger(run_date=run_date, timezone="UTC"))

    async def add_interval(
        self, func: JobFunc, seconds: float, start: datetime, args: tuple[Any, ...], job_id: str
    ) -> None:
        self._sched.add_job(func, IntervalTrigger(seconds=seconds, start_date=start, timezone="UTC"), args)

    async def stop(self) -> None:
        self._sched.shutdown()

    def counters(self) -> dict[str, Any]:
        return {"wakeups": self._sched.wakeups}


# --------------------------------------------------------------------------------------------
# APScheduler 3
# --------------------------------------------------------------------------------------------


class APSchedulerPeer:
    """APScheduler 3.11 AsyncIOScheduler, memory job store, asyncio executor."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant

    async def start(self) -> None:
        from apscheduler.executors.asyncio import AsyncIOExecutor  # type: ignore[import-untyped]
        from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

        self._sched = AsyncIOScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": AsyncIOExecutor()},
            job_defaults={"misfire_grace_time": None, "coalesce": False},
            timezone="UTC",
        )
        self._sched.start()

    async def add_date(self, func: JobFunc, run_date: datetime, job_id: str) -> None:
        self._sched.add_job(func, "date", run_date=run_date, id=job_id)

    async def add_interval(
        self, func: JobFunc, seconds: float, start: datetime, args: tuple[Any, ...], job_id: str
    ) -> None:
        self._sched.add_job(func, "interval", seconds=seconds, start_date=start, args=args, id=job_id)

    async def stop(self) -> None:
        self._sched.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs on the next loop pass

    def counters(self) -> dict[str, Any]:
        return {}


# --------------------------------------------------------------------------------------------
# aiosched
# --------------------------------------------------------------------------------------------


class AioschedPeer:
    """aiosched's Scheduler; the store and metrics as the variant says."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self._tmp: str | None = None
        self._schema: str | None = None
        self._metrics: Any = None
        self.batches = 0  # engine passes that claimed something (acquire_due calls with a result)

    def _store(self) -> str | None:
        kind = self.variant.store
        if kind == "sqlite":
            self._tmp = tempfile.mkdtemp(prefix="aiosched-bench-")
            return f"sqlite:///{Path(self._tmp, 'bench.db')}"
        if kind == "postgres":
            self._schema = f"bench_{os.getpid()}_{int(time.time())}"
            return f"{PG_DSN}?schema={self._schema}"
        return None

    async def start(self) -> None:
        ensure_paths()
        from aiosched import Scheduler

        self._sched = Scheduler(timezone="UTC", store=self._store())
        await self._sched.start()
        self._count_batches()
        if self.variant.metrics:
            from aiosched.metrics import SchedulerMetrics

            self._metrics = SchedulerMetrics(self._sched)
            await self._metrics.start()

    def _count_batches(self) -> None:
        """Count the engine's claiming passes (instance-level wrapper; the store is unchanged)."""
        store = self._sched.store
        acquire = store.acquire_due

        async def counted(now: datetime, limit: int) -> Any:
            claims = await acquire(now, limit)
            if claims:
                self.batches += 1
            return claims

        store.acquire_due = counted  # type: ignore[method-assign]

    @property
    def add_concurrency(self) -> int:
        """Adds kept in flight at once (a network store is latency-bound; its pool has room)."""
        return 8 if self.variant.store == "postgres" else 1

    async def add_date(self, func: JobFunc, run_date: datetime, job_id: str) -> None:
        await self._sched.add_job(func, "date", run_date=run_date, id=job_id, misfire_grace_time=None)

    async def add_interval(
        self, func: JobFunc, seconds: float, start: datetime, args: tuple[Any, ...], job_id: str
    ) -> None:
        await self._sched.add_job(
            func,
            "interval",
            seconds=seconds,
            start_date=start,
            args=args,
            id=job_id,
            misfire_grace_time=None,
            coalesce=False,
        )

    async def drain(self) -> None:
        """Wait until every final run record handed to the store is written."""
        await self._sched._runner.writer.drain()

    async def stop(self) -> None:
        try:
            if self._metrics is not None:
                await self._metrics.close()
            await self._sched.shutdown()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
            if self._schema is not None:
                await drop_pg_schema(self._schema)

    def counters(self) -> dict[str, Any]:
        stats = getattr(self._sched.store, "stats", None) or {}
        return {
            "wakeups": self._sched.engine.wakeups,
            "fires": self._sched.engine.fires,
            "batches": self.batches,
            "transactions": stats.get("transactions"),
        }


PEER_CLASSES: dict[str, Callable[[Variant], Any]] = {
    "floor": FloorPeer,
    "apscheduler": APSchedulerPeer,
    "aiosched": AioschedPeer,
}


def make_peer(variant: Variant) -> Any:
    """A fresh, not yet started peer for ``variant``."""
    return PEER_CLASSES[variant.peer](variant)


async def add_many(peer: Any, n: int, add_one: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Call ``add_one(i)`` for i < n, ``peer.add_concurrency`` at a time (default one)."""
    width = getattr(peer, "add_concurrency", 1)
    if width <= 1:
        for i in range(n):
            await add_one(i)
        return
    for lo in range(0, n, width):
        await asyncio.gather(*(add_one(i) for i in range(lo, min(n, lo + width))))
