"""Graceful shutdown: the grace period, cancellation of what outlives it, and the stop flag."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import aiosched
from aiosched import BaseTask, EventType, FakeClock, RunRecord, RunState, Scheduler, SchedulerNotRunning

from .conftest import START, SchedulerFactory, pid_alive, until

PROC = "tests._proc_tasks"


async def start_paused(s: Scheduler, func: object, id: str, **options: object) -> RunRecord:
    """Add ``func`` as a paused schedule and start one run of it now (not waiting for it)."""
    await s.add_job(func, id=id, paused=True, **options)  # type: ignore[arg-type]
    return await s.run_job(id)


async def timed_shutdown(s: Scheduler, **kwargs: object) -> float:
    began = time.monotonic()
    await s.shutdown(**kwargs)  # type: ignore[arg-type]
    return time.monotonic() - began


async def short() -> str:
    await asyncio.sleep(0.1)
    return "short"


async def long() -> str:
    await asyncio.sleep(10)
    return "long"


# --------------------------------------------------------------------------- grace period


async def test_grace_lets_short_runs_finish_and_cancels_long_ones(
    make_scheduler: SchedulerFactory, tmp_path: Path
) -> None:
    s, rec = await make_scheduler()
    release = threading.Event()

    def long_def() -> None:
        release.wait(5)

    pid_file = tmp_path / "pid"
    runs = {
        "short": await start_paused(s, short, "short"),
        "long": await start_paused(s, long, "long"),
        "thread": await start_paused(s, long_def, "thread"),
        "process": await start_paused(
            s, f"{PROC}:slow_pid", "process", executor="processpool", args=[str(pid_file), 10]
        ),
    }
    await until(lambda: pid_file.exists() and pid_file.read_text() != "")
    try:
        took = await timed_shutdown(s, wait=True, grace=0.5)
    finally:
        release.set()
    assert 0.5 <= took < 0.6
    assert runs["short"].state is RunState.SUCCEEDED and runs["short"].result == "'short'"
    for name in ("long", "thread", "process"):
        assert runs[name].state is RunState.CANCELLED, name
        assert runs[name].reason == "cancelled by scheduler shutdown (grace period of 0.5s over)"
    assert {r.schedule_id: r.state for r in rec.final_runs()} == {r.schedule_id: r.state for r in runs.values()}
    pid = int(pid_file.read_text())
    await until(lambda: not pid_alive(pid), within=2)  # the process run's worker was killed
    await until(lambda: getattr(s.executors["threadpool"], "leaked", 0) == 0, within=2)


async def test_no_run_starts_after_shutdown_begins(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    await s.add_job(short, "interval", seconds=0.05, id="fast", max_instances=10)
    hold = await start_paused(s, long, "hold")  # keeps the grace period going
    await rec.wait(lambda: len(rec.of(EventType.SUBMITTED, "fast")) >= 3)
    began = datetime.now(UTC)
    took = await timed_shutdown(s, wait=True, grace=0.3)
    late = [e.run for e in rec.of(EventType.SUBMITTED) if e.run and e.run.started_at and e.run.started_at >= began]
    assert late == []
    assert 0.3 <= took < 0.4
    assert hold.state is RunState.CANCELLED
    fast = rec.final_runs("fast")
    assert fast and all(r.state is RunState.SUCCEEDED for r in fast)  # 0.1 s runs finish within the grace
    with pytest.raises(SchedulerNotRunning):
        await s.run_job("hold")


async def test_a_buffered_fire_is_cancelled_not_started(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    release = asyncio.Event()
    started: list[datetime] = []

    async def gate() -> None:
        started.append(clock.now())
        await release.wait()

    await s.add_job(gate, "interval", seconds=1, id="b", overlap="buffer_one")
    clock.advance(1)
    await rec.wait(lambda: len(started) == 1)
    clock.advance(1)
    await s.engine.wait_idle()
    closing = asyncio.ensure_future(s.shutdown(wait=True, grace=5))
    await rec.wait(lambda: bool(rec.of(EventType.CANCELLED, "b")))
    release.set()
    await closing
    assert len(started) == 1
    by_fire = {r.fire_time: r for r in rec.final_runs("b")}
    assert by_fire[START + timedelta(seconds=1)].state is RunState.SUCCEEDED
    queued = by_fire[START + timedelta(seconds=2)]
    assert queued.state is RunState.CANCELLED and queued.reason == "scheduler shut down before it started"


async def test_a_run_waiting_to_retry_ends_at_once(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()

    async def flaky() -> None:
        raise ConnectionError("down")

    record = await start_paused(s, flaky, "r", max_attempts=3, retry_delay=10)
    await rec.wait(lambda: bool(rec.of(EventType.RETRY, "r")))
    took = await timed_shutdown(s, wait=True, grace=5)
    assert took < 0.1
    assert record.state is RunState.FAILED and record.attempt == 1
    assert record.error == "ConnectionError: down"
    assert record.reason == "not retried: the scheduler is shutting down"


async def test_a_run_waiting_out_its_jitter_never_starts(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    ran: list[int] = []

    async def task() -> None:
        ran.append(1)

    await s.add_job(task, "interval", seconds=1, id="j", jitter=30)
    clock.advance(1)
    await s.engine.wait_idle()
    took = await timed_shutdown(s, wait=True, grace=5)
    assert took < 0.1
    assert ran == []
    assert [(r.state, r.reason) for r in rec.final_runs("j")] == [
        (RunState.CANCELLED, "scheduler shut down before it started")
    ]


async def test_shutdown_without_wait_cancels_at_once(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    release = threading.Event()

    def long_def() -> None:
        release.wait(5)

    runs = [await start_paused(s, long, "long"), await start_paused(s, long_def, "thread")]
    await rec.wait(lambda: len(rec.of(EventType.SUBMITTED)) == 2)
    try:
        took = await timed_shutdown(s, wait=False)
    finally:
        release.set()
    assert took < 0.05
    assert [(r.state, r.reason) for r in runs] == [
        (RunState.CANCELLED, "cancelled by scheduler shutdown (wait=False)")
    ] * 2
    await until(lambda: getattr(s.executors["threadpool"], "leaked", 0) == 0, within=2)


async def test_cancel_all_runs_ends_a_graceful_shutdown(make_scheduler: SchedulerFactory) -> None:
    """The CLI's second signal: the runs the grace period waits for are cancelled now."""
    s, rec = await make_scheduler()
    stop_seen = asyncio.Event()

    async def stubborn() -> None:  # sees the stop flag, and goes on anyway
        while True:
            if aiosched.should_stop():
                stop_seen.set()
            await asyncio.sleep(0.005)

    record = await start_paused(s, stubborn, "long")
    await rec.wait(lambda: bool(rec.of(EventType.SUBMITTED, "long")))
    began = time.monotonic()
    closing = asyncio.ensure_future(s.shutdown(wait=True, grace=None))
    await stop_seen.wait()
    assert s.cancel_all_runs("stopped by a second signal") == 1
    await closing
    assert time.monotonic() - began < 0.1
    assert record.state is RunState.CANCELLED and record.reason == "stopped by a second signal"


class Cleaned(BaseTask):
    cleaned: list[str] = []

    async def execute(self) -> None:
        await asyncio.sleep(10)

    def cleanup(self) -> None:
        Cleaned.cleaned.append("cleanup")


async def test_cleanup_runs_when_shutdown_cancels_a_task(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    Cleaned.cleaned.clear()
    record = await start_paused(s, Cleaned, "c")
    await rec.wait(lambda: bool(rec.of(EventType.SUBMITTED, "c")))
    await s.shutdown(wait=True, grace=0.05)
    assert record.state is RunState.CANCELLED
    assert Cleaned.cleaned == ["cleanup"]


# --------------------------------------------------------------------------- the stop flag


class Batches(BaseTask):
    """A batch job that checks the stop flag between batches."""

    started = threading.Event()

    async def execute(self) -> int:
        batches = 0
        Batches.started.set()
        while not self.should_stop():
            batches += 1
            await asyncio.sleep(0.01)
        return batches


async def async_batches(started: asyncio.Event) -> int:
    batches = 0
    started.set()
    while not aiosched.should_stop():
        batches += 1
        await asyncio.sleep(0.01)
    return batches


def def_batches(started: threading.Event) -> int:
    batches = 0
    started.set()
    while not aiosched.should_stop():
        batches += 1
        time.sleep(0.01)
    return batches


async def test_batch_tasks_see_the_stop_flag_and_return_early(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    Batches.started.clear()
    async_started = asyncio.Event()
    thread_started = threading.Event()
    runs = [
        await start_paused(s, Batches, "base_task"),
        await start_paused(s, async_batches, "async", args=[async_started]),
        await start_paused(s, def_batches, "def", args=[thread_started]),  # a def: on the thread pool
    ]
    await until(lambda: Batches.started.is_set() and async_started.is_set() and thread_started.is_set())
    assert not aiosched.should_stop()  # outside a run, and before shutdown
    took = await timed_shutdown(s, wait=True, grace=2)
    assert took < 0.1
    for record in runs:
        assert record.state is RunState.SUCCEEDED, record
        assert int(record.result or "0") >= 1
