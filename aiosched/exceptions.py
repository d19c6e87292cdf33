"""Every exception aiosched raises.

::

    AioschedError
    ├── ConfigError (ValueError)          a config file is wrong; holds every ConfigProblem found
    ├── TriggerError (ValueError)         a trigger type or argument is wrong
    ├── ScheduleError (ValueError)        a schedule's task or policy is wrong
    ├── ConflictingIdError (KeyError)     an id is taken and replace_existing is false
    ├── ScheduleNotFound (LookupError)    no schedule has that id
    ├── SchedulerNotRunning (RuntimeError)
    ├── StoreError (RuntimeError)         the store cannot be opened or used
    └── AttemptTimeout (TimeoutError)     an attempt ran past its schedule's timeout

Raised by tasks to steer retries (not AioschedError subclasses of each other):

    RetryableError   always retried while attempts remain
    FatalError       never retried
    SkipRun          ends the run as ``skipped`` with a reason (used by rate_limit)
"""

from __future__ import annotations


class AioschedError(Exception):
    """Base class of every error aiosched raises."""


class ConfigError(AioschedError, ValueError):
    """A config file is wrong. Holds every problem found, each as ``file:line key.path: reason``.

    Attributes:
        problems: the problems, in file and line order.
    """

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.path))
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the configuration:\n{lines}")


class ConfigProblem:
    """One problem in a config file."""

    __slots__ = ("file", "line", "message", "path")

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({str(self)!r})"


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


class AttemptTimeout(AioschedError, TimeoutError):
    """An attempt ran past its ``timeout`` (the schedule's policy or the ``timeout`` decorator).

    The executors raise it, never the task, so the runner can tell "aiosched stopped this
    attempt" (recorded ``timed_out``) from a task's own :class:`TimeoutError`, e.g. from an
    HTTP client (recorded ``failed``). It is a TimeoutError, so ``retry_on: [TimeoutError]``
    covers both.
    """


class RetryableError(Exception):
    """Raise from a task to ask for a retry, whatever ``retry_on`` says."""


class FatalError(Exception):
    """Raise from a task to fail the run at once, with no retry."""


class SkipRun(Exception):
    """Raise from a task (or a decorator) to end the run as ``skipped``.

    The message is recorded as the reason.
    """
