"""Tests for aiosched.triggers: building, fire times, DST rules (RELIABILITY S6, S7), errors.

Regenerate the DST golden file after a deliberate change of the rules (review the diff!):

    PYTHONPATH=. python tests/test_triggers.py --regen
"""

from __future__ import annotations

import json
import random
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

from aiosched.exceptions import TriggerError
from aiosched.triggers import (
    MAX_COUNTED,
    TRIGGER_TYPES,
    Trigger,
    TriggerSpec,
    build_trigger,
    wrap_trigger,
)

NY = ZoneInfo("America/New_York")
GOLDEN = Path(__file__).parent / "golden" / "triggers_dst.json"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


def walls(times: list[datetime], tz: str) -> list[str]:
    return [t.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M%z") for t in times]


def between(trigger: Trigger, start: datetime, end: datetime) -> list[datetime]:
    out, at = [], trigger.next_fire_time(None, start)
    while at is not None and at < end:
        out.append(at)
        at = trigger.next_fire_time(at, at)
    return out


def assert_sane(times: list[datetime]) -> None:
    assert all(t.tzinfo is UTC for t in times)
    assert all(a < b for a, b in pairwise(times)), "not strictly increasing"


# --- building each type -------------------------------------------------------------------------


def test_types() -> None:
    assert frozenset({"interval", "cron", "date", "calendarinterval", "and", "or"}) == TRIGGER_TYPES


def test_interval_seconds_and_end_date() -> None:
    t = build_trigger(
        "interval", {"seconds": 30, "start_date": "2027-01-01T00:00:00Z", "end_date": "2027-01-01 00:02:00"}
    )
    assert not t.is_wall_clock
    assert t.next_fire_time(None, utc(2026, 6, 1)) == utc(2027, 1, 1)
    assert t.next_fire_time(None, utc(2027, 1, 1, 0, 0, 31)) == utc(2027, 1, 1, 0, 1)
    assert t.next_fire_time(None, utc(2027, 1, 1, 0, 1)) == utc(2027, 1, 1, 0, 1)
    assert t.next_fire_time(utc(2027, 1, 1, 0, 1), utc(2027, 1, 1, 0, 1)) == utc(2027, 1, 1, 0, 1, 30)
    assert t.next_fire_time(utc(2027, 1, 1, 0, 2), utc(2027, 1, 1, 0, 2)) is None
    assert t.preview(10, start=utc(2027, 1, 1)) == [utc(2027, 1, 1, 0, i // 2, 30 * (i % 2)) for i in range(5)]
    assert t.describe() == "every 30s until 2027-01-01T00:02:00+00:00"
    assert build_trigger("interval", {"hours": 1, "minutes": 30}).describe() == "every 1h30m"


def test_interval_without_start_date_pins_it_in_the_spec() -> None:
    before = datetime.now(UTC)
    t = build_trigger("interval", {"minutes": 5})
    assert t.spec is not None
    start = datetime.fromisoformat(t.spec.args["start_date"])
    assert before - timedelta(seconds=1) <= start - timedelta(minutes=5) <= datetime.now(UTC)
    again = build_trigger(t.spec.type, t.spec.args, timezone=t.spec.timezone)
    assert again.preview(3) == t.preview(3)


def test_cron_fields_in_a_zone() -> None:
    t = build_trigger("cron", {"hour": 9, "minute": 0, "day_of_week": "mon-fri"}, timezone="Asia/Shanghai")
    assert t.is_wall_clock and str(t.timezone) == "Asia/Shanghai"
    fri = local("Asia/Shanghai", 2027, 1, 8, 10)  # a Friday, after 09:00
    assert t.preview(3, start=fri) == [utc(2027, 1, 11, 1), utc(2027, 1, 12, 1), utc(2027, 1, 13, 1)]
    assert t.describe() == "cron[day_of_week='mon-fri', hour='9', minute='0'] (Asia/Shanghai)"


def test_crontab_strings() -> None:
    start = utc(2027, 1, 1)
    fields = build_trigger("cron", {"hour": 9, "minute": 0, "day_of_week": "mon-fri"}).preview(10, start=start)
    assert build_trigger("cron", {"crontab": "0 9 * * mon-fri"}).preview(10, start=start) == fields
    # crontab numbers weekdays from Sunday = 0 (APScheduler's day_of_week argument from Monday = 0)
    assert build_trigger("cron", {"crontab": "0 9 * * 1-5"}).preview(10, start=start) == fields
    sundays = build_trigger("cron", {"crontab": "30 2 * * 0"}).preview(3, start=start)
    assert [d.weekday() for d in sundays] == [6, 6, 6] and sundays[0] == utc(2027, 1, 3, 2, 30)
    assert build_trigger("cron", {"crontab": "0 0 * * 7"}).preview(1, start=start) == [utc(2027, 1, 3)]
    odd = build_trigger("cron", {"crontab": "0 0 * * */2"}).preview(7, start=start)  # sun, tue, thu, sat
    assert sorted({d.strftime("%a") for d in odd}) == ["Sat", "Sun", "Thu", "Tue"]
    assert build_trigger("cron", {"crontab": "@daily"}).preview(2, start=start) == [utc(2027, 1, 1), utc(2027, 1, 2)]


def test_date_trigger() -> None:
    t = build_trigger("date", {"run_date": "2027-01-01 10:00:00"}, timezone="Asia/Shanghai")
    assert t.next_fire_time(None, utc(2026, 1, 1)) == utc(2027, 1, 1, 2)
    assert t.next_fire_time(utc(2027, 1, 1, 2), utc(2027, 1, 1, 2)) is None
    assert t.next_fire_time(None, utc(2028, 1, 1)) == utc(2027, 1, 1, 2)  # past: misfire grace decides
    assert t.preview(5, start=utc(2026, 1, 1)) == [utc(2027, 1, 1, 2)]
    assert t.preview(5, start=utc(2028, 1, 1)) == []
    assert t.describe() == "once at 2027-01-01 10:00:00+08:00 (Asia/Shanghai)"


def test_calendarinterval() -> None:
    t = build_trigger(
        "calendarinterval", {"months": 1, "hour": 9, "start_date": "2027-01-31"}, timezone="Europe/Berlin"
    )
    # months without a 31st are skipped (APScheduler's rule); 09:00 CET = 08:00 UTC, CEST = 07:00 UTC
    assert t.preview(4, start=utc(2027, 1, 1)) == [
        utc(2027, 1, 31, 8),
        utc(2027, 3, 31, 7),
        utc(2027, 5, 31, 7),
        utc(2027, 7, 31, 7),
    ]
    assert t.next_fire_time(None, utc(2027, 4, 1)) == utc(2027, 5, 31, 7)
    daily = build_trigger(
        "calendarinterval", {"days": 2, "hour": 6, "start_date": "2020-01-02", "end_date": "2027-01-05"}
    )
    assert daily.preview(5, start=utc(2026, 12, 31)) == [utc(2027, 1, 1, 6), utc(2027, 1, 3, 6), utc(2027, 1, 5, 6)]
    assert t.describe() == "every 1 months at 09:00:00 (Europe/Berlin)"


def test_and_or() -> None:
    both = build_trigger(
        "and",
        {
            "triggers": [
                {"trigger": "cron", "args": {"hour": 9, "minute": 0}},
                {"trigger": "cron", "args": {"day_of_week": "mon", "hour": "*", "minute": "*"}},
            ]
        },
        timezone="Europe/Berlin",
    )
    assert both.is_wall_clock
    assert both.preview(2, start=utc(2027, 1, 1)) == [utc(2027, 1, 4, 8), utc(2027, 1, 11, 8)]
    either = build_trigger(
        "or",
        {
            "triggers": [
                {"trigger": "cron", "args": {"hour": 12, "minute": 0}},
                {"trigger": "date", "args": {"run_date": "2027-01-01 15:00:00"}},
                {"trigger": "date", "args": {"run_date": "2027-01-02 15:00:00"}},
            ]
        },
    )
    assert either.preview(5, start=utc(2027, 1, 1)) == [
        utc(2027, 1, 1, 12),
        utc(2027, 1, 1, 15),
        utc(2027, 1, 2, 12),
        utc(2027, 1, 2, 15),
        utc(2027, 1, 3, 12),
    ]
    assert either.describe().startswith("or[cron[hour='12', minute='0'] (UTC), once at 2027-01-01 15:00:00+00:00")
    interval_only = build_trigger(
        "or", {"triggers": [{"trigger": "interval", "args": {"hours": 2, "start_date": "2027-01-01"}}]}
    )
    assert not interval_only.is_wall_clock


def test_start_end_and_per_trigger_timezone() -> None:
    t = build_trigger(
        "cron",
        {
            "minute": 0,
            "start_date": "2027-01-01 10:30:00",
            "end_date": "2027-01-01T12:00:00+00:00",
            "timezone": "Asia/Kolkata",
        },
        timezone="Europe/Berlin",
    )
    assert str(t.timezone) == "Asia/Kolkata"
    assert t.preview(10, start=utc(2026, 1, 1)) == [
        utc(2027, 1, 1, 5, 30),
        utc(2027, 1, 1, 6, 30),
        utc(2027, 1, 1, 7, 30),
        utc(2027, 1, 1, 8, 30),
        utc(2027, 1, 1, 9, 30),
        utc(2027, 1, 1, 10, 30),
        utc(2027, 1, 1, 11, 30),
    ]
    assert t.next_fire_time(utc(2027, 1, 1, 11, 30), utc(2027, 1, 1, 11, 30)) is None
    assert t.spec is not None and t.spec.timezone == "Europe/Berlin" and t.spec.args["timezone"] == "Asia/Kolkata"
    member = build_trigger(
        "or", {"triggers": [{"trigger": "cron", "args": {"hour": 9}}]}, timezone=ZoneInfo("Asia/Kolkata")
    )
    assert member.preview(1, start=utc(2027, 1, 1)) == [utc(2027, 1, 1, 3, 30)]


def test_preview_defaults_to_now() -> None:
    t = build_trigger("cron", {"second": "*/10"})
    before = datetime.now(UTC)
    times = t.preview(3)
    assert len(times) == 3 and before - timedelta(seconds=1) <= times[0] <= before + timedelta(seconds=11)
    assert times[1] - times[0] == timedelta(seconds=10)


@pytest.mark.parametrize(
    ("type_", "args"),
    [
        ("interval", {"minutes": 7, "start_date": datetime(2027, 1, 1, 3, 4, 5), "end_date": date(2028, 1, 1)}),
        ("cron", {"crontab": "*/20 1-3 * * 1-5", "start_date": "2027-03-01"}),
        ("cron", {"day": "last", "hour": 23, "minute": 30, "end_date": local("Europe/Berlin", 2028, 1, 1)}),
        ("date", {"run_date": datetime(2027, 11, 7, 1, 30)}),
        ("calendarinterval", {"weeks": 1, "hour": 2, "minute": 30, "start_date": date(2027, 1, 1)}),
        (
            "and",
            {
                "triggers": [
                    {"trigger": "cron", "args": {"hour": "*/3", "minute": 0}},
                    {"trigger": "cron", "args": {"hour": "*/2", "minute": 0}},
                ]
            },
        ),
        (
            "or",
            {
                "triggers": [{"trigger": "cron"}, {"trigger": "interval", "args": {"hours": 5}}],
                "timezone": "Asia/Kolkata",
            },
        ),
    ],
)
def test_spec_round_trip(type_: str, args: dict[str, Any]) -> None:
    t = build_trigger(type_, args, timezone="America/New_York", schedule_id="s1")
    assert t.spec is not None
    stored = json.loads(json.dumps(t.spec.to_dict()))
    spec = TriggerSpec.from_dict(stored)
    assert spec == t.spec
    again = build_trigger(spec.type, spec.args, timezone=spec.timezone)
    assert again.spec == t.spec
    assert again.preview(50, start=utc(2027, 1, 1)) == t.preview(50, start=utc(2027, 1, 1))


def test_spec_from_dict_rejects_bad_shapes() -> None:
    bad_shapes: list[dict[str, Any]] = [{"args": {}}, {"type": "cron", "args": []}, {"type": "cron", "timezone": 3}]
    for bad in [*bad_shapes, {"type": "cron", "x": 1}]:
        with pytest.raises(TriggerError):
            TriggerSpec.from_dict(bad)
    assert TriggerSpec.from_dict({"type": "cron"}) == TriggerSpec("cron", {}, "UTC")


def test_wrap_trigger() -> None:
    raw = CronTrigger(hour=1, minute=30, timezone="America/New_York")
    t = wrap_trigger(raw, schedule_id="w")
    assert t.spec is None and t.is_wall_clock
    fall_back = between(t, utc(2027, 11, 6), utc(2027, 11, 9))
    assert walls(fall_back, "America/New_York") == ["11-06 01:30-0400", "11-07 01:30-0400", "11-08 01:30-0500"]
    assert wrap_trigger(t) is t
    with pytest.raises(TriggerError, match="schedule 'w'"):
        wrap_trigger("cron", schedule_id="w")


# --- DST --------------------------------------------------------------------------------------


def test_apscheduler_alone_gets_dst_wrong() -> None:
    """What we correct; if APScheduler changes this, revisit the module docstring."""
    raw = CronTrigger(hour=1, minute=30, timezone=NY)
    first = raw.get_next_fire_time(None, local("America/New_York", 2027, 11, 7))
    second = raw.get_next_fire_time(first, first)
    assert (first.utcoffset(), second.utcoffset()) == (timedelta(hours=-4), timedelta(hours=-5))  # fires twice
    gap = CronTrigger(hour=2, minute=30, timezone=NY).get_next_fire_time(None, local("America/New_York", 2027, 3, 14))
    assert str(gap) == "2027-03-14 02:30:00-05:00" and gap.astimezone(UTC) == utc(2027, 3, 14, 7, 30)  # 03:30 EDT


def test_fall_back_daily_fires_once_per_day() -> None:
    t = build_trigger("cron", {"hour": 1, "minute": 30}, timezone="America/New_York")
    times = between(t, local("America/New_York", 2027, 11, 5), local("America/New_York", 2027, 11, 11))
    assert walls(times, "America/New_York") == [
        "11-05 01:30-0400",
        "11-06 01:30-0400",
        "11-07 01:30-0400",
        "11-08 01:30-0500",
        "11-09 01:30-0500",
        "11-10 01:30-0500",
    ]


def test_spring_forward_daily_fires_once_when_the_clock_jumps() -> None:
    t = build_trigger("cron", {"hour": 2, "minute": 30}, timezone="America/New_York")
    times = between(t, utc(2027, 3, 13), utc(2027, 3, 16))
    assert times == [utc(2027, 3, 13, 7, 30), utc(2027, 3, 14, 7), utc(2027, 3, 15, 6, 30)]
    for minute in (0, 59):
        t = build_trigger("cron", {"hour": 2, "minute": minute}, timezone=NY)
        assert t.next_fire_time(utc(2027, 3, 13, 12), utc(2027, 3, 13, 12)) == utc(2027, 3, 14, 7)


@pytest.mark.parametrize(
    ("zone", "args", "start", "expected"),
    [
        (
            "America/New_York",
            {"minute": "*/15"},
            (2027, 3, 14, 1, 30),
            ["03-14 01:30-0500", "03-14 01:45-0500", "03-14 03:00-0400", "03-14 03:15-0400"],
        ),
        (
            "America/New_York",
            {"minute": 30},
            (2027, 3, 14, 0, 0),
            ["03-14 00:30-0500", "03-14 01:30-0500", "03-14 03:00-0400", "03-14 03:30-0400"],
        ),
        (
            "America/New_York",
            {"minute": 0},
            (2027, 3, 14, 0, 0),
            ["03-14 00:00-0500", "03-14 01:00-0500", "03-14 03:00-0400", "03-14 04:00-0400"],
        ),
        (
            "America/New_York",
            {"minute": "*/30"},
            (2027, 11, 7, 0, 30),
            ["11-07 00:30-0400", "11-07 01:00-0400", "11-07 01:30-0400", "11-07 02:00-0500", "11-07 02:30-0500"],
        ),
        (
            "Australia/Lord_Howe",
            {"minute": "*/15"},
            (2027, 10, 3, 1, 30),
            ["10-03 01:30+1030", "10-03 01:45+1030", "10-03 02:30+1100", "10-03 02:45+1100"],
        ),
        (
            "Australia/Lord_Howe",
            {"hour": 2, "minute": 15},
            (2027, 10, 2, 0, 0),
            ["10-02 02:15+1030", "10-03 02:30+1100", "10-04 02:15+1100"],
        ),
        (
            "Australia/Lord_Howe",
            {"minute": "*/15"},
            (2027, 4, 4, 1, 15),
            ["04-04 01:15+1100", "04-04 01:30+1100", "04-04 01:45+1100", "04-04 02:00+1030", "04-04 02:15+1030"],
        ),
        (
            "Europe/Berlin",
            {"hour": 2, "minute": 30},
            (2027, 3, 27, 0, 0),
            ["03-27 02:30+0100", "03-28 03:00+0200", "03-29 02:30+0200"],
        ),
        (
            "Europe/Berlin",
            {"hour": 2, "minute": 30},
            (2027, 10, 30, 0, 0),
            ["10-30 02:30+0200", "10-31 02:30+0200", "11-01 02:30+0100"],
        ),
        (
            "America/Santiago",
            {"hour": 0, "minute": 0},
            (2027, 9, 4, 0, 0),  # midnight does not exist on 09-05
            ["09-04 00:00-0400", "09-05 01:00-0300", "09-06 00:00-0300"],
        ),
    ],
)
def test_dst_sequences(zone: str, args: dict[str, Any], start: tuple[int, ...], expected: list[str]) -> None:
    t = build_trigger("cron", args, timezone=zone)
    assert walls(t.preview(len(expected), start=local(zone, *start)), zone) == expected


def test_second_pass_of_a_repeated_hour_is_silent() -> None:
    t = build_trigger("cron", {"minute": "*"}, timezone="America/New_York")
    first_0159 = utc(2027, 11, 7, 5, 59)  # 01:59 EDT; then 01:00-01:59 EST repeat those wall times
    assert t.next_fire_time(first_0159, first_0159) == utc(2027, 11, 7, 7)  # 02:00 EST
    in_second_pass = utc(2027, 11, 7, 6, 10)
    assert t.next_fire_time(None, in_second_pass) == utc(2027, 11, 7, 7)
    assert t.next_fire_time(in_second_pass, in_second_pass) == utc(2027, 11, 7, 7)
    every_second = build_trigger("cron", {"second": "*"}, timezone=NY)
    began = time.perf_counter()  # jumps over the repeated hour's 3600 wall times instead of stepping through them
    assert every_second.next_fire_time(utc(2027, 11, 7, 6), utc(2027, 11, 7, 6)) == utc(2027, 11, 7, 7)
    assert time.perf_counter() - began < 0.010
    interval = build_trigger("interval", {"minutes": 20, "start_date": "2027-11-07T05:00:00Z"}, timezone=NY)
    assert len(between(interval, utc(2027, 11, 7, 5), utc(2027, 11, 7, 7))) == 6  # absolute time: not corrected


CRONTAB_FIELDS = {  # the same schedules in APScheduler's own field terms (day_of_week 0 = Monday)
    "0 9 * * 1-5": {"minute": 0, "hour": 9, "day_of_week": "mon-fri"},
    "0 2 * * 0": {"minute": 0, "hour": 2, "day_of_week": "sun"},
    "30 2 1 */3 *": {"minute": 30, "hour": 2, "day": 1, "month": "*/3"},
}


def check_wall_rules(times: list[datetime], zone: str, args: dict[str, Any]) -> None:
    """Each fire is at a matching wall time or at a clock jump; each wall time fires at most once."""
    tz = ZoneInfo(zone)
    locs = [t.astimezone(tz) for t in times]
    assert len({loc.replace(tzinfo=None) for loc in locs}) == len(locs), "a local wall time fired twice"
    fields = (
        CRONTAB_FIELDS[args["crontab"]]
        if "crontab" in args
        else {k: v for k, v in args.items() if k in CronTrigger.FIELD_NAMES}
    )
    matcher = CronTrigger(timezone=UTC, **fields)
    for at, loc in zip(times, locs, strict=True):
        wall = loc.replace(tzinfo=UTC)
        jump = (at - timedelta(seconds=1)).astimezone(tz).utcoffset() != loc.utcoffset()
        assert jump or matcher.get_next_fire_time(None, wall) == wall, f"{loc} does not match {fields}"


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"])
@pytest.mark.parametrize(
    "args", [{"minute": 0}, {"minute": "*/15"}, {"minute": 30, "second": "*/20"}, {"hour": "1-3", "minute": "*"}]
)
def test_dense_crons_across_both_transitions(zone: str, args: dict[str, Any]) -> None:
    t = build_trigger("cron", args, timezone=zone)
    marks = [m for m in transitions(zone) if m.year == 2027]
    assert len(marks) == 2
    for mark in marks:
        times = between(t, mark - timedelta(days=3), mark + timedelta(days=3))
        assert_sane(times)
        check_wall_rules(times, zone, args)


def test_shanghai_daily_is_exactly_24h_apart() -> None:
    t = build_trigger("cron", {"hour": 9, "minute": 0}, timezone="Asia/Shanghai")
    times = t.preview(400, start=utc(2027, 1, 1))
    assert {b - a for a, b in pairwise(times)} == {timedelta(days=1)}


# --- golden file (RELIABILITY S7) -------------------------------------------------------------

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata")
SPAN = (utc(2027, 1, 1), utc(2029, 1, 1))
SPARSE: dict[str, tuple[str, dict[str, Any]]] = {  # over the whole two years
    "daily-0000": ("cron", {"hour": 0, "minute": 0}),
    "daily-0030": ("cron", {"hour": 0, "minute": 30}),
    "daily-0130": ("cron", {"hour": 1, "minute": 30}),
    "daily-0230": ("cron", {"hour": 2, "minute": 30}),
    "daily-0900": ("cron", {"hour": 9, "minute": 0}),
    "daily-2330": ("cron", {"hour": 23, "minute": 30}),
    "weekdays-0900": ("cron", {"crontab": "0 9 * * 1-5"}),
    "sunday-0200": ("cron", {"crontab": "0 2 * * 0"}),
    "last-day-1800": ("cron", {"day": "last", "hour": 18, "minute": 0}),
    "first-mon-1000": ("cron", {"day": "1st mon", "hour": 10, "minute": 0}),
    "quarterly-0230": ("cron", {"crontab": "30 2 1 */3 *"}),
    "calendar-monthly-0230": ("calendarinterval", {"months": 1, "hour": 2, "minute": 30, "start_date": "2027-01-01"}),
}
DENSE: dict[str, tuple[str, dict[str, Any]]] = {  # within a day of each transition
    "hourly-00": ("cron", {"minute": 0}),
    "hourly-30": ("cron", {"minute": 30}),
    "every-15m": ("cron", {"minute": "*/15"}),
    "every-2h-45": ("cron", {"hour": "*/2", "minute": 45}),
    "minutely-1-3": ("cron", {"hour": "0-3", "minute": "*"}),
    "every-20s-at-x:30": ("cron", {"minute": 30, "second": "*/20"}),
    "interval-7m": ("interval", {"minutes": 7, "start_date": "2027-01-01 00:00:00"}),
}


def transitions(zone: str) -> list[datetime]:
    """UTC instants in SPAN where the zone's offset changes (scan by hour, then bisect to the second)."""
    tz, found = ZoneInfo(zone), []
    at = SPAN[0]
    while at < SPAN[1]:
        nxt = at + timedelta(hours=1)
        if at.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            lo, hi = at, nxt
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset() else (lo, mid)
            found.append(hi)
        at = nxt
    return found


def windows(zone: str) -> list[tuple[datetime, datetime]]:
    marks = transitions(zone) or [utc(2027, 3, 14)]  # Kolkata: no DST, one window anyway
    return [(t - timedelta(days=1), t + timedelta(days=1)) for t in marks]


def generate_golden() -> dict[str, Any]:
    series: dict[str, dict[str, list[str]]] = {}
    for zone in ZONES:
        tz, out = ZoneInfo(zone), {}
        for name, (type_, args) in SPARSE.items():
            out[name] = between(build_trigger(type_, args, timezone=zone), *SPAN)
        for name, (type_, args) in DENSE.items():
            t = build_trigger(type_, args, timezone=zone)
            out[name] = [at for lo, hi in windows(zone) for at in between(t, lo, hi)]
        dates = ["2027-06-01 12:00:00"]
        for mark in transitions(zone):  # naive wall times just before, in the gap or fold, and after
            before, after = (mark - timedelta(seconds=1)).astimezone(tz).utcoffset(), mark.astimezone(tz).utcoffset()
            assert before is not None and after is not None
            walls = (
                mark + before - timedelta(minutes=20),
                mark + (before + after) / 2,
                mark + after + timedelta(minutes=20),
            )
            dates.extend(f"{wall:%Y-%m-%d %H:%M:%S}" for wall in walls)
        out["dates"] = sorted(
            build_trigger("date", {"run_date": d}, timezone=zone).preview(1, start=SPAN[0])[0] for d in dates
        )
        series[zone] = {k: [at.astimezone(tz).isoformat() for at in v] for k, v in out.items()}
    rules = {zone: [t.isoformat() for t in transitions(zone)] for zone in ZONES}
    return {
        "about": "aiosched trigger fire times across DST; see tests/test_triggers.py",
        "transitions": rules,
        "series": series,
    }


@pytest.fixture(scope="module")
def golden() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    expected = json.loads(GOLDEN.read_text())
    if expected["transitions"] != {zone: [t.isoformat() for t in transitions(zone)] for zone in ZONES}:
        pytest.skip("this machine's tz database has other DST rules than the golden file's; regenerate it")
    yield expected, generate_golden()


def test_golden_file_matches(golden: tuple[dict[str, Any], dict[str, Any]]) -> None:
    expected, actual = golden
    for zone in ZONES:
        for name, times in expected["series"][zone].items():
            assert actual["series"][zone][name] == times, f"{zone} {name}"
    assert actual == expected
    assert GOLDEN.stat().st_size < 2_000_000


def test_golden_fire_times_keep_the_rules(golden: tuple[dict[str, Any], dict[str, Any]]) -> None:
    expected, _ = golden
    for zone in ZONES:
        tz = ZoneInfo(zone)
        for name, texts in expected["series"][zone].items():
            locs = [datetime.fromisoformat(s) for s in texts]
            times = [t.astimezone(UTC) for t in locs]
            assert times, f"{zone} {name} is empty"
            assert_sane(times)
            for loc, at in zip(locs, times, strict=True):  # a non-existent local time would not round-trip
                assert at.astimezone(tz).isoformat() == loc.isoformat(), f"{zone} {name}: {loc} does not exist"
            type_, args = {**SPARSE, **DENSE}.get(name, ("date", {}))
            if type_ == "cron":
                check_wall_rules(times, zone, args)
            if name.startswith("daily"):
                days = [t.astimezone(tz).date() for t in times]
                assert len(days) == len(set(days)) and (days[-1] - days[0]).days == len(days) - 1, f"{zone} {name}"


# --- speed and catch-up ---------------------------------------------------------------------------


def random_cron(rng: random.Random) -> dict[str, Any]:
    choices = {
        "second": [None, None, "0", "*/10", "15,45"],
        "minute": [None, "*", "*/5", "0", "30", "0-10/3", "15,45", "59"],
        "hour": [None, "*", "*/2", "9", "0-6", "1,2,3", "22-23", "2"],
        "day": [None, None, "*", "1", "15", "last", "1-7", "*/3", "29", "31", "2nd fri"],
        "month": [None, None, "*", "2", "*/2", "3,11", "1-6", "10-12"],
        "day_of_week": [None, None, "*", "mon-fri", "sun", "5,6", "sat"],
    }
    return {k: v for k, vs in choices.items() if (v := rng.choice(vs)) is not None}


def test_random_crons_are_fast_and_increasing() -> None:
    rng = random.Random(20270314)
    zones = [*ZONES, "Asia/Shanghai", "UTC"]
    checked = 0
    for _ in range(1000):
        args, zone = random_cron(rng), rng.choice(zones)
        began = time.perf_counter()
        try:
            t = build_trigger("cron", args, timezone=zone)
        except TriggerError:
            assert time.perf_counter() - began < 0.1, f"rejecting {args} is slow"
            continue  # e.g. day 31 in February only, or the 2nd Friday on a Sunday
        at = utc(2027, 1, 1) + timedelta(seconds=rng.randrange(2 * 365 * 86400))
        prev: datetime | None = None
        for _ in range(15):
            for _ in range(2):  # a second try absorbs a scheduling hiccup of the test machine
                began = time.perf_counter()
                nxt = t.next_fire_time(prev, at)
                took = time.perf_counter() - began
                if took < 0.010:
                    break
            assert took < 0.010, f"{args} in {zone}: {took * 1000:.1f} ms"
            if nxt is None:
                break
            assert prev is None or nxt > prev
            prev = at = nxt
        checked += 1
    assert checked > 700


def test_due_fire_times_interval_a_year_behind() -> None:
    t = build_trigger("interval", {"seconds": 1, "start_date": "2026-05-01T00:00:00Z"})
    first, now = utc(2026, 5, 1), utc(2027, 5, 1, 0, 0, 0) + timedelta(milliseconds=500)
    tracemalloc.start()
    began = time.perf_counter()
    times, skipped, nxt = t.due_fire_times(first, now, 1000)
    took = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 0.2 and peak < 10_000_000
    assert times == [first + timedelta(seconds=i) for i in range(1000)]
    assert skipped == 365 * 86400 + 1 - 1000 and nxt == utc(2027, 5, 1, 0, 0, 1)
    ending = build_trigger(
        "interval", {"seconds": 10, "start_date": "2027-01-01T00:00:00Z", "end_date": "2027-01-01T00:01:00Z"}
    )
    assert ending.due_fire_times(utc(2027, 1, 1), utc(2027, 2, 1), 3) == (
        [utc(2027, 1, 1, 0, 0, s) for s in (0, 10, 20)],
        4,
        None,
    )
    assert ending.due_fire_times(utc(2027, 1, 1), utc(2026, 1, 1), 3) == ([], 0, utc(2027, 1, 1))


def test_due_fire_times_cron() -> None:
    t = build_trigger("cron", {"minute": "*"}, timezone="Europe/Berlin")
    first, now = utc(2027, 6, 1, 12), utc(2027, 6, 1, 12, 9, 30)
    assert t.due_fire_times(first, now, 100) == (
        [first + timedelta(minutes=i) for i in range(10)],
        0,
        utc(2027, 6, 1, 12, 10),
    )
    assert t.due_fire_times(first, now, 3) == (
        [first + timedelta(minutes=i) for i in range(3)],
        7,
        utc(2027, 6, 1, 12, 10),
    )
    every_second = build_trigger("cron", {"second": "*"})
    began = time.perf_counter()
    times, skipped, nxt = every_second.due_fire_times(utc(2026, 5, 1), utc(2027, 5, 1, 0, 0, 0, 500), 100)
    assert len(times) == 100 and skipped == MAX_COUNTED and nxt == utc(2027, 5, 1, 0, 0, 1)
    assert time.perf_counter() - began < 2  # counting is capped
    once = build_trigger("date", {"run_date": "2027-01-01"})
    assert once.due_fire_times(utc(2027, 1, 1), utc(2027, 2, 1), 5) == ([utc(2027, 1, 1)], 0, None)


def test_micro_timings(capsys: pytest.CaptureFixture[str]) -> None:
    now, lines = utc(2027, 5, 1, 12, 0, 7), []
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("interval", {"seconds": 30, "start_date": "2027-01-01"}, "UTC"),
        ("cron", {"minute": "*/15"}, "UTC"),
        ("cron", {"minute": "*/15"}, "America/New_York"),
        ("cron", {"hour": 9, "minute": 0, "day_of_week": "mon-fri"}, "Asia/Shanghai"),
    ]
    for type_, args, zone in cases:
        t = build_trigger(type_, args, timezone=zone)
        prev = t.next_fire_time(None, now)
        n, began = 2000, time.perf_counter()
        for _ in range(n):
            t.next_fire_time(prev, now)
        per_call = (time.perf_counter() - began) / n
        assert per_call < 0.010
        lines.append(f"  next_fire_time {per_call * 1e6:7.1f} us  {t.describe()}\n")
    with capsys.disabled():
        sys.stdout.write("\n" + "".join(lines))


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "args", "zone", "field", "text"),
    [
        ("crn", {}, "UTC", None, "did you mean 'cron'"),
        ("cron", {"hour": 25}, "UTC", "hour", "maximum value (23)"),
        ("cron", {"day_of_week": "funday"}, "UTC", "day_of_week", "funday"),
        ("cron", {"minute": 60}, "UTC", "minute", "maximum value (59)"),
        ("cron", {"hours": 3}, "UTC", "hours", "did you mean 'hour'"),
        ("cron", {"crontab": "0 9 * *"}, "UTC", "crontab", "5 fields"),
        ("cron", {"crontab": "0 9 * * 8"}, "UTC", "crontab", "day of week"),
        ("cron", {"crontab": "0 9 * * *", "hour": 1}, "UTC", "crontab", "no other cron fields"),
        ("cron", {"day": 30, "month": 2}, "UTC", "day", "never matches"),
        ("cron", {"hour": True}, "UTC", "hour", "expected an integer"),
        ("interval", {"seconds": -5}, "UTC", "seconds", "zero or more"),
        ("interval", {"seconds": 0}, "UTC", "seconds", "longer than zero"),
        ("interval", {"minutes": "5"}, "UTC", "minutes", "expected a number"),
        ("interval", {"seconds": 5, "start_date": "2027-02-01", "end_date": "2027-01-01"}, "UTC", "end_date", "before"),
        ("cron", {"hour": 1}, "Mars/Olympus", "timezone", "unknown time zone"),
        ("cron", {"hour": 1, "timezone": "Europe/Berlln"}, "UTC", "timezone", "unknown time zone"),
        ("date", {"run_date": "next tuesday"}, "UTC", "run_date", "not an ISO date"),
        ("date", {"run_date": 1234}, "UTC", "run_date", "expected an ISO"),
        ("interval", {"seconds": 5, "jitter": 3}, "UTC", "jitter", "schedule's jitter option"),
        ("calendarinterval", {"hour": 9}, "UTC", "days", "at least one day"),
        ("calendarinterval", {"days": 1, "hour": 24}, "UTC", "hour", "0 to 23"),
        ("calendarinterval", {"days": 1, "start_date": "2027-01-01 10:00"}, "UTC", "start_date", "ISO date"),
        ("or", {"triggers": []}, "UTC", "triggers", "list"),
        ("or", {"triggers": [{"type": "cron"}]}, "UTC", "triggers[0]", "'trigger'"),
        ("and", {"triggers": [{"trigger": "cron", "args": {"hour": 25}}]}, "UTC", "triggers[0].hour", "maximum"),
        (
            "and",
            {
                "triggers": [
                    {"trigger": "cron", "args": {"hour": 9}},
                    {"trigger": "cron", "args": {"day_of_week": "mon"}},
                ]
            },
            "UTC",
            "triggers",
            "never agree",
        ),
    ],
)
def test_bad_input(type_: str, args: dict[str, Any], zone: str, field: str | None, text: str) -> None:
    with pytest.raises(TriggerError) as info:
        build_trigger(type_, args, timezone=zone, schedule_id="nightly-report")
    assert info.value.field == field
    assert "schedule 'nightly-report'" in str(info.value)
    assert text in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_mapping_args() -> None:
    with pytest.raises(TriggerError, match="must be a mapping"):
        build_trigger("cron", [("hour", 1)], schedule_id="x")  # type: ignore[call-overload,arg-type,unused-ignore]


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: PYTHONPATH=. python tests/test_triggers.py --regen")
    GOLDEN.parent.mkdir(exist_ok=True)
    data = generate_golden()
    text = json.dumps(data, indent=1)
    GOLDEN.write_text(text + "\n")
    sys.stdout.write(f"wrote {GOLDEN} ({len(text) // 1024} kB)\n")


def test_wrap_combinations_and_other_triggers() -> None:
    from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
    from apscheduler.triggers.combining import OrTrigger  # type: ignore[import-untyped]
    from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]

    dates = OrTrigger([DateTrigger("2027-01-01 10:00:00", "UTC"), DateTrigger("2027-01-02 10:00:00", "UTC")])
    assert wrap_trigger(dates).preview(5, start=utc(2026, 1, 1)) == [utc(2027, 1, 1, 10), utc(2027, 1, 2, 10)]

    class Hourly(BaseTrigger):  # type: ignore[misc]
        def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime:
            return (previous or now).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)

    other = wrap_trigger(Hourly())
    assert other.spec is None and not other.is_wall_clock
    assert other.preview(2, start=utc(2027, 1, 1, 0, 30)) == [utc(2027, 1, 1, 1), utc(2027, 1, 1, 2)]
