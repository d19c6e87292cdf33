"""Schedule's constructors (the dataclass's fields, a hand-written __init__, new_schedule) and the option memo."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from aiosched.exceptions import ScheduleError
from aiosched.models import DEFAULT_POLICY, EMPTY_KWARGS, Policy, Schedule, _ScheduleDraft, apply_options, new_schedule
from aiosched.triggers import build_trigger

TRIGGER = build_trigger("date", {"run_date": datetime(2030, 1, 1, tzinfo=UTC)})
FIELDS: dict[str, Any] = {
    "id": "a",
    "name": "n",
    "func": print,
    "task_ref": "builtins:print",
    "trigger": TRIGGER,
    "args": (1, 2),
    "kwargs": MappingProxyType({"k": 1}),
    "policy": Policy(max_instances=3),
    "paused": True,
    "next_fire_time": datetime(2030, 1, 1, tzinfo=UTC),
    "version": 7,
    "source": "config",
}


def test_init_matches_the_fields() -> None:
    params = inspect.signature(Schedule.__init__).parameters
    fields = dataclasses.fields(Schedule)
    assert list(params)[1:] == [f.name for f in fields]
    for f in fields:
        p = params[f.name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert p.default is f.default_factory(), f.name
        else:
            assert p.default is inspect.Parameter.empty, f.name
    assert _ScheduleDraft.__slots__ == Schedule.__slots__ == tuple(f.name for f in fields)


def test_init_sets_every_field_and_defaults() -> None:
    s = Schedule(**FIELDS)
    assert {f.name: getattr(s, f.name) for f in dataclasses.fields(s)} == FIELDS
    bare = Schedule(id="b", name="b", func=None, task_ref=None, trigger=TRIGGER)
    assert (bare.args, bare.kwargs, bare.policy, bare.paused, bare.next_fire_time, bare.version, bare.source) == (
        (),
        EMPTY_KWARGS,
        DEFAULT_POLICY,
        False,
        None,
        0,
        "runtime",
    )
    with pytest.raises(TypeError):
        Schedule(id="c", name="c", func=None, task_ref=None)  # type: ignore[call-arg]


def test_new_schedule_is_an_ordinary_frozen_schedule() -> None:
    s = new_schedule(**FIELDS)
    assert type(s) is Schedule and isinstance(s, Schedule)
    assert s == Schedule(**FIELDS)
    assert repr(s) == repr(Schedule(**FIELDS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.id = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del s.name  # type: ignore[misc]
    changed = dataclasses.replace(s, version=8)
    assert changed.version == 8 and changed.id == "a" and s.version == 7
    assert s.next_run_time is None  # paused


def test_option_memo_tells_bools_from_numbers() -> None:
    assert apply_options(DEFAULT_POLICY, {"max_instances": 1}).max_instances == 1
    with pytest.raises(ScheduleError, match="must be an integer"):
        apply_options(DEFAULT_POLICY, {"max_instances": True})
    assert apply_options(DEFAULT_POLICY, {"coalesce": False}) is apply_options(DEFAULT_POLICY, {"coalesce": False})
    with pytest.raises(ScheduleError, match="true or false"):
        apply_options(DEFAULT_POLICY, {"coalesce": 0})
    both = apply_options(DEFAULT_POLICY, {"timeout": 5, "max_instances": 2})
    assert both == apply_options(DEFAULT_POLICY, {"max_instances": 2, "timeout": 5})
