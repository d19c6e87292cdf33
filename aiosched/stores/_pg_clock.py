"""This node's clock against the database's: the offset a PostgreSQL store adds to "now" (RELIABILITY S9).

Leases and heartbeats are judged by the database's ``clock_timestamp()``, but due-ness is
judged by the engine's "now". A node whose clock is 30 s ahead would claim fires 30 s
early, so a shared store measures the database's clock and the scheduler's clock becomes
this machine's clock plus the measured offset (:class:`aiosched._clock.StoreClock`).

Each sample reads ``clock_timestamp()`` between two readings of the monotonic clock:
``database - midpoint`` with an error of at most half the round trip. The estimate is
anchored to the *monotonic* clock, so a step of this machine's wall clock (NTP, an
operator) changes nothing: ``now = database_minus_monotonic + monotonic()``. Of the last
few samples the one with the shortest round trip wins; a sample that disagrees with the
estimate beyond both error bounds (a suspend stops the monotonic clock; the database's
clock was stepped) starts afresh. A change of more than :data:`NOTICEABLE` seconds calls the
``on_change`` callbacks (the engine re-checks what is due).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("aiosched.stores.postgres")

NOTICEABLE = 0.05  # seconds an estimate must move by to wake the engine
WARN_ABOVE = 1.0  # seconds of offset that deserve a warning (and again per further second)
_TOLERANCE = 0.02  # seconds two samples may disagree by beyond their round trips (timer noise)
_QUERY = "SELECT extract(epoch FROM clock_timestamp())::float8"


class ClockSync:
    """The database's clock as seen from this process.

    Attributes:
        rtt: the round trip of the sample in use (its error is at most half of it); None
            before the first sample.
        samples: samples taken so far.
    """

    def __init__(self, what: str, *, keep: int = 8) -> None:
        self._what = what
        self._samples: deque[tuple[float, float]] = deque(maxlen=keep)  # (round trip, database - monotonic)
        self._base: float | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._warned: float | None = None
        self.rtt: float | None = None
        self.samples = 0

    @property
    def offset(self) -> float:
        """Seconds to add to this machine's wall clock to get the database's (0.0 before a sample)."""
        base = self._base
        if base is None:
            return 0.0
        return base + time.monotonic() - time.time()

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    async def measure(self, conn: Any, times: int = 1) -> None:
        """Take ``times`` samples on ``conn`` (errors propagate to the caller)."""
        for _ in range(times):
            before = time.monotonic()
            db = await conn.fetchval(_QUERY)
            after = time.monotonic()
            self.add(float(db), before, after)

    def add(self, db: float, before: float, after: float) -> None:
        """One sample: the database said ``db`` (epoch seconds) between monotonic ``before`` and ``after``."""
        rtt = max(0.0, after - before)
        estimate = db - (before + after) / 2
        old, old_rtt = self._base, self.rtt
        if old is not None and old_rtt is not None and abs(estimate - old) > max(rtt, old_rtt) / 2 + _TOLERANCE:
            self._samples.clear()  # the clocks moved apart: earlier samples no longer describe them
        self._samples.append((rtt, estimate))
        self.samples += 1
        self.rtt, self._base = min(self._samples)
        self._report()
        if old is None or abs(self._base - old) > NOTICEABLE:
            for callback in list(self._callbacks):
                callback()

    def _report(self) -> None:
        offset = self.offset
        if abs(offset) > WARN_ABOVE:
            if self._warned is None or abs(offset - self._warned) > WARN_ABOVE:
                self._warned = offset
                side = "ahead of" if offset < 0 else "behind"
                logger.warning(
                    "%s: node clock is %.1f s %s the database; using database time", self._what, abs(offset), side
                )
        elif self._warned is not None:
            self._warned = None
            logger.warning("%s: node clock is within %.3f s of the database again", self._what, abs(offset))
