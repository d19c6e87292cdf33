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

    Long batch tasks should check it between batches and return early (the run then
    ends ``succeeded`` with whatever it returns). Works in ``async def`` tasks, in
    ``def`` tasks on the thread pool and in their hooks; a process-pool task cannot see
    it (it lives in another process) and is killed if it outlives the shutdown grace.
    Outside a run it is always False.
    """
    flag = _stop_flag.get()
    return flag is not None and flag.is_set()


class BaseTask(ABC):
    """Subclass and implement :meth:`execute` (``def`` or ``async def``).

    Each run gets a fresh instance, made with no arguments. The runner then calls:

    1. ``validate_params(**kwargs)``: False or an exception fails the run at once
       (no attempt, no retry, no ``on_failure``);
    2. ``execute(*args, **kwargs)`` once per attempt, under the schedule's timeout;
    3. ``on_retry(attempt, max_attempts)`` after a failed attempt, before the next one;
    4. ``on_success(result)`` or ``on_failure(exc)`` once, after the last attempt (a
       timeout counts as a failure; a skip (:class:`SkipRun`) and a cancellation call
       neither);
    5. ``cleanup()`` always: after success, failure, skip, and cancellation (timeout,
       ``cancel_job_run``, ``overlap: cancel_other``, shutdown).

    Hooks may be ``def`` or ``async def``. ``async def`` hooks run on the event loop.
    A plain hook runs on the loop when ``execute`` does (``async def execute`` on the
    default executor): keep it quick. It runs in a worker thread when ``execute`` is a
    plain ``def`` or the task uses the thread or process pool, so there it may block.
    A hook that raises is logged and never changes the run's outcome.

    ``execute`` on the ``threadpool`` runs in a worker thread: on timeout the thread is
    abandoned (it cannot be killed) and keeps running; poll :meth:`should_stop`.

    On the ``processpool`` executor ``execute`` runs in a worker process, on *another*
    instance made there (the class must be importable as ``package.module:Class``);
    the hooks run in the scheduler's process on the instance made here. The two share
    no attributes: pass what ``execute`` needs as arguments, and return what the hooks
    need (``on_success`` gets the result). ``should_stop()`` is always False in the
    worker; on timeout or at the end of the shutdown grace the worker is killed.

    Attributes:
        task_name: the class name, used in logs.
        logger: a logger named after the task (``aiosched.tasks.<class name>``).
    """

    task_name: str = "BaseTask"
    logger: logging.Logger = logging.getLogger("aiosched.tasks.BaseTask")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # class-level defaults, so that a subclass whose __init__ skips super().__init__() still logs
        super().__init_subclass__(**kwargs)
        cls.task_name = cls.__name__
        cls.logger = logging.getLogger(f"aiosched.tasks.{cls.__name__}")

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
