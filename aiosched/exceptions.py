"""Every exception aiosched raises.

::

    AioschedError
    ├── ConfigError (ValueError)          a config file is wrong; holds every problem found
    ├── TriggerError (ValueError)         a trigger type or argument is wrong
    ├── ScheduleError (ValueError)        a schedule's task or policy is wrong
    ├── ConflictingIdError (KeyError)     an id is taken and replace_existing is false
    ├── ScheduleNotFound (LookupError)    no schedule has that id
    ├── SchedulerNotRunning (RuntimeError)
    └── StoreError (RuntimeError)         the store cannot be opened or used

Raised by tasks to steer retries (not AioschedError subclasses of each other):

    RetryableError   always retried while attempts remain
    FatalError       never retried
    SkipRun          ends the run as ``skipped`` with a reason (used by rate_limit)
"""

from __future__ import annotations


class AioschedError(Exception):
    """Base class of every error aiosched raises."""


class TriggerError(AioschedError, ValueError):
    """A trigger type or one of its arguments is invalid.

    Attributes:
        field: the offending argument (``"hour"``), or ``None`` for the type itself.
        schedule_id: the schedule being built, when known.
    """

    def __init__(self, message: str, *, field: str | None = None, schedule_id: str | None = None) -> None:
        self.field = field
        self.schedule_id = schedule_id
        self.reason = message
        where = f"schedule {schedule_id!r}: " if schedule_id else ""
        at = f"trigger argument {field!r}: " if field else ""
        super().__init__(f"{where}{at}{message}")


class ScheduleError(AioschedError, ValueError):
    """A schedule's task reference or policy is invalid."""

    def __init__(self, message: str, *, field: str | None = None, schedule_id: str | None = None) -> None:
        self.field = field
        self.schedule_id = schedule_id
        self.reason = message
        where = f"schedule {schedule_id!r}: " if schedule_id else ""
        at = f"{field}: " if field else ""
        super().__init__(f"{where}{at}{message}")


class ConflictingIdError(AioschedError, KeyError):
    """A schedule with this id exists and ``replace_existing`` was false."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(
            f"a schedule with id {schedule_id!r} already exists (pass replace_existing=True to replace it)"
        )

    def __str__(self) -> str:
        return str(self.args[0])


class ScheduleNotFound(AioschedError, LookupError):
    """No schedule has this id."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"no schedule with id {schedule_id!r}")


class SchedulerNotRunning(AioschedError, RuntimeError):
    """The operation needs a running scheduler."""


class StoreError(AioschedError, RuntimeError):
    """The store cannot be opened or used."""


class RetryableError(Exception):
    """Raise from a task to ask for a retry, whatever ``retry_on`` says."""


class FatalError(Exception):
    """Raise from a task to fail the run at once, with no retry."""


class SkipRun(Exception):
    """Raise from a task (or a decorator) to end the run as ``skipped``.

    The message is recorded as the reason.
    """
