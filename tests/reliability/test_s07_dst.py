"""S7 (U): DST golden files for 40 cron expressions over 2 years in the five zones.

The first golden file (tests/golden/triggers_dst.json: 17 crons, an interval, a calendar
interval and date triggers, dense crons around every transition) is checked by
tests/test_triggers.py::test_golden_file_matches and ::test_golden_fire_times_keep_the_rules, and
random expressions (every next() < 10 ms) by ::test_random_crons_are_fast_and_increasing; they are
not repeated here. This module adds 40 cron expressions, each over the whole two years in each
of Europe/Berlin, America/New_York, Australia/Lord_Howe (30-minute DST), America/Santiago and
Asia/Kolkata, against tests/reliability/golden/crons_dst.json.

Passes when every series matches the golden file 100 % (a SHA-256 of the whole series, plus the
fire times within a day of each transition written out, so a diff shows what moved), no fire
is at a local time that does not exist (each is at a matching wall time or at the instant the
clock jumps), UTC fire times strictly increase, a repeated local hour fires once (each local wall
time at most once), and every next() takes < 10 ms.

Regenerate after a deliberate rule change (review the diff!):

    PYTHONPATH=. python -m tests.reliability.test_s07_dst --regen
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aiosched import Trigger, build_trigger

from ..test_triggers import SPAN, ZONES, assert_sane, check_wall_rules, transitions

GOLDEN = Path(__file__).parent / "golden" / "crons_dst.json"
NEXT_LIMIT = 0.010
EXPRESSIONS: dict[str, dict[str, Any]] = {
    # daily, at the hours DST moves (0-3), around them, and far from them
    "00:00": {"hour": 0, "minute": 0},
    "00:15": {"hour": 0, "minute": 15},
    "00:45": {"hour": 0, "minute": 45},
    "01:00": {"hour": 1, "minute": 0},
    "01:59": {"hour": 1, "minute": 59},
    "02:00": {"hour": 2, "minute": 0},
    "02:15": {"hour": 2, "minute": 15},
    "02:45": {"hour": 2, "minute": 45},
    "03:00": {"hour": 3, "minute": 0},
    "03:30": {"hour": 3, "minute": 30},
    "12:00": {"hour": 12, "minute": 0},
    "23:59": {"hour": 23, "minute": 59},
    "02:30:30": {"hour": 2, "minute": 30, "second": 30},
    "01:30+13:30": {"hour": "1,13", "minute": 30},
    "00-03:00": {"hour": "0-3", "minute": 0},
    "22-23:00,30": {"hour": "22-23", "minute": "0,30"},
    "every-12h-at-30": {"hour": "*/12", "minute": 30},
    "every-2nd-day-02:30": {"day": "*/2", "hour": 2, "minute": 30},
    "dst-months-daily-02:30": {"month": "3,4,9,10,11", "hour": 2, "minute": 30},
    "weekdays-09:00": {"day_of_week": "mon-fri", "hour": 9, "minute": 0},
    "weekends-01:30": {"day_of_week": "sat,sun", "hour": 1, "minute": 30},
    "sunday-02:00": {"day_of_week": "sun", "hour": 2, "minute": 0},
    "sunday-02:30": {"day_of_week": "sun", "hour": 2, "minute": 30},
    "sunday-00:30": {"day_of_week": "sun", "hour": 0, "minute": 30},
    "saturday-23:30": {"day_of_week": "sat", "hour": 23, "minute": 30},
    "monday-every-6h": {"day_of_week": "mon", "hour": "*/6", "minute": 0},
    "monthly-1st-00:00": {"day": 1, "hour": 0, "minute": 0},
    "monthly-1st-02:30": {"day": 1, "hour": 2, "minute": 30},
    "monthly-15th-03:00": {"day": 15, "hour": 3, "minute": 0},
    "monthly-last-02:00": {"day": "last", "hour": 2, "minute": 0},
    "first-sunday-02:30": {"day": "1st sun", "hour": 2, "minute": 30},
    "first-sunday-01:30": {"day": "1st sun", "hour": 1, "minute": 30},
    "second-sunday-02:00": {"day": "2nd sun", "hour": 2, "minute": 0},
    "last-sunday-01:30": {"day": "last sun", "hour": 1, "minute": 30},
    "last-sunday-02:30": {"day": "last sun", "hour": 2, "minute": 30},
    "last-saturday-23:59": {"day": "last sat", "hour": 23, "minute": 59},
    "quarterly-02:30": {"month": "*/3", "day": 1, "hour": 2, "minute": 30},
    "april-october-1st-sunday-03:00": {"month": "4,10", "day": "1st sun", "hour": 3, "minute": 0},
    "yearly-01-01-00:00": {"month": 1, "day": 1, "hour": 0, "minute": 0},
    "march-november-daily-01:45": {"month": "3,11", "hour": 1, "minute": 45},
}
assert len(EXPRESSIONS) == 40


def timed_series(trigger: Trigger, start: datetime, end: datetime) -> tuple[list[datetime], float]:
    """Fire times in [start, end) and the slowest next() call (an outlier is timed twice more)."""
    out: list[datetime] = []
    slowest = 0.0
    previous: datetime | None = None
    at_ = start
    while True:
        began = time.perf_counter()
        nxt = trigger.next_fire_time(previous, at_)
        took = time.perf_counter() - began
        for _ in range(2):  # absorb scheduling hiccups of a shared test machine: the call's cost is the least
            if took < NEXT_LIMIT:
                break
            began = time.perf_counter()
            trigger.next_fire_time(previous, at_)
            took = min(took, time.perf_counter() - began)
        slowest = max(slowest, took)
        if nxt is None or nxt >= end:
            return out, slowest
        out.append(nxt)
        previous = at_ = nxt


def summary(times: list[datetime], zone: str) -> dict[str, Any]:
    """What the golden file keeps of a series: a digest of all of it, the fires near transitions written out."""
    tz = ZoneInfo(zone)
    local = [t.astimezone(tz).isoformat() for t in times]
    marks = transitions(zone)
    near = [s for t, s in zip(times, local, strict=True) if any(abs(t - m) <= timedelta(days=1) for m in marks)]
    return {
        "count": len(local),
        "first": local[0] if local else None,
        "last": local[-1] if local else None,
        "sha256": hashlib.sha256("\n".join(local).encode()).hexdigest(),
        "near_transitions": near,
    }


def generate(zone: str) -> tuple[dict[str, Any], dict[str, list[datetime]], float]:
    """The golden entry of one zone, the series themselves, and the slowest next().

    The cyclic garbage collector is off meanwhile: a full collection of the test process's heap
    (several ms under pytest) is not part of next().
    """
    entry: dict[str, Any] = {}
    series: dict[str, list[datetime]] = {}
    slowest = 0.0
    gc.disable()
    try:
        for name, args in EXPRESSIONS.items():
            times, took = timed_series(build_trigger("cron", args, timezone=zone), *SPAN)
            series[name] = times
            entry[name] = summary(times, zone)
            slowest = max(slowest, took)
    finally:
        gc.enable()
    return entry, series, slowest


def golden_document() -> dict[str, Any]:
    return {
        "about": "aiosched: 40 cron expressions over 2 years in 5 zones; see tests/reliability/test_s07_dst.py",
        "span": [t.isoformat() for t in SPAN],
        "transitions": {zone: [t.isoformat() for t in transitions(zone)] for zone in ZONES},
        "expressions": EXPRESSIONS,
        "series": {zone: generate(zone)[0] for zone in ZONES},
    }


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    expected: dict[str, Any] = json.loads(GOLDEN.read_text())
    if expected["transitions"] != {zone: [t.isoformat() for t in transitions(zone)] for zone in ZONES}:
        pytest.skip("this machine's tz database has other DST rules than the golden file's; regenerate it")
    assert expected["expressions"] == EXPRESSIONS, "the expressions changed: regenerate the golden file"
    return expected


@pytest.mark.parametrize("zone", ZONES)
def test_s7_forty_crons_two_years(zone: str, golden: dict[str, Any], figure: Any) -> None:
    entry, series, slowest = generate(zone)
    mismatched = [name for name in EXPRESSIONS if entry[name] != golden["series"][zone][name]]
    fires = sum(len(times) for times in series.values())
    figure("S7", f"{zone}: series matching the golden file", f"{40 - len(mismatched)}/40 ({fires} fires)", "40/40")
    figure("S7", f"{zone}: slowest next() (ms)", slowest * 1000, "< 10")
    for name in mismatched:  # show the first difference where a reader can see it
        assert entry[name]["near_transitions"] == golden["series"][zone][name]["near_transitions"], f"{zone} {name}"
        assert entry[name] == golden["series"][zone][name], f"{zone} {name}: differs away from the transitions"
    for name, times in series.items():
        assert times, f"{zone} {name} is empty"
        assert_sane(times)  # aware UTC, strictly increasing
        # each fire is at a wall time the expression matches or at the instant the clock jumps (never at
        # a local time that does not exist), and each local wall time fires at most once (fall back: once)
        check_wall_rules(times, zone, EXPRESSIONS[name])
    assert slowest < NEXT_LIMIT


if __name__ == "__main__" and "--regen" in sys.argv:
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden_document(), indent=1) + "\n")
