"""The Scheduler: the public coroutines, start/shutdown, and the wiring of the parts."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import datetime, tzinfo
from types import MappingProxyType, TracebackType
from typing import Any, Self

from ._clock import Clock, StoreClock
from ._engine import BATCH_SIZE, STORE_ERRORS, Engine
from ._runner import Runner
from .events import Event, EventBus, EventType, Listener
from .exceptions import ScheduleError, ScheduleNotFound, SchedulerNotRunning
from .executors import Executor, build_executors
from .loader import callable_name, reference_of, resolve
from .models import (
    DEFAULT_POLICY,
    EMPTY_KWARGS,
    POLICY_OPTIONS,
    Policy,
    RunRecord,
    RunState,
    Schedule,
    apply_options,
    new_schedule,
)
from .stores import Store, open_store
from .task import is_task_class
from .triggers import Trigger, build_trigger, wrap_trigger

logger = logging.getLogger("aiosched")

_SCHEDULE_FIELDS = frozenset({"func", "name", "args", "kwargs"})


def _local_zone() -> str:
    try:
        import tzlocal

        return str(tzlocal.get_localzone_name() or "UTC")
    except Exception:  # tzlocal cannot tell (minimal containers): UTC is the safe answer
        return "UTC"


class Scheduler:
    """An asyncio job scheduler.

    Use it as ``async with Scheduler(...) as scheduler:`` (started on entry, shut down on
    exit), or call :meth:`start` and :meth:`shutdown` yourself. Schedules can be added,
    changed and removed before or after start.

    Args:
        timezone: default zone for triggers (an IANA name); the machine's zone if omitted.
        job_defaults: policy options applied where a schedule is silent
            (e.g. ``{"max_instances": 3, "misfire_grace_time": 30}``).
        store: a Store, or a URL (``memory://``). Memory by default.
        executors: pool sizes ``{"async_limit": 100, "default_threads": 20, "process_pool": 5}``
            and/or Executor objects by name.
        clock: where "now" comes from (tests inject a fake clock). By default the system clock
            plus the store's measured ``clock_offset`` (the database's time on PostgreSQL).
        node_id: this process's name in run records and logs (host-pid by default).
        batch_size: due schedules taken per wake-up.
        max_sleep: the longest the engine sleeps without re-reading the wall clock.
    """

    def __init__(
        self,
        *,
        timezone: str | tzinfo | None = None,
        job_defaults: Mapping[str, Any] | None = None,
        store: Store | str | None = None,
        executors: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        node_id: str | None = None,
        batch_size: int = BATCH_SIZE,
        max_sleep: float = 30.0,
    ) -> None:
        self.timezone = timezone or _local_zone()
        build_trigger("interval", {"seconds": 1}, timezone=self.timezone)  # refuses a bad zone now
        self.job_defaults = apply_options(DEFAULT_POLICY, job_defaults or {})
        self.store = open_store(store)
        self.executors = _executors(executors or {})
        self.clock: Clock = clock or StoreClock(self.store)  # the store's time: the database's on PostgreSQL
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.events = EventBus()
        self._runner = Runner(
            store=self.store, executors=self.executors, bus=self.events, clock=self.clock, node_id=self.node_id
        )
        self._engine = Engine(
            store=self.store,
            runner=self._runner,
            bus=self.events,
            clock=self.clock,
            batch_size=batch_size,
            max_sleep=max_sleep,
        )
        self._store_open = False
        self._engine_task: asyncio.Task[None] | None = None
        self._maintenance_task: asyncio.Task[None] | None = None
        self._settling = True
        self._unsettled: list[RunRecord] = []  # settled runs not yet re-run (the store stopped answering)

    # -- life cycle --------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the engine is firing schedules."""
        return self._engine_task is not None and not self._engine_task.done()

    @property
    def store_healthy(self) -> bool:
        """False while the store does not answer (an outage: nothing is claimed, runs in flight go on)."""
        return self._engine.health.healthy

    @property
    def engine(self) -> Engine:
        """The firing engine (its counters are useful in tests and metrics)."""
        return self._engine

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown(wait=exc_type is None)

    async def _open(self) -> None:
        if not self._store_open:
            await self.store.start(node_id=self.node_id)
            self._store_open = True

    async def start(self) -> None:
        """Open the store and start firing; returns once the engine is running.

        Raises StoreError if the store cannot be opened (nothing is started then).
        """
        if self.running:
            return
        await self._open()
        self._runner.stop_flag.clear()
        await self._recover()
        ready = asyncio.Event()
        self._engine_task = asyncio.get_running_loop().create_task(self._engine.run(ready), name="aiosched-engine")
        await ready.wait()
        interval = self.store.maintenance_interval
        if interval is not None and self._maintenance_task is None:
            self._settling = True
            self._maintenance_task = asyncio.get_running_loop().create_task(
                self._maintain(interval), name="aiosched-maintenance"
            )
        logger.info("scheduler started (node %s, store %s, zone %s)", self.node_id, self.store.name, self.timezone)
        self.events.emit(Event(type=EventType.STARTED))

    async def _recover(self) -> None:
        """Settle the runs a dead process left in flight: report the abandoned, re-run the rest."""
        self._unsettled = await self._settle(await self.store.recover_runs())

    async def _settle(self, records: list[RunRecord]) -> list[RunRecord]:
        """Report settled runs that are final; run the others once more (``recover: true``).

        Returns the records it could not handle yet because the store stopped answering
        (the maintenance loop hands them in again).
        """
        for i, record in enumerate(records):
            if record.state.is_final:
                self._runner.report(record)
                continue
            try:
                schedule = await self.store.get_schedule(record.schedule_id)
            except ScheduleNotFound:
                logger.warning("run %s not re-run: its schedule is gone", record.run_id)
                continue
            except STORE_ERRORS as exc:
                self._engine.health.failed(exc)
                return records[i:]
            self._runner.rerun(schedule, record)
        return []

    async def _maintain(self, interval: float) -> None:
        """Call the store's maintenance every ``interval`` seconds (heartbeat, dead nodes' runs).

        Store errors mark the store unhealthy and are retried at the next interval; the loop
        ends when cancelled by :meth:`shutdown` (after the runs in flight have finished, so
        the heartbeat keeps this node alive through the grace period).
        """
        health = self._engine.health
        while True:
            await asyncio.sleep(interval)
            try:
                records = self._unsettled + await self.store.maintain(settle=self._settling)
            except STORE_ERRORS as exc:
                health.failed(exc)
                continue
            except Exception:  # an isolation boundary: the heartbeat must outlive a bug in one step
                logger.exception("store maintenance failed; trying again in %gs", interval)
                continue
            health.ok()
            self._unsettled = await self._settle(records)

    async def shutdown(self, wait: bool = True, grace: float | None = None) -> None:
        """Stop firing, then finish or cancel the runs in flight, then close the store.

        Args:
            wait: let running runs finish (up to ``grace``); False cancels them at once.
            grace: seconds to wait for running runs; ``None`` waits as long as they take.
                Runs still going after it are cancelled (process runs killed, thread runs
                abandoned) and recorded as ``cancelled``. Tasks see ``should_stop()`` turn
                true as soon as shutdown begins.
        """
        task = self._engine_task
        self._runner.stop()  # from here on no run starts, not even one of the batch in progress
        if task is not None:
            self._engine.stop()
            await task
            self._engine_task = None
        self._settling = False  # heartbeats go on while runs finish; no more re-runs are taken on
        await self._runner.shutdown(wait=wait, grace=grace if wait else 0)
        maintenance, self._maintenance_task = self._maintenance_task, None
        if maintenance is not None:
            maintenance.cancel()
            await asyncio.gather(maintenance, return_exceptions=True)
        for executor in {id(e): e for e in self.executors.values()}.values():
            await executor.shutdown()
        if task is not None:
            logger.info("scheduler shut down")
            self.events.emit(Event(type=EventType.SHUTDOWN))
        await self.events.drain()
        if self._store_open:
            await self.store.close()
            self._store_open = False

    # -- listeners ---------------------------------------------------------------

    def add_listener(self, listener: Listener, types: Collection[EventType | str] | None = None) -> None:
        """Call ``listener(event)`` for events of ``types`` (every type when None)."""
        self.events.subscribe(listener, types)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self.events.unsubscribe(listener)

    # -- schedules ---------------------------------------------------------------

    async def add_job(
        self,
        func: Callable[..., Any] | str,
        trigger: str | Trigger | object | None = None,
        *,
        id: str | None = None,
        name: str | None = None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        replace_existing: bool = False,
        paused: bool = False,
        source: str = "runtime",
        **options: Any,
    ) -> Schedule:
        """Add a schedule and return it.

        Args:
            func: an ``async def`` or plain function, a BaseTask subclass, a partial, a bound
                method, or a ``"package.module:function"`` reference.
            trigger: ``"interval"``, ``"cron"``, ``"date"``, ``"calendarinterval"``, ``"and"``,
                ``"or"`` (its arguments as keywords), a Trigger, or an APScheduler trigger.
                None runs once, now.
            id: unique id (a random one if omitted).
            replace_existing: replace a schedule with the same id instead of raising
                ConflictingIdError.
            **options: policy options (``executor``, ``max_instances``, ``overlap``,
                ``coalesce``, ``catchup``, ``max_catchup``, ``misfire_grace_time``,
                ``timeout``, ``jitter``, ``recover``, ``max_attempts``, ``retry_delay``,
                ``backoff``, ``max_delay``, ``retry_jitter``, ``retry_on``); every other
                keyword is a trigger argument (``seconds=30``, ``hour=9``, ``timezone=...``).

        Raises:
            TriggerError, ScheduleError: bad trigger, task or option (nothing is stored).
            ConflictingIdError: the id exists and ``replace_existing`` is false.
        """
        # This runs once per schedule added (100,000 adds are a common burst), so the helpers'
        # common cases are inlined here; each `else` is the full path.
        schedule_id = id or uuid.uuid4().hex
        policy_options: dict[str, Any] = {}
        for key, value in options.items():
            if key in POLICY_OPTIONS:
                policy_options[key] = value  # noqa: PERF403 - a comprehension is one more call (3.11)
        for key in policy_options:
            del options[key]  # what is left are the trigger's arguments
        if callable(func):  # not a "module:function" reference
            resolved, ref = func, reference_of(func)
        else:
            resolved, ref = self._resolve_task(func, schedule_id)
        now = self.clock.now()  # one instant for the trigger's defaults and its first fire time
        if isinstance(trigger, str):
            built = build_trigger(trigger, options, timezone=self.timezone, schedule_id=schedule_id, now=now)
        else:
            built = self._build_trigger(trigger, options, schedule_id, now)
        policy = apply_options(self.job_defaults, policy_options, schedule_id=schedule_id)
        executor = self.executors.get(policy.executor)
        if executor is None or executor.kind == "process" or policy.executor == "processpool":
            self._check_policy(policy, resolved, ref, schedule_id)  # otherwise it has nothing to refuse
        schedule = new_schedule(
            id=schedule_id,
            name=name or schedule_id,
            func=resolved,
            task_ref=ref,
            trigger=built,
            args=tuple(args),
            kwargs=MappingProxyType(dict(kwargs)) if kwargs else EMPTY_KWARGS,
            policy=policy,
            paused=paused,
            next_fire_time=built.next_fire_time(None, now),
            version=1,  # what a store gives a new schedule (saves it a copy)
            source=source,
        )
        if not self._store_open:
            await self._open()
        stored = await self.store.add_schedule(schedule, replace_existing=replace_existing)
        self._changed(EventType.ADDED, schedule_id)
        return stored

    async def modify_job(self, id: str, **changes: Any) -> Schedule:
        """Change a schedule's ``func``, ``name``, ``args``, ``kwargs``, ``next_fire_time`` or policy options.

        Raises ScheduleNotFound, or ScheduleError for a bad change (nothing changes then).
        Use :meth:`reschedule_job` to change the trigger.
        """
        schedule = await self.get_job(id)
        policy_changes = {k: v for k, v in changes.items() if k in POLICY_OPTIONS}
        unknown = set(changes) - POLICY_OPTIONS - _SCHEDULE_FIELDS - {"next_fire_time"}
        if unknown:
            raise ScheduleError(f"cannot modify {', '.join(sorted(unknown))}", schedule_id=id)
        fields: dict[str, Any] = {}
        if "func" in changes:
            fields["func"], fields["task_ref"] = self._resolve_task(changes["func"], id)
        if "name" in changes:
            fields["name"] = str(changes["name"])
        if "args" in changes:
            fields["args"] = tuple(changes["args"])
        if "kwargs" in changes:
            fields["kwargs"] = MappingProxyType(dict(changes["kwargs"]))
        if "next_fire_time" in changes:
            fields["next_fire_time"] = changes["next_fire_time"]
        policy = apply_options(schedule.policy, policy_changes, schedule_id=id)
        self._check_policy(policy, fields.get("func", schedule.func), fields.get("task_ref", schedule.task_ref), id)
        stored = await self.store.update_schedule(replace(schedule, policy=policy, **fields))
        self._changed(EventType.MODIFIED, id)
        return stored

    async def reschedule_job(self, id: str, trigger: str | Trigger | object, **trigger_args: Any) -> Schedule:
        """Give a schedule a new trigger; its next fire time is computed from now."""
        schedule = await self.get_job(id)
        built = self._build_trigger(trigger, trigger_args, id)
        changed = replace(schedule, trigger=built, next_fire_time=built.next_fire_time(None, self.clock.now()))
        stored = await self.store.update_schedule(changed)
        self._changed(EventType.MODIFIED, id)
        return stored

    async def remove_job(self, id: str) -> None:
        """Remove a schedule (its run history stays; runs in flight finish). Raises ScheduleNotFound."""
        await self._open()
        await self.store.remove_schedule(id)
        self._changed(EventType.REMOVED, id)

    async def pause_job(self, id: str) -> Schedule:
        """Stop a schedule from firing until resumed (runs in flight go on)."""
        schedule = await self.get_job(id)
        stored = await self.store.update_schedule(replace(schedule, paused=True))
        self._changed(EventType.PAUSED, id)
        return stored

    async def resume_job(self, id: str) -> Schedule:
        """Let a paused schedule fire again from its next fire time after now.

        Fire times that passed while it was paused are not caught up.
        """
        schedule = await self.get_job(id)
        nxt = schedule.trigger.next_fire_time(None, self.clock.now())
        stored = await self.store.update_schedule(replace(schedule, paused=False, next_fire_time=nxt))
        self._changed(EventType.RESUMED, id)
        return stored

    async def get_job(self, id: str) -> Schedule:
        """One schedule. Raises ScheduleNotFound."""
        await self._open()
        return await self.store.get_schedule(id)

    async def get_jobs(self) -> list[Schedule]:
        """Every schedule, soonest next fire time first."""
        await self._open()
        return await self.store.get_schedules()

    async def next_fire_times(self, id: str, n: int = 5) -> list[datetime]:
        """The schedule's next ``n`` fire times from now (a preview; nothing changes)."""
        schedule = await self.get_job(id)
        return schedule.trigger.preview(n, start=self.clock.now())

    # -- runs --------------------------------------------------------------------

    async def run_job(self, id: str, *, wait: bool = False) -> RunRecord:
        """Run a schedule now, outside its trigger, under its usual limits and retries.

        Returns the run record (``skipped`` if ``max_instances`` is reached and the
        overlap policy says so). With ``wait=True`` it returns once the run has ended.
        """
        if not self.running:
            raise SchedulerNotRunning("run_job needs a running scheduler (call start() first)")
        schedule = await self.get_job(id)
        now = self.clock.now()
        plan = self._runner.admit(schedule, [now], now, manual=True)
        record = plan.records[0]
        if not await self.store.add_run(record):
            self._runner.forget(plan)
            raise ScheduleError("a run for this instant exists already; try again", schedule_id=id)
        self._runner.launch(plan)
        if record.state.is_final:
            self._runner.report(record)
        elif wait:
            await self._runner.wait_final(record)
        return record

    async def cancel_job_run(self, id: str) -> int:
        """Cancel the schedule's runs in flight; returns how many (they end ``cancelled``)."""
        await self.get_job(id)
        return await self._runner.cancel(id, "cancelled on request")

    def cancel_all_runs(self, reason: str = "cancelled on request") -> int:
        """Cancel every run in flight at once, without waiting; returns how many.

        They end ``cancelled`` with ``reason`` (process runs killed, thread runs abandoned).
        Meant for a second Ctrl-C during a graceful :meth:`shutdown`, which then returns.
        """
        return self._runner.cancel_all(reason)

    def running_count(self, id: str) -> int:
        """Runs of this schedule in flight in this process."""
        return self._runner.running_count(id)

    def running_counts(self) -> dict[str, int]:
        """Runs in flight in this process, by schedule id (only schedules with some)."""
        return self._runner.running_counts()

    async def get_runs(
        self,
        *,
        schedule_id: str | None = None,
        states: Collection[RunState | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Run history, newest first (see Store.get_runs)."""
        await self._open()
        wanted = None if states is None else {RunState(s) for s in states}
        return await self.store.get_runs(
            schedule_id=schedule_id, states=wanted, since=since, until=until, limit=limit, offset=offset
        )

    # -- helpers -----------------------------------------------------------------

    def _changed(self, kind: EventType, schedule_id: str) -> None:
        self._engine.wakeup()
        if self.events.wants(kind):
            self.events.emit(Event(type=kind, schedule_id=schedule_id))

    def _resolve_task(self, func: Any, schedule_id: str) -> tuple[Callable[..., Any], str | None]:
        if isinstance(func, str):
            target = resolve(func, schedule_id=schedule_id)
            if not callable(target):
                raise ScheduleError(f"{func!r} is not callable", field="func", schedule_id=schedule_id)
            return target, func
        if not callable(func):
            raise ScheduleError(
                f"the task must be callable, got {type(func).__name__}", field="func", schedule_id=schedule_id
            )
        return func, reference_of(func)

    def _build_trigger(
        self, trigger: Any, args: dict[str, Any], schedule_id: str, now: datetime | None = None
    ) -> Trigger:
        now = self.clock.now() if now is None else now
        if trigger is None:
            return build_trigger("date", args, timezone=self.timezone, schedule_id=schedule_id, now=now)
        if isinstance(trigger, str):
            return build_trigger(trigger, args, timezone=self.timezone, schedule_id=schedule_id, now=now)
        if args:
            raise ScheduleError(f"unknown option(s) {', '.join(sorted(args))}", schedule_id=schedule_id)
        return wrap_trigger(trigger, schedule_id=schedule_id)

    def _check_policy(self, policy: Policy, func: Any, ref: str | None, schedule_id: str) -> None:
        executor = self.executors.get(policy.executor)
        if executor is None:
            known = ", ".join(sorted(self.executors))
            raise ScheduleError(
                f"unknown executor {policy.executor!r} (known: {known})", field="executor", schedule_id=schedule_id
            )
        if executor.kind == "process" and ref is None:
            raise ScheduleError(
                f"{callable_name(func)} cannot run in a worker process: it must be a module-level function or "
                "BaseTask class importable by 'package.module:name' (not a lambda, closure, partial or bound method)",
                field="executor",
                schedule_id=schedule_id,
            )
        if is_task_class(func) and policy.executor == "processpool" and ref is None:
            raise ScheduleError("a BaseTask for the process pool must be importable", schedule_id=schedule_id)


def _executors(config: Mapping[str, Any]) -> dict[str, Executor]:
    limits = {"async_limit": 100, "default_threads": 20, "process_pool": 5}
    given: dict[str, Executor] = {}
    for key, value in config.items():
        if key in limits:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScheduleError(f"must be a positive integer (got {value!r})", field=f"executors.{key}")
            limits[key] = value
        elif hasattr(value, "call") and hasattr(value, "kind"):
            given[key] = value
        else:
            raise ScheduleError(f"unknown executor setting {key!r} (known: {', '.join(limits)})", field="executors")
    executors = build_executors(
        async_limit=limits["async_limit"], thread_limit=limits["default_threads"], process_limit=limits["process_pool"]
    )
    executors.update(given)
    return executors
