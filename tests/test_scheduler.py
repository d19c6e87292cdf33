"""The Scheduler's public operations, on the memory store, with a fake clock."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aiosched import (
    ConflictingIdError,
    EventType,
    FakeClock,
    RunState,
    ScheduleError,
    ScheduleNotFound,
    Scheduler,
    SchedulerNotRunning,
    TriggerError,
)

from .conftest import START, SchedulerFactory

calls: list[str] = []


async def async_task(tag: str = "async") -> str:
    calls.append(tag)
    return tag


def sync_task(tag: str = "sync") -> str:
    calls.append(tag)
    return tag


class Holder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def method(self, value: int) -> None:
        self.seen.append(value)


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


async def test_add_and_get_job(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    job = await s.add_job(async_task, "interval", seconds=10, id="a", kwargs={"tag": "x"}, max_instances=2)
    assert job.id == "a"
    assert job.next_fire_time == START + timedelta(seconds=10)
    assert job.policy.max_instances == 2
    assert job.task_ref == "tests.test_scheduler:async_task"
    got = await s.get_job("a")
    assert got.kwargs == {"tag": "x"}
    assert [e.schedule_id for e in rec.of(EventType.ADDED)] == ["a"]


async def test_get_jobs_orders_by_next_fire_time(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    await s.add_job(async_task, "interval", seconds=30, id="late")
    await s.add_job(async_task, "interval", seconds=5, id="soon")
    await s.add_job(async_task, "interval", seconds=1, id="paused", paused=True)
    assert [j.id for j in await s.get_jobs()] == ["soon", "late", "paused"]
    paused = await s.get_job("paused")
    assert paused.next_run_time is None


async def test_duplicate_id_is_refused_and_state_unchanged(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    await s.add_job(async_task, "interval", seconds=10, id="a")
    with pytest.raises(ConflictingIdError, match="'a'"):
        await s.add_job(sync_task, "interval", seconds=99, id="a")
    job = await s.get_job("a")
    assert job.func is async_task
    replaced = await s.add_job(sync_task, "interval", seconds=99, id="a", replace_existing=True)
    assert replaced.func is sync_task
    assert len(await s.get_jobs()) == 1


@pytest.mark.parametrize(
    ("trigger", "args", "field"),
    [
        ("cronn", {"hour": 1}, None),
        ("cron", {"hour": 25}, "hour"),
        ("cron", {"day_of_week": "funday"}, "day_of_week"),
        ("interval", {"seconds": -5}, "seconds"),
    ],
)
async def test_bad_trigger_names_schedule_and_field(
    make_scheduler: SchedulerFactory, clock: FakeClock, trigger: str, args: dict[str, object], field: str | None
) -> None:
    s, _ = await make_scheduler(clock=clock)
    with pytest.raises(TriggerError) as info:
        await s.add_job(async_task, trigger, id="bad", **args)
    assert info.value.field == field
    assert "'bad'" in str(info.value)
    assert await s.get_jobs() == []


async def test_unknown_trigger_suggests_the_closest(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    with pytest.raises(TriggerError, match="cron"):
        await s.add_job(async_task, "cronn", id="bad", hour=1)


@pytest.mark.parametrize(
    ("func", "options", "match"),
    [
        (42, {}, "callable"),
        ("tests.test_scheduler:nothing_here", {}, "nothing_here"),
        ("no_such_module_xyz:f", {}, "no_such_module_xyz"),
        (async_task, {"executor": "gpu"}, "unknown executor 'gpu'"),
        (async_task, {"timeout": -1}, "timeout"),
        (async_task, {"max_instances": "three"}, "max_instances"),
        (async_task, {"overlap": "sometimes"}, "overlap"),
        (lambda: None, {"executor": "processpool"}, "worker process"),
    ],
)
async def test_bad_task_or_policy_is_refused(
    make_scheduler: SchedulerFactory, clock: FakeClock, func: object, options: dict[str, object], match: str
) -> None:
    s, _ = await make_scheduler(clock=clock)
    with pytest.raises(ScheduleError, match=match) as info:
        await s.add_job(func, "interval", seconds=1, id="bad", **options)  # type: ignore[arg-type]
    assert "'bad'" in str(info.value)
    assert await s.get_jobs() == []


async def test_every_kind_of_callable_runs(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    holder = Holder()
    await s.add_job(async_task, "date", run_date=START + timedelta(seconds=1), id="coro", args=["coro"])
    await s.add_job(sync_task, "date", run_date=START + timedelta(seconds=1), id="def", args=["def"])
    await s.add_job(functools.partial(async_task, "partial"), "date", run_date=START + timedelta(seconds=1), id="p")
    await s.add_job(holder.method, "date", run_date=START + timedelta(seconds=1), id="bound", args=[7])
    await s.add_job(
        "tests.test_scheduler:sync_task", "date", run_date=START + timedelta(seconds=1), id="ref", args=["ref"]
    )
    clock.advance(1)
    await rec.wait_runs(5)
    assert sorted(calls) == ["coro", "def", "partial", "ref"]
    assert holder.seen == [7]
    assert set(rec.states()) == {RunState.SUCCEEDED}
    runs = await s.get_runs(schedule_id="def")
    assert runs[0].result == "'def'"


async def test_modify_job_changes_policy_and_args(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(async_task, "interval", seconds=5, id="a", args=["old"])
    job = await s.modify_job("a", args=["new"], max_instances=4, name="renamed")
    assert job.args == ("new",) and job.policy.max_instances == 4 and job.name == "renamed"
    assert job.next_fire_time == START + timedelta(seconds=5)
    with pytest.raises(ScheduleError):
        await s.modify_job("a", max_instances=0)
    assert (await s.get_job("a")).policy.max_instances == 4
    clock.advance(5)
    await rec.wait_runs(1)
    assert calls == ["new"]
    with pytest.raises(ScheduleNotFound):
        await s.modify_job("zzz", name="x")


async def test_reschedule_job(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    await s.add_job(async_task, "interval", seconds=5, id="a")
    job = await s.reschedule_job("a", "cron", hour=9, minute=30)
    assert job.next_fire_time == datetime(2030, 1, 1, 9, 30, tzinfo=UTC)


async def test_remove_job(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(async_task, "interval", seconds=1, id="a")
    await s.remove_job("a")
    with pytest.raises(ScheduleNotFound):
        await s.get_job("a")
    with pytest.raises(ScheduleNotFound):
        await s.remove_job("a")
    clock.advance(3)
    await s.engine.wait_idle()
    assert calls == [] and rec.of(EventType.REMOVED)


async def test_pause_then_resume_does_not_burst(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(async_task, "interval", seconds=1, id="a")
    clock.advance(1)
    await rec.wait_runs(1)
    await s.pause_job("a")
    clock.advance(10)
    await s.engine.wait_idle()
    assert len(calls) == 1
    job = await s.resume_job("a")
    # the fires of the paused period are dropped: the next one is the first at or after now
    assert job.next_fire_time == START + timedelta(seconds=11)
    clock.advance(1)
    await rec.wait_runs(2)
    await s.engine.wait_idle()
    assert len(calls) == 2
    assert [e.type for e in rec.events if e.type in ("paused", "resumed")] == ["paused", "resumed"]


async def test_run_job_now(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock)
    await s.add_job(async_task, "cron", hour=23, id="a", args=["now"])
    record = await s.run_job("a", wait=True)
    assert record.state is RunState.SUCCEEDED and record.manual
    assert calls == ["now"]
    assert (await s.get_job("a")).next_fire_time == datetime(2030, 1, 1, 23, tzinfo=UTC)


async def test_run_job_needs_running_scheduler(clock: FakeClock) -> None:
    s = Scheduler(timezone="UTC", clock=clock)
    await s.add_job(async_task, "interval", seconds=1, id="a")
    with pytest.raises(SchedulerNotRunning):
        await s.run_job("a")
    await s.shutdown()


async def test_jobs_added_before_start_fire_after_start(clock: FakeClock) -> None:
    s = Scheduler(timezone="UTC", clock=clock)
    await s.add_job(async_task, "interval", seconds=1, id="a")
    async with s:
        clock.advance(1)
        done = await s.get_runs(schedule_id="a")
        while not done or not done[0].state.is_final:
            await s.engine.wait_idle()
            done = await s.get_runs(schedule_id="a")
    assert calls == ["async"]
    assert not s.running


async def test_next_fire_times_preview(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _ = await make_scheduler(clock=clock, timezone="Asia/Shanghai")
    await s.add_job(async_task, "cron", hour=9, minute=0, day_of_week="mon-fri", id="report")
    times = await s.next_fire_times("report", 5)
    assert len(times) == 5
    local = [t.astimezone(ZoneInfo("Asia/Shanghai")) for t in times]
    assert all(t.hour == 9 and t.minute == 0 and t.weekday() < 5 for t in local)
    assert local[0].date().isoformat() == "2030-01-01"


async def test_listeners_sync_async_and_failing(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    seen_async: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    async def async_listener(event: object) -> None:
        seen_async.append(getattr(event, "type", "?"))

    s.add_listener(broken)
    s.add_listener(async_listener, ["executed"])
    await s.add_job(async_task, "interval", seconds=1, id="a")
    clock.advance(1)
    await rec.wait_runs(1)
    await s.events.drain()
    assert seen_async == ["executed"]
    assert rec.states("a") == [RunState.SUCCEEDED]
