"""The runner's common path (a plain ``async def``: one coroutine per fire) and the async executor's slots.

A plain ``async def`` without timeout, retries or jitter runs in one coroutine instead of the
general chain; these tests pin down that it behaves like the general path in every outcome,
that runs are isolated from each other's context variables, and that a run cancelled before
its task took a first step still ends with a final record.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from aiosched import RunState, SkipRun, should_stop
from aiosched.executors import AsyncExecutor, _Slots

from .conftest import SchedulerFactory

_seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


async def ok() -> int:
    return 42


async def boom() -> None:
    raise ValueError("boom")


async def skip() -> None:
    raise SkipRun("nothing to do")


async def sets_var(value: str) -> str:
    before = _seen.get()
    _seen.set(value)
    await asyncio.sleep(0)
    return before


_gate: dict[str, asyncio.Event] = {}


async def stops_when_told() -> bool:
    _gate["started"].set()
    await _gate["go"].wait()
    return should_stop()


@pytest.mark.parametrize(
    ("func", "state", "field", "text"),
    [
        (ok, RunState.SUCCEEDED, "result", "42"),
        (boom, RunState.FAILED, "error", "ValueError: boom"),
        (skip, RunState.SKIPPED, "reason", "nothing to do"),
    ],
)
async def test_plain_async_def_outcomes(
    make_scheduler: SchedulerFactory, func: object, state: RunState, field: str, text: str
) -> None:
    s, _ = await make_scheduler()
    await s.add_job(func, id="job", paused=True)
    record = await s.run_job("job", wait=True)
    assert record.state is state
    assert getattr(record, field) == text
    assert record.attempt == 1
    assert record.started_at is not None and record.ended_at is not None
    assert s.running_count("job") == 0


async def test_runs_do_not_share_context_variables(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    await s.add_job(sets_var, id="a", args=("a",), paused=True)
    await s.add_job(sets_var, id="b", args=("b",), paused=True)
    first = await s.run_job("a", wait=True)
    second = await s.run_job("b", wait=True)
    assert (first.result, second.result) == ("'unset'", "'unset'")  # b did not see what a set


async def test_should_stop_is_seen_by_a_plain_run(make_scheduler: SchedulerFactory) -> None:
    _gate.update(started=asyncio.Event(), go=asyncio.Event())
    s, _ = await make_scheduler()
    await s.add_job(stops_when_told, id="job", paused=True)
    record = await s.run_job("job")
    await _gate["started"].wait()
    shutdown = asyncio.create_task(s.shutdown(wait=True, grace=5))
    await asyncio.sleep(0)  # shutdown raised the stop flag before its first await
    _gate["go"].set()
    await shutdown
    assert record.state is RunState.SUCCEEDED
    assert record.result == "True"


async def test_a_run_cancelled_before_its_first_step_still_ends_cancelled(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    await s.add_job(ok, id="job", paused=True)
    record = await s.run_job("job")  # its task exists but has not run a single step yet
    assert s.cancel_all_runs("cancelled at once") == 1
    await rec.wait_runs(1, "job")
    assert record.state is RunState.CANCELLED
    assert record.reason == "cancelled at once"
    assert record.attempt == 0
    assert s.running_count("job") == 0
    assert s.running_counts() == {}


async def test_slots_are_handed_over_in_arrival_order() -> None:
    slots = _Slots(1)
    assert slots.take_now()
    assert not slots.take_now()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await slots.take()
        order.append(n)
        await asyncio.sleep(0)
        slots.give()

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    slots.give()
    assert not slots.take_now()  # the freed slot went to the first waiter, not to a newcomer
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert slots.take_now()


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = _Slots(1)
    assert slots.take_now()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # handed to ``first`` ...
    first.cancel()  # ... which is cancelled before it resumes: ``second`` gets the slot
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert not slots.take_now()
    slots.give()
    assert slots.take_now()


async def test_async_executor_limit_holds_on_the_plain_path() -> None:
    executor = AsyncExecutor(limit=2)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    calls = [asyncio.create_task(executor.call_plain(work, (), {})) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert (running, executor.active) == (2, 2)
    release.set()
    await asyncio.gather(*calls)
    assert peak == 2
    assert executor.active == 0
