"""BaseTask, the class-based way to write a task, and the cooperative stop flag.

A schedule whose task is a BaseTask subclass gets a fresh instance per run. The runner
calls, in order: ``validate_params(**kwargs)`` (False or an exception fails the run
without retry), ``execute(*args, **kwargs)`` once per attempt, ``on_retry(attempt,
max_attempts)`` before each retry, ``on_success(result)`` or ``on_failure(exc)`` once at
the end, and ``cleanup()`` always. Hooks may be plain or ``async def``; a hook that
raises is logged and does not change the run's outcome.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from abc import ABC, abstractmethod
from typing import Any

_stop_flag: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("aiosched_stop_flag", default=None)


def should_stop() -> bool:
    """True once the scheduler running the current task is shutting down.

    Long batch tasks should check it between batches and return early. Works in
    ``async def`` tasks and in ``def`` tasks on the thread pool; a process-pool task
    cannot see it (it lives in another process).
    """
    flag = _stop_flag.get()
    return flag is not None and flag.is_set()


class BaseTask(ABC):
    """Subclass and implement :meth:`execute` (``def`` or ``async def``).

    Attributes:
        task_name: the class name, used in logs.
        logger: a logger named after the task.
    """

    def __init__(self) -> None:
        self.task_name = type(self).__name__
        self.logger = logging.getLogger(f"aiosched.tasks.{self.task_name}")

    @abstractmethod
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Do the work of one attempt; its return value becomes the run's result."""

    def validate_params(self, **kwargs: Any) -> bool:
        """Check the run's kwargs before the first attempt; False fails the run (no retry)."""
        return True

    def on_success(self, result: Any) -> None:
        """Called once after the attempt that succeeded."""
        self.logger.info("task %s succeeded", self.task_name)

    def on_failure(self, exception: BaseException) -> None:
        """Called once after the last attempt failed (or timed out)."""
        self.logger.error("task %s failed: %s", self.task_name, exception)

    def on_retry(self, attempt: int, max_attempts: int) -> None:
        """Called before retry ``attempt`` (2 for the first retry) of ``max_attempts``."""
        self.logger.warning("task %s: attempt %d/%d", self.task_name, attempt, max_attempts)

    def cleanup(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Called once at the end of every run, whatever happened."""

    def should_stop(self) -> bool:
        """True once the scheduler is shutting down: return early when you can."""
        return should_stop()


def is_task_class(obj: Any) -> bool:
    """Whether ``obj`` is a BaseTask subclass (run as a fresh instance per run)."""
    return isinstance(obj, type) and issubclass(obj, BaseTask)
