"""Triggers: the only module of aiosched that imports APScheduler.

`build_trigger` validates a type name and its arguments, builds the APScheduler 3 trigger
(``cron``, ``calendarinterval``) and wraps it in a `Trigger`, which answers fire-time questions
in aware UTC. ``date`` and ``interval`` triggers need no APScheduler object (a run date is its
own fire time; an interval's are ``start + k * step``), and ``and``/``or`` combine the others.
`TriggerSpec` is what stores persist; a date or interval trigger derives it on demand from its
own fields, so a schedule keeps no argument dict or ISO strings in memory.

Wall-clock rules (cron, calendarinterval and combinations containing them). APScheduler 3.11
gets both DST transitions wrong for this purpose: at a fall-back it fires a repeated local time
twice (01:30 EDT and 01:30 EST), and at a spring-forward it returns the non-existent local time
with the old offset (a 02:30 cron in New York gives ``02:30-05:00``, i.e. 03:30 EDT) on some
paths and silently skips it on others (an hourly ``minute=30`` cron goes 01:30 -> 03:30).
aiosched therefore asks APScheduler only for the matching *wall times* (a copy of the trigger
evaluated in UTC, where no wall time is missing or repeated) and maps each one to an instant:

* an ordinary local time fires at its instant;
* a repeated local time (fall back) fires **once**, at its first occurrence. So a 01:30 daily
  cron fires at 01:30 EDT only, and an every-minute cron is silent during the second pass of
  the repeated hour (its wall times have all fired already);
* a non-existent local time (spring forward) fires **once, at the moment the clock jumps**
  (Vixie cron's rule): in New York on 2027-03-14 a 02:30 or 02:59 daily cron fires at 03:00
  EDT (07:00 UTC). All the matches inside one gap fire once together: a ``*/15`` cron fires
  01:45, 03:00, 03:15 (03:00 once, although 02:00-02:45 and 03:00 all map to it), and an
  hourly ``minute=30`` cron fires 01:30, 03:00, 03:30. Lord Howe's 30-minute gap (02:00 ->
  02:30) works the same way.

The fire times of one trigger are strictly increasing. Interval and date triggers are absolute
time and are never corrected. Jitter is a schedule policy and is never applied here.
Crontab strings use crontab's weekday numbers (0 or 7 = Sunday), unlike APScheduler's
``day_of_week`` argument (0 = Monday); as in APScheduler a crontab that restricts both day of
month and day of week needs both to match (Vixie cron needs either).
"""

from __future__ import annotations

import difflib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from datetime import timezone as fixed_zone
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.calendarinterval import CalendarIntervalTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.combining import AndTrigger, OrTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from aiosched.exceptions import TriggerError

__all__ = ["MAX_COUNTED", "TRIGGER_TYPES", "Trigger", "TriggerSpec", "build_trigger", "wrap_trigger"]

logger = logging.getLogger(__name__)

TRIGGER_TYPES: frozenset[str] = frozenset({"interval", "cron", "date", "calendarinterval", "and", "or"})
MAX_COUNTED = 5_000
"""`Trigger.due_fire_times` stops counting skipped cron/calendar fire times here (a lower bound)."""

_US, _SEC, _ZERO = timedelta(microseconds=1), timedelta(seconds=1), timedelta(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AND_STEPS = 1000
_SPANS = ("weeks", "days", "hours", "minutes", "seconds")
_SPAN_SET = frozenset(_SPANS)
_CAL_SPANS = ("years", "months", "weeks", "days")
_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DATES = ("start_date", "end_date", "timezone")
_ARGS: dict[str, frozenset[str]] = {
    "interval": frozenset({*_SPANS, *_DATES}),
    "cron": frozenset({*CronTrigger.FIELD_NAMES, "crontab", *_DATES}),
    "date": frozenset({"run_date", "timezone"}),
    "calendarinterval": frozenset({*_CAL_SPANS, "hour", "minute", "second", *_DATES}),
    "and": frozenset({"triggers", "timezone"}),
    "or": frozenset({"triggers", "timezone"}),
}


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """JSON-able description of a trigger: what stores persist.

    Attributes:
        type: one of `TRIGGER_TYPES`.
        args: JSON-able arguments (dates as ISO strings); for ``and``/``or``
            ``{"triggers": [{"trigger": "cron", "args": {...}}, ...]}``.
        timezone: IANA name of the default zone, e.g. ``"Asia/Shanghai"``.
    """

    type: str
    args: Mapping[str, Any]
    timezone: str

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"type": ..., "args": ..., "timezone": ...}`` as fresh plain dicts and lists."""
        return {"type": self.type, "args": _plain(self.args), "timezone": self.timezone}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TriggerSpec:
        """Read what `to_dict` wrote; only the shape is checked here (`build_trigger` checks the rest).

        Raises:
            TriggerError: ``d`` is not a mapping with a string ``type``, a mapping ``args``
                and a string ``timezone``, or has other keys.
        """
        if not isinstance(d, Mapping) or not isinstance(d.get("type"), str):
            raise TriggerError("a trigger spec is a mapping with a string 'type'")
        if extra := sorted(set(d) - {"type", "args", "timezone"}):
            raise TriggerError(f"unknown keys in a trigger spec: {extra}", field=str(extra[0]))
        args, zone = d.get("args", {}), d.get("timezone", "UTC")
        if not isinstance(args, Mapping | None):
            raise TriggerError("trigger arguments must be a mapping", field="args")
        if not isinstance(zone, str):
            raise TriggerError("the time zone must be an IANA name", field="timezone")
        return cls(d["type"], _plain(args or {}), zone)


class Trigger(ABC):
    """One built trigger with aiosched's wall-clock rules; all results are aware UTC.

    Attributes:
        spec: how to rebuild it, or ``None`` when wrapped from a raw APScheduler trigger.
        is_wall_clock: cron or calendarinterval (or a combination containing one).
    """

    # _raw: the APScheduler trigger asked for fire times (None for date and interval triggers
    # built here: their fire times are plain arithmetic). _spec: the spec built eagerly, or
    # None; _zname: the default zone's name when the spec is derived on demand instead (date
    # and interval triggers keep no argument dict or ISO strings per schedule that way).
    __slots__ = ("_raw", "_spec", "_tz", "_zname", "is_wall_clock")
    _spec: TriggerSpec | None
    _zname: str | None
    is_wall_clock: bool

    def __init__(self, raw: Any, tz: tzinfo, wall: bool = False) -> None:
        self._raw, self._tz, self.is_wall_clock, self._spec, self._zname = raw, tz, wall, None, None

    @property
    def spec(self) -> TriggerSpec | None:
        """How to rebuild this trigger (what stores persist), or ``None`` for a wrapped one."""
        return self._spec if self._zname is None else self._lazy_spec(self._zname)

    @spec.setter
    def spec(self, value: TriggerSpec | None) -> None:
        self._spec, self._zname = value, None

    def _lazy_spec(self, zone: str) -> TriggerSpec:
        """The spec, derived from the trigger itself (types that set ``_zname``)."""
        raise NotImplementedError

    @property
    def timezone(self) -> tzinfo:
        """The zone wall times are read in."""
        return self._tz

    @abstractmethod
    def _next(self, t: datetime, strict: bool) -> datetime | None:
        """First fire time ``>= t`` (``> t`` when ``strict``), or ``None``."""

    def next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        """Return the next fire time, without jitter.

        Args:
            previous: the last fire time; ``None`` for the first one.
            now: the current time; only used when ``previous`` is ``None``.

        Returns:
            With ``previous=None`` the first fire time ``>= now`` (a date trigger returns its
            run date even when it is past, so the schedule's misfire grace decides); otherwise
            the first fire time strictly after ``previous``, which may still be ``<= now``.
            ``None`` when the trigger is exhausted.
        """
        return self._next(now, False) if previous is None else self._next(previous, True)

    def due_fire_times(self, first: datetime, now: datetime, limit: int) -> tuple[list[datetime], int, datetime | None]:
        """Enumerate missed fire times for catch-up.

        Args:
            first: the schedule's stored next fire time (normally ``<= now``).
            now: the current time.
            limit: at most this many fire times are returned.

        Returns:
            ``(times, skipped, next)``: up to ``limit`` fire times ``<= now`` starting with
            ``first``; how many more are ``<= now`` (exact for interval triggers, at most
            `MAX_COUNTED` otherwise, a lower bound then); the first fire time ``> now`` or ``None``.
        """
        first = first.astimezone(UTC)
        times: list[datetime] = []
        skipped = 0
        at: datetime | None = first
        while at is not None and at <= now:
            if len(times) < limit:
                times.append(at)
            else:
                skipped += 1
                if skipped >= MAX_COUNTED:
                    return times, skipped, self._next(now, True)
            at = self.next_fire_time(at, now)
        return times, skipped, at

    def preview(self, n: int, *, start: datetime | None = None) -> list[datetime]:
        """Return the next ``n`` fire times ``>= start`` (default: now); fewer if the trigger ends."""
        t = datetime.now(UTC) if start is None else start
        out: list[datetime] = []
        at = self.next_fire_time(None, t)
        while at is not None and len(out) < n:
            if at >= t:
                out.append(at)
            at = self.next_fire_time(at, at)
        return out

    def describe(self) -> str:
        """Human text, e.g. ``"cron[hour='9', minute='0'] (Asia/Shanghai)"`` or ``"every 30s"``."""
        return str(self._raw)

    def __repr__(self) -> str:
        return f"<Trigger {self.describe()}>"


class _Interval(Trigger):
    # _unit, _amount: the one span argument as given (e.g. "seconds", 30) for the lazy spec;
    # _given: the start and end dates as given when their ISO text differs from the UTC ones.
    __slots__ = ("_amount", "_end", "_given", "_start", "_step", "_unit")
    _unit: str | None
    _amount: float | None

    def __init__(
        self,
        tz: tzinfo,
        start: datetime,
        step: timedelta,
        end: datetime | None,
        raw: Any = None,
        span: tuple[str, float] | tuple[None, None] = (None, None),
        given: tuple[Any, Any] | None = None,
        zone: str | None = None,
    ) -> None:
        # Every slot is set here, without super().__init__: this runs once per schedule added.
        self._raw = raw
        self._tz = tz
        self.is_wall_clock = False
        self._spec = None
        self._zname = zone
        self._start = start
        self._step = step
        self._end = end
        self._unit, self._amount = span
        self._given = given

    @classmethod
    def wrap(cls, raw: Any) -> _Interval:
        end = raw.end_date and raw.end_date.astimezone(UTC)
        return cls(raw.timezone, raw.start_date.astimezone(UTC), raw.interval, end, raw)

    def _lazy_spec(self, zone: str) -> TriggerSpec:
        start, end = self._given or (None, None)
        args: dict[str, Any] = {str(self._unit): self._amount, "start_date": _iso(start, self._start)}
        if self._end is not None:
            args["end_date"] = _iso(end, self._end)
        return TriggerSpec("interval", args, zone)

    def _next(self, t: datetime, strict: bool) -> datetime | None:
        at = self._start
        if t >= at:
            at += self._step * ((t - at) // self._step)
            if at < t or strict:
                at += self._step
        return None if self._end is not None and at > self._end else at

    def next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        if previous is None:
            return self._next(now, False)
        at = previous.astimezone(UTC) + self._step
        return None if self._end is not None and at > self._end else at

    def due_fire_times(self, first: datetime, now: datetime, limit: int) -> tuple[list[datetime], int, datetime | None]:
        first, now, step = first.astimezone(UTC), now.astimezone(UTC), self._step
        if first > now:
            return [], 0, first
        n = (now - first) // step + 1
        nxt: datetime | None = first + step * n
        if self._end is not None and nxt is not None and nxt > self._end:
            n, nxt = max(0, min(n, (self._end - first) // step + 1)), None
        k = max(0, min(n, limit))
        return [first + step * i for i in range(k)], n - k, nxt

    def describe(self) -> str:
        secs, parts = self._step.total_seconds(), []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if secs >= size:
                parts.append(f"{int(secs // size)}{unit}")
                secs %= size
        if secs or not parts:
            parts.append(f"{secs:g}s")
        end = f" until {self._end.isoformat()}" if self._end else ""
        return f"every {''.join(parts)}{end}"


class _Wall(Trigger):
    """Cron-like triggers: APScheduler finds wall times in a UTC copy (``_shadow``); we map them."""

    __slots__ = ("_fixed", "_shadow")

    def __init__(self, raw: Any, shadow: Any) -> None:
        super().__init__(raw, raw.timezone, True)
        self._shadow = shadow
        self._fixed = raw.timezone.utcoffset(None) if isinstance(raw.timezone, fixed_zone) else None

    def _instant(self, w: datetime) -> datetime:
        return w - self._fixed if self._fixed is not None else _instant(w, self._tz)

    def _wall(self, t: datetime, strict: bool) -> datetime:
        """The wall time (tagged UTC) to search from for fire times after ``t``."""
        loc = t.astimezone(self._tz)
        wall = loc.replace(tzinfo=UTC, fold=0) + (_US if strict else _ZERO)
        if loc.fold:  # second pass of a repeated hour: its wall times fired in the first pass
            first = self._tz.utcoffset(loc.replace(tzinfo=None, fold=0)) or _ZERO
            at = t.astimezone(UTC)
            back = _switch(self._tz, at - (first - (loc.utcoffset() or _ZERO)), at)
            wall = max(wall, back + first)  # the wall time at which the repeated hour ends
        return wall

    def describe(self) -> str:
        return f"{self._raw} ({_zone_name(self._tz)})"


class _Cron(_Wall):
    __slots__ = ("_end", "_start")

    def __init__(self, raw: Any, field: str = "day", sid: str | None = None) -> None:
        shadow = CronTrigger.__new__(CronTrigger)
        shadow.__setstate__(
            {"version": 2, "timezone": UTC, "start_date": None, "end_date": None, "fields": raw.fields, "jitter": None}
        )
        super().__init__(raw, shadow)
        self._start: datetime | None = raw.start_date and raw.start_date.astimezone(UTC)
        self._end: datetime | None = raw.end_date and raw.end_date.astimezone(UTC)
        # Weekdays, leap days and ISO weeks repeat every 28 years between 1901 and 2099, so an
        # expression that matches nothing in 2000-2049 never matches (with a year field: 400 years).
        years = raw.fields[0]
        first = 2000 if str(years) == "*" else years.get_next_value(datetime(1970, 1, 1))
        probe = CronTrigger.__new__(CronTrigger)
        probe.__setstate__(
            {
                "version": 2,
                "timezone": UTC,
                "start_date": None,
                "fields": raw.fields,
                "end_date": datetime(min(first + (50 if first == 2000 else 400), 9999), 1, 1, tzinfo=UTC),
            }
        )
        if probe.get_next_fire_time(None, datetime(first, 1, 1, tzinfo=UTC)) is None:
            raise TriggerError(f"{raw} never matches a real date", field=field, schedule_id=sid)

    def _next(self, t: datetime, strict: bool) -> datetime | None:
        if self._start is not None and self._start > t:
            t, strict = self._start, False
        wall = self._wall(t, strict)
        while True:
            w: datetime | None = self._shadow.get_next_fire_time(None, wall)
            if w is None:
                return None
            at = self._instant(w)
            if at > t or (at == t and not strict):
                return None if self._end is not None and at > self._end else at
            wall = w + _US


class _Calendar(_Wall):
    __slots__ = ()

    def __init__(self, raw: Any) -> None:
        shadow = CalendarIntervalTrigger.__new__(CalendarIntervalTrigger)
        shadow.__setstate__(dict(raw.__getstate__(), timezone=UTC, jitter=None))
        super().__init__(raw, shadow)

    def _next(self, t: datetime, strict: bool) -> datetime | None:
        sh = self._shadow
        w: datetime | None = sh.get_next_fire_time(None, t)
        days = 0 if sh.years or sh.months else sh.days + 7 * sh.weeks
        if w is not None and days and (lag := (t.astimezone(self._tz).date() - w.date()).days // days - 1) > 0:
            w += timedelta(days=lag * days)  # skip whole periods instead of stepping through them
            if sh.end_date and w.date() > sh.end_date:
                return None
        while w is not None:
            at = self._instant(w)
            if at > t or (at == t and not strict):
                return at
            w = sh.get_next_fire_time(w, w)
        return None

    def next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        if previous is None:
            return self._next(now, False)
        wall = previous.astimezone(self._tz).replace(tzinfo=UTC)
        w: datetime | None = self._shadow.get_next_fire_time(wall, wall)
        return None if w is None else self._instant(w)

    def describe(self) -> str:
        sh = self._shadow
        every = ", ".join(f"{getattr(sh, u)} {u}" for u in _CAL_SPANS if getattr(sh, u))
        return f"every {every} at {sh._time:%H:%M:%S} ({_zone_name(self._tz)})"


class _Date(Trigger):
    """A run date is its own fire time: no APScheduler trigger is built (or kept) for it."""

    __slots__ = ("_given", "_run")

    def __init__(
        self, run: datetime, tz: tzinfo, raw: Any = None, given: datetime | str | None = None, zone: str | None = None
    ) -> None:
        # Every slot is set here, without super().__init__: this runs once per schedule added.
        self._raw = raw
        self._tz = tz
        self.is_wall_clock = False
        self._spec = None
        self._zname = zone
        self._run = run
        self._given = given  # the run date as given, if its ISO text differs from the instant's

    def _lazy_spec(self, zone: str) -> TriggerSpec:
        return TriggerSpec("date", {"run_date": _iso(self._given, self._run)}, zone)

    def _next(self, t: datetime, strict: bool) -> datetime | None:
        return self._run if self._run > t or (self._run == t and not strict) else None

    def next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        return self._run if previous is None else self._next(previous, True)

    def describe(self) -> str:
        return f"once at {self._run.astimezone(self._tz).isoformat(' ')} ({_zone_name(self._tz)})"


class _Combo(Trigger):
    __slots__ = ("_all", "_members")

    def __init__(self, members: list[Trigger], tz: tzinfo, every: bool, raw: Any = None) -> None:
        super().__init__(raw, tz, any(m.is_wall_clock for m in members))
        self._members, self._all = tuple(members), every

    def _next(self, t: datetime, strict: bool) -> datetime | None:
        if not self._all:
            found = [at for m in self._members if (at := m._next(t, strict)) is not None]
            return min(found, default=None)
        at, capped = self._meet(t, strict)
        if capped:
            logger.warning("%s: members found no common fire time in %d steps", self.describe(), _AND_STEPS)
        return at

    def _meet(self, t: datetime, strict: bool) -> tuple[datetime | None, bool]:
        for _ in range(_AND_STEPS):
            found = [m._next(t, strict) for m in self._members]
            times = [at for at in found if at is not None]
            if not times or len(times) < len(found):
                return None, False
            if min(times) == max(times):
                return times[0], False
            t, strict = max(times), False
        return None, True

    def describe(self) -> str:
        return f"{'and' if self._all else 'or'}[{', '.join(m.describe() for m in self._members)}]"


class _Generic(Trigger):
    """Any other APScheduler trigger: asked directly, without corrections."""

    __slots__ = ()

    def _next(self, t: datetime, strict: bool) -> datetime | None:
        at: datetime | None = self._raw.get_next_fire_time(t if strict else None, t)
        return None if at is None else at.astimezone(UTC)


def _instant(w: datetime, tz: tzinfo) -> datetime:
    """The instant local wall time ``w`` (tagged UTC) fires at: see the module docstring."""
    naive = w.replace(tzinfo=None)
    off0 = tz.utcoffset(naive) or _ZERO
    off1 = tz.utcoffset(naive.replace(fold=1)) or _ZERO
    return w - off0 if off0 >= off1 else _switch(tz, w - off1, w - off0)


def _switch(tz: tzinfo, lo: datetime, hi: datetime) -> datetime:
    """The first second in ``(lo, hi]`` whose UTC offset differs from ``lo``'s (one transition)."""
    a, b = (lo - _EPOCH) // _SEC, (hi - _EPOCH) // _SEC
    before = datetime.fromtimestamp(a, tz).utcoffset()
    while b - a > 1:
        mid = (a + b) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == before:
            a = mid
        else:
            b = mid
    return _EPOCH + timedelta(seconds=b)


def _zone_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def _hint(word: object, choices: frozenset[str]) -> str:
    close = difflib.get_close_matches(str(word), sorted(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(sorted(choices))}"


_ZONES: dict[str, tuple[tzinfo, str]] = {"UTC": (UTC, "UTC")}
"""`_zone`'s answers for zone names (IANA names only: a bounded set)."""


def _zone(value: object, sid: str | None) -> tuple[tzinfo, str]:
    if value is UTC or value == "UTC":
        return UTC, "UTC"
    if isinstance(value, tzinfo):
        value = getattr(value, "key", None) or getattr(value, "zone", None) or value
    if isinstance(value, str):
        try:
            found = _ZONES[value] = ZoneInfo(value), value
            return found
        except (KeyError, ValueError, OSError):
            pass
    raise TriggerError(
        f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'", field="timezone", schedule_id=sid
    )


_Given = tuple[datetime, Any]
"""An instant in UTC and what its spec text is made of (see `_moment`)."""


def _moment(value: object, key: str, tz: tzinfo, sid: str | None) -> _Given:
    """``(instant in UTC, what its spec text is made of)`` for an ISO string, date or datetime.

    The second item is the string as given, the datetime as given when its ISO text differs
    from the instant's, or ``None`` when the instant's own text is the same (an aware UTC
    datetime: the instant is then the object given, and nothing more is kept per schedule).
    """
    given: Any = value
    if isinstance(value, datetime):
        pass
    elif isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise TriggerError(f"not an ISO date/time: {value!r}", field=key, schedule_id=sid) from None
    elif isinstance(value, date):
        value = given = datetime.combine(value, time())
    else:
        raise TriggerError(f"expected an ISO date/time string, got {type(value).__name__}", field=key, schedule_id=sid)
    assert isinstance(value, datetime)
    # naive: the wall-clock rules (first occurrence, or the end of the gap); aware UTC: itself
    at = _instant(value.replace(tzinfo=UTC), tz) if value.tzinfo is None else value.astimezone(UTC)
    return at, None if given is at else given


def _iso(given: Any, at: datetime) -> str:
    return given if isinstance(given, str) else (at if given is None else given).isoformat()


def _number(a: dict[str, Any], key: str, sid: str | None, top: int | None = None) -> Any:
    value = a[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TriggerError(f"expected a number, got {value!r}", field=key, schedule_id=sid)
    if value < 0 or (top is not None and (value > top or not isinstance(value, int))):
        bound = f"an integer from 0 to {top}" if top is not None else "zero or more"
        raise TriggerError(f"must be {bound}, got {value!r}", field=key, schedule_id=sid)
    return value


def _given_dates(a: Mapping[str, Any], tz: tzinfo, sid: str | None) -> tuple[_Given | None, _Given | None]:
    """``start_date`` and ``end_date`` as `_moment` reads them (``None`` when absent or null)."""
    start = None if a.get("start_date") is None else _moment(a["start_date"], "start_date", tz, sid)
    end = None if a.get("end_date") is None else _moment(a["end_date"], "end_date", tz, sid)
    if start is not None and end is not None and end[0] < start[0]:
        raise TriggerError("end_date is before start_date", field="end_date", schedule_id=sid)
    return start, end


def _dates(a: dict[str, Any], tz: tzinfo, sid: str | None) -> tuple[datetime | None, datetime | None]:
    """The instants of ``start_date`` and ``end_date``; their ISO text is written back into ``a``."""
    found = _given_dates(a, tz, sid)
    for key, moment in zip(("start_date", "end_date"), found, strict=True):
        if moment is not None:
            a[key] = _iso(moment[1], moment[0])
    return found[0] and found[0][0], found[1] and found[1][0]


def _interval(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime, lazy: str | None) -> Trigger:
    spans = {k: _number(a, k, sid) for k in _SPANS if a.get(k) is not None}
    try:
        step = timedelta(**spans)
    except OverflowError:
        raise TriggerError("the interval is too long", field=next(iter(spans)), schedule_id=sid) from None
    if step <= _ZERO:
        raise TriggerError("the interval must be longer than zero", field=next(iter(spans), "seconds"), schedule_id=sid)
    start, end = _given_dates(a, tz, sid)
    # without a start date: APScheduler's default, pinned in the spec so a reload keeps the phase
    first, begin = start or (now + step, None)
    last, finish = end or (None, None)
    if lazy is not None and len(spans) == 1:  # the spec is made of the trigger's fields on demand
        (span,) = spans.items()
        given = None if begin is None and finish is None else (begin, finish)
        return _Interval(tz, first, step, last, None, span, given, lazy)
    a["start_date"] = _iso(begin, first)
    if end is not None:
        a["end_date"] = _iso(end[1], end[0])
    return _Interval(tz, first, step, last)


def _quick_interval(args: Mapping[str, Any], tz: tzinfo, name: str) -> Trigger | None:
    """`_interval` for one plain span and an aware start date, or ``None`` for any other case."""
    unit, other = args  # "start_date" and one more
    if unit == "start_date":
        unit = other
    amount = args[unit]
    kind = type(amount)
    if unit not in _SPAN_SET or not (kind is int or (kind is float and math.isfinite(amount))) or amount <= 0:
        return None  # _interval has the answer (or the error message)
    try:
        step = timedelta(**{unit: amount})
    except OverflowError:
        return None
    if step <= _ZERO:  # rounded down to nothing
        return None
    start = args["start_date"]
    first = start.astimezone(UTC)
    return _Interval(tz, first, step, None, None, (unit, amount), None if first is start else (start, None), name)


def _crontab_dow(expr: str) -> str:
    """Crontab weekdays (0 or 7 = Sunday) as APScheduler names; raises ValueError."""
    if not any(c.isdigit() for c in expr):
        return expr  # names and '*' mean the same in both
    days: set[int] = set()
    for part in expr.lower().split(","):
        span, _, step = part.partition("/")
        first, _, last = span.partition("-")
        lo, hi = (0, 6) if span == "*" else (_dow_number(first), _dow_number(last) if last else 6 if step else None)
        hi = lo if hi is None else hi
        if lo > hi or (step and int(step) < 1):
            raise ValueError(f"bad day-of-week range {part!r}")
        days.update(d % 7 for d in range(lo, hi + 1, int(step or 1)))
    return ",".join(_DOW[d] for d in sorted(days))


def _dow_number(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text[:3] in _DOW:
        return _DOW.index(text[:3])
    raise ValueError(f"bad day of week {text!r}")


def _cron(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime, lazy: str | None) -> Trigger:
    fields = {k: a[k] for k in CronTrigger.FIELD_NAMES if a.get(k) is not None}
    tab = a.get("crontab")
    if tab is not None:
        if fields or not isinstance(tab, str):
            raise TriggerError("expected a crontab string and no other cron fields", field="crontab", schedule_id=sid)
        parts = _MACROS.get(tab.strip().lower(), tab).split()
        if len(parts) != 5:
            raise TriggerError(
                f"a crontab has 5 fields (minute hour day month day_of_week), got {tab!r}",
                field="crontab",
                schedule_id=sid,
            )
        try:
            parts[4] = _crontab_dow(parts[4])
        except ValueError as exc:
            raise TriggerError(str(exc), field="crontab", schedule_id=sid) from None
        # Leaving out '*' fields means the same as long as minute is given (second is then 0).
        names = ("minute", "hour", "day", "month", "day_of_week")
        fields = {k: v for k, v in zip(names, parts, strict=True) if v != "*" or k == "minute"}
    for key, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TriggerError(f"expected an integer or a cron expression, got {value!r}", field=key, schedule_id=sid)
    start, end = _dates(a, tz, sid)
    try:
        raw = CronTrigger(**fields, start_date=start, end_date=end, timezone=tz)
    except ValueError as exc:
        for key, value in fields.items():  # which field was it?
            try:
                CronTrigger.FIELDS_MAP[key](key, value)
            except ValueError:
                break
        raise TriggerError(str(exc), field="crontab" if tab else key, schedule_id=sid) from None
    return _Cron(raw, "crontab" if tab else "day", sid)


def _date(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime, lazy: str | None) -> Trigger:
    value = a.get("run_date")
    run, given = (now, None) if value is None else _moment(value, "run_date", tz, sid)
    if lazy is None:
        a["run_date"] = _iso(given, run)
        return _Date(run, tz)
    return _Date(run, tz, given=given, zone=lazy)  # the spec is made of these fields on demand


def _day(a: dict[str, Any], key: str, sid: str | None) -> date | None:
    value = a.get(key)
    if isinstance(value, datetime):
        value = value.date()
    try:
        day = value if value is None or isinstance(value, date) else date.fromisoformat(value)
    except (TypeError, ValueError):
        raise TriggerError(f"expected an ISO date (YYYY-MM-DD), got {value!r}", field=key, schedule_id=sid) from None
    if day is not None:
        a[key] = day.isoformat()
    return day


def _calendar(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime, lazy: str | None) -> Trigger:
    kw = {k: _number(a, k, sid, 10**6) for k in _CAL_SPANS if a.get(k) is not None}
    if not any(kw.values()):
        raise TriggerError("set years, months, weeks or days (at least one day)", field="days", schedule_id=sid)
    kw.update(
        {
            k: _number(a, k, sid, top)
            for k, top in (("hour", 23), ("minute", 59), ("second", 59))
            if a.get(k) is not None
        }
    )
    start, end = _day(a, "start_date", sid), _day(a, "end_date", sid)
    if start is None:
        start = now.astimezone(tz).date()
        a["start_date"] = start.isoformat()
    if end is not None and end < start:
        raise TriggerError("end_date is before start_date", field="end_date", schedule_id=sid)
    return _Calendar(CalendarIntervalTrigger(**kw, start_date=start, end_date=end, timezone=tz))


def _combo(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime, every: bool) -> Trigger:
    items = a.get("triggers")
    if not isinstance(items, list | tuple) or not items:
        raise TriggerError("expected a list of {'trigger': type, 'args': {...}}", field="triggers", schedule_id=sid)
    members: list[Trigger] = []
    for i, item in enumerate(items):
        where = f"triggers[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("trigger"), str) or set(item) - {"trigger", "args"}:
            raise TriggerError("expected {'trigger': type, 'args': {...}}", field=where, schedule_id=sid)
        try:
            members.append(build_trigger(item["trigger"], item.get("args"), timezone=tz, schedule_id=sid, now=now))
        except TriggerError as exc:
            field = f"{where}.{exc.field}" if exc.field else where
            raise TriggerError(exc.reason, field=field, schedule_id=sid) from None
    a["triggers"] = [{"trigger": spec.type, "args": spec.args} for m in members if (spec := m.spec)]
    combo = _Combo(members, tz, every)
    if every and combo._meet(now, False)[1]:
        raise TriggerError("the triggers never agree on a fire time", field="triggers", schedule_id=sid)
    return combo


def build_trigger(
    type_: str,
    args: Mapping[str, Any] | None = None,
    *,
    timezone: str | tzinfo = "UTC",
    schedule_id: str | None = None,
    now: datetime | None = None,
) -> Trigger:
    """Validate a trigger type and its arguments and build it.

    Args:
        type_: one of `TRIGGER_TYPES`.
        args: the trigger's arguments. ``start_date``/``end_date``/``run_date`` are ISO strings,
            dates or datetimes (naive ones are local in the trigger's zone); ``timezone``
            overrides the default zone; ``cron`` also takes ``crontab: "0 9 * * mon-fri"``;
            ``and``/``or`` take ``triggers: [{"trigger": "cron", "args": {...}}, ...]``.
        timezone: the default zone (IANA name or a tzinfo that has one).
        schedule_id: named in error messages.
        now: the instant defaults are taken from (an interval's first fire is ``now + interval``,
            a date trigger without ``run_date`` fires at ``now``); the system clock if omitted.

    Returns:
        The trigger; its ``spec`` holds JSON-able args (with defaults such as an interval's
        start date pinned) that rebuild the same fire times.

    Raises:
        TriggerError: with ``field`` set to the bad argument (``None`` for an unknown type).
    """
    if not isinstance(type_, str) or type_ not in TRIGGER_TYPES:
        raise TriggerError(f"unknown trigger type {type_!r}{_hint(type_, TRIGGER_TYPES)}", schedule_id=schedule_id)
    if args is not None and type(args) is not dict and not isinstance(args, Mapping):
        raise TriggerError(f"trigger arguments must be a mapping, got {type(args).__name__}", schedule_id=schedule_id)
    zone = _ZONES.get(timezone) if type(timezone) is str else None
    if (
        type_ == "date"
        and args is not None
        and len(args) == 1
        and type(run := args.get("run_date")) is datetime
        and run.tzinfo is not None
    ):
        # The commonest add of all, a date trigger given an aware datetime, in a few steps:
        # what the general path below does with it (see _date and _moment).
        tz, name = zone if zone is not None else _zone(timezone, schedule_id)
        at = run.astimezone(UTC)
        return _Date(at, tz, None, None if at is run else run, name)
    if (
        type_ == "interval"
        and zone is not None
        and args is not None
        and len(args) == 2
        and type(start := args.get("start_date")) is datetime
        and start.tzinfo is not None
        and (quick := _quick_interval(args, *zone)) is not None
    ):
        return quick  # the second commonest: one span and an aware start date
    a = dict(args or {})
    if not _ARGS[type_].issuperset(a):
        _refuse_keys(type_, a, schedule_id)
    tz, name = zone if zone is not None else _zone(timezone, schedule_id)
    if a.get("timezone") is not None:
        tz, a["timezone"] = _zone(a["timezone"], schedule_id)
    now = datetime.now(UTC) if now is None else now
    if type_ in ("and", "or"):
        trigger = _combo(a, tz, schedule_id, now, type_ == "and")
    else:
        # Date and interval triggers may derive their spec on demand when no zone argument and
        # no null argument is given (the spec is then made of the trigger's own fields).
        lazy = name if type_ in _LAZY and "timezone" not in a and None not in a.values() else None
        trigger = _BUILDERS[type_](a, tz, schedule_id, now, lazy)
    if trigger._zname is None:
        trigger._spec = TriggerSpec(type_, a, name)
    return trigger


def _refuse_keys(type_: str, a: Mapping[str, Any], schedule_id: str | None) -> None:
    for key in a:
        if key == "jitter":
            raise TriggerError(
                "jitter is not a trigger argument; use the schedule's jitter option",
                field="jitter",
                schedule_id=schedule_id,
            )
        if key not in _ARGS[type_]:
            raise TriggerError(
                f"unknown argument for a {type_} trigger{_hint(key, _ARGS[type_])}",
                field=str(key),
                schedule_id=schedule_id,
            )


_LAZY = frozenset({"date", "interval"})
_BUILDERS: dict[str, Callable[[dict[str, Any], tzinfo, str | None, datetime, str | None], Trigger]] = {
    "interval": _interval,
    "cron": _cron,
    "date": _date,
    "calendarinterval": _calendar,
}


def wrap_trigger(obj: object, *, schedule_id: str | None = None) -> Trigger:
    """Wrap an APScheduler trigger object (``spec`` is ``None``); an aiosched `Trigger` is returned as is.

    Raises:
        TriggerError: ``obj`` is neither.
    """
    if isinstance(obj, Trigger):
        return obj
    if not isinstance(obj, BaseTrigger):
        raise TriggerError(
            f"expected a trigger type name or trigger object, got {type(obj).__name__}", schedule_id=schedule_id
        )
    tz = getattr(obj, "timezone", UTC)
    if isinstance(obj, CronTrigger):
        return _Cron(obj, sid=schedule_id)
    if isinstance(obj, IntervalTrigger):
        return _Interval.wrap(obj)
    if isinstance(obj, CalendarIntervalTrigger):
        return _Calendar(obj)
    if isinstance(obj, DateTrigger):
        return _Date(obj.run_date.astimezone(UTC), obj.run_date.tzinfo or UTC, obj)
    if isinstance(obj, AndTrigger | OrTrigger):
        members = [wrap_trigger(m, schedule_id=schedule_id) for m in obj.triggers]
        return _Combo(members, members[0].timezone if members else UTC, isinstance(obj, AndTrigger), obj)
    return _Generic(obj, tz)
