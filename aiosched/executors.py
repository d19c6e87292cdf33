"""Where one attempt of a task runs: on the loop, in a thread, or in a worker process.

Three executors share one small protocol (:class:`Executor`). Each bounds its own
concurrency and applies the attempt's timeout the way its kind allows:

========== ====================== ==================================================
kind       concurrency bound      on timeout / cancellation of the caller
========== ====================== ==================================================
async      a FIFO slot count      the coroutine is cancelled (``asyncio.timeout``)
thread     anyio CapacityLimiter  the thread is *abandoned*: it cannot be killed and
                                  keeps running; its slot is freed at once
process    anyio CapacityLimiter  the worker process is killed (SIGKILL)
========== ====================== ==================================================

A timeout raises :class:`~aiosched.exceptions.AttemptTimeout` (a :class:`TimeoutError`),
so a task's own TimeoutError stays distinguishable; a cancellation re-raises
:class:`asyncio.CancelledError`. The slot is acquired before the timeout starts, so
time spent waiting for a free slot does not count against the attempt's timeout (the
start of a new worker process, when none is idle, does).

A task that raises :class:`SystemExit` (``sys.exit()``) gets a :class:`RuntimeError`
instead, so that one task cannot stop the scheduler.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import importlib
import inspect
import logging
import math
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any, Literal, Protocol, final

import anyio.to_process
import anyio.to_thread
from anyio import BrokenWorkerProcess, CapacityLimiter

from aiosched.exceptions import AioschedError, AttemptTimeout, ScheduleError
from aiosched.task import should_stop

__all__ = [
    "AsyncExecutor",
    "Executor",
    "ExecutorKind",
    "NotStarted",
    "ProcessExecutor",
    "ThreadExecutor",
    "build_executors",
    "is_async_callable",
]

logger = logging.getLogger(__name__)

ExecutorKind = Literal["async", "thread", "process"]


class Executor(Protocol):
    """Runs one attempt of a task.

    Attributes:
        name: the executor's name in config and schedules (``"default"``, ``"threadpool"``...).
        kind: ``"async"``, ``"thread"`` or ``"process"``.
        limit: the most attempts that run in it at the same time (read-only).
    """

    name: str
    kind: ExecutorKind
    limit: int

    @property
    def active(self) -> int:
        """Attempts currently running in it (holding a slot)."""

    async def call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None,  # noqa: ASYNC109  # the Executor protocol's per-attempt timeout
        task_ref: str | None = None,
    ) -> Any:
        """Run ``func(*args, **kwargs)`` once and return its result or raise its exception.

        Waits for a free slot first. ``timeout`` (seconds, ``None`` = none) starts once
        the slot is held; when it expires, :class:`AttemptTimeout` is raised. ``task_ref``
        (``"package.module:qualname"``) names the task in logs and is what the process
        executor imports in its worker.
        """

    async def shutdown(self) -> None:
        """Release what the executor holds; attempts still running are not waited for."""


def is_async_callable(obj: Any) -> bool:
    """Tell whether calling ``obj`` gives an awaitable that must run on the loop.

    ``functools.partial`` objects are unwrapped; a callable instance counts when its
    ``__call__`` is a coroutine function; a class with an ``execute`` attribute (a
    ``BaseTask``) counts when ``execute`` is a coroutine function. Any other class is
    not async: calling it builds an instance.
    """
    if type(obj) is FunctionType:  # the common case, checked in a fraction of a microsecond
        return bool(obj.__code__.co_flags & CO_COROUTINE)
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.isclass(obj):
        execute = getattr(obj, "execute", None)
        return execute is not None and not inspect.isclass(execute) and is_async_callable(execute)
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    )


def _is_task_class(obj: Any) -> bool:
    return inspect.isclass(obj) and callable(getattr(obj, "execute", None))


def _bind(func: Callable[..., Any]) -> Callable[..., Any]:
    """The callable one attempt calls: a task class's fresh instance's ``execute``, else ``func``."""
    if _is_task_class(func):
        execute: Callable[..., Any] = func().execute
        return execute
    return func


class NotStarted(AioschedError):
    """An attempt got its slot after the scheduler began shutting down, so the task was not called.

    (A run that waited for a free slot must not start its task during shutdown, RELIABILITY S13.)
    """


def _check_start(waited: bool) -> None:
    """Called with the slot held, just before the task: if it had to wait for the slot, not once shutdown began."""
    if waited and should_stop():
        raise NotStarted("the scheduler began shutting down while the run waited for a free slot")


def _describe(func: Callable[..., Any], task_ref: str | None) -> str:
    if task_ref:
        return task_ref
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if module and qualname:
        return f"{module}:{qualname}"
    return repr(func)


def _exit_error(exc: SystemExit, task: str) -> RuntimeError:
    return RuntimeError(f"task {task!r} called sys.exit({exc.code!r}); a task cannot stop the scheduler")


# --------------------------------------------------------------------------- async


class _Slots:
    """A first-come first-served counting semaphore whose free case costs no coroutine.

    ``asyncio.Semaphore`` would do, but its ``locked()`` scans the waiters and ``async with``
    makes two coroutines, a measurable share of a no-op run. A freed slot is handed straight
    to the oldest waiter, so a newcomer never takes it from under a woken one.
    """

    __slots__ = ("_waiters", "free")

    def __init__(self, limit: int) -> None:
        self.free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        """Take a slot if one is free and nobody waits; never blocks."""
        if self.free and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot, in arrival order."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # the slot was handed over as we were cancelled: pass it on
            raise

    def give(self) -> None:
        """Free a slot: to the oldest live waiter, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


@final
class AsyncExecutor:
    """Awaits coroutine functions on the event loop, at most ``limit`` at a time.

    Timeout: the coroutine is cancelled through ``asyncio.timeout`` (its ``finally``
    blocks and ``except CancelledError`` paths run) and :class:`AttemptTimeout` is raised.
    Cancellation of the caller cancels the coroutine the same way. A plain ``def``
    would block the loop, so it is refused with :class:`ScheduleError`.
    """

    kind: ExecutorKind = "async"

    def __init__(self, limit: int = 100, *, name: str = "default") -> None:
        _check_limit(limit)
        self.name = name
        self.limit = limit
        self._slots = _Slots(limit)
        self._active = 0

    @property
    def active(self) -> int:
        """Coroutines currently running (holding a slot)."""
        return self._active

    async def call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None,  # noqa: ASYNC109  # the Executor protocol's per-attempt timeout
        task_ref: str | None = None,
    ) -> Any:
        """Await ``func(*args, **kwargs)`` in a free slot; see the class docstring."""
        if not is_async_callable(func):
            raise ScheduleError(
                f"task {_describe(func, task_ref)!r} is not a coroutine function; the {self.name!r} executor runs"
                " only async tasks (use 'threadpool' for a plain def)",
                field="executor",
            )
        slots = self._slots
        waited = not slots.take_now()
        if waited:
            await slots.take()
        self._active += 1
        try:
            _check_start(waited)
            target = _bind(func)
            if timeout is None:  # the hot path: asyncio.timeout costs more than the rest of the call
                return await target(*args, **kwargs)
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await target(*args, **kwargs)
            except TimeoutError as exc:
                if deadline.expired():
                    raise AttemptTimeout(
                        f"task {_describe(func, task_ref)!r} timed out after {timeout:g}s and was cancelled"
                    ) from exc
                raise
        except SystemExit as exc:
            raise _exit_error(exc, _describe(func, task_ref)) from None
        finally:
            self._active -= 1
            slots.give()

    async def call_plain(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """:meth:`call` for a plain ``async def`` and no timeout, without re-checking that (the runner's hot path)."""
        slots = self._slots
        waited = not slots.take_now()
        if waited:
            await slots.take()
        self._active += 1
        try:
            _check_start(waited)
            return await func(*args, **kwargs)
        except SystemExit as exc:
            raise _exit_error(exc, _describe(func, None)) from None
        finally:
            self._active -= 1
            slots.give()

    async def shutdown(self) -> None:
        """Nothing to release: running coroutines belong to their callers' tasks."""


# --------------------------------------------------------------------------- thread


class _ThreadCall:
    """Bookkeeping for one call handed to a worker thread (guarded by the executor's lock)."""

    __slots__ = ("abandoned", "abandoned_at", "counted", "done", "started")

    def __init__(self) -> None:
        self.started = False
        self.done = False
        self.abandoned = False
        self.counted = False
        self.abandoned_at = 0.0


@final
class ThreadExecutor:
    """Runs plain ``def`` tasks in anyio worker threads, at most ``limit`` at a time.

    Context variables of the caller are visible in the thread (anyio runs the function
    in a copy of the caller's context). A coroutine function given here runs to
    completion with ``asyncio.run`` in the thread, on its own event loop.

    Timeout or cancellation of the caller: a thread cannot be killed, so it is
    *abandoned*: the caller gets :class:`AttemptTimeout` (or its cancellation) at once,
    the slot is freed at once, and the thread keeps running until the function returns;
    its result or exception is then dropped. Each abandonment logs one WARNING and is
    counted in :attr:`leaked` until the thread finishes. A call abandoned before its
    thread picked it up never starts. Abandoned threads are not daemon threads: one
    that never returns keeps the interpreter from exiting, so long sync tasks should
    poll the stop flag.
    """

    kind: ExecutorKind = "thread"

    def __init__(self, limit: int = 20, *, name: str = "threadpool") -> None:
        _check_limit(limit)
        self.name = name
        self.limit = limit
        self._limiter = CapacityLimiter(limit)
        self._unbounded = CapacityLimiter(math.inf)  # anyio wants one; ours is taken before the timeout starts
        self._lock = threading.Lock()
        self._leaked = 0

    @property
    def active(self) -> int:
        """Calls currently holding a slot (abandoned threads are not counted here)."""
        return self._limiter.borrowed_tokens

    @property
    def leaked(self) -> int:
        """Abandoned threads still running; goes down as each one returns."""
        return self._leaked

    async def call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None,  # noqa: ASYNC109  # the Executor protocol's per-attempt timeout
        task_ref: str | None = None,
    ) -> Any:
        """Run ``func(*args, **kwargs)`` in a worker thread; see the class docstring."""
        state = _ThreadCall()
        run = functools.partial(self._run_in_thread, state, task_ref, func, args, dict(kwargs))
        waited = self._limiter.available_tokens < 1
        async with self._limiter:
            _check_start(waited)
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await anyio.to_thread.run_sync(run, limiter=self._unbounded, abandon_on_cancel=True)
            except BaseException as exc:
                expired = deadline.expired()
                if expired or isinstance(exc, asyncio.CancelledError):
                    self._abandon(state, func, task_ref, "timed out" if expired else "was cancelled", timeout)
                if expired and isinstance(exc, TimeoutError):
                    raise AttemptTimeout(
                        f"task {_describe(func, task_ref)!r} timed out after {timeout:g}s; thread abandoned:"
                        " it cannot be killed, so it was abandoned and keeps running"
                    ) from exc
                if isinstance(exc, SystemExit):
                    raise _exit_error(exc, _describe(func, task_ref)) from None
                raise

    def _run_in_thread(
        self,
        state: _ThreadCall,
        task_ref: str | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        with self._lock:
            if state.abandoned:
                return None  # given up before the thread picked it up: don't start it
            state.started = True
        try:
            result = _bind(func)(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
            return result
        finally:
            with self._lock:
                state.done = True
                if state.counted:
                    self._leaked -= 1
            if state.counted:
                logger.info(
                    "abandoned thread of task %r finished %.3fs after it was abandoned",
                    _describe(func, task_ref),
                    time.monotonic() - state.abandoned_at,
                )

    def _abandon(
        self, state: _ThreadCall, func: Callable[..., Any], task_ref: str | None, why: str, timeout: float | None
    ) -> None:
        with self._lock:
            state.abandoned = True
            if not state.started or state.done:
                return
            state.counted = True
            state.abandoned_at = time.monotonic()
            self._leaked += 1
            leaked = self._leaked
        logger.warning(
            "task %r %s%s: thread abandoned; a thread cannot be killed, so it was abandoned and keeps running"
            " (%d abandoned thread(s) running)",
            _describe(func, task_ref),
            why,
            f" after {timeout:g}s" if why == "timed out" and timeout is not None else "",
            leaked,
        )

    async def shutdown(self) -> None:
        """Release nothing: threads cannot be killed. Logs a WARNING if abandoned threads still run."""
        if self._leaked:
            logger.warning(
                "%d abandoned thread(s) of executor %r are still running; the process cannot exit until they return",
                self._leaked,
                self.name,
            )


# --------------------------------------------------------------------------- process


@final
class ProcessExecutor:
    """Runs tasks in anyio worker processes, at most ``limit`` at a time.

    The worker imports the task by its reference (``"package.module:qualname"``), so
    ``call`` needs ``task_ref`` and ignores ``func``. A task class (anything with an
    ``execute`` attribute) is instantiated with no arguments and its ``execute`` called;
    a coroutine result is run with ``asyncio.run`` in the worker. Workers inherit the
    scheduler's ``sys.path`` and working directory, and re-run its ``__main__`` script
    under the name ``__mp_main__`` (as multiprocessing does), so that script needs an
    ``if __name__ == "__main__":`` guard. Workers ignore SIGINT: the scheduler decides
    when they stop.

    Arguments, results and exceptions cross the process boundary pickled; anything
    that cannot be pickled gives a :class:`RuntimeError` naming the task. The worker's
    traceback is attached to the exception as a note.

    Timeout or cancellation of the caller: the worker process is killed with SIGKILL
    (and reaped) before :class:`AttemptTimeout` or the cancellation propagates. A worker
    that dies on its own gives a :class:`RuntimeError`. Idle workers are reused and are
    killed by anyio when the event loop's main task ends.
    """

    kind: ExecutorKind = "process"

    def __init__(self, limit: int = 5, *, name: str = "processpool") -> None:
        _check_limit(limit)
        self.name = name
        self.limit = limit
        self._limiter = CapacityLimiter(limit)
        self._unbounded = CapacityLimiter(math.inf)  # anyio wants one; ours is taken before the timeout starts

    @property
    def active(self) -> int:
        """Calls currently holding a worker process."""
        return self._limiter.borrowed_tokens

    async def call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None,  # noqa: ASYNC109  # the Executor protocol's per-attempt timeout
        task_ref: str | None = None,
    ) -> Any:
        """Run the task ``task_ref`` in a worker process; see the class docstring.

        Raises:
            ScheduleError: ``task_ref`` is missing or malformed, or the worker cannot import it.
            RuntimeError: arguments, result or exception cannot be pickled; the worker died.
            AttemptTimeout: ``timeout`` expired; the worker was killed.
        """
        if task_ref is None:
            raise ScheduleError(
                f"task {_describe(func, None)!r} has no importable reference ('package.module:qualname');"
                f" the {self.name!r} executor can only run tasks a worker process can import",
                field="task",
            )
        _split_ref(task_ref)
        try:
            pickle.dumps((args, dict(kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise RuntimeError(
                f"task {task_ref!r}: its arguments cannot be pickled for a worker process: {exc}"
            ) from exc
        waited = self._limiter.available_tokens < 1
        async with self._limiter:
            _check_start(waited)
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    raised, payload = await anyio.to_process.run_sync(
                        _worker_entry, task_ref, tuple(args), dict(kwargs), cancellable=True, limiter=self._unbounded
                    )
            except TimeoutError as exc:
                if deadline.expired():
                    raise AttemptTimeout(
                        f"task {task_ref!r} timed out after {timeout:g}s; its worker process was killed"
                    ) from exc
                raise
            except BrokenWorkerProcess as exc:
                raise RuntimeError(
                    f"the worker process running task {task_ref!r} died: {exc.__cause__ or exc}"
                ) from exc
        try:
            value = pickle.loads(payload)
        except Exception as exc:
            what = "exception" if raised else "result"
            raise RuntimeError(f"task {task_ref!r}: its {what} cannot be unpickled in the scheduler: {exc}") from exc
        if raised:
            raise value
        return value

    async def shutdown(self) -> None:
        """Nothing to do: anyio kills idle workers when the event loop's main task ends."""


def _split_ref(task_ref: str) -> tuple[str, str]:
    module, sep, qualname = task_ref.partition(":")
    if not sep or not module or not qualname:
        raise ScheduleError(f"task reference {task_ref!r} is not of the form 'package.module:qualname'", field="task")
    return module, qualname


def _import_ref(task_ref: str) -> Any:
    """Import ``"package.module:qualname"`` and return the object it names."""
    module_name, qualname = _split_ref(task_ref)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ScheduleError(
            f"task {task_ref!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}", field="task"
        ) from None
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ScheduleError(
                f"task {task_ref!r}: {module_name!r} has no attribute {qualname!r}", field="task"
            ) from None
    return target


_sigint_ignored = False


def _call_in_worker(task_ref: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Import ``task_ref`` and call it once; runs inside the worker process.

    A task class is instantiated with no arguments and its ``execute`` called; a
    coroutine result is run to completion with ``asyncio.run``.
    """
    target = _bind(_import_ref(task_ref))
    result = target(*args, **kwargs)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return result


def _worker_entry(task_ref: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, bytes]:
    """Run the task in the worker and pickle its outcome here, where failures can be named.

    Returns ``(raised, pickled result or exception)``; the scheduler unpickles it.
    """
    global _sigint_ignored
    if not _sigint_ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _sigint_ignored = True
    try:
        result = _call_in_worker(task_ref, args, kwargs)
    except BaseException as exc:
        return True, _pickle_exception(exc, task_ref)
    try:
        return False, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        error = RuntimeError(
            f"task {task_ref!r} returned a {type(result).__qualname__} that cannot be pickled"
            f" back from its worker process: {exc}"
        )
        return True, pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_exception(exc: BaseException, task_ref: str) -> bytes:
    if isinstance(exc, SystemExit):
        error: BaseException = _exit_error(exc, task_ref)
    elif isinstance(exc, KeyboardInterrupt):
        error = RuntimeError(f"task {task_ref!r} was interrupted (KeyboardInterrupt) in its worker process")
    else:
        error = exc
    remote = "".join(traceback.format_exception(exc)).rstrip()
    try:
        pickle.loads(pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as perr:
        error = RuntimeError(
            f"task {task_ref!r} raised {type(exc).__qualname__}: {exc} (the exception cannot be pickled"
            f" back from its worker process: {type(perr).__name__}: {perr})"
        )
    error.add_note(f"Traceback in the worker process:\n{remote}")
    return pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)


# --------------------------------------------------------------------------- wiring


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"an executor limit must be a positive integer, got {limit!r}")


def build_executors(*, async_limit: int = 100, thread_limit: int = 20, process_limit: int = 5) -> dict[str, Executor]:
    """Build the executors by the original system's names.

    Returns ``{"default": AsyncExecutor, "async": <the same object>, "threadpool":
    ThreadExecutor, "processpool": ProcessExecutor}``. Config ``executors:
    {default_threads: N, process_pool: M}`` maps to ``thread_limit`` and ``process_limit``.

    Raises:
        ValueError: a limit is not a positive integer.
    """
    default = AsyncExecutor(async_limit, name="default")
    return {
        "default": default,
        "async": default,
        "threadpool": ThreadExecutor(thread_limit, name="threadpool"),
        "processpool": ProcessExecutor(process_limit, name="processpool"),
    }
