"""Events and the bus that delivers them to listeners.

A listener is a plain or async callable taking one :class:`Event`. Listeners run after
the fact and never slow the engine down: plain ones are called inline (keep them quick),
async ones are started as tasks. A listener that raises is logged and forgotten.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .models import RunRecord

logger = logging.getLogger(__name__)


class EventType(enum.StrEnum):
    """What happened."""

    STARTED = "started"  # the scheduler started
    SHUTDOWN = "shutdown"  # the scheduler stopped
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"
    PAUSED = "paused"
    RESUMED = "resumed"
    SUBMITTED = "submitted"  # a run started its first attempt
    EXECUTED = "executed"  # a run succeeded
    ERROR = "error"  # a run failed or timed out (after its last attempt)
    RETRY = "retry"  # an attempt failed and another one follows
    MISSED = "missed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"
    CATCHUP_TRUNCATED = "catchup_truncated"  # more fires were due than max_catchup


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened to the scheduler, a schedule or a run.

    Attributes:
        type: what happened.
        schedule_id: the schedule concerned, if any.
        run: the run record as of this event, for run events.
        detail: extra facts (e.g. ``{"truncated": 1234}`` for CATCHUP_TRUNCATED).
    """

    type: EventType
    schedule_id: str | None = None
    run: RunRecord | None = None
    detail: dict[str, Any] | None = None


Listener = Callable[[Event], None] | Callable[[Event], Awaitable[None]]


class EventBus:
    """Delivers events to listeners subscribed by type."""

    def __init__(self) -> None:
        self._listeners: dict[EventType, list[Listener]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, listener: Listener, types: Iterable[EventType | str] | None = None) -> None:
        """Call ``listener`` for each event of ``types`` (all types when ``None``)."""
        for kind in EventType if types is None else (EventType(t) for t in types):
            self._listeners.setdefault(kind, []).append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        for listeners in self._listeners.values():
            while listener in listeners:
                listeners.remove(listener)

    def wants(self, kind: EventType) -> bool:
        """Whether anyone listens to ``kind`` (lets the hot path skip building events)."""
        return bool(self._listeners.get(kind))

    def emit(self, event: Event) -> None:
        """Deliver ``event``; never raises."""
        for listener in self._listeners.get(event.type, ()):
            try:
                outcome = listener(event)
                if inspect.isawaitable(outcome):
                    task = asyncio.ensure_future(self._await(listener, outcome))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                logger.exception("event listener %r failed on %s", listener, event.type.value)

    @staticmethod
    async def _await(listener: Listener, outcome: Awaitable[None]) -> None:
        try:
            await outcome
        except Exception:
            logger.exception("async event listener %r failed", listener)

    async def drain(self) -> None:
        """Wait for async listeners still running (used at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
