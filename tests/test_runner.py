"""Running work at the Scheduler level: executors, timeouts, retries, BaseTask, decorators, overlap.

Real threads and real worker processes throughout; real time where time is the point
(timeouts, backoff, lateness), the fake clock elsewhere.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiosched import (
    BaseTask,
    EventType,
    FakeClock,
    FatalError,
    RetryableError,
    RunRecord,
    RunState,
    ScheduleError,
    Scheduler,
)
from aiosched.decorators import log_execution, monitor_task, rate_limit, timeout

from . import _proc_tasks
from .conftest import START, SchedulerFactory, pid_alive, until

PROC = "tests._proc_tasks"


# --------------------------------------------------------------------------- helpers


async def run_now(s: Scheduler, func: Any, *, id: str, **options: Any) -> RunRecord:
    """Add ``func`` as a paused schedule and run it once now; return its final record."""
    await s.add_job(func, id=id, paused=True, **options)
    return await s.run_job(id, wait=True)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


class Meter:
    """Counts the runs inside a task at this moment (thread-safe) and keeps the peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


class Attempts:
    """An async task that raises the given errors in turn, then returns; keeps each attempt's start."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return f"ok on attempt {len(self.times)}"

    def offsets(self) -> list[float]:
        return [t - self.times[0] for t in self.times]


async def noop() -> None:
    return None


def sync_noop() -> str:
    return "sync"


async def sleeper(seconds: float = 10.0) -> str:
    await asyncio.sleep(seconds)
    return "slept"


# --------------------------------------------------------------------------- concurrency limits


async def test_async_limit_holds_across_schedules(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock, executors={"async_limit": 3})
    meter = Meter()

    async def work() -> None:
        meter.enter()
        try:
            await asyncio.sleep(0.02)
        finally:
            meter.leave()

    for i in range(10):
        await s.add_job(work, "date", run_date=START + timedelta(seconds=1), id=f"a{i}")
    clock.advance(1)
    await rec.wait_runs(10)
    assert meter.peak == 3
    assert rec.states() == [RunState.SUCCEEDED] * 10


async def test_thread_limit_holds_across_schedules(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock, executors={"default_threads": 2})
    meter = Meter()

    def work() -> None:
        meter.enter()
        try:
            time.sleep(0.02)
        finally:
            meter.leave()

    for i in range(10):  # half name the pool, half reach it from the default executor
        executor = "threadpool" if i % 2 else "default"
        await s.add_job(work, "date", run_date=START + timedelta(seconds=1), id=f"t{i}", executor=executor)
    clock.advance(1)
    await rec.wait_runs(10)
    assert meter.peak == 2
    assert rec.states() == [RunState.SUCCEEDED] * 10


async def test_process_limit_holds_across_schedules(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock, executors={"process_pool": 2})
    for i in range(6):
        await s.add_job(
            f"{PROC}:hold",
            "date",
            run_date=START + timedelta(seconds=1),
            id=f"p{i}",
            executor="processpool",
            args=[0.15],
        )
    clock.advance(1)
    await rec.wait_runs(6)
    assert rec.states() == [RunState.SUCCEEDED] * 6
    # each task reports (pid, start, end) from inside its worker; CLOCK_MONOTONIC is system-wide
    inside = [ast.literal_eval(r.result) for r in rec.final_runs()]
    assert max_overlap([(start, end) for _, start, end in inside]) == 2
    assert len({pid for pid, _, _ in inside}) <= 2
    assert all(pid != os.getpid() for pid, _, _ in inside)


# --------------------------------------------------------------------------- timeouts


async def test_async_timeout_cancels_the_coroutine(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    cleaned: list[float] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(time.monotonic())

    record = await run_now(s, slow, id="slow", timeout=0.2)
    assert record.state is RunState.TIMED_OUT
    assert record.error is not None and record.error.startswith("AttemptTimeout: ")
    assert "timed out after 0.2s" in record.error
    assert cleaned, "the task's finally block ran"
    assert record.duration is not None and 0.2 <= record.duration < 0.25
    assert [e.run.state for e in rec.of(EventType.ERROR, "slow") if e.run] == [RunState.TIMED_OUT]


async def test_a_tasks_own_timeouterror_is_a_failure(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    """An HTTP client's TimeoutError is the task's failure, however long the attempt took."""
    s, _ = await make_scheduler(clock=clock)

    async def upstream_slow() -> None:
        clock.advance(2)  # the attempt "took" the whole timeout on the scheduler's clock
        raise TimeoutError("upstream did not answer")

    record = await run_now(s, upstream_slow, id="own", timeout=2)
    assert record.state is RunState.FAILED
    assert record.error == "TimeoutError: upstream did not answer"


async def test_timeout_decorator_counts_as_timed_out(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    record = await run_now(s, timeout(0.1)(sleeper), id="decorated")
    assert record.state is RunState.TIMED_OUT
    assert "timed out after 0.1s" in (record.error or "")


async def test_process_timeout_kills_a_cpu_loop(make_scheduler: SchedulerFactory, tmp_path: Path) -> None:
    s, _ = await make_scheduler()
    warm = await run_now(s, f"{PROC}:getpid", id="warm", executor="processpool")  # an idle worker to reuse
    pid_file = tmp_path / "pid"
    record = await run_now(s, f"{PROC}:spin", id="spin", executor="processpool", timeout=0.3, args=[str(pid_file)])
    assert record.state is RunState.TIMED_OUT
    assert "worker process was killed" in (record.error or "")
    assert record.duration is not None and 0.3 <= record.duration < 0.4
    pid = int(pid_file.read_text())
    assert str(pid) == warm.result
    await until(lambda: not pid_alive(pid), within=2)


async def test_thread_timeout_frees_the_slot_and_warns(
    make_scheduler: SchedulerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s, rec = await make_scheduler(executors={"default_threads": 1})
    caplog.set_level(logging.INFO)
    release = threading.Event()

    def stuck() -> str:
        release.wait(5)
        return "late"

    await s.add_job(stuck, id="stuck", paused=True, timeout=0.2)
    await s.add_job(sync_noop, id="quick", paused=True)
    try:
        began = time.monotonic()
        first = asyncio.ensure_future(s.run_job("stuck", wait=True))
        await rec.wait(lambda: bool(rec.of(EventType.SUBMITTED, "stuck")))
        quick = await s.run_job("quick", wait=True)  # waits for the only thread, freed at the timeout
        freed_after = time.monotonic() - began
        timed_out = await first
    finally:
        release.set()
    assert timed_out.state is RunState.TIMED_OUT
    assert timed_out.duration is not None and 0.2 <= timed_out.duration < 0.25
    assert quick.state is RunState.SUCCEEDED
    assert 0.2 <= freed_after < 0.3
    assert "thread abandoned" in (timed_out.error or "")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "thread abandoned" in r.getMessage()]
    assert len(warnings) == 1 and "cannot be killed" in warnings[0].getMessage()
    threads = s.executors["threadpool"]
    await until(lambda: getattr(threads, "leaked", 0) == 0, within=2)


# --------------------------------------------------------------------------- retries


async def test_retries_follow_the_backoff(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    task = Attempts(ValueError("one"), ValueError("two"), ValueError("three"))
    record = await run_now(s, task, id="r", max_attempts=3, retry_delay=0.1, backoff=2)
    assert record.state is RunState.FAILED and record.attempt == 3
    assert record.error == "ValueError: three"
    for got, want in zip(task.offsets(), [0, 0.1, 0.3], strict=True):
        assert want <= got < want + 0.03
    retries = rec.of(EventType.RETRY, "r")
    assert [e.detail for e in retries] == [
        {"attempt": 1, "delay": 0.1, "error": "ValueError: one"},
        {"attempt": 2, "delay": 0.2, "error": "ValueError: two"},
    ]
    assert [e.run.attempt for e in retries if e.run] == [1, 2]


async def test_max_delay_caps_the_backoff(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    task = Attempts(ValueError(), ValueError(), ValueError())
    record = await run_now(s, task, id="r", max_attempts=4, retry_delay=0.05, backoff=4, max_delay=0.1)
    assert record.state is RunState.SUCCEEDED and record.attempt == 4
    assert record.result == "'ok on attempt 4'"
    assert [e.detail["delay"] for e in rec.of(EventType.RETRY, "r") if e.detail] == [0.05, 0.1, 0.1]
    for got, want in zip(task.offsets(), [0, 0.05, 0.15, 0.25], strict=True):
        assert want <= got < want + 0.03


async def test_fatal_error_is_never_retried(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    record = await run_now(s, Attempts(FatalError("stop")), id="f", max_attempts=5)
    assert record.state is RunState.FAILED and record.attempt == 1
    assert record.error == "FatalError: stop"
    assert rec.of(EventType.RETRY) == []


async def test_retryable_error_is_retried_whatever_retry_on_says(
    make_scheduler: SchedulerFactory, clock: FakeClock
) -> None:
    s, rec = await make_scheduler(clock=clock)
    task = Attempts(RetryableError("again"), RetryableError("again"))
    record = await run_now(s, task, id="r", max_attempts=5, retry_on=["KeyError"])
    assert record.state is RunState.SUCCEEDED and record.attempt == 3
    assert len(rec.of(EventType.RETRY, "r")) == 2


@pytest.mark.parametrize(
    ("retry_on", "error", "attempts"),
    [
        (["KeyError"], ValueError("no"), 1),
        (["KeyError"], KeyError("yes"), 2),
        (["OSError"], ConnectionError("by the class hierarchy"), 2),
        (["Exception"], ValueError("the default"), 2),
    ],
)
async def test_retry_on_filters_by_exception_name(
    make_scheduler: SchedulerFactory, clock: FakeClock, retry_on: list[str], error: Exception, attempts: int
) -> None:
    s, _ = await make_scheduler(clock=clock)
    record = await run_now(s, Attempts(error), id="r", max_attempts=2, retry_on=retry_on)
    assert record.attempt == attempts
    assert record.state is (RunState.SUCCEEDED if attempts == 2 else RunState.FAILED)


async def test_a_timeout_is_a_failed_attempt_and_is_retried(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    record = await run_now(s, sleeper, id="t", timeout=0.05, max_attempts=2, retry_on=["TimeoutError"])
    assert record.state is RunState.TIMED_OUT and record.attempt == 2
    retries = rec.of(EventType.RETRY, "t")
    assert len(retries) == 1 and retries[0].detail is not None
    assert retries[0].detail["error"].startswith("AttemptTimeout")


async def test_job_defaults_give_the_retry_policy(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock, job_defaults={"max_attempts": 3, "retry_delay": 0})
    defaulted = await run_now(s, Attempts(ValueError(), ValueError()), id="d")
    assert defaulted.state is RunState.SUCCEEDED and defaulted.attempt == 3
    own = await run_now(s, Attempts(ValueError(), ValueError()), id="o", max_attempts=1)
    assert own.state is RunState.FAILED and own.attempt == 1


# --------------------------------------------------------------------------- the loop stays free


async def test_a_blocking_def_does_not_delay_other_schedules(
    make_scheduler: SchedulerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    s, rec = await make_scheduler()
    caplog.set_level(logging.INFO, logger="aiosched.runs")

    def blocking() -> str:
        time.sleep(1)
        return "slept"

    await s.add_job(blocking, "date", run_date=datetime.now(UTC) + timedelta(seconds=0.05), id="blocking")
    await s.add_job(noop, "interval", seconds=0.1, id="tick")
    await rec.wait_runs(1, "blocking", timeout=3)
    block = rec.final_runs("blocking")[0]
    assert block.state is RunState.SUCCEEDED and block.result == "'slept'"
    during = [r for r in rec.final_runs("tick") if block.started_at < r.started_at < block.ended_at]
    assert len(during) >= 8
    # typically ~1 ms (max ~5 ms); a loop blocked by the def would make them ~1 s late
    lateness = sorted(r.lateness for r in during)
    assert lateness[len(lateness) // 2] < 0.005 and lateness[-1] < 0.03
    notes = [r.getMessage() for r in caplog.records if "runs on the thread pool" in r.getMessage()]
    assert notes == [
        "schedule blocking: test_a_blocking_def_does_not_delay_other_schedules.<locals>.blocking"
        " is not async, so it runs on the thread pool"
    ]


async def test_the_thread_pool_note_is_logged_once_per_schedule(
    make_scheduler: SchedulerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    s, rec = await make_scheduler(clock=clock)
    caplog.set_level(logging.INFO, logger="aiosched.runs")
    await s.add_job(sync_noop, "interval", seconds=1, id="def")
    for n in range(1, 4):
        clock.advance(1)
        await rec.wait_runs(n)
    assert rec.states("def") == [RunState.SUCCEEDED] * 3
    assert len([r for r in caplog.records if "runs on the thread pool" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- BaseTask

TRACE: list[str] = []
ON_LOOP: dict[str, bool] = {}


@pytest.fixture(autouse=True)
def _clear_traces() -> None:
    TRACE.clear()
    ON_LOOP.clear()
    _proc_tasks.PARENT_HOOKS.clear()


def _where(hook: str) -> None:
    ON_LOOP[hook] = threading.current_thread() is threading.main_thread()


class Tracked(BaseTask):
    """Records each hook; ``execute(fail=n)`` fails its first n attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def validate_params(self, **kwargs: Any) -> bool:
        TRACE.append("validate_params")
        _where("validate_params")
        return bool(kwargs.get("valid", True))

    def attempt(self, fail: int) -> str:
        self.calls += 1
        TRACE.append(f"execute {self.calls}")
        if self.calls <= fail:
            raise ValueError(f"attempt {self.calls} failed")
        return f"done on {self.calls}"

    def execute(self, fail: int = 0, valid: bool = True) -> str:
        return self.attempt(fail)

    def on_retry(self, attempt: int, max_attempts: int) -> None:
        TRACE.append(f"on_retry {attempt}/{max_attempts}")

    def on_success(self, result: Any) -> None:
        TRACE.append(f"on_success {result}")
        _where("on_success")

    def on_failure(self, exception: BaseException) -> None:
        TRACE.append(f"on_failure {exception}")

    def cleanup(self) -> None:
        TRACE.append("cleanup")
        _where("cleanup")


class AsyncTracked(Tracked):
    """The same with ``async def execute`` and an ``async def`` cleanup."""

    async def execute(self, fail: int = 0, valid: bool = True) -> str:  # type: ignore[override]
        await asyncio.sleep(0)
        return self.attempt(fail)

    async def cleanup(self) -> None:  # type: ignore[override]
        TRACE.append("cleanup")
        _where("cleanup")


@pytest.mark.parametrize("task", [Tracked, AsyncTracked])
async def test_hook_order_with_a_retry(make_scheduler: SchedulerFactory, clock: FakeClock, task: type) -> None:
    s, _ = await make_scheduler(clock=clock)
    record = await run_now(s, task, id="h", kwargs={"fail": 1}, max_attempts=3)
    assert record.state is RunState.SUCCEEDED and record.attempt == 2
    assert record.result == "'done on 2'"
    assert TRACE == ["validate_params", "execute 1", "on_retry 2/3", "execute 2", "on_success done on 2", "cleanup"]
    # plain hooks run where execute runs: on the loop for an async task, in a worker thread for a def
    on_loop = task is AsyncTracked
    assert {"validate_params": on_loop, "on_success": on_loop, "cleanup": on_loop} == ON_LOOP


@pytest.mark.parametrize("task", [Tracked, AsyncTracked])
async def test_hook_order_on_failure(make_scheduler: SchedulerFactory, clock: FakeClock, task: type) -> None:
    s, _ = await make_scheduler(clock=clock)
    record = await run_now(s, task, id="h", kwargs={"fail": 9}, max_attempts=2)
    assert record.state is RunState.FAILED and record.attempt == 2
    assert record.error == "ValueError: attempt 2 failed"
    assert TRACE == [
        "validate_params",
        "execute 1",
        "on_retry 2/2",
        "execute 2",
        "on_failure attempt 2 failed",
        "cleanup",
    ]


async def test_invalid_params_fail_without_an_attempt(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    record = await run_now(s, Tracked, id="h", kwargs={"valid": False}, max_attempts=3)
    assert record.state is RunState.FAILED and record.attempt == 0
    assert record.error == "invalid params: validate_params() returned False"
    assert TRACE == ["validate_params", "cleanup"]
    assert rec.of(EventType.RETRY) == []


@pytest.mark.parametrize("kind", ["def", "async"])
async def test_cleanup_runs_when_the_run_is_cancelled(make_scheduler: SchedulerFactory, kind: str) -> None:
    s, rec = await make_scheduler()
    release = threading.Event()

    class Stuck(Tracked):
        def attempt(self, fail: int) -> str:
            TRACE.append("execute")
            release.wait(5)
            return "late"

    class AsyncStuck(AsyncTracked):
        async def execute(self, fail: int = 0, valid: bool = True) -> str:  # type: ignore[override]
            TRACE.append("execute")
            await asyncio.sleep(10)
            return "late"

    await s.add_job(Stuck if kind == "def" else AsyncStuck, id="c", paused=True)
    try:
        record = await s.run_job("c")
        await rec.wait(lambda: bool(rec.of(EventType.SUBMITTED, "c")))
        await until(lambda: "execute" in TRACE)
        assert await s.cancel_job_run("c") == 1
    finally:
        release.set()
    assert record.state is RunState.CANCELLED and record.reason == "cancelled on request"
    assert TRACE == ["validate_params", "execute", "cleanup"]  # no on_failure for a cancellation
    await until(lambda: getattr(s.executors["threadpool"], "leaked", 0) == 0, within=2)


class Grumpy(BaseTask):
    """Every hook but validate_params raises; the run's outcome must not change."""

    def execute(self, fail: bool = False) -> str:
        if fail:
            raise ValueError("the task's own failure")
        return "fine"

    async def on_success(self, result: Any) -> None:  # type: ignore[override]
        raise RuntimeError("on_success bug")

    def on_failure(self, exception: BaseException) -> None:
        raise RuntimeError("on_failure bug")

    def cleanup(self) -> None:
        raise RuntimeError("cleanup bug")


async def test_a_raising_hook_does_not_change_the_outcome(
    make_scheduler: SchedulerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    s, _ = await make_scheduler(clock=clock)
    caplog.set_level(logging.ERROR, logger="aiosched.runs")
    good = await run_now(s, Grumpy, id="good")
    assert good.state is RunState.SUCCEEDED and good.result == "'fine'" and good.error is None
    bad = await run_now(s, Grumpy, id="bad", kwargs={"fail": True})
    assert bad.state is RunState.FAILED and bad.error == "ValueError: the task's own failure"
    failed_hooks = [r.getMessage() for r in caplog.records if "hook Grumpy." in r.getMessage()]
    assert failed_hooks == [
        "hook Grumpy.on_success failed (the run's outcome stands)",
        "hook Grumpy.cleanup failed (the run's outcome stands)",
        "hook Grumpy.on_failure failed (the run's outcome stands)",
        "hook Grumpy.cleanup failed (the run's outcome stands)",
    ]


async def test_a_task_whose_constructor_raises_fails_its_run(
    make_scheduler: SchedulerFactory, clock: FakeClock
) -> None:
    class Broken(BaseTask):
        def __init__(self) -> None:
            raise OSError("no config file")

        def execute(self) -> None:
            return None

    s, _ = await make_scheduler(clock=clock)
    record = await run_now(s, Broken, id="b")
    assert record.state is RunState.FAILED and record.attempt == 0
    assert record.error == "OSError: no config file" and record.reason == "the task could not be created"


async def test_a_base_task_on_the_process_pool(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    record = await run_now(s, _proc_tasks.ProcBaseTask, id="p", executor="processpool", kwargs={"x": 4})
    assert record.state is RunState.SUCCEEDED
    value, worker = ast.literal_eval(record.result or "")
    assert value == 40 and worker != os.getpid()
    me = os.getpid()
    assert [
        ("validate_params", me, {"x": 4}),
        ("on_success", me, (40, worker)),
        ("cleanup", me, None),
    ] == _proc_tasks.PARENT_HOOKS


# --------------------------------------------------------------------------- decorators


@pytest.mark.parametrize("kind", ["async", "def"])
async def test_rate_limit_skips_the_extra_runs(make_scheduler: SchedulerFactory, clock: FakeClock, kind: str) -> None:
    s, rec = await make_scheduler(clock=clock)
    task = rate_limit(max_calls=2, time_window=60)(noop if kind == "async" else sync_noop)
    await s.add_job(task, "interval", seconds=1, id="rl")
    for n in range(1, 5):
        clock.advance(1)
        await rec.wait_runs(n, "rl")
    assert rec.states("rl") == [RunState.SUCCEEDED] * 2 + [RunState.SKIPPED] * 2
    assert [r.reason for r in rec.final_runs("rl")[2:]] == ["rate limit: 2 calls per 60s reached"] * 2


def _stack(func: Callable[..., Any]) -> Callable[..., Any]:
    """The original system's decorator stack."""
    return monitor_task("stacked")(rate_limit(max_calls=5, time_window=60)(timeout(5)(log_execution(func))))


async def async_report(rows: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"rows": rows}


def sync_report(rows: int) -> dict[str, int]:
    return {"rows": rows}


@pytest.mark.parametrize("func", [async_report, sync_report])
async def test_stacked_decorators_on_a_scheduled_task(
    make_scheduler: SchedulerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture, func: Callable[..., Any]
) -> None:
    s, _ = await make_scheduler(clock=clock)
    caplog.set_level(logging.INFO, logger="aiosched.tasks")
    record = await run_now(s, _stack(func), id="st", kwargs={"rows": 7})
    assert record.state is RunState.SUCCEEDED and record.result == "{'rows': 7}"
    messages = [r.getMessage() for r in caplog.records if r.name == "aiosched.tasks"]
    assert any(m.startswith("calling tests.test_runner:") and "1 keyword argument" in m for m in messages)
    assert any(m.startswith("task stacked succeeded in ") for m in messages)


async def test_timeout_decorator_on_a_def(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    release = threading.Event()

    @timeout(0.1)
    def stuck() -> None:
        release.wait(5)

    try:
        record = await run_now(s, stuck, id="d")
    finally:
        release.set()
    assert record.state is RunState.TIMED_OUT
    assert record.error is not None and "timed out after 0.1s" in record.error


# --------------------------------------------------------------------------- overlap


async def test_cancel_other_cancels_a_running_thread_run_first(
    make_scheduler: SchedulerFactory, clock: FakeClock
) -> None:
    s, rec = await make_scheduler(clock=clock)
    release = threading.Event()
    started: list[float] = []

    def stuck() -> None:
        started.append(time.monotonic())
        release.wait(5)

    await s.add_job(stuck, "interval", seconds=1, id="o", overlap="cancel_other")
    try:
        clock.advance(1)
        await until(lambda: len(started) == 1)
        clock.advance(1)
        await until(lambda: len(started) == 2)
    finally:
        release.set()
    await rec.wait_runs(2, "o")
    kinds = [(e.type, e.run.fire_time) for e in rec.events if e.schedule_id == "o" and e.run]
    first, second = START + timedelta(seconds=1), START + timedelta(seconds=2)
    assert kinds == [
        (EventType.SUBMITTED, first),
        (EventType.CANCELLED, first),
        (EventType.SUBMITTED, second),
        (EventType.EXECUTED, second),
    ]
    assert "cancel_other" in (rec.final_runs("o")[0].reason or "")
    await until(lambda: getattr(s.executors["threadpool"], "leaked", 0) == 0, within=2)


async def test_cancel_other_cancels_only_what_max_instances_needs(
    make_scheduler: SchedulerFactory, clock: FakeClock
) -> None:
    s, rec = await make_scheduler(clock=clock)
    release = asyncio.Event()
    running: list[datetime] = []

    async def held() -> None:
        running.append(clock.now())
        await release.wait()

    await s.add_job(held, "interval", seconds=1, id="o", overlap="cancel_other", max_instances=2)
    for n in (1, 2):
        clock.advance(1)
        await rec.wait(lambda n=n: len(rec.of(EventType.SUBMITTED, "o")) == n)  # type: ignore[misc]
    assert rec.of(EventType.CANCELLED) == []  # room for two: nobody is cancelled
    clock.advance(1)
    await rec.wait(lambda: len(rec.of(EventType.SUBMITTED, "o")) == 3)
    cancelled = [e.run.fire_time for e in rec.of(EventType.CANCELLED, "o") if e.run]
    assert cancelled == [START + timedelta(seconds=1)]  # the oldest, and only it
    assert s.running_count("o") == 2
    release.set()
    await rec.wait_runs(3, "o")
    assert rec.states("o") == [RunState.CANCELLED, RunState.SUCCEEDED, RunState.SUCCEEDED]


async def test_buffer_one_starts_the_queued_fire_when_the_slot_frees(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()

    async def slow() -> None:
        await asyncio.sleep(0.35)

    await s.add_job(slow, "interval", seconds=0.2, id="b", overlap="buffer_one")
    await rec.wait(lambda: len([r for r in rec.final_runs("b") if r.state is RunState.SUCCEEDED]) >= 2, timeout=3)
    await s.pause_job("b")
    first, second = [r for r in rec.final_runs("b") if r.state is RunState.SUCCEEDED][:2]
    assert second.fire_time - first.fire_time == timedelta(seconds=0.2)
    gap = (second.started_at - first.ended_at).total_seconds()
    assert 0 <= gap < 0.02  # the slot frees and the queued fire starts in the same loop pass, bar load
    # it waited for the first run: lateness = what the first took beyond the fire interval
    assert second.lateness == pytest.approx(first.duration - 0.2, abs=0.02)


async def test_a_retry_holds_its_max_instances_slot(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    task = Attempts(ValueError("flaky"))
    await s.add_job(task, "interval", seconds=1, id="r", max_attempts=2, retry_delay=0.2)
    clock.advance(1)
    await rec.wait(lambda: bool(rec.of(EventType.RETRY, "r")))
    clock.advance(1)  # a fire during the retry delay
    await s.engine.wait_idle()
    skipped = rec.final_runs("r")
    assert [r.state for r in skipped] == [RunState.SKIPPED]
    assert skipped[0].reason == "max_instances reached (1 running)"
    await rec.wait_runs(2, "r")
    done = rec.final_runs("r")[1]
    assert done.state is RunState.SUCCEEDED and done.attempt == 2


# --------------------------------------------------------------------------- run_job, cancel_job_run, results


async def test_run_job_wait_returns_the_final_record(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    await s.add_job(sync_noop, "cron", hour=23, id="a")
    record = await s.run_job("a", wait=True)
    assert record.state is RunState.SUCCEEDED and record.result == "'sync'" and record.manual
    assert (await s.get_runs(schedule_id="a"))[0].result == "'sync'"


@pytest.mark.parametrize("executor", ["default", "threadpool", "processpool"])
async def test_cancel_job_run_cancels_a_running_run(
    make_scheduler: SchedulerFactory, tmp_path: Path, executor: str
) -> None:
    s, rec = await make_scheduler()
    pid_file = tmp_path / "pid"
    release = threading.Event()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(5)

    if executor == "processpool":
        await s.add_job(f"{PROC}:slow_pid", id="c", paused=True, executor=executor, args=[str(pid_file), 10])
        ready: Callable[[], bool] = lambda: pid_file.exists() and pid_file.read_text() != ""  # noqa: E731
    elif executor == "threadpool":
        await s.add_job(stuck, id="c", paused=True, executor=executor)
        ready = started.is_set
    else:
        await s.add_job(sleeper, id="c", paused=True)
        ready = lambda: bool(rec.of(EventType.SUBMITTED, "c"))  # noqa: E731
    assert await s.cancel_job_run("c") == 0
    try:
        record = await s.run_job("c")
        await until(ready, within=5)
        began = time.monotonic()
        assert await s.cancel_job_run("c") == 1
        took = time.monotonic() - began
    finally:
        release.set()
    assert took < 0.1
    assert record.state is RunState.CANCELLED and record.reason == "cancelled on request"
    assert (await s.get_runs(schedule_id="c"))[0].state is RunState.CANCELLED
    assert s.running_count("c") == 0
    if executor == "processpool":
        pid = int(pid_file.read_text())
        await until(lambda: not pid_alive(pid), within=2)
    await until(lambda: getattr(s.executors["threadpool"], "leaked", 0) == 0, within=2)


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@pytest.mark.parametrize(
    ("value", "check"),
    [
        ("x" * 10_000, lambda text: len(text) == 500 and text.startswith("'xxx") and "..." in text),
        (list(range(1_000_000)), lambda text: len(text) <= 500 and text.startswith("[0, 1, 2, 3")),
        (BadRepr(), lambda text: text.startswith("<BadRepr instance at 0x")),
        (10**5000, lambda text: text.startswith("<int object; repr() failed: ValueError: Exceeds the limit")),
        ({"rows": 3}, lambda text: text == "{'rows': 3}"),
    ],
    ids=["long-str", "huge-list", "broken-repr", "huge-int", "small-dict"],
)
async def test_results_are_kept_as_bounded_reprs(
    make_scheduler: SchedulerFactory, clock: FakeClock, value: object, check: Callable[[str], bool]
) -> None:
    s, _ = await make_scheduler(clock=clock)

    async def give() -> object:
        return value

    began = time.perf_counter()
    record = await run_now(s, give, id="r")
    assert time.perf_counter() - began < 0.1  # the repr of a huge result does not stall the loop
    assert record.state is RunState.SUCCEEDED
    assert check(record.result or ""), record.result


def broken_task(n: int) -> None:
    raise ValueError(f"bad input {n}")


@pytest.mark.parametrize("executor", ["default", "threadpool", "processpool"])
async def test_failures_keep_type_message_and_traceback(make_scheduler: SchedulerFactory, executor: str) -> None:
    s, _ = await make_scheduler()
    func = f"{PROC}:fail" if executor == "processpool" else broken_task
    args = ["bad input 42"] if executor == "processpool" else [42]
    record = await run_now(s, func, id="f", executor=executor, args=args)
    assert record.state is RunState.FAILED
    assert record.error == "ValueError: bad input 42"
    tb = record.traceback or ""
    assert tb.startswith("Traceback (most recent call last)") and "ValueError: bad input 42" in tb
    if executor == "processpool":
        assert "Traceback in the worker process" in tb and "_proc_tasks.py" in tb
    else:
        assert "in broken_task" in tb


# --------------------------------------------------------------------------- bad input


class Holder:
    def method(self) -> None:
        return None


def _closure() -> Callable[[], None]:
    def inner() -> None:
        return None

    return inner


@pytest.mark.parametrize(
    ("func", "options", "match"),
    [
        (lambda: None, {"executor": "processpool"}, "cannot run in a worker process"),
        (_closure(), {"executor": "processpool"}, "cannot run in a worker process"),
        (functools.partial(sync_report, 1), {"executor": "processpool"}, "cannot run in a worker process"),
        (Holder().method, {"executor": "processpool"}, "cannot run in a worker process"),
        (sync_report, {"executor": "gpu"}, "unknown executor 'gpu'"),
        (sync_report, {"timeout": -1}, "timeout: must be positive"),
        (sync_report, {"timeout": 0}, "timeout: must be positive"),
        (sync_report, {"max_attempts": 0}, "max_attempts"),
        (sync_report, {"retry_delay": -1}, "retry_delay"),
        (sync_report, {"backoff": 0.5}, "backoff"),
        (sync_report, {"retry_on": "ValueError"}, "retry_on"),
    ],
    ids=[
        "lambda",
        "closure",
        "partial",
        "bound-method",
        "executor",
        "timeout<0",
        "timeout=0",
        "max_attempts",
        "retry_delay",
        "backoff",
        "retry_on",
    ],
)
async def test_bad_execution_options_are_refused_when_added(
    make_scheduler: SchedulerFactory, clock: FakeClock, func: Any, options: dict[str, Any], match: str
) -> None:
    s, _ = await make_scheduler(clock=clock)
    with pytest.raises(ScheduleError, match=match) as info:
        await s.add_job(func, "interval", seconds=1, id="bad", **options)
    assert "'bad'" in str(info.value)
    assert await s.get_jobs() == []
