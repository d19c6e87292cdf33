"""Module-level tasks for the process executor tests (a worker process imports them by reference)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

from aiosched import BaseTask


def square_sum(n: int) -> int:
    """CPU work: sum of squares below ``n``."""
    return sum(i * i for i in range(n))


def noop() -> None:
    """Nothing, to measure the cost of a round trip."""


def getpid() -> int:
    """The worker's pid."""
    return os.getpid()


def spin(pid_path: str) -> None:
    """Write the worker's pid to ``pid_path``, then loop on the CPU forever."""
    Path(pid_path).write_text(str(os.getpid()))
    while True:
        pass


def hold(seconds: float) -> tuple[int, float, float]:
    """Occupy a worker for ``seconds``; return (pid, start, end) on the monotonic clock.

    CLOCK_MONOTONIC is system-wide on Linux, so the times compare across processes.
    """
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), start, time.monotonic()


async def double_later(x: int) -> int:
    """An async task: the worker runs it with asyncio.run."""
    await asyncio.sleep(0)
    return 2 * x


class Adder:
    """A BaseTask-like class: instantiated with no arguments, then ``execute`` is called."""

    def execute(self, a: int, b: int = 0) -> tuple[int, int]:
        return a + b, os.getpid()


class AsyncGreeter:
    """A BaseTask-like class whose ``execute`` is a coroutine function."""

    async def execute(self, name: str) -> str:
        await asyncio.sleep(0)
        return f"hello {name}"


class Namespace:
    """Holds a nested task to check qualname walking."""

    class Inner:
        @staticmethod
        def value() -> str:
            return "inner"


def fail(message: str) -> None:
    """Raise a ValueError with ``message``."""
    raise ValueError(message)


class TwoArgError(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ needs two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def fail_unpicklable() -> None:
    raise TwoArgError("left", "right")


def unpicklable_result() -> object:
    """Return something pickle refuses."""
    return threading.Lock()


def exit_worker() -> None:
    sys.exit(3)


def die() -> None:
    """Kill the worker process from inside."""
    os._exit(7)


def steer(kind: str) -> None:
    """Raise one of the exceptions that steer the scheduler."""
    from aiosched.exceptions import FatalError, RetryableError, SkipRun

    raise {"skip": SkipRun, "retry": RetryableError, "fatal": FatalError}[kind](f"steered: {kind}")


def slow_pid(pid_path: str, seconds: float) -> int:
    """Write the worker's pid to ``pid_path``, then sleep ``seconds`` (for shutdown tests)."""
    Path(pid_path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


PARENT_HOOKS: list[tuple[str, int, object]] = []
"""(hook, pid, argument) of ProcBaseTask's hooks, appended in the process that ran them."""


class ProcBaseTask(BaseTask):
    """A BaseTask for the process pool: ``execute`` runs in a worker, the hooks where the runner is."""

    def execute(self, x: int) -> tuple[int, int]:
        return x * 10, os.getpid()

    def validate_params(self, **kwargs: object) -> bool:
        PARENT_HOOKS.append(("validate_params", os.getpid(), kwargs))
        return True

    def on_success(self, result: object) -> None:
        PARENT_HOOKS.append(("on_success", os.getpid(), result))

    def cleanup(self) -> None:
        PARENT_HOOKS.append(("cleanup", os.getpid(), None))
