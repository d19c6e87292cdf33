"""Task helpers: ``monitor_task``, ``rate_limit``, ``timeout``, ``log_execution``.

Each works on ``async def`` and plain ``def`` alike, keeps the function's metadata
(``functools.wraps``) and keeps its async-ness: a decorated coroutine function is still
a coroutine function, so the scheduler still runs it on the loop. Decorate functions
or methods (``BaseTask.execute``), not classes.

Stacking as in the original system works; the outermost decorator sees the others'
outcome (a ``rate_limit`` under ``monitor_task`` is logged as ``skipped``)::

    @monitor_task("enhanced_data_process")
    @rate_limit(max_calls=5, time_window=60)
    @timeout(300)
    @log_execution
    def run() -> dict[str, int]: ...
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

from aiosched.exceptions import AttemptTimeout, SkipRun
from aiosched.executors import is_async_callable

__all__ = ["log_execution", "monitor_task", "rate_limit", "timeout"]

logger = logging.getLogger("aiosched.tasks")

P = ParamSpec("P")
R = TypeVar("R")


class Decorator(Protocol):
    """What a decorator factory returns: keeps the decorated function's signature."""

    def __call__(self, func: Callable[P, R], /) -> Callable[P, R]: ...


class _Outcome:
    """What the wrapped call produced, for the hooks that report it."""

    __slots__ = ("result",)

    def __init__(self) -> None:
        self.result: Any = None


_Around = Callable[[tuple[Any, ...], dict[str, Any]], AbstractContextManager[_Outcome]]


def _is_async(func: Callable[..., Any]) -> bool:
    return not inspect.isclass(func) and is_async_callable(func)


def _around(func: Callable[P, R], around: _Around) -> Callable[P, R]:
    """Wrap ``func`` so that each call runs inside ``around(args, kwargs)``; keeps async-ness."""
    if _is_async(func):
        async_func = cast(Callable[P, Awaitable[Any]], func)

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            with around(args, kwargs) as outcome:
                outcome.result = await async_func(*args, **kwargs)
            return outcome.result

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with around(args, kwargs) as outcome:
            outcome.result = func(*args, **kwargs)
        return cast(R, outcome.result)

    return wrapper


def _name_of(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if module and qualname:
        return f"{module}:{qualname}"
    return repr(func)


# --------------------------------------------------------------------------- monitor_task


@overload
def monitor_task(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def monitor_task(func: str | None = None, /, *, name: str | None = None) -> Decorator: ...
def monitor_task(
    func: Callable[..., Any] | str | None = None, /, *, name: str | None = None
) -> Callable[..., Any] | Decorator:
    """Log each call's start (DEBUG) and end (one line: outcome and duration).

    Usable bare (``@monitor_task``), with a name as in the original system
    (``@monitor_task("nightly_report")``) or as ``@monitor_task(name="x")``; the default
    name is ``module:qualname``. Logger ``aiosched.tasks``. The end line is INFO for
    ``succeeded``, WARNING for ``skipped`` (:class:`SkipRun`) and ``cancelled``, ERROR
    for ``failed`` (with the exception's type and message). Exceptions are re-raised.
    """
    if callable(func):
        return _monitor(func, name)
    if func is not None and name is not None:
        raise TypeError("monitor_task: give the name once, positionally or as name=")
    label = func if func is not None else name

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        return _monitor(f, label)

    return decorate


def _monitor(func: Callable[P, R], name: str | None) -> Callable[P, R]:
    label = name or _name_of(func)

    @contextmanager
    def around(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[_Outcome]:
        logger.debug("task %s started", label)
        start = time.monotonic()
        try:
            yield _Outcome()
        except SkipRun as exc:
            logger.warning("task %s skipped in %.3fs: %s", label, time.monotonic() - start, exc)
            raise
        except asyncio.CancelledError:
            logger.warning("task %s cancelled after %.3fs", label, time.monotonic() - start)
            raise
        except BaseException as exc:
            logger.error("task %s failed in %.3fs: %s: %s", label, time.monotonic() - start, type(exc).__name__, exc)
            raise
        logger.info("task %s succeeded in %.3fs", label, time.monotonic() - start)

    return _around(func, around)


# --------------------------------------------------------------------------- rate_limit


def rate_limit(max_calls: int, time_window: float) -> Decorator:
    """Allow at most ``max_calls`` calls per sliding ``time_window`` seconds.

    The window is per decorated function (shared by all callers and, for a method, all
    instances) and thread-safe. It lives in memory: each worker process of the
    ``processpool`` executor has its own, and it starts empty after a restart. A call
    over the limit does not run: it raises :class:`SkipRun` (``"rate limit: 5 calls per
    60s reached"``), which the scheduler records as a ``skipped`` run; refused calls do
    not count against the window.

    Raises:
        ValueError: ``max_calls`` is not a positive integer or ``time_window`` not a
            positive number of seconds.
    """
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise ValueError(f"rate_limit: max_calls must be a positive integer, got {max_calls!r}")
    _check_seconds("rate_limit", "time_window", time_window)
    reason = f"rate limit: {max_calls} calls per {time_window:g}s reached"

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        calls: deque[float] = deque()
        lock = threading.Lock()

        @contextmanager
        def around(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[_Outcome]:
            now = time.monotonic()
            with lock:
                while calls and now - calls[0] >= time_window:
                    calls.popleft()
                if len(calls) >= max_calls:
                    raise SkipRun(reason)
                calls.append(now)
            yield _Outcome()

        return _around(func, around)

    return decorate


# --------------------------------------------------------------------------- timeout


def timeout(seconds: float) -> Decorator:
    """Raise :class:`~aiosched.exceptions.AttemptTimeout` when a call takes longer than ``seconds``.

    AttemptTimeout is a :class:`TimeoutError`; a scheduled run that ends with it is
    recorded ``timed_out`` (and retried if its policy says so), like the schedule's own
    ``timeout``.

    ``async def``: the coroutine is cancelled with ``asyncio.timeout`` (its cleanup
    runs). Plain ``def``: the function runs in a helper daemon thread (with the
    caller's context variables) that the caller joins with a timeout; when it expires
    the caller gets :class:`AttemptTimeout` but the helper thread **keeps running** until
    the function returns (a thread cannot be killed; its result is dropped). No signals
    are used, so it works in any thread. Prefer the schedule's ``timeout`` policy, which
    kills process runs.

    Raises:
        ValueError: ``seconds`` is not a positive number.
    """
    _check_seconds("timeout", "seconds", seconds)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        label = _name_of(func)
        message = f"task {label} timed out after {seconds:g}s"
        if _is_async(func):
            async_func = cast(Callable[P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                deadline = asyncio.timeout(seconds)
                try:
                    async with deadline:
                        return await async_func(*args, **kwargs)
                except TimeoutError as exc:
                    if deadline.expired():
                        raise AttemptTimeout(message) from exc
                    raise

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return _run_with_deadline(func, args, kwargs, seconds, label, message)

        return wrapper

    return decorate


def _run_with_deadline(
    func: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float, label: str, message: str
) -> R:
    outcome: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(func, *args, **kwargs)))
        except BaseException as exc:
            outcome.append((False, exc))

    helper = threading.Thread(target=target, name=f"aiosched-timeout:{label}", daemon=True)
    helper.start()
    helper.join(seconds)
    if helper.is_alive():
        logger.warning("task %s timed out after %gs; its helper thread keeps running", label, seconds)
        raise AttemptTimeout(message)
    ok, value = outcome.pop()
    if ok:
        return cast(R, value)
    try:
        raise value
    finally:
        del value  # break the frame <-> exception cycle


# --------------------------------------------------------------------------- log_execution


@overload
def log_execution(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def log_execution(*, level: int = logging.INFO, logger: logging.Logger | None = None) -> Decorator: ...
def log_execution(
    func: Callable[..., Any] | None = None, /, *, level: int = logging.INFO, logger: logging.Logger | None = None
) -> Callable[..., Any] | Decorator:
    """Log each call and its outcome, never the argument values.

    Usable bare (``@log_execution``) or as ``@log_execution(level=logging.DEBUG,
    logger=my_logger)`` (default logger ``aiosched.tasks``). The call line gives the
    function's name and how many positional and keyword arguments it got (their values
    may hold secrets); the end line gives the result's type and the duration at
    ``level``, or the exception's type and message at ERROR (a :class:`SkipRun` or a
    cancellation at ``level``). Exceptions are re-raised.
    """
    if func is not None:
        return _log_calls(func, level, logger)

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        return _log_calls(f, level, logger)

    return decorate


def _log_calls(func: Callable[P, R], level: int, log: logging.Logger | None) -> Callable[P, R]:
    label = _name_of(func)
    out = log or logger

    @contextmanager
    def around(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[_Outcome]:
        out.log(level, "calling %s with %d positional and %d keyword argument(s)", label, len(args), len(kwargs))
        start = time.monotonic()
        outcome = _Outcome()
        try:
            yield outcome
        except (SkipRun, asyncio.CancelledError) as exc:
            out.log(level, "%s ended in %.3fs: %s", label, time.monotonic() - start, type(exc).__name__)
            raise
        except BaseException as exc:
            out.error("%s raised %s in %.3fs: %s", label, type(exc).__name__, time.monotonic() - start, exc)
            raise
        out.log(level, "%s returned %s in %.3fs", label, type(outcome.result).__qualname__, time.monotonic() - start)

    return _around(func, around)


def _check_seconds(where: str, what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {what} must be a positive number of seconds, got {value!r}")
