"""The store contract: where schedules and run history live.

Every backend keeps the semantics written in these docstrings; one test suite
(``tests/stores/test_contract.py``) runs against each of them.

The engine's path through a store, once per wake-up::

    claims = await store.acquire_due(now, limit)     # due, unpaused, not held by anyone else
    ... decide fires, build run records, compute next fire times ...
    accepted = await store.release(releases, runs)   # advance + insert runs in ONE step

Only the runs ``release`` accepted are started, so a fire whose record already exists
(another node, a retried write) is never started twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import NamedTuple

from ..models import RunRecord, RunState, Schedule


class Claim:
    """A due schedule held by the engine between ``acquire_due`` and ``release``.

    Attributes:
        schedule: the schedule as stored.
        next_fire_time: its due nominal fire time.
        running_elsewhere: runs of this schedule that other nodes of a shared store have
            in flight (``running``, or ``queued`` behind a run there) at claim time; they
            count against ``max_instances``.
            Always 0 on a store used by one process.
    """

    __slots__ = ("next_fire_time", "running_elsewhere", "schedule")

    def __init__(self, schedule: Schedule, next_fire_time: datetime | None) -> None:
        self.schedule = schedule
        self.next_fire_time = next_fire_time
        self.running_elsewhere = 0


class Release(NamedTuple):
    """Hands a claim back with the schedule's new next fire time (``None``: the trigger is done)."""

    claim: Claim
    next_fire_time: datetime | None


class Store(ABC):
    """Schedules, their next fire times, and run history.

    Datetimes in and out are aware UTC. Methods are coroutines; none may block the loop.
    """

    #: a URL-ish name for logs and ``scheduler_info`` (secrets stripped).
    name: str = "store"

    #: seconds between two calls of :meth:`maintain` by a running scheduler; None: never.
    maintenance_interval: float | None = None

    _wakeup: Callable[[], None] | None = None

    def set_wakeup(self, callback: Callable[[], None]) -> None:
        """Register what to call when another process changed schedules (shared stores)."""
        self._wakeup = callback

    @property
    def clock_offset(self) -> float:
        """Seconds to add to this machine's wall clock to get the store's clock.

        A shared store measures it against its server (every node of a cluster then agrees
        on "now", whatever its own clock says: RELIABILITY S9); a store that lives with its
        process has no clock of its own: 0.0.
        """
        return 0.0

    def on_clock_change(self, callback: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Register what to call when :attr:`clock_offset` was re-measured noticeably different."""

    async def start(self, *, node_id: str) -> None:  # noqa: B027 - optional hook
        """Open connections, create or migrate the schema. Raises StoreError if it cannot."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and close. Safe to call twice."""

    async def ping(self) -> bool:
        """Whether the store answers now (for health checks); never raises for a plain outage."""
        return True

    # -- schedules ---------------------------------------------------------------

    @abstractmethod
    async def add_schedule(self, schedule: Schedule, *, replace_existing: bool = False) -> Schedule:
        """Store a new schedule and return it as stored (with its version).

        Raises ConflictingIdError if the id exists and ``replace_existing`` is false;
        otherwise a replaced schedule keeps no state of the old one.
        """

    @abstractmethod
    async def update_schedule(self, schedule: Schedule) -> Schedule:
        """Replace a stored schedule (same id) and return it with a bumped version.

        Its ``next_fire_time`` and ``paused`` are taken as given. Raises ScheduleNotFound.
        A schedule that is claimed keeps the change: the claim's release will not
        overwrite the new next fire time.
        """

    @abstractmethod
    async def remove_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (its run history stays). Raises ScheduleNotFound."""

    @abstractmethod
    async def get_schedule(self, schedule_id: str) -> Schedule:
        """One schedule with its current next fire time. Raises ScheduleNotFound."""

    @abstractmethod
    async def get_schedules(self) -> list[Schedule]:
        """Every schedule, ordered by next fire time (paused and finished ones last), then id."""

    async def next_fire_times(self) -> dict[str, datetime | None]:
        """Every schedule's id and next fire time (``None`` while paused or once finished), unordered.

        What gauges need, refreshed periodically: stores answer it without building every
        Schedule (at 10,000 schedules ``get_schedules()`` holds the loop for tens of ms).
        """
        return {s.id: None if s.paused else s.next_fire_time for s in await self.get_schedules()}

    # -- the engine's path -------------------------------------------------------

    @abstractmethod
    async def acquire_due(self, now: datetime, limit: int) -> list[Claim]:
        """Claim up to ``limit`` unpaused schedules whose next fire time is <= ``now``.

        Earliest first. A claimed schedule is not returned again until released.
        """

    @abstractmethod
    async def release(self, releases: Sequence[Release], runs: Sequence[RunRecord]) -> Sequence[RunRecord]:
        """Advance claimed schedules and insert new run records, atomically.

        A schedule changed or removed since it was claimed keeps the change (its new
        next fire time here is ignored). A run whose ``(schedule_id, fire_time)`` already
        exists is refused. Returns the runs inserted, in order.
        """

    @abstractmethod
    async def next_fire_time(self) -> datetime | None:
        """The earliest next fire time of any unpaused, unclaimed schedule."""

    # -- run history -------------------------------------------------------------

    @abstractmethod
    async def add_run(self, run: RunRecord) -> bool:
        """Insert one run record (manual runs); False if its key already exists."""

    @abstractmethod
    async def update_runs(self, runs: Sequence[RunRecord]) -> None:
        """Write the current state of runs inserted earlier (matched by key)."""

    @abstractmethod
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
        """Run history, newest fire time first, filtered by schedule, state and fire time range.

        ``since`` is inclusive, ``until`` exclusive. A store keeps a bounded history: beyond
        its limit the finished runs with the oldest fire times are forgotten first (at the
        latest by the next write); runs in flight (queued, running) are always kept.
        """

    async def recover_runs(self) -> list[RunRecord]:
        """Settle the runs that a process which is gone left in flight; call once at start.

        Each such run becomes ``abandoned`` (final, with a reason) unless its schedule has
        ``policy.recover`` and it was not re-run once already: that one is returned still in
        flight, for the caller to run once more (the same record; the attempt a ``running``
        run was in counts as made, so the re-run's attempt counts on from it).

        Returns every run it settled, abandoned ones included, oldest fire time first. Runs
        this process started are never touched. A store that cannot outlive its process
        (memory) returns ``[]``.
        """
        return []

    async def maintain(self, *, settle: bool = True) -> list[RunRecord]:
        """Periodic upkeep of a shared store; a running scheduler calls it every :attr:`maintenance_interval`.

        A shared store heartbeats this node here and settles the runs that nodes which
        stopped heartbeating left in flight, exactly as :meth:`recover_runs` does (abandoned,
        or returned still in flight for the caller to run once more). ``settle=False``
        (during shutdown) only heartbeats. Raises StoreError when the store cannot be
        reached; the caller retries at the next interval. The default does nothing.
        """
        return []
