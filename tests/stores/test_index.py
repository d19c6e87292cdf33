"""The schedule index's heap: items keyed by the schedules' own datetimes, stale items skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aiosched.exceptions import ConflictingIdError
from aiosched.models import Schedule
from aiosched.stores._index import ScheduleIndex
from aiosched.stores.base import Release
from aiosched.triggers import build_trigger

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TRIGGER = build_trigger("interval", {"seconds": 60, "start_date": T0})


def schedule(sid: str, at: datetime | None, version: int = 1, paused: bool = False) -> Schedule:
    return Schedule(
        id=sid, name=sid, func=None, task_ref=None, trigger=TRIGGER, next_fire_time=at, version=version, paused=paused
    )


def test_order_follows_the_instant_whatever_the_zone() -> None:
    index = ScheduleIndex()
    shanghai = ZoneInfo("Asia/Shanghai")
    index.insert(schedule("utc", T0 + timedelta(minutes=2)), replace_existing=False)
    index.insert(schedule("east", (T0 + timedelta(minutes=1)).astimezone(shanghai)), replace_existing=False)
    index.insert(schedule("fixed", T0.astimezone(ZoneInfo("America/New_York"))), replace_existing=False)
    index.insert(schedule("done", None), replace_existing=False)
    index.insert(schedule("paused", T0, paused=True), replace_existing=False)
    assert index.next_fire_time() == T0
    now = (T0 + timedelta(minutes=5)).astimezone(shanghai)  # "now" in any zone too
    assert [c.schedule.id for c in index.acquire(now, 10)] == ["fixed", "east", "utc"]
    assert index.next_fire_time() is None  # all claimed, or not due ever


def test_replaced_and_removed_schedules_leave_stale_items_behind() -> None:
    index = ScheduleIndex()
    first = index.insert(schedule("a", T0, version=0), replace_existing=False)
    assert first.version == 1  # a new schedule's version is 1, however it came
    with pytest.raises(ConflictingIdError):
        index.insert(schedule("a", T0), replace_existing=False)
    again = index.insert(schedule("a", T0 + timedelta(minutes=3)), replace_existing=True)
    assert again.version == 2 and index.get("a") is again
    index.insert(schedule("b", T0 + timedelta(minutes=1)), replace_existing=False)
    index.remove("b")
    index.insert(schedule("b", T0 + timedelta(minutes=2)), replace_existing=False)
    assert index.next_fire_time() == T0 + timedelta(minutes=2)
    claims = index.acquire(T0 + timedelta(minutes=10), 10)
    assert [(c.schedule.id, c.next_fire_time) for c in claims] == [
        ("b", T0 + timedelta(minutes=2)),
        ("a", T0 + timedelta(minutes=3)),
    ]
    index.release([Release(claims[0], T0 + timedelta(minutes=20)), Release(claims[1], None)])
    assert index.next_fire_time() == T0 + timedelta(minutes=20)
    assert index.get("a").next_fire_time is None
    assert len(index) == 2 and "a" in index
