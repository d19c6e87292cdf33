"""One run to its final record: slot, lateness, executor call, timeout, retries, hooks.

The engine decides *that* a fire runs; the runner decides whether a slot is free
(``max_instances`` and the ``overlap`` policy), starts each admitted run as its own
task, and turns everything a task can do (return, raise, time out, be cancelled) into
a run state. Nothing a task does escapes the runner except cancellation.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import random
import reprlib
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any

import anyio.to_thread

from ._clock import Clock
from ._error_lines import ErrorLines
from ._record_writer import DRAIN_TIMEOUT, RecordWriter
from .events import Event, EventBus, EventType
from .exceptions import AttemptTimeout, SkipRun
from .executors import AsyncExecutor, Executor, NotStarted, is_async_callable
from .loader import callable_name
from .models import Overlap, RunRecord, RunState, Schedule
from .stores.base import Store
from .task import BaseTask, _stop_flag, is_task_class

logger = logging.getLogger("aiosched.runs")

RESULT_LIMIT = 500
STATE_EVENTS = {
    RunState.SUCCEEDED: EventType.EXECUTED,
    RunState.FAILED: EventType.ERROR,
    RunState.TIMED_OUT: EventType.ERROR,
    RunState.CANCELLED: EventType.CANCELLED,
    RunState.SKIPPED: EventType.SKIPPED,
    RunState.MISSED: EventType.MISSED,
    RunState.ABANDONED: EventType.ABANDONED,
}
_DEFAULT_HOOKS = {name: getattr(BaseTask, name) for name in ("on_success", "on_failure", "on_retry", "cleanup")}
_NOT_STARTED = "scheduler shut down before it started"

# A bounded repr: a task returning a million-row list must not stall the loop for its record.
_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 100
_REPR.maxdict = 100
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = RESULT_LIMIT


class Plan:
    """What the runner decided for the due fires of one schedule (see :meth:`Runner.admit`).

    ``records`` are all to be written; ``chain`` are those that will run, in order:
    started at once when ``starts``, or one queued behind the running one when ``buffered``.
    ``local_limit``: runs of the schedule that may go on this node (``max_instances`` less
    those in flight on other nodes at claim time).
    """

    __slots__ = ("accepted", "buffered", "chain", "local_limit", "records", "schedule", "starts")

    def __init__(
        self,
        schedule: Schedule,
        records: list[RunRecord],
        chain: list[RunRecord],
        *,
        starts: bool,
        local_limit: int,
    ) -> None:
        self.schedule = schedule
        self.records = records
        self.chain = chain
        self.starts = starts
        self.local_limit = local_limit
        self.buffered = bool(chain) and not starts
        self.accepted = False  # set by launch(): the store holds the records


class Runner:
    """Admits fires against their schedule's limits and runs them to a final record."""

    def __init__(
        self,
        *,
        store: Store,
        executors: Mapping[str, Executor],
        bus: EventBus,
        clock: Clock,
        node_id: str,
    ) -> None:
        self._store = store
        self._executors = executors
        self._bus = bus
        self._clock = clock
        self._node = node_id
        # every run in flight, oldest first: its task and the records it carries; and how many per schedule
        self._runs: dict[asyncio.Task[None], list[RunRecord]] = {}
        self._counts: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._buffered: dict[str, Plan] = {}
        self._cancel_reasons: dict[asyncio.Task[None], str] = {}
        self._sync_noted: set[str] = set()
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._pauses: set[asyncio.Future[None]] = set()
        self.writer = RecordWriter(store)
        self.stop_flag = threading.Event()
        self._error_lines = ErrorLines(clock)
        self._context: contextvars.Context | None = None

    def capture_context(self) -> None:
        """Runs start in copies of the current context (the engine's), with the stop flag set."""
        self._context = contextvars.copy_context()
        self._context.run(_stop_flag.set, self.stop_flag)

    # -- admission ---------------------------------------------------------------

    def running_count(self, schedule_id: str) -> int:
        """Runs of this schedule in flight on this node (including retries and queued chains)."""
        return self._counts.get(schedule_id, 0)

    def running_counts(self) -> dict[str, int]:
        """Runs in flight on this node by schedule id."""
        return dict(self._counts)

    def admit(
        self,
        schedule: Schedule,
        fire_times: Sequence[datetime],
        now: datetime,
        *,
        manual: bool = False,
        elsewhere: int = 0,
    ) -> Plan:
        """Decide what the fires of one schedule become; reserves a slot for a start.

        ``elsewhere``: runs of the schedule in flight on other nodes of a shared store; they
        count against ``max_instances`` like this node's own. This node can neither wait for
        nor cancel them, so a fire they alone hold back is skipped, whatever the ``overlap``
        (``buffer_one`` buffers behind this node's own runs, ``cancel_other`` cancels this
        node's own runs). The caller writes
        ``plan.records`` to the store and then calls :meth:`launch` with the records the
        store accepted (or :meth:`forget` if none).
        """
        sid = schedule.id
        policy = schedule.policy
        reserved = self._reserved.get(sid, 0)
        busy = reserved + elsewhere + self._counts.get(sid, 0)
        node = self._node
        local_limit = policy.max_instances - elsewhere
        if busy < policy.max_instances or (policy.overlap is Overlap.CANCEL_OTHER and local_limit > 0):
            self._reserved[sid] = reserved + 1
            records = [
                RunRecord(schedule_id=sid, fire_time=fire_times[0], state=RunState.RUNNING, node=node, manual=manual)
            ]
            if len(fire_times) > 1:  # a catch-up chain (catchup: all)
                records += [
                    RunRecord(schedule_id=sid, fire_time=t, state=RunState.QUEUED, node=node) for t in fire_times[1:]
                ]
            return Plan(schedule, records, records, starts=True, local_limit=local_limit)
        records = []
        chain = []
        buffer = policy.overlap is Overlap.BUFFER_ONE and sid not in self._buffered and not elsewhere
        if elsewhere:
            reason = f"max_instances reached ({elsewhere} running on other nodes)"
        else:
            full = "buffer full" if policy.overlap is Overlap.BUFFER_ONE else "max_instances reached"
            reason = f"{full} ({policy.max_instances} running)"
        for t in fire_times:
            if buffer:
                queued = RunRecord(schedule_id=sid, fire_time=t, state=RunState.QUEUED, node=node, manual=manual)
                records.append(queued)
                chain.append(queued)
                buffer = False
            else:
                records.append(self.closed(sid, t, RunState.SKIPPED, now, reason))
        plan = Plan(schedule, records, chain, starts=False, local_limit=local_limit)
        if plan.buffered:
            self._buffered[sid] = plan
        return plan

    def closed(self, sid: str, fire_time: datetime, state: RunState, now: datetime, reason: str) -> RunRecord:
        """A record for a fire that ends without running (missed, skipped)."""
        return RunRecord(
            schedule_id=sid,
            fire_time=fire_time,
            state=state,
            reason=reason,
            lateness=(now - fire_time).total_seconds(),
            ended_at=now,
            node=self._node,
        )

    def forget(self, plan: Plan) -> None:
        """Undo :meth:`admit` for a plan the store refused."""
        sid = plan.schedule.id
        if plan.starts:
            self._unreserve(sid)
        if self._buffered.get(sid) is plan:
            del self._buffered[sid]

    def _unreserve(self, sid: str) -> None:
        left = self._reserved.get(sid, 0) - 1
        if left > 0:
            self._reserved[sid] = left
        else:
            self._reserved.pop(sid, None)

    def launch(self, plan: Plan, accepted: set[int] | None = None) -> asyncio.Task[None] | None:
        """Start an admitted plan once the store holds its records.

        ``accepted`` holds the ``id()`` of the records the store took (None: all of them).
        A buffered plan starts now if its slot freed meanwhile, else when it frees.
        """
        plan.accepted = True
        sid = plan.schedule.id
        chain = plan.chain if accepted is None else [r for r in plan.chain if id(r) in accepted]
        if plan.starts:
            left = self._reserved[sid] - 1
            if left:
                self._reserved[sid] = left
            else:
                del self._reserved[sid]
        elif self._buffered.get(sid) is plan and self._has_room(plan.schedule):
            del self._buffered[sid]
        else:
            return None
        if not chain:
            return None
        cancel_beyond = plan.local_limit if plan.schedule.policy.overlap is Overlap.CANCEL_OTHER else None
        return self._start(plan.schedule, chain, cancel_beyond=cancel_beyond)

    def rerun(self, schedule: Schedule, record: RunRecord) -> asyncio.Task[None]:
        """Run once more a record a dead process left in flight (``recover: true``).

        The same record carries on (its next attempt counts on); it holds a
        ``max_instances`` slot like any run.
        """
        return self._start(schedule, [record], cancel_beyond=None)

    def _has_room(self, schedule: Schedule) -> bool:
        busy = self._counts.get(schedule.id, 0) + self._reserved.get(schedule.id, 0)
        return busy < schedule.policy.max_instances

    def _start(self, schedule: Schedule, chain: list[RunRecord], *, cancel_beyond: int | None) -> asyncio.Task[None]:
        """Start a run's task; with ``cancel_beyond`` it first cancels this node's oldest runs of the
        schedule until at most that many go, itself included (``overlap: cancel_other``)."""
        sid = schedule.id
        if cancel_beyond is not None or len(chain) != 1 or not _is_plain(schedule, self._executors):
            coro = self._run_chain(schedule, chain, cancel_beyond)
        else:
            coro = self._run_plain(schedule, chain[0])
        if self._context is None:
            self.capture_context()
        assert self._context is not None
        # a copy per run: what one task sets in a context variable stays its own
        task = asyncio.get_running_loop().create_task(coro, context=self._context.copy())
        self._runs[task] = chain
        self._counts[sid] = self._counts.get(sid, 0) + 1
        return task

    def _done(self, sid: str, task: asyncio.Task[Any] | None) -> None:
        """A run's task is ending (called from its own ``finally``): free its slot, start a buffered fire."""
        if self._cancel_reasons:
            self._cancel_reasons.pop(task, None)  # type: ignore[arg-type]
        if self._runs.pop(task, None) is not None:  # type: ignore[arg-type]
            left = self._counts[sid] - 1
            if left:
                self._counts[sid] = left
            else:
                del self._counts[sid]
        if not self._buffered:
            return
        plan = self._buffered.get(sid)
        if plan is None or not plan.accepted or not self._has_room(plan.schedule):
            return
        del self._buffered[sid]
        if self.stop_flag.is_set():
            for record in plan.chain:
                self._finish(record, RunState.CANCELLED, reason=_NOT_STARTED)
        else:
            self._start(plan.schedule, plan.chain, cancel_beyond=None)

    def _cancel(self, sid: str, task: asyncio.Task[None], reason: str, *, overwrite: bool = False) -> None:
        """Cancel one run's task; its records end ``cancelled`` with ``reason``.

        A task that has not taken its first step never runs its coroutine's body (so neither
        its ``except`` nor its ``finally``): its records and its slot are settled here.
        """
        if overwrite:
            self._cancel_reasons[task] = reason
        else:
            reason = self._cancel_reasons.setdefault(task, reason)
        if inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED:  # type: ignore[arg-type]
            for record in self._runs.get(task, ()):
                if not record.state.is_final:
                    self._finish(record, RunState.CANCELLED, reason=reason)
            task.cancel()
            self._done(sid, task)
        else:
            task.cancel()

    async def wait_final(self, record: RunRecord) -> None:
        """Return once ``record`` (admitted by this runner) reaches a final state."""
        if record.state.is_final:
            return
        waiter = self._waiters.get(id(record))
        if waiter is None:
            waiter = self._waiters[id(record)] = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)

    # -- cancellation and shutdown -------------------------------------------------

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._runs)

    def _tasks_by_schedule(self) -> list[tuple[str, asyncio.Task[None]]]:
        return [(chain[0].schedule_id, task) for task, chain in self._runs.items() if not task.done()]

    def _tasks_of(self, sid: str) -> list[asyncio.Task[None]]:
        """The runs of one schedule in flight, oldest first (a scan: only cancellations ask)."""
        return [task for task, chain in self._runs.items() if chain[0].schedule_id == sid and not task.done()]

    async def cancel(self, schedule_id: str, reason: str, *, keep: asyncio.Task[Any] | None = None) -> int:
        """Cancel the in-flight runs of a schedule and wait until they are recorded."""
        victims = [t for t in self._tasks_of(schedule_id) if t is not keep]
        for task in victims:
            self._cancel(schedule_id, task, reason, overwrite=True)
        if victims:
            await asyncio.wait(victims)
        return len(victims)

    def cancel_all(self, reason: str) -> int:
        """Cancel every run in flight now, without waiting; returns how many.

        Each ends ``cancelled`` with ``reason`` once its task has unwound (a process run's
        worker is killed, a thread run abandoned). Await :meth:`shutdown` to wait for that.
        """
        victims = self._tasks_by_schedule()
        for sid, task in victims:
            self._cancel(sid, task, reason)
        return len(victims)

    def stop(self) -> None:
        """Raise the stop flag: no run or retry starts from now on; pending waits end now."""
        self.stop_flag.set()
        for waiter in self._pauses:
            if not waiter.done():
                waiter.set_result(None)

    async def shutdown(self, *, wait: bool, grace: float | None) -> None:
        """Raise the stop flag, let runs finish (up to ``grace``), cancel the rest, flush records."""
        self.stop()
        for plan in list(self._buffered.values()):
            for record in plan.chain:
                self._finish(record, RunState.CANCELLED, reason=_NOT_STARTED)
        self._buffered.clear()
        tasks = self.tasks()
        if wait and tasks:
            logger.info(
                "shutdown: waiting %s for %d run(s) to finish",
                "as long as they take" if grace is None else f"up to {grace:g}s",
                len(tasks),
            )
            await asyncio.wait(tasks, timeout=grace)
        leftover = self._tasks_by_schedule()
        if leftover:
            reason = f"cancelled by scheduler shutdown ({f'grace period of {grace:g}s over' if wait else 'wait=False'})"
            logger.warning("shutdown: cancelling %d run(s) still going", len(leftover))
            for sid, task in leftover:
                self._cancel(sid, task, reason)
            await asyncio.wait([task for _, task in leftover])
        self._error_lines.flush()
        await self.writer.drain(timeout=DRAIN_TIMEOUT)

    async def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless shutdown begins first; True if no shutdown began."""
        if self.stop_flag.is_set():
            return False
        if delay <= 0:
            await asyncio.sleep(0)
            return not self.stop_flag.is_set()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _wake, waiter)
        self._pauses.add(waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._pauses.discard(waiter)
        return not self.stop_flag.is_set()

    async def _make_room(self, schedule: Schedule, limit: int) -> None:
        """overlap: cancel_other: cancel this node's oldest runs of the schedule until this one makes ``limit``."""
        me = _current()
        others = [t for t in self._tasks_of(schedule.id) if t is not me]
        if len(others) < limit:
            return
        alive = [t for t in others if t not in self._cancel_reasons]
        dying = [t for t in others if t in self._cancel_reasons]
        victims = alive[: max(0, len(alive) + 1 - limit)]
        for task in victims:
            self._cancel(schedule.id, task, "cancelled by a newer fire (overlap: cancel_other)", overwrite=True)
        await asyncio.wait([*victims, *dying])

    # -- one chain, one run --------------------------------------------------------

    async def _run_chain(self, schedule: Schedule, chain: list[RunRecord], cancel_beyond: int | None) -> None:
        try:
            if cancel_beyond is not None:
                await self._make_room(schedule, cancel_beyond)
            for record in chain:
                if self.stop_flag.is_set():
                    self._finish(record, RunState.CANCELLED, reason=_NOT_STARTED)
                    continue
                try:
                    await self._run(schedule, record)
                except Exception as exc:  # the isolation boundary: no record may stay "running"
                    self._failed_inside(schedule, record, exc)
        except asyncio.CancelledError:
            reason = self._cancel_reasons.get(_current(), "cancelled")
            for record in chain:
                if not record.state.is_final:
                    self._finish(record, RunState.CANCELLED, reason=reason)
            raise
        finally:
            self._done(schedule.id, asyncio.current_task())

    async def _run_plain(self, schedule: Schedule, record: RunRecord) -> None:
        """The common run in one coroutine: an ``async def`` on an async executor, one attempt,
        no timeout, jitter or hooks (see :func:`_is_plain`); what :meth:`_run_chain` does, minus the layers.
        """
        try:
            if self.stop_flag.is_set():
                self._finish(record, RunState.CANCELLED, reason=_NOT_STARTED)
                return
            if not self._begin(schedule, record):
                return
            record.attempt += 1  # (a recovered run carries on from its last attempt)
            executor = self._executors[schedule.policy.executor]
            assert isinstance(executor, AsyncExecutor) and schedule.func is not None, "see _is_plain"
            try:
                result = await executor.call_plain(schedule.func, schedule.args, schedule.kwargs)
            except NotStarted:
                record.attempt -= 1
                self._finish(record, RunState.CANCELLED, reason=_NOT_STARTED)
            except SkipRun as exc:
                self._finish(record, RunState.SKIPPED, reason=str(exc) or "skipped by the task")
            except Exception as exc:
                state = RunState.TIMED_OUT if isinstance(exc, AttemptTimeout) else RunState.FAILED
                self._finish(record, state, error=_error_text(exc), tb=_traceback_text(exc))
            else:
                self._finish(record, RunState.SUCCEEDED, result=result)
        except asyncio.CancelledError:
            if not record.state.is_final:
                self._finish(record, RunState.CANCELLED, reason=self._cancel_reasons.get(_current(), "cancelled"))
            raise
        except Exception as exc:  # the isolation boundary: no record may stay "running"
            self._failed_inside(schedule, record, exc)
        finally:
            self._done(schedule.id, asyncio.current_task())

    def _failed_inside(self, schedule: Schedule, record: RunRecord, exc: Exception) -> None:
        logger.exception("run of schedule %s failed inside aiosched", schedule.id)
        if not record.state.is_final:
            self._finish(record, RunState.FAILED, error=_error_text(exc), tb=_traceback_text(exc))

    def _begin(self, schedule: Schedule, record: RunRecord) -> bool:
        """Mark the run started, or end it ``missed`` when it is past its grace (returns False then)."""
        now = self._clock.now()
        lateness = (now - record.fire_time).total_seconds()
        grace = schedule.policy.misfire_grace_time
        if grace is not None and lateness > grace and not record.manual and not record.attempt:
            # (a recovered run, attempt >= 1, started on time once: it is re-run, not missed)
            self._finish(record, RunState.MISSED, reason=f"started {lateness:.3f}s late (grace {grace}s)")
            return False
        record.state = RunState.RUNNING
        record.started_at = now
        record.lateness = lateness
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "run start: %s fire=%s attempt=%d", schedule.id, record.fire_time.isoformat(), record.attempt + 1
            )
        self._emit(EventType.SUBMITTED, record)
        return True

    async def _run(self, schedule: Schedule, record: RunRecord) -> None:
        policy = schedule.policy
        if policy.jitter and not await self._pause(random.uniform(0, policy.jitter)):
            self._finish(record, RunState.CANCELLED, reason=_NOT_STARTED)
            return
        if not self._begin(schedule, record):
            return
        func = schedule.func
        assert func is not None, "schedules reach the runner resolved"
        try:
            instance: BaseTask | None = func() if is_task_class(func) else None
        except Exception as exc:  # the task class's own __init__ failed: the run fails, nothing ran
            self._finish(
                record,
                RunState.FAILED,
                reason="the task could not be created",
                error=_error_text(exc),
                tb=_traceback_text(exc),
            )
            return
        call: Callable[..., Any] = instance.execute if instance is not None else func
        executor = self._executor_for(schedule, call)
        if instance is None:
            ending = await self._attempts(schedule, record, executor, call, None)
        else:
            ending = await self._run_task(schedule, record, executor, instance)
        self._finish(record, ending.state, reason=ending.reason, error=ending.error, tb=ending.tb, result=ending.result)

    async def _run_task(self, schedule: Schedule, record: RunRecord, executor: Executor, instance: BaseTask) -> _Ending:
        """A BaseTask's run: validate_params, the attempts with their hooks, then cleanup (always)."""
        # plain hooks of a task that runs on the loop are called on the loop; otherwise in a thread
        hooks = _Hooks(instance, inline=executor.kind == "async")
        try:
            invalid = await self._validate(schedule, hooks)
            return invalid or await self._attempts(schedule, record, executor, instance.execute, hooks)
        finally:
            await hooks.call("cleanup")  # before the run is reported ended, and on cancellation too

    async def _attempts(
        self, schedule: Schedule, record: RunRecord, executor: Executor, call: Callable[..., Any], hooks: _Hooks | None
    ) -> _Ending:
        """Make the attempts; returns how the run ends (the caller records it)."""
        policy = schedule.policy
        retry = policy.retry
        while True:
            record.attempt += 1
            try:
                result = await executor.call(
                    call, schedule.args, schedule.kwargs, timeout=policy.timeout, task_ref=schedule.task_ref
                )
            except NotStarted:  # it waited for a slot and shutdown began meanwhile: no attempt was made
                record.attempt -= 1
                return _Ending(RunState.CANCELLED, reason=_NOT_STARTED)
            except SkipRun as exc:
                return _Ending(RunState.SKIPPED, reason=str(exc) or "skipped by the task")
            except Exception as exc:
                reason = None
                if retry.should_retry(exc, record.attempt):
                    if await self._retry(schedule, record, hooks, exc):
                        continue
                    reason = "not retried: the scheduler is shutting down"
                if hooks is not None:
                    await hooks.call("on_failure", exc)
                state = RunState.TIMED_OUT if isinstance(exc, AttemptTimeout) else RunState.FAILED
                return _Ending(state, reason=reason, error=_error_text(exc), tb=_traceback_text(exc))
            if hooks is not None:
                await hooks.call("on_success", result)
            return _Ending(RunState.SUCCEEDED, result=result)

    async def _validate(self, schedule: Schedule, hooks: _Hooks) -> _Ending | None:
        """None if the params are fine, else how the run ends (failed, no attempt)."""
        if type(hooks.instance).validate_params is BaseTask.validate_params:
            return None
        try:
            valid = await hooks.run("validate_params", **schedule.kwargs)
        except Exception as exc:
            return _Ending(RunState.FAILED, error=f"invalid params: {_error_text(exc)}", tb=_traceback_text(exc))
        if valid is False:
            return _Ending(RunState.FAILED, error="invalid params: validate_params() returned False")
        return None

    async def _retry(self, schedule: Schedule, record: RunRecord, hooks: _Hooks | None, exc: Exception) -> bool:
        """Announce a retry and wait its delay; False if shutdown began (no retry then)."""
        if self.stop_flag.is_set():
            return False
        retry = schedule.policy.retry
        delay = retry.delay(record.attempt)
        record.error = _error_text(exc)
        logger.warning(
            "run retry: %s fire=%s attempt=%d/%d failed (%s); next in %.2fs",
            schedule.id,
            record.fire_time.isoformat(),
            record.attempt,
            retry.max_attempts,
            record.error,
            delay,
        )
        self._emit(EventType.RETRY, record, {"attempt": record.attempt, "delay": delay, "error": record.error})
        if hooks is not None:
            await hooks.call("on_retry", record.attempt + 1, retry.max_attempts)
        return await self._pause(delay)

    def _executor_for(self, schedule: Schedule, call: Callable[..., Any]) -> Executor:
        executor = self._executors[schedule.policy.executor]
        if executor.kind == "async" and not is_async_callable(call):
            if schedule.id not in self._sync_noted:
                self._sync_noted.add(schedule.id)
                logger.info(
                    "schedule %s: %s is not async, so it runs on the thread pool", schedule.id, callable_name(call)
                )
            executor = self._executors["threadpool"]
        return executor

    # -- final records ---------------------------------------------------------------

    def _finish(
        self,
        record: RunRecord,
        state: RunState,
        *,
        reason: str | None = None,
        error: str | None = None,
        tb: str | None = None,
        result: Any = None,
    ) -> None:
        record.state = state
        record.ended_at = self._clock.now()
        if reason is not None:
            record.reason = reason
        if error is not None:
            record.error = error
            record.traceback = tb
        if result is not None:
            record.result = _result_text(result)
        self.writer.put(record)
        if self._waiters:
            waiter = self._waiters.pop(id(record), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self.report(record)

    def report(self, record: RunRecord) -> None:
        """Log and emit the final state of a record."""
        state = record.state
        if state is RunState.SUCCEEDED:
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "run end: %s fire=%s attempt=%d duration=%.3fs state=succeeded",
                    record.schedule_id,
                    record.fire_time.isoformat(),
                    record.attempt,
                    record.duration or 0.0,
                )
        else:
            error = state in (RunState.FAILED, RunState.TIMED_OUT)
            if error and not self._error_lines.admit(record.schedule_id):
                self._emit(STATE_EVENTS[state], record)  # the line is counted, the event still goes out
                return
            logger.log(
                logging.ERROR if error else logging.WARNING,
                "run end: %s fire=%s attempt=%d duration=%.3fs state=%s %s",
                record.schedule_id,
                record.fire_time.isoformat(),
                record.attempt,
                record.duration or 0.0,
                state.value,
                record.error or record.reason or "",
            )
        self._emit(STATE_EVENTS[state], record)

    def _emit(self, kind: EventType, record: RunRecord, detail: dict[str, Any] | None = None) -> None:
        if self._bus.wants(kind):
            # a final record no longer changes, so listeners may share it; a live one is snapshotted
            run = record if record.state.is_final else record.snapshot()
            self._bus.emit(Event(type=kind, schedule_id=record.schedule_id, run=run, detail=detail))


def _is_plain(schedule: Schedule, executors: Mapping[str, Executor]) -> bool:
    """Whether a fire of ``schedule`` can take :meth:`Runner._run_plain`: a plain ``async def``
    on an async executor, with one attempt and no timeout or jitter."""
    func, policy = schedule.func, schedule.policy
    return (
        type(func) is FunctionType
        and bool(func.__code__.co_flags & CO_COROUTINE)
        and policy.timeout is None
        and not policy.jitter
        and policy.retry.max_attempts == 1
        and type(executors[policy.executor]) is AsyncExecutor
    )


def _current() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None
    return task


class _Ending:
    """How a run that started ends: its final state and what the record keeps."""

    __slots__ = ("error", "reason", "result", "state", "tb")

    def __init__(
        self,
        state: RunState,
        *,
        reason: str | None = None,
        error: str | None = None,
        tb: str | None = None,
        result: Any = None,
    ) -> None:
        self.state = state
        self.reason = reason
        self.error = error
        self.tb = tb
        self.result = result


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Hooks:
    """Calls the hooks of one BaseTask instance.

    ``async def`` hooks are awaited on the loop. A plain hook is called on the loop when
    the task itself runs there (``inline``: an async ``execute`` on the async executor),
    else in a worker thread, since it belongs to code that may block. The built-in
    hooks only log and are always called inline.
    """

    __slots__ = ("inline", "instance")

    def __init__(self, instance: BaseTask, *, inline: bool) -> None:
        self.instance = instance
        self.inline = inline

    async def run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call hook ``name`` and return its result; its exception propagates."""
        hook = getattr(self.instance, name)
        if inspect.iscoroutinefunction(hook):
            return await hook(*args, **kwargs)
        if self.inline or getattr(type(self.instance), name, None) is _DEFAULT_HOOKS.get(name):
            result = hook(*args, **kwargs)
        else:
            result = await anyio.to_thread.run_sync(functools.partial(hook, *args, **kwargs))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def call(self, name: str, *args: Any) -> None:
        """Call hook ``name``; if it raises, log it: a hook never changes the run's outcome."""
        try:
            await self.run(name, *args)
        except Exception:
            logger.exception("hook %s.%s failed (the run's outcome stands)", type(self.instance).__name__, name)


def _result_text(result: Any) -> str:
    try:
        text = _REPR.repr(result)
    except Exception as exc:  # a broken __repr__ must not lose the run's outcome
        text = f"<{type(result).__qualname__} object; repr() failed: {_error_text(exc)}>"
    return text if len(text) <= RESULT_LIMIT else text[: RESULT_LIMIT - 3] + "..."


def _error_text(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the run's outcome
        message = "<str() failed>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-20_000:]
