"""The one timer: sleep until the earliest fire time, take the due batch, dispatch, release.

Each wake-up claims up to ``batch_size`` due schedules from the store, turns their due
fire times into run records (misfire grace, catch-up, overlap), hands the whole batch
back in one store write, and only then starts the runs the store accepted. The engine
never awaits a run. While idle it sleeps on one timer, capped at ``max_sleep`` so a
wall-clock step or a suspended machine is noticed within that bound.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Sequence
from datetime import datetime

from ._clock import Clock
from ._runner import Plan, Runner
from .events import Event, EventBus, EventType
from .exceptions import StoreError
from .models import Catchup, RunRecord, RunState, Schedule
from .stores.base import Claim, Release, Store

logger = logging.getLogger("aiosched.engine")

#: due schedules claimed per pass. Small enough that the loop answers within a few ms during a burst and a
#: batch's short-lived objects die before the cyclic GC promotes them (at 1000, a 100,000-job burst paid
#: four full collections instead of one); large enough that a durable store's release stays one transaction
#: for hundreds of fires.
BATCH_SIZE = 256

#: fires between two collections of the youngest GC generation (see Engine._pace_young_gc)
YOUNG_GC_EVERY = 256

#: what a store raises when it cannot be reached (a shared store translates to StoreError)
STORE_ERRORS = (StoreError, OSError, TimeoutError)


class StoreHealth:
    """Whether the store answers, with rate-limited logging of outages (RELIABILITY S10).

    The first failure of an outage is logged once as an error; while it lasts a warning
    repeats at most every ``report_every`` seconds; its end is logged with its length.

    Attributes:
        healthy: False from the first failure until a store call succeeds again.
        failures: consecutive failures (drives the backoff).
        outages: outages seen so far.
    """

    def __init__(self, store_name: str, *, report_every: float = 30.0) -> None:
        self._name = store_name
        self._report_every = report_every
        self.healthy = True
        self.failures = 0
        self.outages = 0
        self._since = 0.0
        self._reported = 0.0

    def failed(self, exc: BaseException) -> None:
        """Note a failed store call."""
        now = time.monotonic()
        self.failures += 1
        if self.healthy:
            self.healthy = False
            self.outages += 1
            self._since = self._reported = now
            logger.error("store %s unavailable, not claiming until it answers: %s", self._name, exc)
        elif now - self._reported >= self._report_every:
            self._reported = now
            logger.warning(
                "store %s still unavailable after %.0fs (%d failed calls): %s",
                self._name,
                now - self._since,
                self.failures,
                exc,
            )

    def ok(self) -> None:
        """Note a store call that succeeded."""
        if not self.healthy:
            logger.warning("store %s answers again after %.1fs", self._name, time.monotonic() - self._since)
        self.healthy = True
        self.failures = 0

    def backoff(self, cap: float) -> float:
        """Seconds to wait before the next try: exponential from 50 ms, jittered, at most ``cap``."""
        return min(cap, 0.05 * 2.0 ** min(self.failures, 10)) * random.uniform(0.5, 1.0)


class Engine:
    """Drives fires from the store to the runner.

    Attributes:
        wakeups: times the loop woke up (timer expiry or a wake-up call), for tests and metrics.
        fires: fires dispatched (run records written) so far.
    """

    def __init__(
        self,
        *,
        store: Store,
        runner: Runner,
        bus: EventBus,
        clock: Clock,
        batch_size: int = BATCH_SIZE,
        max_sleep: float = 30.0,
    ) -> None:
        self._store = store
        self._runner = runner
        self._bus = bus
        self._clock = clock
        self._batch_size = batch_size
        self._max_sleep = max_sleep
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self.health = StoreHealth(store.name)
        self._idle_waiters: list[asyncio.Future[None]] = []
        self.wakeups = 0
        self.fires = 0
        self._unpaced = 0  # fires since the last paced young collection
        clock.on_change(self.wakeup)
        store.set_wakeup(self.wakeup)

    def wakeup(self) -> None:
        """Re-check the store now (a schedule changed, or the clock moved)."""
        self._wake.set()

    async def wait_idle(self) -> None:
        """Return once the engine has dispatched everything due by now and went back to sleep."""
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        self.wakeup()
        await waiter

    def stop(self) -> None:
        """Stop after the current batch; the run loop then returns."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()

    async def run(self, ready: asyncio.Event) -> None:
        """The engine loop; returns after :meth:`stop`."""
        self._runner.capture_context()  # runs start in copies of the context the scheduler started in
        ready.set()
        store = self._store
        while not self._stopping:
            self._wake.clear()
            now = self._clock.now()
            try:
                claims = await store.acquire_due(now, self._batch_size)
                if claims:
                    await self._dispatch(claims, now)
                else:
                    next_time = await store.next_fire_time()
            except STORE_ERRORS as exc:  # an outage must not end the engine: back off, try again
                self.health.failed(exc)
                await self._back_off()
                continue
            except Exception:  # a bug must not silently end firing either: log it, back off, go on
                logger.exception("the engine failed to dispatch; retrying")
                self.health.failures += 1
                await self._back_off()
                continue
            self.health.ok()
            if claims:
                await asyncio.sleep(0)  # let the runs just started take their first step
                continue
            await self._sleep(next_time)
        for waiter in self._idle_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._idle_waiters.clear()

    async def _sleep(self, next_time: datetime | None) -> None:
        """Sleep until ``next_time`` (at most ``max_sleep``) or a wake-up; tell idle waiters first."""
        delay = self._max_sleep
        if next_time is not None:
            delay = min(delay, (next_time - self._clock.now()).total_seconds())
        if delay <= 0 or self._stopping:
            return
        # a sub-millisecond sleep costs a loop pass for nothing (uvloop's timers are 1 ms anyway):
        # fires due within the next millisecond are taken together, at most 1 ms late
        delay = max(delay, 0.001)
        if self._idle_waiters and not self._wake.is_set():
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass
        self.wakeups += 1

    async def _back_off(self) -> None:
        """Wait a jittered, growing delay after a store error; :meth:`stop` cuts it short."""
        try:
            async with asyncio.timeout(self.health.backoff(min(5.0, self._max_sleep))):
                await self._stopped.wait()
        except TimeoutError:
            pass

    async def _dispatch(self, claims: list[Claim], now: datetime) -> None:
        runner = self._runner
        releases: list[Release] = []
        records: list[RunRecord] = []
        plans: list[Plan] = []
        for claim in claims:
            plan = self._plan(claim, now, releases, records)
            if plan is not None:
                plans.append(plan)
                records += plan.records
        try:
            accepted = await self._store.release(releases, records)
        except BaseException:
            for plan in plans:
                runner.forget(plan)
            raise
        self.fires += len(records)
        self._launch(plans, records, accepted)
        self._pace_young_gc(len(records))

    def _pace_young_gc(self, fired: int) -> None:
        """Collect the youngest GC generation every :data:`YOUNG_GC_EVERY` fires (if the GC is on).

        CPython counts generation 0 as allocations minus deallocations. At a steady rate each
        fire allocates its record and frees an older one, so the count hovers near zero while
        the young generation grows to tens of thousands of objects, until some allocation
        spike triggers one collection that walks them all: 27-108 ms loop stalls every few
        seconds at 10,000 fires/s. Collected every few hundred fires it stays small
        (< 1.5 ms per collection, about 1 µs per fire).
        """
        self._unpaced += fired
        if self._unpaced >= YOUNG_GC_EVERY:
            self._unpaced = 0
            if gc.isenabled():
                gc.collect(0)

    def _launch(self, plans: list[Plan], records: list[RunRecord], accepted: Sequence[RunRecord]) -> None:
        """Start the admitted runs whose records the store accepted; report the records that ended at once."""
        runner = self._runner
        if len(accepted) == len(records):  # the common case: the store took every record
            for plan in plans:
                runner.launch(plan)
            for record in records:
                if record.state.is_final:
                    runner.report(record)
            return
        accepted_ids = {id(r) for r in accepted}
        for plan in plans:
            if any(id(r) in accepted_ids for r in plan.chain):
                runner.launch(plan, accepted_ids)
            else:
                runner.forget(plan)
        for record in records:
            if record.state.is_final and id(record) in accepted_ids:
                runner.report(record)

    def _plan(self, claim: Claim, now: datetime, releases: list[Release], records: list[RunRecord]) -> Plan | None:
        """One claim: its release (the next fire time), its records that end now, and the runs it admits."""
        schedule = claim.schedule
        first = claim.next_fire_time
        assert first is not None
        try:
            following = schedule.trigger.next_fire_time(first, now)
            if following is not None and following <= now:
                times, truncated, following = schedule.trigger.due_fire_times(first, now, schedule.policy.max_catchup)
                if truncated:
                    self._report_truncated(schedule, truncated)
                runnable = self._decide(schedule, times, now, records)
            else:
                runnable = self._on_time(schedule, first, now, records)
        except Exception:  # one broken schedule must not stop the others: it stops firing, loudly
            logger.exception("schedule %s: cannot compute its fire times; it will not fire again", schedule.id)
            releases.append(Release(claim, None))
            return None
        releases.append(Release(claim, following))
        if not runnable:
            return None
        return self._runner.admit(schedule, runnable, now, elsewhere=claim.running_elsewhere)

    def _on_time(self, schedule: Schedule, fire_time: datetime, now: datetime, out: list[RunRecord]) -> list[datetime]:
        """The common case: exactly one fire time is due."""
        grace = schedule.policy.misfire_grace_time
        if grace is not None and (late := (now - fire_time).total_seconds()) > grace:
            out.append(
                self._runner.closed(schedule.id, fire_time, RunState.MISSED, now, f"{late:.3f}s late (grace {grace}s)")
            )
            return []
        return [fire_time]

    def _decide(self, schedule: Schedule, times: list[datetime], now: datetime, out: list[RunRecord]) -> list[datetime]:
        """Several fire times are due at once: apply misfire grace, then the catch-up policy."""
        policy = schedule.policy
        grace = policy.misfire_grace_time
        closed = self._runner.closed
        runnable: list[datetime] = []
        for t in times:
            late = (now - t).total_seconds()
            if grace is not None and late > grace:
                out.append(closed(schedule.id, t, RunState.MISSED, now, f"{late:.3f}s late (grace {grace}s)"))
            else:
                runnable.append(t)
        if len(runnable) <= 1:
            return runnable
        catchup = policy.catchup
        if catchup is Catchup.ALL:
            return runnable
        if catchup is Catchup.SKIP:
            out.extend(
                closed(schedule.id, t, RunState.MISSED, now, "catch-up skipped (catchup: skip)") for t in runnable
            )
            return []
        keep = runnable[-1] if catchup is Catchup.LATEST else runnable[0]
        reason = f"coalesced into the run of {keep.isoformat()} (catchup: {catchup.value})"
        out.extend(closed(schedule.id, t, RunState.SKIPPED, now, reason) for t in runnable if t is not keep)
        return [keep]

    def _report_truncated(self, schedule: Schedule, truncated: int) -> None:
        logger.warning(
            "schedule %s: %d more fire times were due than max_catchup=%d; they were counted, not enumerated",
            schedule.id,
            truncated,
            schedule.policy.max_catchup,
        )
        if self._bus.wants(EventType.CATCHUP_TRUNCATED):
            self._bus.emit(
                Event(type=EventType.CATCHUP_TRUNCATED, schedule_id=schedule.id, detail={"truncated": truncated})
            )
