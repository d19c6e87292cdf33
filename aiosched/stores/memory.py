"""The memory store: a heap of next fire times and dicts. Nothing survives the process.

Adding, removing and firing a schedule are O(log n): the heap holds one live entry per
unpaused schedule; entries made stale by a change are skipped lazily when popped.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime

from ..exceptions import ConflictingIdError, ScheduleNotFound
from ..models import RunRecord, RunState, Schedule
from .base import Claim, Release, Store

_RunKey = tuple[str, datetime]


class _Entry(Claim):
    """A stored schedule: the claim the engine gets, plus heap bookkeeping."""

    __slots__ = ("claimed", "token")

    def __init__(self, schedule: Schedule, next_fire_time: datetime | None) -> None:
        super().__init__(schedule, next_fire_time)
        self.token = 0  # matches the entry's one live heap item
        self.claimed = False


class MemoryStore(Store):
    """Schedules and a bounded run history in this process's memory.

    Args:
        history_limit: run records kept; the oldest are dropped first.
    """

    name = "memory"

    def __init__(self, *, history_limit: int = 10_000) -> None:
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._runs: dict[_RunKey, RunRecord] = {}
        self._finished: OrderedDict[_RunKey, None] = OrderedDict()  # final runs, oldest first
        self._history_limit = history_limit

    # -- heap bookkeeping ------------------------------------------------------

    def _push(self, entry: _Entry) -> None:
        self._seq += 1
        entry.token = self._seq
        if entry.next_fire_time is not None and not entry.schedule.paused and not entry.claimed:
            heapq.heappush(self._heap, (entry.next_fire_time.timestamp(), self._seq, entry))

    def _view(self, entry: _Entry) -> Schedule:
        if entry.schedule.next_fire_time == entry.next_fire_time:
            return entry.schedule
        return replace(entry.schedule, next_fire_time=entry.next_fire_time)

    # -- schedules -------------------------------------------------------------

    async def add_schedule(self, schedule: Schedule, *, replace_existing: bool = False) -> Schedule:
        old = self._entries.get(schedule.id)
        if old is not None and not replace_existing:
            raise ConflictingIdError(schedule.id)
        version = old.schedule.version + 1 if old else 1
        stored = replace(schedule, version=version)
        entry = _Entry(stored, stored.next_fire_time)
        if old is not None:
            old.token = -1  # its heap item, and its claim if held, are now stale
        self._entries[schedule.id] = entry
        self._push(entry)
        return stored

    async def update_schedule(self, schedule: Schedule) -> Schedule:
        entry = self._entries.get(schedule.id)
        if entry is None:
            raise ScheduleNotFound(schedule.id)
        stored = replace(schedule, version=entry.schedule.version + 1)
        entry.schedule = stored
        entry.next_fire_time = stored.next_fire_time
        self._push(entry)
        return stored

    async def remove_schedule(self, schedule_id: str) -> None:
        entry = self._entries.pop(schedule_id, None)
        if entry is None:
            raise ScheduleNotFound(schedule_id)
        entry.token = -1

    async def get_schedule(self, schedule_id: str) -> Schedule:
        entry = self._entries.get(schedule_id)
        if entry is None:
            raise ScheduleNotFound(schedule_id)
        return self._view(entry)

    async def get_schedules(self) -> list[Schedule]:
        def order(entry: _Entry) -> tuple[bool, float, str]:
            nft = entry.next_fire_time
            done = nft is None or entry.schedule.paused
            return (done, nft.timestamp() if nft else 0.0, entry.schedule.id)

        return [self._view(e) for e in sorted(self._entries.values(), key=order)]

    # -- the engine's path -----------------------------------------------------

    async def acquire_due(self, now: datetime, limit: int) -> list[Claim]:
        heap = self._heap
        now_ts = now.timestamp()
        claims: list[Claim] = []
        while heap and heap[0][0] <= now_ts and len(claims) < limit:
            _, seq, entry = heapq.heappop(heap)
            if entry.token != seq:
                continue  # stale: the schedule changed or went away after this push
            entry.claimed = True
            entry.token = 0
            claims.append(entry)
        return claims

    async def release(self, releases: Sequence[Release], runs: Sequence[RunRecord]) -> Sequence[RunRecord]:
        for item in releases:
            entry = item.claim
            assert isinstance(entry, _Entry)
            entry.claimed = False
            if entry.token == 0 and self._entries.get(entry.schedule.id) is entry:
                entry.next_fire_time = item.next_fire_time
            if entry.token >= 0:
                self._push(entry)
        accepted = [run for run in runs if self._insert(run)]
        self._prune()
        return accepted

    async def next_fire_time(self) -> datetime | None:
        heap = self._heap
        while heap and heap[0][2].token != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][2].next_fire_time if heap else None

    # -- run history -----------------------------------------------------------

    def _insert(self, run: RunRecord) -> bool:
        key = (run.schedule_id, run.fire_time)
        if key in self._runs:
            return False
        self._runs[key] = run
        if run.state.is_final:
            self._finished[key] = None
        return True

    def _prune(self) -> None:
        """Forget the oldest finished runs beyond the limit (runs in flight are always kept)."""
        finished, runs = self._finished, self._runs
        while len(finished) > self._history_limit:
            key, _ = finished.popitem(last=False)
            runs.pop(key, None)

    async def add_run(self, run: RunRecord) -> bool:
        inserted = self._insert(run)
        self._prune()
        return inserted

    async def update_runs(self, runs: Sequence[RunRecord]) -> None:
        stored, finished = self._runs, self._finished
        for run in runs:
            key = (run.schedule_id, run.fire_time)
            if key in stored:
                stored[key] = run
                if run.state.is_final:
                    finished[key] = None
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
