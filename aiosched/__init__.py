"""aiosched: an asyncio-native job scheduler.

Embed it::

    async with Scheduler(timezone="Europe/Berlin") as scheduler:
        await scheduler.add_job(report, "cron", hour=9, id="daily_report")

or run it with ``python -m aiosched``.
"""

from __future__ import annotations

from ._clock import Clock, FakeClock, SystemClock
from .events import Event, EventType
from .exceptions import (
    AioschedError,
    ConfigError,
    ConflictingIdError,
    FatalError,
    RetryableError,
    ScheduleError,
    ScheduleNotFound,
    SchedulerNotRunning,
    SkipRun,
    StoreError,
    TriggerError,
)
from .models import Catchup, Overlap, Policy, RunRecord, RunState, Schedule
from .retry import RetryPolicy
from .scheduler import Scheduler
from .task import BaseTask, should_stop
from .triggers import Trigger, build_trigger

__version__ = "0.1.0.dev0"

__all__ = [
    "AioschedError",
    "BaseTask",
    "Catchup",
    "Clock",
    "ConfigError",
    "ConflictingIdError",
    "Event",
    "EventType",
    "FakeClock",
    "FatalError",
    "Overlap",
    "Policy",
    "RetryPolicy",
    "RetryableError",
    "RunRecord",
    "RunState",
    "Schedule",
    "ScheduleError",
    "ScheduleNotFound",
    "Scheduler",
    "SchedulerNotRunning",
    "SkipRun",
    "StoreError",
    "SystemClock",
    "Trigger",
    "TriggerError",
    "__version__",
    "build_trigger",
    "should_stop",
]
