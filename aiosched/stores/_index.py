"""The in-process schedule index: schedules by id and a heap of next fire times, no I/O.

The memory store is this index plus an in-memory run history; the SQLite store is this
index plus a file it writes every change through to. Each change comes in two halves so a
durable store can write between them: ``prepare_*`` checks and returns the schedule as it
will be stored (raising on a conflict, nothing changed), the plain method applies it.

Adding, removing and firing a schedule are O(log n): the heap holds one live entry per
unpaused, unclaimed schedule; entries made stale by a change are skipped lazily when popped.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from ..exceptions import ConflictingIdError, ScheduleNotFound
from ..models import Schedule
from .base import Claim, Release


class _Entry(Claim):
    """A stored schedule: the claim the engine gets, plus heap bookkeeping."""

    __slots__ = ("claimed", "token")

    def __init__(self, schedule: Schedule, next_fire_time: datetime | None) -> None:
        # Claim's fields set here rather than through super().__init__ (one call less per add).
        self.schedule = schedule
        self.next_fire_time = next_fire_time
        self.running_elsewhere = 0
        self.token = 0  # matches the entry's one live heap item; 0 while claimed, -1 once replaced/removed
        self.claimed = False


_new_entry = object.__new__


class ScheduleIndex:
    """Schedules, their next fire times and the engine's claims, in this process's memory."""

    __slots__ = ("_entries", "_heap", "_seq")

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        # (next fire time in UTC, seq, schedule id). The time is the schedule's own datetime
        # object (no float per schedule; UTC datetimes compare as fast), and an item holds no
        # object the cyclic GC tracks, so the GC stops visiting it after its first collection.
        # An item is live while its entry's token is its seq.
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = 0

    def __contains__(self, schedule_id: object) -> bool:
        return schedule_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, schedules: Iterable[Schedule]) -> None:
        """Replace the whole content with ``schedules`` as stored (one heapify, for start-up)."""
        self._entries = {s.id: _Entry(s, s.next_fire_time) for s in schedules}
        self._heap = []
        for entry in self._entries.values():
            self._push(entry, heapify=False)
        heapq.heapify(self._heap)

    # -- heap bookkeeping ------------------------------------------------------

    def _push(self, entry: _Entry, *, heapify: bool = True) -> None:
        self._seq += 1
        entry.token = self._seq
        at = entry.next_fire_time
        if at is not None and not entry.schedule.paused and not entry.claimed:
            item = (at if at.tzinfo is UTC else at.astimezone(UTC), self._seq, entry.schedule.id)
            if heapify:
                heapq.heappush(self._heap, item)
            else:
                self._heap.append(item)

    @staticmethod
    def _view(entry: _Entry) -> Schedule:
        if entry.schedule.next_fire_time == entry.next_fire_time:
            return entry.schedule
        return replace(entry.schedule, next_fire_time=entry.next_fire_time)

    # -- changes ---------------------------------------------------------------

    def prepare_add(self, schedule: Schedule, *, replace_existing: bool) -> Schedule:
        """``schedule`` as :meth:`add` will store it (version set). Raises ConflictingIdError."""
        old = self._entries.get(schedule.id)
        if old is not None and not replace_existing:
            raise ConflictingIdError(schedule.id)
        version = old.schedule.version + 1 if old else 1
        return schedule if schedule.version == version else replace(schedule, version=version)

    def insert(self, schedule: Schedule, *, replace_existing: bool) -> Schedule:
        """:meth:`prepare_add` and :meth:`add` in one (for a store with nothing to write between)."""
        entries = self._entries
        old = entries.get(schedule.id)
        if old is None:
            stored = schedule if schedule.version == 1 else replace(schedule, version=1)
        elif not replace_existing:
            raise ConflictingIdError(schedule.id)
        else:
            old.token = -1
            version = old.schedule.version + 1
            stored = schedule if schedule.version == version else replace(schedule, version=version)
        # _Entry(stored, at) and _push(entry), inlined: this runs once per schedule added.
        at = stored.next_fire_time
        entry = entries[stored.id] = _new_entry(_Entry)
        entry.schedule = stored
        entry.next_fire_time = at
        entry.running_elsewhere = 0
        entry.claimed = False
        self._seq = entry.token = seq = self._seq + 1
        if at is not None and not stored.paused:
            heapq.heappush(self._heap, (at if at.tzinfo is UTC else at.astimezone(UTC), seq, stored.id))
        return stored

    def add(self, stored: Schedule) -> None:
        """Insert or replace; a replaced schedule's heap item and claim become stale."""
        old = self._entries.get(stored.id)
        if old is not None:
            old.token = -1
        entry = self._entries[stored.id] = _Entry(stored, stored.next_fire_time)
        self._push(entry)

    def prepare_update(self, schedule: Schedule) -> Schedule:
        """``schedule`` with its version bumped, as :meth:`update` will store it. Raises ScheduleNotFound."""
        entry = self._entries.get(schedule.id)
        if entry is None:
            raise ScheduleNotFound(schedule.id)
        return replace(schedule, version=entry.schedule.version + 1)

    def update(self, stored: Schedule) -> None:
        """Replace a schedule in place; a claim held on it keeps the new next fire time."""
        entry = self._entries[stored.id]
        entry.schedule = stored
        entry.next_fire_time = stored.next_fire_time
        self._push(entry)

    def remove(self, schedule_id: str) -> None:
        """Forget a schedule. Raises ScheduleNotFound."""
        entry = self._entries.pop(schedule_id, None)
        if entry is None:
            raise ScheduleNotFound(schedule_id)
        entry.token = -1

    # -- reads -----------------------------------------------------------------

    def get(self, schedule_id: str) -> Schedule:
        """One schedule with its current next fire time. Raises ScheduleNotFound."""
        entry = self._entries.get(schedule_id)
        if entry is None:
            raise ScheduleNotFound(schedule_id)
        return self._view(entry)

    def ordered(self) -> list[Schedule]:
        """Every schedule by next fire time (paused and finished ones last), then id."""

        def order(entry: _Entry) -> tuple[bool, float, str]:
            nft = entry.next_fire_time
            done = nft is None or entry.schedule.paused
            return (done, nft.timestamp() if nft else 0.0, entry.schedule.id)

        return [self._view(e) for e in sorted(self._entries.values(), key=order)]

    def next_fire_times(self) -> dict[str, datetime | None]:
        """Every schedule's next fire time, ``None`` while paused (see ``Store.next_fire_times``)."""
        return {sid: None if e.schedule.paused else e.next_fire_time for sid, e in self._entries.items()}

    def schedules(self) -> Iterable[Schedule]:
        """Every schedule as stored (in no particular order)."""
        return (e.schedule for e in self._entries.values())

    # -- the engine's path -----------------------------------------------------

    def acquire(self, now: datetime, limit: int) -> list[Claim]:
        """Claim up to ``limit`` due, unpaused, unclaimed schedules, earliest first."""
        heap, entries = self._heap, self._entries
        now = now if now.tzinfo is UTC else now.astimezone(UTC)
        claims: list[Claim] = []
        while heap and heap[0][0] <= now and len(claims) < limit:
            _, seq, schedule_id = heapq.heappop(heap)
            entry = entries.get(schedule_id)
            if entry is None or entry.token != seq:
                continue  # stale: the schedule changed or went away after this push
            entry.claimed = True
            entry.token = 0
            claims.append(entry)
        return claims

    def _advances(self, entry: _Entry) -> bool:
        """Whether releasing this claim sets its next fire time (unchanged and still stored)."""
        return entry.token == 0 and self._entries.get(entry.schedule.id) is entry

    def advances(self, releases: Sequence[Release]) -> list[tuple[Schedule, datetime | None]]:
        """The (schedule, new next fire time) pairs :meth:`release` will apply."""
        out: list[tuple[Schedule, datetime | None]] = []
        for item in releases:
            entry = item.claim
            assert isinstance(entry, _Entry), "claims come from this index"
            if self._advances(entry):
                out.append((entry.schedule, item.next_fire_time))
        return out

    def release(self, releases: Sequence[Release]) -> None:
        """Hand claims back; a schedule changed or removed meanwhile keeps the change."""
        for item in releases:
            entry = item.claim
            assert isinstance(entry, _Entry), "claims come from this index"
            entry.claimed = False
            if self._advances(entry):
                entry.next_fire_time = item.next_fire_time
            if entry.token >= 0:
                self._push(entry)

    def next_fire_time(self) -> datetime | None:
        """The earliest next fire time of any unpaused, unclaimed schedule."""
        heap, entries = self._heap, self._entries
        while heap:
            _, seq, schedule_id = heap[0]
            entry = entries.get(schedule_id)
            if entry is not None and entry.token == seq:
                return entry.next_fire_time
            heapq.heappop(heap)
        return None
