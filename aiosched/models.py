"""The data aiosched passes around: schedules, their policy, and run records.

All are frozen; change them with :func:`dataclasses.replace`. Datetimes are aware UTC.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from .exceptions import ScheduleError
from .retry import NO_RETRY, RetryPolicy
from .triggers import Trigger

EMPTY_KWARGS: Mapping[str, Any] = MappingProxyType({})


class RunState(enum.StrEnum):
    """Where a run is in its life. ``queued`` waits for a slot (``overlap: buffer_one``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    MISSED = "missed"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"

    @functools.cached_property
    def is_final(self) -> bool:  # cached per member: it is asked several times per fire
        """Whether the run is over (neither queued nor running)."""
        return self not in (RunState.QUEUED, RunState.RUNNING)


class Overlap(enum.StrEnum):
    """What a fire does when its schedule already has ``max_instances`` runs."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    CANCEL_OTHER = "cancel_other"


class Catchup(enum.StrEnum):
    """Which of several fire times that are due at once actually run."""

    LATEST = "latest"
    EARLIEST = "earliest"
    ALL = "all"
    SKIP = "skip"


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """How a schedule's fires are run.

    Attributes:
        executor: ``default`` (async on the loop), ``threadpool`` or ``processpool``.
        max_instances: runs of this schedule allowed at the same time.
        overlap: what a fire does when ``max_instances`` is reached.
        misfire_grace_time: seconds a fire may start late; later ones are ``missed``.
            ``None`` means any lateness is fine.
        catchup: which fires run when several are due at once (after downtime or a stall).
        max_catchup: at most this many due fire times are enumerated; the rest are counted.
        timeout: seconds an attempt may take, ``None`` for no limit.
        jitter: a run starts up to this many seconds after its fire time, at random.
        retry: the retry policy.
        recover: re-run a run once more when its node died while it was in flight.
    """

    executor: str = "default"
    max_instances: int = 1
    overlap: Overlap = Overlap.SKIP
    misfire_grace_time: float | None = None
    catchup: Catchup = Catchup.LATEST
    max_catchup: int = 100
    timeout: float | None = None
    jitter: float | None = None
    retry: RetryPolicy = NO_RETRY
    recover: bool = False

    def __post_init__(self) -> None:
        problems = [
            ("max_instances", self.max_instances >= 1, "must be at least 1"),
            ("misfire_grace_time", self.misfire_grace_time is None or self.misfire_grace_time >= 0, "must be >= 0"),
            ("max_catchup", self.max_catchup >= 1, "must be at least 1"),
            ("timeout", self.timeout is None or self.timeout > 0, "must be positive"),
            ("jitter", self.jitter is None or self.jitter >= 0, "must not be negative"),
        ]
        for name, ok, reason in problems:
            if not ok:
                raise ScheduleError(f"{reason} (got {getattr(self, name)!r})", field=name)


DEFAULT_POLICY = Policy()


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Schedule:
    """A task, when it fires, and how its runs are handled.

    Attributes:
        id: unique within the store.
        func: the callable to run (resolved from ``task_ref`` when loaded from a store).
        task_ref: ``"package.module:qualname"`` when the callable is importable; stores
            that persist schedules need it.
        trigger: computes fire times.
        next_fire_time: the next nominal fire time, ``None`` when the trigger is done.
        paused: a paused schedule keeps its place but does not fire.
        version: bumped by the store on every change, so a stale write can be refused.
        source: ``"runtime"`` (added through the API) or ``"config"`` (from a YAML file).
    """

    id: str
    name: str
    func: Callable[..., Any] | None
    task_ref: str | None
    trigger: Trigger
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=lambda: EMPTY_KWARGS)
    policy: Policy = DEFAULT_POLICY
    paused: bool = False
    next_fire_time: datetime | None = None
    version: int = 0
    source: str = "runtime"

    def __init__(
        self,
        *,
        id: str,
        name: str,
        func: Callable[..., Any] | None,
        task_ref: str | None,
        trigger: Trigger,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] = EMPTY_KWARGS,
        policy: Policy = DEFAULT_POLICY,
        paused: bool = False,
        next_fire_time: datetime | None = None,
        version: int = 0,
        source: str = "runtime",
    ) -> None:
        # The dataclass's own __init__ of a frozen class sets each field through
        # object.__setattr__ (~4 us for 12 fields, a large part of an add); the slots'
        # descriptors set them directly (~1 us). A test keeps this in step with the fields.
        s = _SCHEDULE_SETTERS
        s[0](self, id)
        s[1](self, name)
        s[2](self, func)
        s[3](self, task_ref)
        s[4](self, trigger)
        s[5](self, args)
        s[6](self, kwargs)
        s[7](self, policy)
        s[8](self, paused)
        s[9](self, next_fire_time)
        s[10](self, version)
        s[11](self, source)

    @property
    def next_run_time(self) -> datetime | None:
        """The original API's name for :attr:`next_fire_time`."""
        return None if self.paused else self.next_fire_time


_SCHEDULE_SETTERS: tuple[Callable[[Schedule, Any], None], ...] = tuple(
    Schedule.__dict__[f.name].__set__ for f in fields(Schedule)
)


class _ScheduleDraft:
    """A mutable twin of Schedule's layout (same slots, same order) for :func:`new_schedule`."""

    __slots__ = Schedule.__slots__
    id: str
    name: str
    func: Callable[..., Any] | None
    task_ref: str | None
    trigger: Trigger
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    policy: Policy
    paused: bool
    next_fire_time: datetime | None
    version: int
    source: str


def new_schedule(
    *,
    id: str,
    name: str,
    func: Callable[..., Any] | None,
    task_ref: str | None,
    trigger: Trigger,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    policy: Policy,
    paused: bool,
    next_fire_time: datetime | None,
    version: int,
    source: str,
) -> Schedule:
    """``Schedule(...)`` with every field given, at a quarter of the cost (for ``add_job``).

    The fields are set on a draft of the same layout, which then becomes a Schedule: plain
    attribute stores instead of one descriptor call each, and no ``__init__`` frame. The
    result is an ordinary, frozen Schedule; a test compares it with the constructor's.
    """
    draft = _ScheduleDraft()
    draft.id = id
    draft.name = name
    draft.func = func
    draft.task_ref = task_ref
    draft.trigger = trigger
    draft.args = args
    draft.kwargs = kwargs
    draft.policy = policy
    draft.paused = paused
    draft.next_fire_time = next_fire_time
    draft.version = version
    draft.source = source
    draft.__class__ = Schedule  # type: ignore[assignment]
    return draft  # type: ignore[return-value]


@dataclass(slots=True, kw_only=True)
class RunRecord:
    """One fire of a schedule and what became of it.

    ``(schedule_id, fire_time)`` is unique in a store: a fire is started at most once.
    Unlike the other models a run record is mutable: its runner updates it in place as
    the run progresses (a fresh object per state change would cost more than the rest
    of a fire). Events carry a copy; treat every record you receive as read-only.

    Attributes:
        fire_time: the nominal fire time (for a manual run, when it was asked for).
        state: see :class:`RunState`.
        attempt: the attempt in progress or the last one made (0 if none started).
        started_at / ended_at: wall-clock times of the first attempt's start and the end.
        lateness: seconds between the fire time and the start (or the decision to not run).
        error: ``"Type: message"`` of the last failure; ``traceback`` its text.
        result: ``repr()`` of the return value, truncated.
        reason: why a run was skipped, missed, cancelled or abandoned.
        manual: started by ``run_job`` rather than by the trigger.
        node: the node that started it.
    """

    schedule_id: str
    fire_time: datetime
    state: RunState
    attempt: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    lateness: float | None = None
    error: str | None = None
    traceback: str | None = None
    result: str | None = None
    reason: str | None = None
    manual: bool = False
    node: str | None = None

    @property
    def run_id(self) -> str:
        return f"{self.schedule_id}@{self.fire_time.isoformat()}"

    def snapshot(self) -> RunRecord:
        """A copy of this record as it is now (cheaper than copy.copy for a slots class)."""
        clone = object.__new__(RunRecord)
        for name in _RUN_FIELDS:
            object.__setattr__(clone, name, getattr(self, name))
        return clone

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (ISO datetimes)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "run_id": self.run_id,
            "schedule_id": self.schedule_id,
            "fire_time": self.fire_time.isoformat(),
            "state": self.state.value,
            "attempt": self.attempt,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "duration": self.duration,
            "lateness": self.lateness,
            "error": self.error,
            "traceback": self.traceback,
            "result": self.result,
            "reason": self.reason,
            "manual": self.manual,
            "node": self.node,
        }


_RUN_FIELDS = tuple(f.name for f in fields(RunRecord))

#: option names accepted by ``add_job``, ``modify_job``, ``job_defaults`` and the config.
POLICY_OPTIONS = frozenset(
    {
        "executor",
        "max_instances",
        "overlap",
        "coalesce",
        "catchup",
        "max_catchup",
        "misfire_grace_time",
        "timeout",
        "jitter",
        "recover",
        "max_attempts",
        "retry_delay",
        "backoff",
        "max_delay",
        "retry_jitter",
        "retry_on",
    }
)
_RETRY_OPTIONS = {
    "max_attempts": "max_attempts",
    "retry_delay": "retry_delay",
    "backoff": "backoff",
    "max_delay": "max_delay",
    "retry_jitter": "jitter",
    "retry_on": "retry_on",
}


_NUMBER = (int, float)
_OPTION_TYPES: dict[str, tuple[tuple[type, ...], str, bool]] = {
    # name: (accepted types, described as, may be null)
    "executor": ((str,), "a string", False),
    "max_instances": ((int,), "an integer", False),
    "max_catchup": ((int,), "an integer", False),
    "max_attempts": ((int,), "an integer", False),
    "misfire_grace_time": (_NUMBER, "a number of seconds", True),
    "timeout": (_NUMBER, "a number of seconds", True),
    "jitter": (_NUMBER, "a number of seconds", True),
    "retry_delay": (_NUMBER, "a number of seconds", False),
    "backoff": (_NUMBER, "a number", False),
    "max_delay": (_NUMBER, "a number of seconds", True),
    "retry_jitter": (_NUMBER, "a number of seconds", False),
    "coalesce": ((bool,), "true or false", False),
    "recover": ((bool,), "true or false", False),
    "retry_on": ((list, tuple), "a list of exception names", False),
}


def check_option_type(key: str, value: Any) -> str | None:
    """Why ``value`` is the wrong type for option ``key``, or None if it is fine."""
    accepted, described, nullable = _OPTION_TYPES.get(key, ((object,), "", True))
    if value is None:
        return None if nullable else f"must be {described}, not null"
    if isinstance(value, bool) and bool not in accepted:
        return f"must be {described} (got {value!r})"
    if not isinstance(value, accepted):
        return f"must be {described} (got {type(value).__name__} {value!r})"
    return None


_APPLIED: dict[tuple[int, tuple[tuple[str, Any], ...], tuple[type, ...]], tuple[Policy, Policy]] = {}


def apply_options(base: Policy, options: Mapping[str, Any], *, schedule_id: str | None = None) -> Policy:
    """``base`` changed by user-facing options (the names of :data:`POLICY_OPTIONS`).

    ``coalesce: true`` means ``catchup: latest`` and ``false`` means ``all``; an explicit
    ``catchup`` wins. Raises ScheduleError naming the schedule and the option.
    Results are memoised (policies are immutable), so thousands of schedules with the
    same options share one Policy object and cost one computation.
    """
    if not options:
        return base
    try:
        # the value types are part of the key: True == 1, but max_instances=True is refused
        key = (id(base), tuple(options.items()), tuple(map(type, options.values())))
        hit = _APPLIED.get(key)
    except TypeError:  # an unhashable value (a list for retry_on): compute it
        return _apply_options(base, options, schedule_id)
    if hit is not None and hit[0] is base:
        return hit[1]
    policy = _apply_options(base, options, schedule_id)
    if len(_APPLIED) >= 1024:
        _APPLIED.clear()
    _APPLIED[key] = (base, policy)
    return policy


def _apply_options(base: Policy, options: Mapping[str, Any], schedule_id: str | None) -> Policy:
    unknown = set(options) - POLICY_OPTIONS
    if unknown:
        raise ScheduleError(f"unknown option(s) {', '.join(sorted(unknown))}", schedule_id=schedule_id)
    policy: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    try:
        for key, value in options.items():
            problem = check_option_type(key, value)
            if problem:
                raise ScheduleError(problem, field=key)
            if key in _RETRY_OPTIONS:
                retry[_RETRY_OPTIONS[key]] = tuple(value) if key == "retry_on" and not isinstance(value, str) else value
            elif key == "coalesce":
                policy.setdefault("catchup", Catchup.LATEST if value else Catchup.ALL)
            elif key == "overlap":
                policy[key] = _enum(Overlap, key, value)
            elif key == "catchup":
                policy[key] = _enum(Catchup, key, value)
            else:
                policy[key] = value
        if "catchup" in options:
            policy["catchup"] = _enum(Catchup, "catchup", options["catchup"])
        if retry:
            policy["retry"] = _replace_retry(base.retry, retry)
        return _replace_policy(base, policy)
    except ScheduleError as exc:
        raise ScheduleError(exc.reason, field=exc.field, schedule_id=schedule_id) from None
    except TypeError as exc:
        raise ScheduleError(f"bad option value: {exc}", schedule_id=schedule_id) from None


def _enum(kind: type[enum.StrEnum], field_name: str, value: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise ScheduleError(f"must be one of {choices} (got {value!r})", field=field_name) from None


def _replace_retry(base: RetryPolicy, changes: dict[str, Any]) -> RetryPolicy:
    return replace(base, **changes)


def _replace_policy(base: Policy, changes: dict[str, Any]) -> Policy:
    return replace(base, **changes) if changes else base
