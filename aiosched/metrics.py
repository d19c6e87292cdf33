"""Prometheus metrics of one Scheduler, fed by its events; the registry is injectable.

::

    metrics = SchedulerMetrics(scheduler)          # a private CollectorRegistry, listening now
    await metrics.start()                          # loop-lag probe, stall watchdog, refresher
    text = await metrics.exposition()              # Prometheus text (refreshes the gauges first)
    await metrics.stop()

Run outcomes are counted from the scheduler's events as they happen (one dict lookup and a
few counter updates per event, no I/O). Gauges that describe schedules (next fire time,
``scheduler_info``'s job count) are read from the store by :meth:`SchedulerMetrics.refresh`,
which ``/metrics`` calls before each scrape and :meth:`SchedulerMetrics.start` every
``refresh_interval`` seconds.

Label values are schedule ids and fixed vocabularies only: never arguments, results or error
texts. After ``max_tasks`` distinct schedule ids, further ones are counted under ``_other``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ._runstats import OTHER_TASKS, SKIP_REASONS, STATUSES, RunStats, skip_reason
from ._watchdog import LoopWatchdog, Stall
from .events import Event, EventType
from .models import RunState

if TYPE_CHECKING:
    from .scheduler import Scheduler

__all__ = ["CONTENT_TYPE_LATEST", "OTHER_TASKS", "SKIP_REASONS", "STATUSES", "SchedulerMetrics", "Stall", "skip_reason"]

logger = logging.getLogger("aiosched.metrics")

# No SUBMITTED: lateness is read from the final record and the active gauge from the
# runner at scrape time, so a run costs the metrics one event, not two.
_RUN_EVENTS = (
    EventType.EXECUTED,
    EventType.ERROR,
    EventType.RETRY,
    EventType.MISSED,
    EventType.SKIPPED,
    EventType.CANCELLED,
    EventType.ABANDONED,
)
_STATE_EVENTS = (EventType.STARTED, EventType.SHUTDOWN)


_SEED_RUNS = 10_000  # recent successes read once to seed last-success times after a restart
_SEED_PAGE = 1_000  # ... a page at a time


class SchedulerMetrics:
    """The Prometheus collectors of one Scheduler, updated from its events.

    Listening starts at construction; :meth:`start` adds the loop watchdog (lag gauge and
    stall detector) and the periodic refresh, :meth:`stop` ends them, :meth:`close` also
    stops listening. Usable as ``async with SchedulerMetrics(s) as metrics:``.

    Args:
        scheduler: the scheduler to observe.
        registry: where the collectors are registered; a new private registry by default
            (never the global one, so two schedulers in one process do not collide).
        stall_threshold: seconds without an answer from the loop that count as a stall.
        probe_interval: seconds between loop probes.
        refresh_interval: seconds between store reads for the schedule gauges.
        max_tasks: distinct ``task_name`` label values before new ones become ``_other``.
        on_stall: also called (from the watchdog thread) with each :class:`Stall`.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        registry: CollectorRegistry | None = None,
        *,
        stall_threshold: float = 0.25,
        probe_interval: float = 0.1,
        refresh_interval: float = 15.0,
        max_tasks: int = 1000,
        on_stall: Callable[[Stall], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.registry = registry if registry is not None else CollectorRegistry()
        self._stall_threshold = stall_threshold
        self._probe_interval = probe_interval
        self._refresh_interval = refresh_interval
        self._max_tasks = max_tasks
        self._on_stall = on_stall
        self.runs = RunStats(max_tasks, active=scheduler.running_counts)
        self._next_fire_labels: set[str] = set()
        self._seeded: set[str] = set()  # schedules whose last success was looked up in the history
        self._watchdog: LoopWatchdog | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_failing = False
        self.stalls: list[Stall] = []  # the most recent ones, newest last (bounded)
        self._build(self.registry)
        self.state.state("running" if scheduler.running else "stopped")
        scheduler.add_listener(self.on_event, _RUN_EVENTS + _STATE_EVENTS)

    def _build(self, r: CollectorRegistry) -> None:
        r.register(self.runs)  # the per-run metrics, kept as plain numbers (see _runstats)
        self.info = Info("scheduler", "Scheduler information.", registry=r)
        self.state = Enum("scheduler_state", "Scheduler state.", states=["stopped", "running", "paused"], registry=r)
        self.next_fire = Gauge(
            "scheduler_task_next_fire_timestamp_seconds",
            "Unix time of the next fire (absent while paused or finished).",
            ["task_name"],
            registry=r,
        )
        self.loop_lag = Gauge("scheduler_loop_lag_seconds", "Last measured event loop round-trip delay.", registry=r)
        self.loop_stalls = Counter(
            "scheduler_loop_stalls_total", "Times the event loop did not answer in time.", registry=r
        )
        store = self.scheduler.store
        self.clock_offset = Gauge(
            "aiosched_clock_offset_seconds",
            "Seconds added to this node's clock to get the store's (the database's; 0 on a local store).",
            registry=r,
        )
        self.clock_offset.set_function(lambda: store.clock_offset)

    # -- events (the hot path) ---------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Update the statistics from one event (the scheduler calls it; never raises)."""
        run = event.run
        if run is None:
            if event.type is EventType.STARTED:
                self.state.state("running")
            elif event.type is EventType.SHUTDOWN:
                self.state.state("stopped")
            return
        stats = self.runs.task(run.schedule_id)
        if event.type is EventType.RETRY:
            stats.retries += 1
        else:
            stats.final(run)

    # -- schedule gauges -----------------------------------------------------------

    async def refresh(self) -> None:
        """Read the schedules and update ``scheduler_info``, ``scheduler_state`` and next fire times.

        A store error is logged and leaves the gauges as they were.
        """
        from . import __version__

        s = self.scheduler
        self.state.state("running" if s.running else "stopped")
        try:
            upcoming = await s.store.next_fire_times()  # not get_jobs(): no Schedule built per schedule
        except Exception as exc:
            self._refresh_failed(exc)
            return
        self._refresh_failing = False
        self.info.info(
            {
                "version": __version__,
                "timezone": str(s.timezone),
                "jobs_count": str(len(upcoming)),
                "store": s.store.name,
                "node_id": s.node_id,
            }
        )
        unseeded = [sid for sid in upcoming if sid not in self._seeded]
        if unseeded:
            await self._seed_last_success(unseeded)
        seen: set[str] = set()
        for n, (sid, when) in enumerate(upcoming.items(), 1):
            if n % 2000 == 0:
                await asyncio.sleep(0)  # thousands of schedules: let the loop breathe between chunks
            if when is None:
                continue
            if len(seen) >= self._max_tasks and sid not in self._next_fire_labels:
                continue  # the label set is capped like the run counters
            seen.add(sid)
            self.next_fire.labels(sid).set(when.timestamp())
        for gone in self._next_fire_labels - seen:
            with contextlib.suppress(KeyError):
                self.next_fire.remove(gone)
        self._next_fire_labels = seen

    def _refresh_failed(self, exc: Exception) -> None:
        """A refresh could not read the store: the traceback once, then one line per refresh until it can."""
        if self._refresh_failing:
            logger.warning("metrics: still cannot read the schedules: %s", exc)
        else:
            self._refresh_failing = True
            logger.error("metrics: could not read the schedules; gauges keep their last values", exc_info=exc)

    async def _seed_last_success(self, schedule_ids: list[str]) -> None:
        """After a restart, take the last successes from the run history (once per schedule).

        The newest successes, a page at a time (a page of a shared store is decoded on the
        loop: 10,000 records at once held it ~0.3 s), until every schedule has one or
        :data:`_SEED_RUNS` were read; not one query per schedule.
        """
        self._seeded.update(schedule_ids)
        wanted = set(schedule_ids)
        for offset in range(0, _SEED_RUNS, _SEED_PAGE):
            try:
                runs = await self.scheduler.get_runs(states=[RunState.SUCCEEDED], limit=_SEED_PAGE, offset=offset)
            except Exception:
                logger.exception("metrics: could not read the last successes from the run history")
                return
            for run in runs:
                if run.schedule_id in wanted and run.ended_at is not None:
                    wanted.discard(run.schedule_id)
                    stats = self.runs.task(run.schedule_id)
                    stats.last_success = max(stats.last_success, run.ended_at.timestamp())
            if not wanted or len(runs) < _SEED_PAGE:
                return
            await asyncio.sleep(0)  # let the loop breathe between pages

    def _full(self) -> bool:
        return len(self.runs.tasks) >= self._max_tasks

    async def exposition(self) -> bytes:
        """Refresh, then render the registry in the Prometheus text format (:data:`CONTENT_TYPE_LATEST`).

        Rendering costs about 15 µs per sample line (some 50 lines per schedule), so it runs in a
        worker thread rather than stalling the loop for large schedule counts.
        """
        await self.refresh()
        return await asyncio.to_thread(generate_latest, self.registry)

    # -- watchdog and refresher ------------------------------------------------------

    @property
    def loop_lag_seconds(self) -> float | None:
        """The last measured loop lag, or None when the watchdog is not running."""
        return self._watchdog.lag if self._watchdog is not None and self._watchdog.running else None

    async def start(self) -> None:
        """Start the loop watchdog thread and the periodic refresh (on the running loop).

        Starting twice does nothing.
        """
        if self._watchdog is not None:
            return
        self._watchdog = LoopWatchdog(
            asyncio.get_running_loop(),
            threshold=self._stall_threshold,
            interval=self._probe_interval,
            on_lag=self.loop_lag.set,
            on_stall=self._stalled,
        )
        self._watchdog.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever(), name="aiosched-metrics")

    async def stop(self) -> None:
        """Stop the watchdog (waits for its thread, at most a second) and the refresher."""
        watchdog, self._watchdog = self._watchdog, None
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        thread = watchdog.stop() if watchdog is not None else None
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)

    async def close(self) -> None:
        """:meth:`stop`, and stop listening to the scheduler's events."""
        await self.stop()
        self.scheduler.remove_listener(self.on_event)

    async def __aenter__(self) -> SchedulerMetrics:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._refresh_interval)

    def _stalled(self, stall: Stall) -> None:
        """Called from the watchdog thread (Counter is thread-safe; the list append is atomic)."""
        self.loop_stalls.inc()
        self.stalls.append(stall)
        del self.stalls[:-20]
        if self._on_stall is not None:
            self._on_stall(stall)

    def task_names(self) -> Sequence[str]:
        """The ``task_name`` label values in use."""
        return list(self.runs.tasks)
