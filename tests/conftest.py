from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from aiosched import Event, FakeClock, RunState, Scheduler

# half a second past a round minute, so a cron never fires at the very instant a test adds it
START = datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)


class Recorder:
    """Collects every event of a scheduler and lets a test await a condition on them."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        scheduler.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: str, schedule_id: str | None = None) -> list[Event]:
        return [e for e in self.events if e.type == kind and (schedule_id is None or e.schedule_id == schedule_id)]

    def final_runs(self, schedule_id: str | None = None) -> list[Any]:
        return [
            e.run
            for e in self.events
            if e.run is not None
            and e.run.state.is_final
            and e.type != "retry"
            and (schedule_id is None or e.schedule_id == schedule_id)
        ]

    def states(self, schedule_id: str | None = None) -> list[RunState]:
        return [r.state for r in self.final_runs(schedule_id)]

    async def wait(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_runs(self, count: int, schedule_id: str | None = None, timeout: float = 10.0) -> None:
        await self.wait(lambda: len(self.final_runs(schedule_id)) >= count, timeout)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


SchedulerFactory = Callable[..., Awaitable[tuple[Scheduler, Recorder]]]


@pytest.fixture
async def make_scheduler() -> AsyncIterator[SchedulerFactory]:
    """Start schedulers (default zone UTC) with a Recorder; shut them down after the test."""
    made: list[Scheduler] = []

    async def factory(**kwargs: Any) -> tuple[Scheduler, Recorder]:
        kwargs.setdefault("timezone", "UTC")
        scheduler = Scheduler(**kwargs)
        recorder = Recorder(scheduler)
        await scheduler.start()
        made.append(scheduler)
        return scheduler, recorder

    yield factory
    for scheduler in made:
        await scheduler.shutdown(wait=False)


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition another thread or process makes true (no event announces it)."""
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.005)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
