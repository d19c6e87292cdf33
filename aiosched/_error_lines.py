"""Rate-limited error lines for run ends: a schedule failing every second must not flood the log."""

from __future__ import annotations

import logging

from ._clock import Clock

logger = logging.getLogger("aiosched.runs")

ERROR_LINES = 5
"""Error lines ("run end: ... state=failed|timed_out") logged per schedule per ERROR_WINDOW; more are counted."""
ERROR_WINDOW = 60.0


class ErrorLines:
    """Rate-limits the runner's error lines: at most ``limit`` per schedule per ``window`` seconds.

    A schedule failing every second must not flood the log (RELIABILITY S15). The lines over the
    limit are counted, and one ERROR line says how many were suppressed: at the schedule's next
    error once its window is over, or at :meth:`flush` (shutdown). Only the log is limited: every
    run still gets its record and its event (so metrics count every failure).
    """

    __slots__ = ("_clock", "_limit", "_seen", "_window")

    def __init__(self, clock: Clock, *, limit: int = ERROR_LINES, window: float = ERROR_WINDOW) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._seen: dict[str, list[float]] = {}  # schedule id -> [window start, lines logged, lines suppressed]

    def admit(self, schedule_id: str) -> bool:
        """Whether to log an error line of ``schedule_id`` now (False: it is counted instead)."""
        now = self._clock.monotonic()
        seen = self._seen.get(schedule_id)
        if seen is not None and now - seen[0] < self._window:
            if seen[1] < self._limit:
                seen[1] += 1
                return True
            seen[2] += 1
            return False
        if seen is not None:
            self._summarise(schedule_id, seen, now)
        elif len(self._seen) >= 10_000:  # bounded: forget the schedules whose window is over
            for sid, old in list(self._seen.items()):
                if now - old[0] >= self._window:
                    self._summarise(sid, old, now)
                    del self._seen[sid]
        self._seen[schedule_id] = [now, 1, 0]
        return True

    def flush(self) -> None:
        """Log the counts still untold, and forget every window."""
        now = self._clock.monotonic()
        for sid, seen in self._seen.items():
            self._summarise(sid, seen, now)
        self._seen.clear()

    def _summarise(self, schedule_id: str, seen: list[float], now: float) -> None:
        if seen[2]:
            logger.error(
                "run end: %s: %d similar error line(s) suppressed in %.0fs (at most %d per schedule per %gs)",
                schedule_id,
                seen[2],
                now - seen[0],
                self._limit,
                self._window,
            )
