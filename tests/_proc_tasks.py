"""Module-level tasks for the process executor tests (a worker process imports them by reference)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path


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
