"""Task decorators on plain def and async def."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from aiosched.decorators import log_execution, monitor_task, rate_limit, timeout
from aiosched.exceptions import SkipRun
from aiosched.executors import ThreadExecutor, is_async_callable

KINDS = ["sync", "async"]


def make(kind: str, body: Callable[..., Any]) -> Callable[..., Any]:
    """A task named ``task`` of the given kind that returns ``body(*args, **kwargs)``."""
    if kind == "sync":

        def task(*args: Any, **kwargs: Any) -> Any:
            """Task doc."""
            return body(*args, **kwargs)

        return task

    async def task(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
        """Task doc."""
        await asyncio.sleep(0)
        return body(*args, **kwargs)

    return task


async def invoke(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(func):
        return await func(*args, **kwargs)
    return func(*args, **kwargs)


def boom(*args: Any, **kwargs: Any) -> None:
    raise ValueError("it broke")


DECORATORS: list[tuple[str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
    ("monitor_task", monitor_task),
    ("monitor_task()", monitor_task()),
    ("monitor_task(name)", monitor_task(name="named")),
    ("monitor_task('name')", monitor_task("named")),
    ("rate_limit", rate_limit(5, 1)),
    ("timeout", timeout(1)),
    ("log_execution", log_execution),
    ("log_execution(level)", log_execution(level=logging.DEBUG)),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("label", "decorator"), DECORATORS, ids=[d[0] for d in DECORATORS])
async def test_wraps_keeps_metadata_and_async_ness(
    kind: str, label: str, decorator: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    original = make(kind, lambda x: x + 1)
    wrapped = decorator(original)
    assert wrapped.__name__ == "task"
    assert wrapped.__doc__ == "Task doc."
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(wrapped) is (kind == "async")
    assert is_async_callable(wrapped) is (kind == "async")
    assert await invoke(wrapped, 1) == 2


async def test_decorated_method_of_a_task_class() -> None:
    class Report:
        @monitor_task
        @log_execution
        async def execute(self, n: int) -> int:
            return n * 2

    assert is_async_callable(Report)
    assert await Report().execute(4) == 8


# --------------------------------------------------------------------------- monitor_task


@pytest.mark.parametrize("kind", KINDS)
async def test_monitor_task_logs_start_and_success(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosched.tasks")
    task = monitor_task(name="nightly")(make(kind, lambda: "ok"))
    assert await invoke(task) == "ok"
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "aiosched.tasks"]
    assert records[0] == (logging.DEBUG, "task nightly started")
    assert len(records) == 2
    level, message = records[1]
    assert level == logging.INFO
    assert message.startswith("task nightly succeeded in ")
    assert message.endswith("s")
    assert all(isinstance(arg, str | float) for arg in caplog.records[-1].args)  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", KINDS)
async def test_monitor_task_logs_and_reraises_failures(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiosched.tasks")
    task = monitor_task(make(kind, boom))
    with pytest.raises(ValueError, match="it broke"):
        await invoke(task)
    (record,) = [r for r in caplog.records if r.name == "aiosched.tasks"]
    assert record.levelno == logging.ERROR
    assert "failed in" in record.getMessage()
    assert "ValueError: it broke" in record.getMessage()
    assert record.exc_info is None  # no traceback here: the runner logs that once
    assert f"{__name__}:make.<locals>.task" in record.getMessage()  # default name: module:qualname


async def test_monitor_task_reports_skips_and_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiosched.tasks")

    @monitor_task("limited")
    @rate_limit(1, 60)
    def once() -> None:
        pass

    once()
    with pytest.raises(SkipRun):
        once()
    assert caplog.records[-1].levelno == logging.WARNING
    assert caplog.records[-1].getMessage().startswith("task limited skipped in ")
    assert "rate limit: 1 calls per 60s reached" in caplog.records[-1].getMessage()

    started = asyncio.Event()

    @monitor_task("waiter")
    async def wait() -> None:
        started.set()
        await asyncio.Event().wait()

    run = asyncio.create_task(wait())
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert caplog.records[-1].levelno == logging.WARNING
    assert caplog.records[-1].getMessage().startswith("task waiter cancelled after ")


def test_monitor_task_name_given_twice() -> None:
    with pytest.raises(TypeError, match="once"):
        monitor_task("a", name="b")


# --------------------------------------------------------------------------- rate_limit


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limit_skips_over_the_limit_then_allows_after_the_window(kind: str) -> None:
    calls: list[int] = []
    task = rate_limit(max_calls=3, time_window=0.2)(make(kind, calls.append))
    start = time.monotonic()
    for i in range(3):
        await invoke(task, i)
    with pytest.raises(SkipRun, match=r"^rate limit: 3 calls per 0\.2s reached$"):
        await invoke(task, 99)
    assert calls == [0, 1, 2]  # the refused call did not run
    await asyncio.sleep(0.2 - (time.monotonic() - start) + 0.02)
    await invoke(task, 3)
    assert calls == [0, 1, 2, 3]


async def test_rate_limit_window_is_per_function() -> None:
    limit = rate_limit(1, 60)
    first = limit(make("sync", lambda: 1))
    second = limit(make("sync", lambda: 2))
    assert first() == 1
    assert second() == 2
    with pytest.raises(SkipRun):
        first()


async def test_rate_limit_is_thread_safe() -> None:
    ran = 0
    lock = threading.Lock()

    @rate_limit(max_calls=100, time_window=60)
    def task() -> None:
        nonlocal ran
        with lock:
            ran += 1

    skipped = 0
    skipped_lock = threading.Lock()

    def hammer() -> None:
        nonlocal skipped
        for _ in range(50):
            try:
                task()
            except SkipRun:
                with skipped_lock:
                    skipped += 1

    executor = ThreadExecutor(8)
    await asyncio.gather(*(executor.call(hammer, (), {}, timeout=10) for _ in range(8)))
    assert (ran, skipped) == (100, 300)


@pytest.mark.parametrize(
    ("max_calls", "time_window"), [(0, 1), (-1, 1), (1.5, 1), (True, 1), (1, 0), (1, -2), (1, float("inf")), (1, "1")]
)
def test_rate_limit_validates_arguments(max_calls: Any, time_window: Any) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        rate_limit(max_calls, time_window)


# --------------------------------------------------------------------------- timeout


async def test_timeout_cancels_an_async_function() -> None:
    cleaned_up = asyncio.Event()

    @timeout(0.1)
    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        finally:
            cleaned_up.set()

    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0\.1s"):
        await slow()
    assert 0.09 <= time.monotonic() - start < 0.4
    assert cleaned_up.is_set()


def test_timeout_abandons_a_sync_function_in_its_helper_thread() -> None:
    release = threading.Event()
    finished = threading.Event()

    @timeout(0.1)
    def stuck() -> None:
        release.wait(5)
        finished.set()

    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=r"timed out after 0\.1s"):
            stuck()
        assert 0.09 <= time.monotonic() - start < 0.4
        assert not finished.is_set()  # the helper thread keeps running
    finally:
        release.set()
    assert finished.wait(2)


@pytest.mark.parametrize("kind", KINDS)
async def test_timeout_passes_results_and_exceptions_through(kind: str) -> None:
    assert await invoke(timeout(1)(make(kind, lambda a, b=0: a + b)), 1, b=2) == 3
    with pytest.raises(ValueError, match="it broke"):
        await invoke(timeout(1)(make(kind, boom)))

    def own_timeout() -> None:
        raise TimeoutError("upstream")

    with pytest.raises(TimeoutError, match=r"^upstream$"):
        await invoke(timeout(1)(make(kind, own_timeout)))


def test_timeout_sync_helper_thread_sees_context_variables() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("visible")

    @timeout(1)
    def read() -> tuple[str, str]:
        return var.get(), threading.current_thread().name

    value, thread_name = read()
    assert value == "visible"
    assert thread_name.startswith("aiosched-timeout:")


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), None, True])
def test_timeout_validates_seconds(seconds: Any) -> None:
    with pytest.raises(ValueError, match="timeout: seconds must be a positive number"):
        timeout(seconds)


# --------------------------------------------------------------------------- log_execution

SECRET = "hunter2-s3cr3t"


@pytest.mark.parametrize("kind", KINDS)
async def test_log_execution_logs_counts_and_result_type_never_values(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    task = log_execution(make(kind, lambda *a, **k: {"token": "x"}))
    assert await invoke(task, SECRET, "b", password=SECRET) == {"token": "x"}
    messages = [r.getMessage() for r in caplog.records if r.name == "aiosched.tasks"]
    assert len(messages) == 2
    assert "calling" in messages[0]
    assert "make.<locals>.task" in messages[0]
    assert "2 positional and 1 keyword argument(s)" in messages[0]
    assert "returned dict in" in messages[1]
    assert SECRET not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
async def test_log_execution_logs_exceptions_and_reraises(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    custom = logging.getLogger("my.tasks")
    task = log_execution(level=logging.DEBUG, logger=custom)(make(kind, boom))
    with pytest.raises(ValueError, match="it broke"):
        await invoke(task, SECRET, token=SECRET)
    records = [r for r in caplog.records if r.name == "my.tasks"]
    assert [r.levelno for r in records] == [logging.DEBUG, logging.ERROR]
    assert "raised ValueError" in records[1].getMessage()
    assert "it broke" in records[1].getMessage()
    assert SECRET not in caplog.text


def test_stack_as_in_the_original_system(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiosched.tasks")

    @monitor_task("enhanced_data_process")
    @rate_limit(max_calls=5, time_window=60)
    @timeout(5)
    @log_execution()
    def run() -> dict[str, int]:
        return {"processed_records": 1000}

    assert run() == {"processed_records": 1000}
    assert run.__name__ == "run"
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1].startswith("task enhanced_data_process succeeded in ")
    assert any("returned dict" in m for m in messages)
