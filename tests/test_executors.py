"""Executors with real coroutines, real threads and real worker processes."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosched.exceptions import FatalError, RetryableError, ScheduleError, SkipRun
from aiosched.executors import (
    AsyncExecutor,
    Executor,
    ProcessExecutor,
    ThreadExecutor,
    build_executors,
    is_async_callable,
)
from tests.conftest import pid_alive

from . import _proc_tasks

REF = "tests._proc_tasks"


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> float:
    """Poll ``predicate`` until true; return how long it took (fails after ``within`` seconds)."""
    start = time.monotonic()
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.005)
    return time.monotonic() - start


def worker_children() -> list[int]:
    """Pids of this process's anyio worker processes (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == os.getpid() and (b"anyio.to_process" in cmdline or stat.rpartition(")")[2].split()[0] == "Z"):
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    """After each test (its event loop closed), no worker process of ours may remain."""
    yield
    deadline = time.monotonic() + 5
    while worker_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker_children() == []


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


# --------------------------------------------------------------------------- wiring


def test_build_executors_names_and_limits() -> None:
    executors = build_executors(async_limit=7, thread_limit=3, process_limit=2)
    assert set(executors) == {"default", "async", "threadpool", "processpool"}
    assert executors["async"] is executors["default"]
    assert [
        (e.name, e.kind, e.limit) for e in (executors["default"], executors["threadpool"], executors["processpool"])
    ] == [
        ("default", "async", 7),
        ("threadpool", "thread", 3),
        ("processpool", "process", 2),
    ]
    assert all(e.active == 0 for e in executors.values())


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_limits_must_be_positive_integers(limit: Any) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        build_executors(thread_limit=limit)


async def _coro_func() -> None:
    pass


def _sync_func() -> None:
    pass


class _AsyncCall:
    async def __call__(self) -> None:
        pass


class _SyncCall:
    def __call__(self) -> None:
        pass


class _AsyncTask:
    async def execute(self) -> str:
        return "async task"


class _SyncTask:
    def execute(self) -> str:
        return "sync task"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_coro_func, True),
        (_sync_func, False),
        (functools.partial(functools.partial(_coro_func)), True),
        (functools.partial(_sync_func), False),
        (_AsyncCall(), True),
        (_SyncCall(), False),
        (_AsyncCall, False),  # calling the class builds an instance
        (_AsyncTask, True),
        (_SyncTask, False),
        (_AsyncTask().execute, True),
        (len, False),
        (None, False),
    ],
)
def test_is_async_callable(obj: Any, expected: bool) -> None:
    assert is_async_callable(obj) is expected


def test_executors_satisfy_the_protocol() -> None:
    executors: list[Executor] = [AsyncExecutor(), ThreadExecutor(), ProcessExecutor()]
    assert [e.kind for e in executors] == ["async", "thread", "process"]


# --------------------------------------------------------------------------- async


async def test_async_concurrency_never_exceeds_the_limit() -> None:
    executor = AsyncExecutor(3)
    in_flight = peak = 0
    seen_active: list[int] = []

    async def task(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        seen_active.append(executor.active)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return i

    results = await asyncio.gather(*(executor.call(task, (i,), {}, timeout=5) for i in range(20)))
    assert results == list(range(20))
    assert peak == 3
    assert max(seen_active) == 3
    assert executor.active == 0


async def test_async_timeout_cancels_the_coroutine() -> None:
    executor = AsyncExecutor(2)
    cancelled = asyncio.Event()
    cleaned_up = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            cleaned_up.set()

    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0\.1s"):
        await executor.call(slow, (), {}, timeout=0.1, task_ref="pkg.mod:slow")
    assert 0.09 <= time.monotonic() - start < 0.5
    assert cancelled.is_set()
    assert cleaned_up.is_set()
    assert executor.active == 0


async def test_async_task_raising_timeouterror_itself_is_not_translated() -> None:
    async def own_timeout() -> None:
        raise TimeoutError("upstream took too long")

    with pytest.raises(TimeoutError, match="upstream took too long"):
        await AsyncExecutor().call(own_timeout, (), {}, timeout=5)


async def test_async_caller_cancellation_propagates() -> None:
    executor = AsyncExecutor()
    started = asyncio.Event()

    async def wait_forever() -> None:
        started.set()
        await asyncio.Event().wait()

    run = asyncio.create_task(executor.call(wait_forever, (), {}, timeout=None))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert executor.active == 0


async def test_async_executor_refuses_a_plain_def() -> None:
    with pytest.raises(ScheduleError, match="not a coroutine function"):
        await AsyncExecutor().call(_sync_func, (), {}, timeout=None)


async def test_async_executor_runs_task_classes_and_partials() -> None:
    executor = AsyncExecutor()
    assert await executor.call(_AsyncTask, (), {}, timeout=1) == "async task"

    async def add(a: int, b: int) -> int:
        return a + b

    assert await executor.call(functools.partial(add, 1), (2,), {}, timeout=1) == 3
    assert await executor.call(add, (), {"a": 1, "b": 4}, timeout=1) == 5


async def test_sys_exit_in_an_async_task_becomes_runtimeerror() -> None:
    async def bye() -> None:
        raise SystemExit(2)

    with pytest.raises(RuntimeError, match=r"sys.exit\(2\)"):
        await AsyncExecutor().call(bye, (), {}, timeout=1)


# --------------------------------------------------------------------------- thread


async def test_thread_concurrency_never_exceeds_the_limit() -> None:
    executor = ThreadExecutor(3)
    lock = threading.Lock()
    in_flight = peak = 0

    def task(i: int) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return i

    results = await asyncio.gather(*(executor.call(task, (i,), {}, timeout=5) for i in range(12)))
    assert results == list(range(12))
    assert peak == 3
    assert executor.active == 0


async def test_blocking_thread_task_does_not_block_the_loop() -> None:
    executor = ThreadExecutor(2)
    beats: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        while not stop.is_set():
            beats.append(time.monotonic())
            await asyncio.sleep(0.005)

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.02)

    def nap() -> str:
        time.sleep(0.3)
        return "slept"

    assert await executor.call(nap, (), {}, timeout=5) == "slept"
    stop.set()
    await beat
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert len(beats) > 20
    assert max(gaps) < 0.05


async def test_thread_timeout_abandons_the_thread_and_frees_the_slot(caplog: pytest.LogCaptureFixture) -> None:
    executor = ThreadExecutor(1)
    release = threading.Event()
    finished = threading.Event()

    def stuck() -> str:
        try:
            release.wait(5)
            return "late"
        finally:
            finished.set()

    caplog.set_level(logging.INFO, logger="aiosched.executors")
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="abandoned and keeps running"):
            await executor.call(stuck, (), {}, timeout=0.2, task_ref="pkg.mod:stuck")
        elapsed = time.monotonic() - start
        assert 0.19 <= elapsed < 0.4
        assert executor.leaked == 1
        assert executor.active == 0

        # the only slot is free at once, though the abandoned thread still runs
        start = time.monotonic()
        assert await executor.call(lambda: "next", (), {}, timeout=1) == "next"
        assert time.monotonic() - start < 0.1
        assert not finished.is_set()

        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "pkg.mod:stuck" in warnings[0].getMessage()
        assert "abandoned and keeps running" in warnings[0].getMessage()
    finally:
        release.set()
    await wait_until(lambda: executor.leaked == 0, within=2)
    assert finished.is_set()
    assert any("finished" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


async def test_thread_caller_cancellation_abandons_the_thread() -> None:
    executor = ThreadExecutor(1)
    started = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(5)

    run = asyncio.create_task(executor.call(stuck, (), {}, timeout=None))
    try:
        await wait_until(started.is_set)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert executor.leaked == 1
        assert executor.active == 0
    finally:
        release.set()
    await wait_until(lambda: executor.leaked == 0, within=2)


async def test_waiting_for_a_thread_slot_is_not_part_of_the_timeout() -> None:
    executor = ThreadExecutor(1)
    release = threading.Event()
    blocker = asyncio.create_task(executor.call(release.wait, (5,), {}, timeout=None))
    await wait_until(lambda: executor.active == 1)
    asyncio.get_running_loop().call_later(0.2, release.set)
    start = time.monotonic()
    assert await executor.call(lambda: "ran", (), {}, timeout=0.1) == "ran"
    assert time.monotonic() - start >= 0.15
    assert await blocker is True
    assert executor.leaked == 0


async def test_cancelled_while_waiting_for_a_thread_slot_never_runs() -> None:
    executor = ThreadExecutor(1)
    release = threading.Event()
    ran: list[str] = []
    blocker = asyncio.create_task(executor.call(release.wait, (5,), {}, timeout=None))
    await wait_until(lambda: executor.active == 1)
    queued = asyncio.create_task(executor.call(ran.append, ("queued",), {}, timeout=None))
    await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    release.set()
    await blocker
    assert ran == []
    assert executor.leaked == 0


def test_a_thread_call_abandoned_before_it_started_is_skipped() -> None:
    # the race where the caller gives up just as a worker thread picks the call up
    from aiosched.executors import _ThreadCall

    executor = ThreadExecutor(1)
    state = _ThreadCall()
    state.abandoned = True
    ran: list[int] = []
    assert executor._run_in_thread(state, "t", ran.append, (1,), {}) is None
    assert ran == []
    assert not state.started


async def test_thread_runs_a_coroutine_function_in_its_own_loop() -> None:
    async def in_thread(x: int) -> tuple[int, bool]:
        await asyncio.sleep(0)
        return x * 2, threading.current_thread() is threading.main_thread()

    assert await ThreadExecutor().call(in_thread, (4,), {}, timeout=5) == (8, False)
    assert await ThreadExecutor().call(_AsyncTask, (), {}, timeout=5) == "async task"


async def test_context_variables_reach_the_thread() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("run-42")

    def read() -> tuple[str, bool]:
        return request_id.get(), threading.current_thread() is threading.main_thread()

    assert await ThreadExecutor().call(read, (), {}, timeout=1) == ("run-42", False)


async def test_thread_exceptions_task_classes_and_sys_exit() -> None:
    executor = ThreadExecutor()
    assert await executor.call(_SyncTask, (), {}, timeout=1) == "sync task"
    with pytest.raises(ValueError, match="boom"):
        await executor.call(_proc_tasks.fail, ("boom",), {}, timeout=1)
    with pytest.raises(RuntimeError, match=r"sys.exit\(3\)"):
        await executor.call(_proc_tasks.exit_worker, (), {}, timeout=1)
    assert executor.active == 0


# --------------------------------------------------------------------------- process


async def test_process_returns_results_of_functions_coroutines_and_classes() -> None:
    executor = ProcessExecutor(2)
    assert await executor.call(_proc_tasks.square_sum, (1000,), {}, timeout=20, task_ref=f"{REF}:square_sum") == sum(
        i * i for i in range(1000)
    )
    assert await executor.call(_proc_tasks.noop, (21,), {}, timeout=20, task_ref=f"{REF}:double_later") == 42
    total, pid = await executor.call(_proc_tasks.noop, (2,), {"b": 3}, timeout=20, task_ref=f"{REF}:Adder")
    assert total == 5
    assert pid != os.getpid()
    assert (
        await executor.call(_proc_tasks.noop, ("ann",), {}, timeout=20, task_ref=f"{REF}:AsyncGreeter") == "hello ann"
    )
    assert await executor.call(_proc_tasks.noop, (), {}, timeout=20, task_ref=f"{REF}:Namespace.Inner.value") == "inner"
    assert executor.active == 0


async def test_process_timeout_kills_the_worker(tmp_path: Path) -> None:
    executor = ProcessExecutor(1)
    pid_file = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="worker process was killed"):
        await executor.call(_proc_tasks.spin, (str(pid_file),), {}, timeout=1, task_ref=f"{REF}:spin")
    assert 1.0 <= time.monotonic() - start < 2.0
    pid = int(pid_file.read_text())
    await wait_until(lambda: not pid_alive(pid), within=2)
    assert executor.active == 0
    # the executor still works: a fresh worker replaces the killed one
    assert await executor.call(_proc_tasks.getpid, (), {}, timeout=20, task_ref=f"{REF}:getpid") != pid


async def test_process_caller_cancellation_kills_the_worker(tmp_path: Path) -> None:
    executor = ProcessExecutor(1)
    pid_file = tmp_path / "pid"
    run = asyncio.create_task(
        executor.call(_proc_tasks.noop, (str(pid_file),), {}, timeout=None, task_ref=f"{REF}:spin")
    )
    await wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", within=20)
    pid = int(pid_file.read_text())
    assert pid_alive(pid)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await wait_until(lambda: not pid_alive(pid), within=2)
    assert executor.active == 0


async def test_process_concurrency_never_exceeds_the_limit() -> None:
    executor = ProcessExecutor(2)
    results = await asyncio.gather(
        *(executor.call(_proc_tasks.noop, (0.2,), {}, timeout=20, task_ref=f"{REF}:hold") for _ in range(6))
    )
    assert max_overlap([(start, end) for _, start, end in results]) == 2
    assert len({pid for pid, _, _ in results}) <= 2


async def test_process_needs_a_task_reference() -> None:
    with pytest.raises(ScheduleError, match="no importable reference"):
        await ProcessExecutor().call(_proc_tasks.noop, (), {}, timeout=1)
    with pytest.raises(ScheduleError, match="not of the form"):
        await ProcessExecutor().call(_proc_tasks.noop, (), {}, timeout=1, task_ref="tests._proc_tasks.noop")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("tests.no_such_module:run", r"cannot import module 'tests.no_such_module': ModuleNotFoundError"),
        (f"{REF}:no_such_function", r"has no attribute 'no_such_function'"),
        (f"{REF}:Namespace.Missing", r"has no attribute 'Namespace.Missing'"),
    ],
)
async def test_process_unimportable_task_reference(ref: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as info:
        await ProcessExecutor().call(_proc_tasks.noop, (), {}, timeout=20, task_ref=ref)
    assert ref in str(info.value)
    assert info.value.field == "task"


async def test_process_task_exceptions_come_back() -> None:
    executor = ProcessExecutor(1)
    with pytest.raises(ValueError, match="bad input") as info:
        await executor.call(_proc_tasks.noop, ("bad input",), {}, timeout=20, task_ref=f"{REF}:fail")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Traceback in the worker process" in notes
    assert "in fail" in notes


@pytest.mark.parametrize(("kind", "error"), [("skip", SkipRun), ("retry", RetryableError), ("fatal", FatalError)])
async def test_process_steering_exceptions_keep_their_type(kind: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        await ProcessExecutor(1).call(_proc_tasks.steer, (kind,), {}, timeout=20, task_ref=f"{REF}:steer")
    assert str(info.value) == f"steered: {kind}"  # the worker traceback is a note, not part of the message


@pytest.mark.parametrize(
    ("ref", "args", "message"),
    [
        ("fail_unpicklable", (), r"raised TwoArgError: left/right \(the exception cannot be pickled"),
        ("unpicklable_result", (), r"returned a lock that cannot be pickled"),
        ("noop", (threading.Lock(),), r"arguments cannot be pickled"),
        ("exit_worker", (), r"called sys.exit\(3\)"),
        ("die", (), r"worker process running task .*die.* died"),
    ],
)
async def test_process_failures_name_the_task(ref: str, args: tuple[Any, ...], message: str) -> None:
    task_ref = f"{REF}:{ref}"
    with pytest.raises(RuntimeError, match=message) as info:
        await ProcessExecutor(1).call(_proc_tasks.noop, args, {}, timeout=20, task_ref=task_ref)
    assert task_ref in str(info.value)


def test_no_worker_outlives_the_event_loop() -> None:
    async def main() -> list[int]:
        executor = ProcessExecutor(2)
        pids = await asyncio.gather(
            *(executor.call(_proc_tasks.noop, (), {}, timeout=20, task_ref=f"{REF}:getpid") for _ in range(2))
        )
        await executor.shutdown()
        assert all(pid_alive(pid) for pid in pids)  # idle workers wait for the next call
        return list(pids)

    pids = asyncio.run(main())
    deadline = time.monotonic() + 5
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(pid_alive(pid) for pid in pids)


def test_call_in_worker_runs_in_process_too() -> None:
    # the worker-side helper is a plain function: check it without a process
    from aiosched.executors import _call_in_worker

    assert _call_in_worker(f"{REF}:Adder", (1,), {"b": 1})[0] == 2
    assert _call_in_worker(f"{REF}:double_later", (4,), {}) == 8
    assert inspect.isfunction(_proc_tasks.spin)
