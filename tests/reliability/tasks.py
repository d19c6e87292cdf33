"""Ledger tasks: module-level, importable by reference (durable stores, the CLI, node processes).

``run`` is also the CLI's task entry (``tasks_package: tests.reliability``, ``module: tasks``).
Each task finds its own fire with :func:`current_run` and writes ledger rows before and after
its work, so a test counts starts, ends and cancellations per fire exactly.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Any

from aiosched import RunRecord

from .harness import append

_RUNNER_FILE = os.path.join("aiosched", "_runner.py")

RELEASE = threading.Event()
"""Set by a test's teardown to end the threads of :func:`stubborn` at once."""


def current_run() -> RunRecord:
    """The run record of the run executing the caller, found on the stack.

    An ``async def`` task on the default executor runs inside the runner's frames (its
    awaiting callers are its ``f_back`` chain while it runs): the frame of the runner's
    ``_run`` holds ``record``. This is how the loop watchdog finds the running schedule too.
    Raises LookupError outside a run (a thread or process task).
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.endswith(_RUNNER_FILE):
            record = frame.f_locals.get("record")
            if isinstance(record, RunRecord):
                return record
        frame = frame.f_back  # type: ignore[assignment]
    raise LookupError("current_run() is called outside an aiosched run on the event loop")


def note(ledger: str, ev: str, record: RunRecord, **extra: Any) -> None:
    """Append a ledger row about ``record``'s fire."""
    append(ledger, ev, sid=record.schedule_id, fire=record.fire_time.isoformat(), attempt=record.attempt, **extra)


async def run(ledger: str, seconds: float = 0.0, hang_first: bool = False) -> str:
    """Note the start, work ``seconds`` (or, with ``hang_first``, hang on attempt 1), note the end.

    A cancellation is noted as ``cancelled`` (and re-raised).
    """
    record = current_run()
    note(ledger, "start", record)
    try:
        if hang_first and record.attempt <= 1:
            await asyncio.sleep(3600)
        elif seconds:
            await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        note(ledger, "cancelled", record)
        raise
    note(ledger, "end", record)
    return f"attempt {record.attempt}"


async def block(ledger: str, seconds: float) -> str:
    """Block the event loop with ``time.sleep`` (RELIABILITY S3: what a careless task does)."""
    record = current_run()
    note(ledger, "start", record)
    time.sleep(seconds)
    note(ledger, "end", record)
    return "blocked"


def stubborn(ledger: str, sid: str, seconds: float) -> str:
    """A ``def`` for the thread pool that ignores its timeout and ``should_stop()``.

    A thread has no fire on its stack: its rows carry the schedule id and a call id in ``fire``.
    """
    call = f"call-{time.monotonic_ns()}"
    append(ledger, "start", sid=sid, fire=call, attempt=0)
    RELEASE.wait(seconds)
    append(ledger, "end", sid=sid, fire=call, attempt=0)
    return "late"
