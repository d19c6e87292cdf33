"""Firing semantics: misfire, catch-up, overlap, DST, clock jumps, idle behaviour."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aiosched import EventType, FakeClock, RunState, Scheduler
from aiosched._engine import YOUNG_GC_EVERY

from .conftest import START, SchedulerFactory

MIDNIGHT = START.replace(microsecond=0)

fired: list[datetime] = []


async def noop() -> None:
    return None


async def boom() -> None:
    raise ValueError("task bug")


@pytest.fixture(autouse=True)
def _clear() -> None:
    fired.clear()


async def test_interval_fires_each_time(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "interval", seconds=10, id="a")
    for n in range(1, 4):
        clock.advance(10)
        await rec.wait_runs(n)
    runs = await s.get_runs(schedule_id="a")
    assert [r.fire_time for r in reversed(runs)] == [START + timedelta(seconds=10 * n) for n in (1, 2, 3)]
    assert all(r.state is RunState.SUCCEEDED and r.lateness == 0 for r in runs)


async def test_date_trigger_fires_once_then_is_done(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "date", run_date=START + timedelta(seconds=5), id="once")
    clock.advance(5)
    await rec.wait_runs(1)
    await s.engine.wait_idle()
    assert (await s.get_job("once")).next_fire_time is None
    clock.advance(3600)
    await s.engine.wait_idle()
    assert len(rec.final_runs("once")) == 1


async def test_end_date_reached(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "interval", seconds=10, end_date=START + timedelta(seconds=25), id="a")
    for _ in range(5):
        clock.advance(10)
        await s.engine.wait_idle()
    await rec.wait_runs(2)
    assert len(rec.final_runs("a")) == 2
    assert (await s.get_job("a")).next_fire_time is None


@pytest.mark.parametrize(
    ("trigger", "args", "first"),
    [
        ("cron", {"minute": "*/15"}, MIDNIGHT + timedelta(minutes=15)),
        ("cron", {"crontab": "5 * * * *"}, MIDNIGHT + timedelta(minutes=5)),
        ("calendarinterval", {"days": 1, "hour": 3}, MIDNIGHT + timedelta(hours=3)),
        (
            "or",
            {
                "triggers": [
                    {"trigger": "cron", "args": {"minute": 7}},
                    {"trigger": "date", "args": {"run_date": "2030-01-01 00:02:00"}},
                ]
            },
            MIDNIGHT + timedelta(minutes=2),
        ),
    ],
)
async def test_trigger_types_fire(
    make_scheduler: SchedulerFactory, clock: FakeClock, trigger: str, args: dict[str, object], first: datetime
) -> None:
    s, rec = await make_scheduler(clock=clock)
    job = await s.add_job(noop, trigger, id="t", **args)
    assert job.next_fire_time == first
    clock.advance((first - START).total_seconds())
    await rec.wait_runs(1)
    assert rec.final_runs("t")[0].fire_time == first


async def test_failing_run_does_not_stop_the_engine(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(boom, "interval", seconds=1, id="bad")
    await s.add_job(noop, "interval", seconds=1, id="good")
    for n in range(1, 4):
        clock.advance(1)
        await rec.wait_runs(2 * n)
    assert rec.states("bad") == [RunState.FAILED] * 3
    assert rec.states("good") == [RunState.SUCCEEDED] * 3
    failed = (await s.get_runs(schedule_id="bad"))[0]
    assert failed.error == "ValueError: task bug"
    assert "raise ValueError" in (failed.traceback or "")
    assert s.running


async def test_misfire_grace_time_records_missed(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "date", run_date=START + timedelta(seconds=1), id="strict", misfire_grace_time=5)
    await s.add_job(noop, "date", run_date=START + timedelta(seconds=1), id="lenient", misfire_grace_time=None)
    clock.jump(60)  # the engine wakes 59 s after the fire time
    clock.advance(0)
    await rec.wait_runs(2)
    assert rec.states("strict") == [RunState.MISSED]
    assert rec.states("lenient") == [RunState.SUCCEEDED]
    missed = rec.final_runs("strict")[0]
    assert missed.lateness == pytest.approx(59)
    assert "grace 5" in (missed.reason or "")


@pytest.mark.parametrize(
    ("catchup", "runs", "others"),
    [
        ("latest", 1, RunState.SKIPPED),
        ("earliest", 1, RunState.SKIPPED),
        ("all", 10, None),
        ("skip", 0, RunState.MISSED),
    ],
)
async def test_catchup_after_downtime(
    make_scheduler: SchedulerFactory, clock: FakeClock, catchup: str, runs: int, others: RunState | None
) -> None:
    """RELIABILITY S5: a 1-minute cron, scheduler stalled for 10 minutes."""
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "cron", minute="*", id="c", catchup=catchup)
    clock.jump(10 * 60 + 20)
    clock.advance(0)
    await rec.wait_runs(10)
    states = rec.states("c")
    started = [r for r in rec.final_runs("c") if r.state is RunState.SUCCEEDED]
    assert len(started) == runs
    assert len(states) == 10
    if catchup == "all":
        assert [r.fire_time for r in started] == [MIDNIGHT + timedelta(minutes=m) for m in range(1, 11)]
    if catchup == "latest":
        assert started[0].fire_time == MIDNIGHT + timedelta(minutes=10)
    if catchup == "earliest":
        assert started[0].fire_time == MIDNIGHT + timedelta(minutes=1)
    if others is not None:
        assert states.count(others) == 10 - runs
    assert (await s.get_job("c")).next_fire_time == MIDNIGHT + timedelta(minutes=11)


async def test_catchup_with_grace_marks_the_late_ones_missed(
    make_scheduler: SchedulerFactory, clock: FakeClock
) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "cron", minute="*", id="c", catchup="all", misfire_grace_time=30)
    clock.jump(10 * 60 + 20)
    clock.advance(0)
    await rec.wait_runs(10)
    assert rec.states("c").count(RunState.MISSED) == 9
    assert [r.fire_time for r in rec.final_runs("c") if r.state is RunState.SUCCEEDED] == [
        MIDNIGHT + timedelta(minutes=10)
    ]


async def test_coalesce_option_maps_to_catchup(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, _rec = await make_scheduler(clock=clock, job_defaults={"coalesce": False})
    job = await s.add_job(noop, "interval", seconds=1, id="a")
    assert job.policy.catchup == "all"
    job = await s.add_job(noop, "interval", seconds=1, id="b", coalesce=True)
    assert job.policy.catchup == "latest"


async def test_max_catchup_bounds_enumeration(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    """RELIABILITY S6: a 1-second interval and a year-long clock jump."""
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "interval", seconds=1, id="a", catchup="all", max_catchup=50)
    began = time.perf_counter()
    clock.jump(365 * 86400)
    clock.advance(0)
    await rec.wait(lambda: bool(rec.of(EventType.CATCHUP_TRUNCATED)))
    await rec.wait_runs(50)
    assert time.perf_counter() - began < 2.0
    truncated = rec.of(EventType.CATCHUP_TRUNCATED)
    assert len(truncated) == 1
    assert truncated[0].detail == {"truncated": 365 * 86400 - 50}
    await s.engine.wait_idle()
    assert len(rec.final_runs("a")) == 50
    nxt = (await s.get_job("a")).next_fire_time
    assert nxt == clock.now() + timedelta(seconds=1)


class Gate:
    """A task that blocks until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.started = 0
        self.cancelled = 0

    async def __call__(self) -> None:
        self.running += 1
        self.started += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


async def test_overlap_skip(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    gate = Gate()
    await s.add_job(gate, "interval", seconds=1, id="o", max_instances=1, overlap="skip")
    for n in range(1, 4):
        clock.advance(1)
        await s.engine.wait_idle()
        if n == 1:
            await rec.wait(lambda: gate.started == 1)
    assert rec.states("o") == [RunState.SKIPPED, RunState.SKIPPED]
    assert "max_instances" in (rec.final_runs("o")[0].reason or "")
    gate.release.set()
    await rec.wait_runs(3, "o")
    assert gate.peak == 1


async def test_overlap_buffer_one(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    gate = Gate()
    await s.add_job(gate, "interval", seconds=1, id="o", max_instances=1, overlap="buffer_one")
    for _ in range(3):
        clock.advance(1)
        await s.engine.wait_idle()
    await rec.wait(lambda: gate.started == 1)
    assert rec.states("o") == [RunState.SKIPPED]  # the third fire: the buffer holds the second
    assert rec.final_runs("o")[0].reason == "buffer full (1 running)"
    queued = await s.get_runs(schedule_id="o", states=["queued"])
    assert [r.fire_time for r in queued] == [START + timedelta(seconds=2)]
    gate.release.set()
    await rec.wait(lambda: gate.started == 2)
    await rec.wait_runs(3, "o")
    assert gate.peak == 1
    assert [r.state for r in await s.get_runs(schedule_id="o")].count(RunState.SUCCEEDED) == 2


async def test_overlap_cancel_other(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    gate = Gate()
    await s.add_job(gate, "interval", seconds=1, id="o", max_instances=1, overlap="cancel_other")
    clock.advance(1)
    await rec.wait(lambda: gate.started == 1)
    clock.advance(1)
    await rec.wait(lambda: gate.started == 2)
    assert gate.cancelled == 1 and gate.peak == 1
    assert rec.states("o") == [RunState.CANCELLED]
    assert "cancel_other" in (rec.final_runs("o")[0].reason or "")
    gate.release.set()
    await rec.wait_runs(2, "o")
    assert rec.states("o") == [RunState.CANCELLED, RunState.SUCCEEDED]


async def test_max_instances_allows_parallel_runs(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    gate = Gate()
    await s.add_job(gate, "interval", seconds=1, id="o", max_instances=3)
    for _ in range(5):
        clock.advance(1)
        await s.engine.wait_idle()
    await rec.wait(lambda: gate.started == 3)
    assert s.running_count("o") == 3
    assert rec.states("o") == [RunState.SKIPPED, RunState.SKIPPED]
    gate.release.set()
    await rec.wait_runs(5, "o")
    assert gate.peak == 3


def _local(times: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z") for t in times]


async def _fires_over(s: Scheduler, clock: FakeClock, rec: object, hours: int, step: float) -> list[datetime]:
    for _ in range(int(hours * 3600 / step)):
        clock.advance(step)
        await s.engine.wait_idle()
    await asyncio.sleep(0)
    return sorted(r.fire_time for r in await s.get_runs(limit=10_000))


async def test_dst_fall_back_fires_once_per_day() -> None:
    clock = FakeClock(datetime(2027, 11, 5, 12, tzinfo=UTC))
    async with Scheduler(timezone="America/New_York", clock=clock) as s:
        await s.add_job(noop, "cron", hour=1, minute=30, id="d")
        times = await _fires_over(s, clock, None, 4 * 24, 1800)
    assert _local(times, "America/New_York") == [
        "2027-11-06 01:30 EDT",
        "2027-11-07 01:30 EDT",
        "2027-11-08 01:30 EST",
        "2027-11-09 01:30 EST",
    ]


async def test_dst_spring_forward_fires_once_per_day() -> None:
    clock = FakeClock(datetime(2027, 3, 12, 12, tzinfo=UTC))
    async with Scheduler(timezone="America/New_York", clock=clock) as s:
        await s.add_job(noop, "cron", hour=2, minute=30, id="d")
        times = await _fires_over(s, clock, None, 4 * 24, 1800)
    assert _local(times, "America/New_York") == [
        "2027-03-13 02:30 EST",
        "2027-03-14 03:00 EDT",  # 02:30 does not exist that day: it fires when the clock jumps
        "2027-03-15 02:30 EDT",
        "2027-03-16 02:30 EDT",
    ]


async def test_no_dst_zone_fires_every_24_hours() -> None:
    clock = FakeClock(datetime(2027, 3, 12, 12, tzinfo=UTC))
    async with Scheduler(timezone="Asia/Shanghai", clock=clock) as s:
        await s.add_job(noop, "cron", hour=2, minute=30, id="d")
        times = await _fires_over(s, clock, None, 4 * 24, 1800)
    assert len(times) == 4
    assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(hours=24)}


async def test_backward_clock_jump_does_not_double_fire(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    """RELIABILITY S8: the wall clock steps back an hour; no fire repeats."""
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "interval", seconds=10, id="i")
    await s.add_job(noop, "cron", minute="*", id="c")
    for _ in range(6):
        clock.advance(10)
        await s.engine.wait_idle()
    await rec.wait_runs(7)
    clock.jump(-3600)
    for _ in range(60):
        clock.advance(60)
        await s.engine.wait_idle()
    runs = await s.get_runs(limit=10_000)
    keys = [(r.schedule_id, r.fire_time) for r in runs]
    assert len(keys) == len(set(keys))
    assert len([k for k in keys if k[0] == "c"]) == 1
    assert len([k for k in keys if k[0] == "i"]) == 6


async def test_forward_clock_jump_is_handled_like_downtime(make_scheduler: SchedulerFactory, clock: FakeClock) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "interval", seconds=10, id="i", catchup="latest")
    clock.jump(3600)
    clock.advance(0)
    await rec.wait_runs(100)
    states = rec.states("i")
    assert states.count(RunState.SUCCEEDED) == 1
    assert states.count(RunState.SKIPPED) == 99  # max_catchup=100 enumerated, the rest counted
    assert len(rec.of(EventType.CATCHUP_TRUNCATED)) == 1


async def test_real_time_interval_firing(make_scheduler: SchedulerFactory) -> None:
    s, rec = await make_scheduler()
    started = time.monotonic()
    await s.add_job(noop, "interval", seconds=0.2, id="fast")
    await s.add_job(noop, "interval", seconds=1, id="slow")
    await rec.wait_runs(2, "slow", timeout=5)
    elapsed = time.monotonic() - started
    assert 1.9 < elapsed < 3.0
    fast = [r for r in rec.final_runs("fast") if r.state is RunState.SUCCEEDED]
    assert len(fast) >= 9
    assert max(r.lateness for r in fast) < 0.05


async def test_idle_engine_does_not_wake_up(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler(max_sleep=0.5)
    for i in range(100):
        await s.add_job(noop, "interval", hours=1, id=f"j{i}")
    await s.engine.wait_idle()
    before = s.engine.wakeups
    await asyncio.sleep(2.1)
    # nothing is due for an hour: the only wake-ups are the bounded wall-clock re-checks
    assert s.engine.wakeups - before <= 5
    s2, _ = await make_scheduler()
    await s2.add_job(noop, "interval", hours=1, id="x")
    await s2.engine.wait_idle()
    before = s2.engine.wakeups
    await asyncio.sleep(1.0)
    assert s2.engine.wakeups == before


async def test_a_schedule_whose_trigger_breaks_does_not_stop_the_others(
    make_scheduler: SchedulerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]

    class Broken(BaseTrigger):  # type: ignore[misc]
        def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime:
            if previous is not None:
                raise RuntimeError("trigger bug")
            return START + timedelta(seconds=1)

    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, Broken(), id="broken")
    await s.add_job(noop, "interval", seconds=1, id="fine")
    for n in range(1, 4):
        clock.advance(1)
        await rec.wait_runs(n, "fine")
    assert "schedule broken: cannot compute its fire times" in caplog.text
    assert (await s.get_job("broken")).next_fire_time is None
    assert s.running


@pytest.fixture
def young_collections() -> Iterator[list[int]]:
    """Generation-0 collections seen while the test runs; automatic ones are put out of reach."""
    seen: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 0:
            seen.append(1)

    thresholds = gc.get_threshold()
    gc.set_threshold(10**9, 10**9, 10**9)  # only the engine's paced collections can happen
    gc.callbacks.append(on_gc)
    try:
        yield seen
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize("enabled", [True, False])
async def test_young_gc_is_paced_by_fires_unless_the_gc_is_off(
    make_scheduler: SchedulerFactory, clock: FakeClock, young_collections: list[int], enabled: bool
) -> None:
    s, rec = await make_scheduler(clock=clock)
    fires = 4 * YOUNG_GC_EVERY
    for i in range(fires):
        await s.add_job(noop, "date", run_date=START + timedelta(seconds=1), id=f"j{i}")
    if not enabled:
        gc.disable()
    try:
        clock.advance(1)
        await rec.wait_runs(fires)
    finally:
        gc.enable()
    assert len(young_collections) == (fires // YOUNG_GC_EVERY if enabled else 0)
