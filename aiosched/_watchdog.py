"""The loop watchdog: a thread that notices when the event loop stops answering.

A loop that does not answer runs blocking code: a ``time.sleep``, a sync database call or a
CPU-bound loop in an ``async def`` task. Every ``interval`` seconds the watchdog thread posts
a callback to the loop (``call_soon_threadsafe``) and times the answer; the answer time is the
loop lag. When a post has waited longer than ``threshold``, the thread reads the loop
thread's stack (``sys._current_frames``), finds the run of aiosched whose code is on it (the
runner's frames hold the ``schedule``), and reports a :class:`Stall` with a short stack
snippet, while the loop is still blocked. One stall is reported once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

logger = logging.getLogger("aiosched.watchdog")

_RUNNER_FILE = os.path.join("aiosched", "_runner.py")
_RUNNER_FRAMES = frozenset({"_run", "_attempts", "_run_chain", "_run_plain"})
STACK_LINES = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class Stall:
    """A blocked event loop, as seen from the watchdog thread.

    Attributes:
        blocked_for: seconds the loop had not answered when the stall was reported.
        schedule_id: the schedule whose run was on the loop's stack, or ``None``.
        schedule_name: that schedule's name.
        stack: the innermost frames of the loop thread, formatted (file, line, code; no values).
        detected_at: ``time.monotonic()`` when reported.
    """

    blocked_for: float
    schedule_id: str | None
    schedule_name: str | None
    stack: str
    detected_at: float


class LoopWatchdog:
    """Measures loop lag and reports stalls of one event loop from a daemon thread.

    Args:
        loop: the loop to watch; its thread is the one calling :meth:`start`.
        threshold: seconds without an answer that make a stall.
        interval: seconds between probes (and the granularity of detection).
        on_lag: called on the loop with each measured lag (seconds).
        on_stall: called from the watchdog thread with each :class:`Stall`; must be thread-safe.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold: float = 0.25,
        interval: float = 0.1,
        on_lag: Callable[[float], None] | None = None,
        on_stall: Callable[[Stall], None] | None = None,
    ) -> None:
        self._loop = loop
        self._threshold = threshold
        self._interval = interval
        self._on_lag = on_lag
        self._on_stall = on_stall
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()  # guards the probe state shared by the two threads
        self._sent: float | None = None  # when the outstanding probe was posted
        self._reported = False
        self.lag = 0.0

    @property
    def running(self) -> bool:
        """Whether the watchdog thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; call it from the loop's own thread. Starting twice does nothing."""
        if self.running:
            return
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._sent = None
        self._thread = threading.Thread(target=self._watch, name="aiosched-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> threading.Thread | None:
        """Ask the thread to end (it does within ``interval``); returns it for joining."""
        self._stop.set()
        thread, self._thread = self._thread, None
        return thread

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            if self._loop.is_closed():
                return
            if not self._loop.is_running():  # between runs of the loop: nothing is blocked
                continue
            now = time.monotonic()
            with self._lock:
                sent = self._sent
                post = sent is None
                stalled = sent is not None and now - sent > self._threshold and not self._reported
                if post:
                    self._sent = now
                elif stalled:
                    self._reported = True
            if post:
                try:
                    self._loop.call_soon_threadsafe(self._answer, now)
                except RuntimeError:  # the loop is closed: nothing left to watch
                    return
            elif stalled and sent is not None:
                self._report(now - sent)

    def _answer(self, sent: float) -> None:
        """Runs on the loop: the probe posted at ``sent`` got through."""
        lag = time.monotonic() - sent
        self.lag = lag
        with self._lock:
            recovered = self._reported
            self._reported = False
            self._sent = None
        if recovered:
            logger.warning("event loop answered again after %.3fs", lag)
        if self._on_lag is not None:
            self._on_lag(lag)

    def _report(self, blocked_for: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        schedule = _running_schedule(frame)
        stack = _stack_text(frame)
        stall = Stall(
            blocked_for=blocked_for,
            schedule_id=getattr(schedule, "id", None),
            schedule_name=getattr(schedule, "name", None),
            stack=stack,
            detected_at=time.monotonic(),
        )
        if stall.schedule_id is not None:
            logger.warning(
                "event loop blocked for %.3fs by a run of schedule %s (%s); the task blocks the loop "
                "(use async I/O or executor: threadpool):\n%s",
                blocked_for,
                stall.schedule_id,
                stall.schedule_name,
                stack,
            )
        else:
            logger.warning("event loop blocked for %.3fs (no aiosched run on its stack):\n%s", blocked_for, stack)
        if self._on_stall is not None:
            try:
                self._on_stall(stall)
            except Exception:
                logger.exception("stall callback failed")


def _running_schedule(frame: FrameType | None) -> Any:
    """The ``schedule`` of the innermost runner frame on the stack, or ``None``."""
    while frame is not None:
        code = frame.f_code
        if code.co_name in _RUNNER_FRAMES and code.co_filename.endswith(_RUNNER_FILE):
            # 'schedule' is an argument of these frames, so it is set from their first line on
            schedule = frame.f_locals.get("schedule")
            if schedule is not None:
                return schedule
        frame = frame.f_back
    return None


def _stack_text(frame: FrameType | None) -> str:
    """The innermost :data:`STACK_LINES` frames as ``File "...", line N, in f`` plus the code line."""
    if frame is None:
        return "  (no stack: the loop thread is gone)"
    summary = traceback.extract_stack(frame, limit=STACK_LINES)
    return "".join(summary.format()).rstrip("\n")
