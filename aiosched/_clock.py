"""The clock seam: every "now" in aiosched comes from a Clock.

Fire times are wall clock (aware UTC); durations and lateness use the monotonic clock.
Tests inject :class:`FakeClock` to make trigger and engine cases deterministic. A scheduler
on a shared store uses :class:`StoreClock`: this machine's clock corrected by the offset the
store measured against the database, so every node of a cluster agrees on "now" (S9).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the scheduler asks of a clock."""

    def now(self) -> datetime:
        """The wall clock as an aware UTC datetime."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the clock is moved by other means than time passing."""


class SystemClock:
    """The real clocks of this machine."""

    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def on_change(self, callback: Callable[[], None]) -> None:
        """The system clock never notifies; the engine re-checks it at a bounded interval."""


class OffsetSource(Protocol):
    """What :class:`StoreClock` asks of a store (see ``Store.clock_offset``)."""

    @property
    def clock_offset(self) -> float:
        """Seconds to add to this machine's wall clock to get the store's clock."""

    def on_clock_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the measured offset moved noticeably."""


class StoreClock:
    """The system clock plus a store's measured clock offset: the database's time on a shared store.

    ``now()`` is this machine's wall clock plus ``store.clock_offset`` (0.0 on a store that
    lives with its process, so it is then exactly :class:`SystemClock`); ``monotonic()`` is
    the machine's. When the store re-measures a noticeably different offset it calls the
    ``on_change`` callbacks, so an engine sleeping towards a fire time re-checks at once.
    """

    __slots__ = ("_store",)

    def __init__(self, store: OffsetSource) -> None:
        self._store = store

    def now(self) -> datetime:
        offset = self._store.clock_offset
        now = datetime.now(UTC)
        return now + timedelta(seconds=offset) if offset else now

    def monotonic(self) -> float:
        return time.monotonic()

    def on_change(self, callback: Callable[[], None]) -> None:
        self._store.on_clock_change(callback)


class FakeClock:
    """A clock that moves only when told to (for tests).

    ``advance()`` and ``set()`` move both clocks and wake whoever registered with
    :meth:`on_change`, so an engine sleeping towards a fire time re-checks at once.
    ``jump()`` moves only the wall clock, like an NTP step or a suspended laptop.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self._callbacks: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on both clocks."""
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        self._notify()

    def jump(self, seconds: float) -> None:
        """Step the wall clock only (forwards or backwards)."""
        self._now += timedelta(seconds=seconds)
        self._notify()

    def _notify(self) -> None:
        for callback in self._callbacks:
            callback()
