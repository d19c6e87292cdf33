"""Date and interval triggers built without APScheduler, and their specs derived on demand.

``build_trigger`` keeps no argument dict for a date or interval trigger in the common case:
its ``spec`` is made from the trigger's own fields when asked for. These tests pin that the
derived spec is the one the eager construction (``a`` dict with ISO strings) produces, that
the quick paths for an aware datetime behave like the general path, and that stores and
rebuilt triggers see no difference.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from aiosched.exceptions import TriggerError
from aiosched.triggers import TriggerSpec, build_trigger, wrap_trigger

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")


class _Stamp(datetime):
    """A datetime subclass: not the exact type, so build_trigger takes its general path."""


def _general(value: datetime) -> datetime:
    return _Stamp.fromisoformat(value.isoformat())


CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], datetime]] = [
    # (type, args, default zone, expected spec args, expected first fire time)
    (
        "date",
        {"run_date": datetime(2030, 6, 1, tzinfo=UTC)},
        "UTC",
        {"run_date": "2030-06-01T00:00:00+00:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "date",
        {"run_date": datetime(2030, 6, 1, 8, tzinfo=SHANGHAI)},
        "Europe/Berlin",
        {"run_date": "2030-06-01T08:00:00+08:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "date",
        {"run_date": datetime(2030, 6, 1, 8)},
        "Asia/Shanghai",
        {"run_date": "2030-06-01T08:00:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "date",
        {"run_date": date(2030, 6, 1)},
        "UTC",
        {"run_date": "2030-06-01T00:00:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "date",
        {"run_date": " 2030-06-01 08:00"},
        "Asia/Shanghai",
        {"run_date": " 2030-06-01 08:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    ("date", {}, "UTC", {"run_date": NOW.isoformat()}, NOW),
    ("date", {"run_date": None}, "UTC", {"run_date": NOW.isoformat()}, NOW),
    (
        "date",
        {"run_date": datetime(2030, 6, 1, 8), "timezone": "Asia/Shanghai"},
        "UTC",
        {"run_date": "2030-06-01T08:00:00", "timezone": "Asia/Shanghai"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "interval",
        {"seconds": 30, "start_date": datetime(2030, 6, 1, tzinfo=UTC)},
        "UTC",
        {"seconds": 30, "start_date": "2030-06-01T00:00:00+00:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "interval",
        {"minutes": 1.5, "start_date": datetime(2030, 6, 1, 8, tzinfo=SHANGHAI)},
        "UTC",
        {"minutes": 1.5, "start_date": "2030-06-01T08:00:00+08:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "interval",
        {"hours": 1},
        "UTC",
        {"hours": 1, "start_date": (NOW + timedelta(hours=1)).isoformat()},
        NOW + timedelta(hours=1),
    ),
    (
        "interval",
        {"start_date": "2030-06-01 08:00", "seconds": 30, "end_date": datetime(2030, 6, 2)},
        "Asia/Shanghai",
        {"seconds": 30, "start_date": "2030-06-01 08:00", "end_date": "2030-06-02T00:00:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "interval",
        {"hours": 1, "minutes": 30, "start_date": datetime(2030, 6, 1, tzinfo=UTC)},
        "UTC",
        {"hours": 1, "minutes": 30, "start_date": "2030-06-01T00:00:00+00:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
    (
        "interval",
        {"seconds": 30, "end_date": None, "start_date": datetime(2030, 6, 1, tzinfo=UTC)},
        "UTC",
        {"seconds": 30, "end_date": None, "start_date": "2030-06-01T00:00:00+00:00"},
        datetime(2030, 6, 1, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize(("type_", "args", "zone", "expected", "first"), CASES)
def test_spec_is_what_the_arguments_say(
    type_: str, args: dict[str, Any], zone: str, expected: dict[str, Any], first: datetime
) -> None:
    t = build_trigger(type_, args, timezone=zone, now=NOW)
    assert t.spec == TriggerSpec(type_, expected, zone)
    assert t.spec.to_dict() == {"type": type_, "args": expected, "timezone": zone}
    assert t.next_fire_time(None, NOW - timedelta(days=365)) == first
    stored = TriggerSpec.from_dict(json.loads(json.dumps(t.spec.to_dict())))
    again = build_trigger(stored.type, stored.args, timezone=stored.timezone, now=NOW + timedelta(days=9))
    assert again.spec == t.spec
    assert again.preview(5, start=NOW) == t.preview(5, start=NOW)
    assert again.describe() == t.describe()


def test_the_spec_of_a_common_add_is_derived_on_demand() -> None:
    t = build_trigger("date", {"run_date": NOW}, now=NOW)
    assert t._spec is None  # nothing but the trigger's fields is kept ...
    assert t.spec is not t.spec and t.spec == t.spec  # ... and each ask makes the spec afresh
    iv = build_trigger("interval", {"seconds": 5, "start_date": NOW}, now=NOW)
    assert iv._spec is None and iv.spec == TriggerSpec("interval", {"seconds": 5, "start_date": NOW.isoformat()}, "UTC")
    t.spec = None  # a spec set by hand wins (as for any trigger)
    assert t.spec is None


@pytest.mark.parametrize(
    "run",
    [
        datetime(2030, 6, 1, tzinfo=UTC),
        datetime(2030, 6, 1, 8, tzinfo=SHANGHAI),
        datetime(2030, 6, 1, 1, tzinfo=ZoneInfo("UTC")),
    ],
)
def test_quick_date_path_is_the_general_one(run: datetime) -> None:
    quick = build_trigger("date", {"run_date": run}, timezone="Asia/Kolkata", schedule_id="q", now=NOW)
    general = build_trigger("date", {"run_date": _general(run)}, timezone="Asia/Kolkata", schedule_id="q", now=NOW)
    assert quick.spec == general.spec
    assert quick.describe() == general.describe()
    assert quick.timezone is general.timezone
    for at in (None, run - timedelta(seconds=1), run):
        assert quick.next_fire_time(at, NOW) == general.next_fire_time(at, NOW)
    assert quick.next_fire_time(None, NOW).tzinfo is UTC  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "span",
    [{"seconds": 30}, {"minutes": 0.5}, {"hours": 2}, {"days": 1}, {"weeks": 1}, {"seconds": 1e-7}, {"seconds": 0}],
)
def test_quick_interval_path_is_the_general_one(span: dict[str, Any]) -> None:
    start = datetime(2030, 6, 1, 8, tzinfo=SHANGHAI)

    def build(at: datetime) -> Any:
        try:
            return build_trigger("interval", {**span, "start_date": at}, timezone="UTC", now=NOW)
        except TriggerError as exc:
            return (exc.field, exc.reason)

    quick, general = build(start), build(_general(start))
    if isinstance(general, tuple):  # a zero interval: the same error either way
        assert quick == general
        return
    assert quick.spec == general.spec
    assert quick.describe() == general.describe()
    assert quick.preview(5, start=NOW) == general.preview(5, start=NOW)
    assert quick.due_fire_times(start, start + timedelta(days=1), 3) == general.due_fire_times(
        start, start + timedelta(days=1), 3
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"seconds": True, "start_date": NOW}, "seconds"),
        ({"seconds": float("inf"), "start_date": NOW}, "seconds"),
        ({"seconds": -1, "start_date": NOW}, "seconds"),
        ({"seconds": "5", "start_date": NOW}, "seconds"),
        ({"jitter": 5, "start_date": NOW}, "jitter"),
        ({"secs": 5, "start_date": NOW}, "secs"),
        ({"days": 10**9, "start_date": NOW}, "days"),
        ({"timezone": "Nowhere/Land", "start_date": NOW}, "timezone"),
    ],
)
def test_bad_interval_arguments_are_refused_as_before(args: dict[str, Any], field: str) -> None:
    with pytest.raises(TriggerError) as info:
        build_trigger("interval", args, schedule_id="s")
    assert info.value.field == field and info.value.schedule_id == "s"


def test_bad_date_arguments_are_refused_as_before() -> None:
    with pytest.raises(TriggerError, match="unknown time zone") as info:
        build_trigger("date", {"run_date": NOW}, timezone="Nowhere/Land")
    assert info.value.field == "timezone"
    with pytest.raises(TriggerError, match="not an ISO date/time") as info:
        build_trigger("date", {"run_date": "soon"})
    assert info.value.field == "run_date"
    with pytest.raises(TriggerError, match="unknown argument") as info:
        build_trigger("date", {"run_dat": NOW})
    assert info.value.field == "run_dat"
    with pytest.raises(TriggerError, match="must be a mapping"):
        build_trigger("date", [("run_date", NOW)])  # type: ignore[arg-type]


def test_wrapped_date_and_interval_triggers() -> None:
    date_ = wrap_trigger(DateTrigger(run_date=datetime(2030, 6, 1, 8), timezone="Asia/Shanghai"))
    assert date_.spec is None and not date_.is_wall_clock
    assert date_.next_fire_time(None, NOW) == datetime(2030, 6, 1, tzinfo=UTC)
    assert date_.describe() == "once at 2030-06-01 08:00:00+08:00 (Asia/Shanghai)"
    every = wrap_trigger(IntervalTrigger(minutes=90, start_date=datetime(2030, 6, 1, tzinfo=UTC), timezone="UTC"))
    assert every.spec is None and every.describe() == "every 1h30m"
    assert every.preview(2, start=datetime(2030, 6, 1, tzinfo=UTC)) == [
        datetime(2030, 6, 1, tzinfo=UTC),
        datetime(2030, 6, 1, 1, 30, tzinfo=UTC),
    ]


def test_combinations_of_quick_triggers_keep_their_specs() -> None:
    args = {"triggers": [{"trigger": "date", "args": {"run_date": NOW}}, {"trigger": "interval", "args": {"hours": 5}}]}
    t = build_trigger("or", args, now=NOW)
    assert t.spec is not None
    assert t.spec.args["triggers"] == [
        {"trigger": "date", "args": {"run_date": NOW.isoformat()}},
        {"trigger": "interval", "args": {"hours": 5, "start_date": (NOW + timedelta(hours=5)).isoformat()}},
    ]
    assert t.preview(3, start=NOW) == [NOW, NOW + timedelta(hours=5), NOW + timedelta(hours=10)]
    both = build_trigger("and", {"triggers": [{"trigger": "date", "args": {"run_date": NOW}}] * 2}, now=NOW)
    assert both.preview(2, start=NOW) == [NOW] and both.describe().startswith("and[once at ")
