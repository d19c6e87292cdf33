"""Triggers: the only module of aiosched that imports APScheduler.

`build_trigger` validates a type name and its arguments, builds the APScheduler 3 trigger
(``interval``, ``cron``, ``date``, ``calendarinterval``, ``and``, ``or``) and wraps it in a
`Trigger`, which answers fire-time questions in aware UTC. `TriggerSpec` is what stores persist.

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
from collections.abc import Mapping
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
    """One built APScheduler trigger with aiosched's wall-clock rules; all results are aware UTC.

    Attributes:
        spec: how to rebuild it, or ``None`` when wrapped from a raw APScheduler trigger.
        is_wall_clock: cron or calendarinterval (or a combination containing one).
    """

    __slots__ = ("_raw", "_tz", "is_wall_clock", "spec")
    spec: TriggerSpec | None
    is_wall_clock: bool

    def __init__(self, raw: Any, tz: tzinfo, wall: bool = False) -> None:
        self._raw, self._tz, self.is_wall_clock, self.spec = raw, tz, wall, None

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
    __slots__ = ("_end", "_start", "_step")

    def __init__(self, raw: Any) -> None:
        super().__init__(raw, raw.timezone)
        self._start: datetime = raw.start_date.astimezone(UTC)
        self._step: timedelta = raw.interval
        self._end: datetime | None = raw.end_date and raw.end_date.astimezone(UTC)

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
    __slots__ = ("_run",)

    def __init__(self, raw: Any, tz: tzinfo) -> None:
        super().__init__(raw, tz)
        self._run: datetime = raw.run_date.astimezone(UTC)

    def _next(self, t: datetime, strict: bool) -> datetime | None:
        return self._run if self._run > t or (self._run == t and not strict) else None

    def next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        return self._run if previous is None else self._next(previous, True)

    def describe(self) -> str:
        return f"once at {self._run.astimezone(self._tz).isoformat(' ')} ({_zone_name(self._tz)})"


class _Combo(Trigger):
    __slots__ = ("_all", "_members")

    def __init__(self, raw: Any, members: list[Trigger], tz: tzinfo) -> None:
        super().__init__(raw, tz, any(m.is_wall_clock for m in members))
        self._members, self._all = tuple(members), isinstance(raw, AndTrigger)

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


def _zone(value: object, sid: str | None) -> tuple[tzinfo, str]:
    if value is UTC or value == "UTC":
        return UTC, "UTC"
    if isinstance(value, tzinfo):
        value = getattr(value, "key", None) or getattr(value, "zone", None) or value
    if isinstance(value, str):
        try:
            return ZoneInfo(value), value
        except (KeyError, ValueError, OSError):
            pass
    raise TriggerError(
        f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'", field="timezone", schedule_id=sid
    )


def _when(a: dict[str, Any], key: str, tz: tzinfo, sid: str | None) -> datetime | None:
    """Parse ``a[key]`` (ISO string, date or datetime; naive = local in ``tz``) and make it JSON-able."""
    value = a.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise TriggerError(f"not an ISO date/time: {value!r}", field=key, schedule_id=sid) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    elif not isinstance(value, datetime):
        raise TriggerError(f"expected an ISO date/time string, got {type(value).__name__}", field=key, schedule_id=sid)
    if not isinstance(a[key], str):
        a[key] = value.isoformat()
    if value.tzinfo is None:  # the wall-clock rules: first occurrence, or the end of the gap
        return _instant(value.replace(tzinfo=UTC), tz)
    return value.astimezone(UTC)


def _number(a: dict[str, Any], key: str, sid: str | None, top: int | None = None) -> Any:
    value = a[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TriggerError(f"expected a number, got {value!r}", field=key, schedule_id=sid)
    if value < 0 or (top is not None and (value > top or not isinstance(value, int))):
        bound = f"an integer from 0 to {top}" if top is not None else "zero or more"
        raise TriggerError(f"must be {bound}, got {value!r}", field=key, schedule_id=sid)
    return value


def _dates(a: dict[str, Any], tz: tzinfo, sid: str | None) -> tuple[datetime | None, datetime | None]:
    start, end = _when(a, "start_date", tz, sid), _when(a, "end_date", tz, sid)
    if start is not None and end is not None and end < start:
        raise TriggerError("end_date is before start_date", field="end_date", schedule_id=sid)
    return start, end


def _interval(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime) -> Trigger:
    spans = {k: _number(a, k, sid) for k in _SPANS if a.get(k) is not None}
    try:
        step = timedelta(**spans)
    except OverflowError:
        raise TriggerError("the interval is too long", field=next(iter(spans)), schedule_id=sid) from None
    if step <= _ZERO:
        raise TriggerError("the interval must be longer than zero", field=next(iter(spans), "seconds"), schedule_id=sid)
    start, end = _dates(a, tz, sid)
    if start is None:  # APScheduler's default, pinned in the spec so a reload keeps the phase
        start = now + step
        a["start_date"] = start.isoformat()
    return _Interval(IntervalTrigger(**spans, start_date=start, end_date=end, timezone=tz))


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


def _cron(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime) -> Trigger:
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


def _date(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime) -> Trigger:
    run = _when(a, "run_date", tz, sid)
    if run is None:
        run = now
        a["run_date"] = run.isoformat()
    return _Date(DateTrigger(run_date=run, timezone=tz), tz)


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


def _calendar(a: dict[str, Any], tz: tzinfo, sid: str | None, now: datetime) -> Trigger:
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
    a["triggers"] = [{"trigger": m.spec.type, "args": m.spec.args} for m in members if m.spec]
    combo = _Combo((AndTrigger if every else OrTrigger)([m._raw for m in members]), members, tz)
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
    if not isinstance(args, Mapping | None):
        raise TriggerError(f"trigger arguments must be a mapping, got {type(args).__name__}", schedule_id=schedule_id)
    a = dict(args or {})
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
    tz, name = _zone(timezone, schedule_id)
    if a.get("timezone") is not None:
        tz, a["timezone"] = _zone(a["timezone"], schedule_id)
    now = datetime.now(UTC) if now is None else now
    if type_ in ("and", "or"):
        trigger = _combo(a, tz, schedule_id, now, type_ == "and")
    else:
        trigger = {"interval": _interval, "cron": _cron, "date": _date, "calendarinterval": _calendar}[type_](
            a, tz, schedule_id, now
        )
    trigger.spec = TriggerSpec(type_, a, name)
    return trigger


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
        return _Interval(obj)
    if isinstance(obj, CalendarIntervalTrigger):
        return _Calendar(obj)
    if isinstance(obj, DateTrigger):
        return _Date(obj, obj.run_date.tzinfo or UTC)
    if isinstance(obj, AndTrigger | OrTrigger):
        members = [wrap_trigger(m, schedule_id=schedule_id) for m in obj.triggers]
        return _Combo(obj, members, members[0].timezone if members else UTC)
    return _Generic(obj, tz)
