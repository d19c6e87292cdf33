"""Schedules and run records <-> rows of plain values, for the durable stores (SQLite, PostgreSQL).

Payloads are JSON, never pickle: the trigger as its `TriggerSpec`, args, kwargs and the
policy. A schedule can only be made durable when it can be rebuilt in another process:
an importable task (``task_ref``) and a trigger built from a type name (``trigger.spec``).

Datetimes are converted by a function the backend passes in (ISO text for SQLite, the
datetime itself for a database with a timestamp type), so the row layout is shared.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from ..exceptions import ScheduleError
from ..loader import resolve
from ..models import Catchup, Overlap, Policy, RunRecord, RunState, Schedule
from ..retry import RetryPolicy
from ..triggers import TriggerSpec, build_trigger

#: the run columns, in the order of :func:`run_values`.
RUN_COLUMNS = (
    "schedule_id",
    "fire_time",
    "state",
    "attempt",
    "started_at",
    "ended_at",
    "lateness",
    "error",
    "traceback",
    "result",
    "reason",
    "manual",
    "node",
)
#: the schedule columns, in the order of :class:`ScheduleRow`.
SCHEDULE_COLUMNS = (
    "id",
    "name",
    "task_ref",
    "trigger",
    "args",
    "kwargs",
    "policy",
    "paused",
    "next_fire_time",
    "version",
    "source",
)


def iso(value: datetime) -> str:
    """UTC ISO 8601 text of fixed width (``2030-01-01T00:00:00.000000+00:00``): sorts as it compares."""
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    """Read what :func:`iso` wrote."""
    return datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as stored: JSON texts and plain values (see ``SCHEDULE_COLUMNS``)."""

    id: str
    name: str
    task_ref: str
    trigger: str
    args: str
    kwargs: str
    policy: str
    paused: bool
    next_fire_time: datetime | None
    version: int
    source: str

    def values(self, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
        """The column values in ``SCHEDULE_COLUMNS`` order, datetimes through ``time``."""
        nft = None if self.next_fire_time is None else time(self.next_fire_time)
        return (
            self.id,
            self.name,
            self.task_ref,
            self.trigger,
            self.args,
            self.kwargs,
            self.policy,
            self.paused,
            nft,
            self.version,
            self.source,
        )


def _json(value: Any, schedule_id: str, field: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ScheduleError(
            f"must be JSON-serializable for a durable store ({exc})", field=field, schedule_id=schedule_id
        ) from None


def schedule_row(schedule: Schedule) -> ScheduleRow:
    """Encode a schedule for a durable store.

    Raises:
        ScheduleError: the task is not importable by reference (a lambda, closure, partial or
            bound method), the trigger was given as an object rather than a type name, or
            args/kwargs are not JSON-serializable. The error names the field.
    """
    sid = schedule.id
    if not schedule.task_ref:
        raise ScheduleError(
            "durable stores need an importable task: a module-level function or BaseTask class, "
            "or a 'package.module:name' reference (not a lambda, closure, partial or bound method)",
            field="func",
            schedule_id=sid,
        )
    spec = schedule.trigger.spec
    if spec is None:
        raise ScheduleError(
            "durable stores need a trigger built from a type name ('interval', 'cron', 'date', ...) "
            "and its arguments, not a trigger object",
            field="trigger",
            schedule_id=sid,
        )
    return ScheduleRow(
        id=sid,
        name=schedule.name,
        task_ref=schedule.task_ref,
        trigger=_json(spec.to_dict(), sid, "trigger"),
        args=_json(list(schedule.args), sid, "args"),
        kwargs=_json(dict(schedule.kwargs), sid, "kwargs"),
        policy=_json(policy_dict(schedule.policy), sid, "policy"),
        paused=schedule.paused,
        next_fire_time=schedule.next_fire_time,
        version=schedule.version,
        source=schedule.source,
    )


def schedule_from_values(values: Sequence[Any], time: Callable[[Any], datetime]) -> Schedule:
    """Decode a row (``SCHEDULE_COLUMNS`` order): resolve the task, rebuild the trigger and policy.

    Raises:
        Exception: anything (bad JSON, unknown task or trigger type, bad policy value); the
            message says what. The caller reports the row as invalid and keeps it untouched.
    """
    sid, name, task_ref, trigger, args, kwargs, policy, paused, nft, version, source = values
    spec = TriggerSpec.from_dict(_load(trigger, "trigger"))
    func = resolve(task_ref, schedule_id=sid)
    if not callable(func):
        raise ScheduleError(f"{task_ref!r} is not callable", field="task_ref", schedule_id=sid)
    loaded_args, loaded_kwargs = _load(args, "args"), _load(kwargs, "kwargs")
    if not isinstance(loaded_args, list) or not isinstance(loaded_kwargs, dict):
        raise ScheduleError("args must be a JSON list and kwargs a JSON object", schedule_id=sid)
    return Schedule(
        id=sid,
        name=name,
        func=func,
        task_ref=task_ref,
        trigger=build_trigger(spec.type, spec.args, timezone=spec.timezone, schedule_id=sid),
        args=tuple(loaded_args),
        kwargs=MappingProxyType(loaded_kwargs),
        policy=policy_from_dict(_load(policy, "policy")),
        paused=bool(paused),
        next_fire_time=None if nft is None else time(nft),
        version=int(version),
        source=source,
    )


def _load(text: object, field: str) -> Any:
    if not isinstance(text, str):  # e.g. a pickle blob: never unpickled, refused here
        raise ScheduleError(f"{field} is not JSON text (got {type(text).__name__})", field=field)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ScheduleError(f"{field} is not valid JSON ({exc})", field=field) from None


# -- policy --------------------------------------------------------------------------

_ENUMS: dict[str, Any] = {"overlap": Overlap, "catchup": Catchup}
_POLICY_FIELDS = frozenset(f.name for f in fields(Policy))
_RETRY_FIELDS = frozenset(f.name for f in fields(RetryPolicy))


def policy_dict(policy: Policy) -> dict[str, Any]:
    """A Policy as a JSON-ready dict (enums by value, retry nested)."""
    out = {name: getattr(policy, name) for name in sorted(_POLICY_FIELDS)}
    out["retry"] = {name: getattr(policy.retry, name) for name in sorted(_RETRY_FIELDS)}
    out["retry"]["retry_on"] = list(policy.retry.retry_on)
    for name in _ENUMS:
        out[name] = out[name].value
    return out


def policy_from_dict(data: Any) -> Policy:
    """Read what :func:`policy_dict` wrote; missing keys take their defaults.

    Raises:
        ScheduleError: not an object, an unknown key, or a value the Policy refuses.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("retry", {}), Mapping):
        raise ScheduleError("the policy must be a JSON object", field="policy")
    retry = dict(data.get("retry", {}))
    unknown = sorted((set(data) - _POLICY_FIELDS) | {f"retry.{k}" for k in set(retry) - _RETRY_FIELDS})
    if unknown:
        raise ScheduleError(f"unknown policy keys {unknown}", field="policy")
    values = {k: v for k, v in data.items() if k != "retry"}
    for name, kind in _ENUMS.items():
        if name in values:
            values[name] = kind(values[name])
    if "retry_on" in retry:
        if not isinstance(retry["retry_on"], list):
            raise ScheduleError("retry.retry_on must be a list of exception names", field="policy")
        retry["retry_on"] = tuple(retry["retry_on"])
    try:
        return Policy(**values, retry=RetryPolicy(**retry))
    except TypeError as exc:  # a value of the wrong type, caught by a comparison in __post_init__
        raise ScheduleError(f"bad policy value ({exc})", field="policy") from None


# -- runs ----------------------------------------------------------------------------


def run_values(run: RunRecord, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """A run record's column values (``RUN_COLUMNS`` order), datetimes through ``time``."""
    return (
        run.schedule_id,
        time(run.fire_time),
        run.state.value,
        run.attempt,
        None if run.started_at is None else time(run.started_at),
        None if run.ended_at is None else time(run.ended_at),
        run.lateness,
        run.error,
        run.traceback,
        run.result,
        run.reason,
        run.manual,
        run.node,
    )


def run_from_values(values: Sequence[Any], time: Callable[[Any], datetime]) -> RunRecord:
    """Read what :func:`run_values` wrote."""
    sid, fire, state, attempt, started, ended, lateness, error, tb, result, reason, manual, node = values
    return RunRecord(
        schedule_id=sid,
        fire_time=time(fire),
        state=RunState(state),
        attempt=attempt,
        started_at=None if started is None else time(started),
        ended_at=None if ended is None else time(ended),
        lateness=lateness,
        error=error,
        traceback=tb,
        result=result,
        reason=reason,
        manual=bool(manual),
        node=node,
    )
