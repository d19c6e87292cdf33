"""add_job's hot path: what it shares between schedules, what it copies, and what it costs."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from aiosched import FakeClock, ScheduleError, Scheduler, TriggerError
from aiosched.models import EMPTY_KWARGS
from aiosched.triggers import TriggerSpec

from .conftest import START, SchedulerFactory


async def noop(*args: object, **kwargs: object) -> None:
    pass


async def test_no_kwargs_share_one_empty_mapping(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    a = await s.add_job(noop, "date", run_date=START, id="a")
    b = await s.add_job(noop, "date", run_date=START, id="b", kwargs={})
    assert a.kwargs is EMPTY_KWARGS and b.kwargs is EMPTY_KWARGS
    given = {"x": 1}
    c = await s.add_job(noop, "date", run_date=START, id="c", kwargs=given, args=[1, 2])
    given["x"] = 2  # the schedule has its own read-only copy
    assert c.kwargs == {"x": 1} and isinstance(c.kwargs, MappingProxyType) and c.args == (1, 2)


async def test_the_trigger_and_the_first_fire_time_see_one_instant(
    make_scheduler: SchedulerFactory, clock: FakeClock
) -> None:
    s, _ = await make_scheduler(clock=clock)
    once = await s.add_job(noop, id="now")  # no trigger: a date trigger at "now"
    assert once.next_fire_time == START
    assert once.trigger.spec == TriggerSpec("date", {"run_date": START.isoformat()}, "UTC")
    every = await s.add_job(noop, "interval", minutes=5, id="every")
    assert every.next_fire_time == START + timedelta(minutes=5)
    assert every.trigger.spec is not None and every.trigger.spec.args["start_date"] == every.next_fire_time.isoformat()


async def test_options_and_trigger_arguments_are_told_apart(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    start = datetime(2030, 1, 1, 8, tzinfo=ZoneInfo("Asia/Shanghai"))
    job = await s.add_job(
        noop, "interval", seconds=1, start_date=start, id="i", misfire_grace_time=None, coalesce=False, args=(1,)
    )
    assert job.policy.misfire_grace_time is None and job.policy.catchup.value == "all"
    assert job.trigger.spec == TriggerSpec("interval", {"seconds": 1, "start_date": start.isoformat()}, "UTC")
    assert job.next_fire_time == datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC)  # the first one after now
    with pytest.raises(TriggerError, match="unknown argument") as info:
        await s.add_job(noop, "date", run_date=START, id="bad", coalesce=False, hour=1)
    assert info.value.field == "hour"
    with pytest.raises(ScheduleError, match="true or false"):
        await s.add_job(noop, "date", run_date=START, id="bad", coalesce=1)
    with pytest.raises(ScheduleError, match="unknown option"):
        await s.add_job(noop, object(), id="bad", seconds=1)
    assert [j.id for j in await s.get_jobs()] == ["i"]


async def test_a_date_schedule_costs_little_memory() -> None:
    s = Scheduler(timezone="UTC", clock=FakeClock(START))
    due = START + timedelta(hours=1)
    ids = [f"job-{i}" for i in range(2000)]
    await s.add_job(noop, "date", run_date=due, id="warm-up", misfire_grace_time=None)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in ids:
            await s.add_job(noop, "date", run_date=due, id=i, misfire_grace_time=None)
        gc.collect()
        per_schedule = (tracemalloc.get_traced_memory()[0] - before) / len(ids)
    finally:
        tracemalloc.stop()
        await s.shutdown()
    # about 430 B now (Schedule, trigger, index entry, heap item, dict slot); 900 B before
    assert per_schedule < 600, per_schedule
