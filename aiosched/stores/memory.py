"""The memory store: a schedule index and a bounded run history. Nothing survives the process.

Adding, removing and firing a schedule are O(log n) (see :mod:`._index`).
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from datetime import datetime

from ..models import RunRecord, RunState, Schedule
from ._index import ScheduleIndex
from .base import Claim, Release, Store

_RunKey = tuple[str, datetime]


class MemoryStore(Store):
    """Schedules and a bounded run history in this process's memory.

    Args:
        history_limit: finished run records kept; the oldest fire times are dropped first
            (runs in flight are always kept).
    """

    name = "memory"

    def __init__(self, *, history_limit: int = 10_000) -> None:
        self._index = ScheduleIndex()
        self._runs: dict[_RunKey, RunRecord] = {}
        self._finished: list[tuple[float, _RunKey]] = []  # a heap of final runs by fire time
        self._finished_keys: set[_RunKey] = set()
        self._history_limit = history_limit

    # -- schedules -------------------------------------------------------------

    async def add_schedule(self, schedule: Schedule, *, replace_existing: bool = False) -> Schedule:
        return self._index.insert(schedule, replace_existing=replace_existing)

    async def update_schedule(self, schedule: Schedule) -> Schedule:
        stored = self._index.prepare_update(schedule)
        self._index.update(stored)
        return stored

    async def remove_schedule(self, schedule_id: str) -> None:
        self._index.remove(schedule_id)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return self._index.get(schedule_id)

    async def get_schedules(self) -> list[Schedule]:
        return self._index.ordered()

    async def next_fire_times(self) -> dict[str, datetime | None]:
        return self._index.next_fire_times()

    # -- the engine's path -----------------------------------------------------

    async def acquire_due(self, now: datetime, limit: int) -> list[Claim]:
        return self._index.acquire(now, limit)

    async def release(self, releases: Sequence[Release], runs: Sequence[RunRecord]) -> Sequence[RunRecord]:
        self._index.release(releases)
        accepted = [run for run in runs if self._insert(run)]
        self._prune()
        return accepted

    async def next_fire_time(self) -> datetime | None:
        return self._index.next_fire_time()

    # -- run history -----------------------------------------------------------

    def _insert(self, run: RunRecord) -> bool:
        key = (run.schedule_id, run.fire_time)
        if key in self._runs:
            return False
        self._runs[key] = run
        if run.state.is_final:
            self._note_final(key)
        return True

    def _note_final(self, key: _RunKey) -> None:
        if key not in self._finished_keys:
            self._finished_keys.add(key)
            heapq.heappush(self._finished, (key[1].timestamp(), key))

    def _prune(self) -> None:
        """Forget the finished runs with the oldest fire times beyond the limit (runs in flight stay)."""
        finished, runs = self._finished, self._runs
        while len(finished) > self._history_limit:
            _, key = heapq.heappop(finished)
            self._finished_keys.discard(key)
            runs.pop(key, None)

    async def add_run(self, run: RunRecord) -> bool:
        inserted = self._insert(run)
        self._prune()
        return inserted

    async def update_runs(self, runs: Sequence[RunRecord]) -> None:
        stored = self._runs
        for run in runs:
            key = (run.schedule_id, run.fire_time)
            if key in stored:
                stored[key] = run
                if run.state.is_final:
                    self._note_final(key)
        self._prune()

    async def get_runs(
        self,
        *,
        schedule_id: str | None = None,
        states: Collection[RunState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        found = [
            run
            for run in self._runs.values()
            if (schedule_id is None or run.schedule_id == schedule_id)
            and (states is None or run.state in states)
            and (since is None or run.fire_time >= since)
            and (until is None or run.fire_time < until)
        ]
        found.sort(key=lambda run: run.fire_time, reverse=True)
        return found[offset : offset + limit]
