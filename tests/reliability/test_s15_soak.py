"""S15 (C; its log limiter also U): 10,000 runs raising with 50 kB tracebacks, 10,000 timeouts, 1000 cancels.

C passes when the process's RSS grows <= 20 MB from the end of a warm-up (which fills the run
history) to the end of the soak; the history stays within its retention limit; and the error log
is rate-limited: at most 5 error lines per schedule per minute, the rest counted exactly
(lines logged + lines announced as suppressed == failed and timed-out runs).
U passes when one schedule failing 100 times within a minute logs exactly 5 lines, and its next
error after the minute logs one "95 similar error line(s) suppressed" line; every run still
emits its event.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from typing import Any

import pytest

from aiosched import EventType, FakeClock, RunState, Scheduler
from aiosched._error_lines import ERROR_LINES, ERROR_WINDOW
from aiosched.metrics import SchedulerMetrics
from aiosched.stores import MemoryStore

from ..conftest import SchedulerFactory
from .conftest import FigureRecorder
from .harness import rss_bytes

SUPPRESSED = re.compile(r"run end: (\S+): (\d+) similar error line\(s\) suppressed")


class Lines(logging.Handler):
    """Counts the runner's error lines (no records kept: caplog would itself grow)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        found = SUPPRESSED.match(text)
        if found:
            self.suppressed[found[1]] = self.suppressed.get(found[1], 0) + int(found[2])
        elif text.startswith("run end: "):
            sid = text.split()[2]
            self.lines[sid] = self.lines.get(sid, 0) + 1


@pytest.fixture
def lines() -> Any:
    handler = Lines()
    runs = logging.getLogger("aiosched.runs")
    runs.addHandler(handler)
    yield handler
    runs.removeHandler(handler)


async def fails() -> None:
    raise ValueError("task bug")


async def test_s15_u_error_lines_are_rate_limited(
    make_scheduler: SchedulerFactory, clock: FakeClock, figure: FigureRecorder, lines: Lines
) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(fails, "interval", seconds=0.5, id="f")
    for n in range(1, 101):  # 100 failures in 50 s
        clock.advance(0.5)
        await rec.wait_runs(n)
    within = lines.lines.get("f", 0)
    assert (lines.lines, lines.suppressed) == ({"f": ERROR_LINES}, {})
    clock.advance(ERROR_WINDOW)  # after the window: one run (the rest of the due fires are coalesced) fails
    await rec.wait(lambda: len(rec.of(EventType.ERROR, "f")) == 101)
    figure("S15", "U: error lines for 100 failures in a minute", within, f"== {ERROR_LINES}")
    figure("S15", "U: then announced as suppressed", lines.suppressed.get("f"), "== 95")
    assert lines.lines == {"f": ERROR_LINES + 1} and lines.suppressed == {"f": 100 - ERROR_LINES}
    assert len(rec.of(EventType.ERROR, "f")) == 101  # every run still has its event


# -- the soak (C) --------------------------------------------------------------------------------

FAILING, TIMING_OUT, CANCELLED = 100, 100, 10  # schedules; one fire each per round
HISTORY = 1000


def ping(n: int) -> None:
    if n <= 0:
        raise ValueError("deep task bug")
    pong(n - 1)


def pong(n: int) -> None:
    ping(n - 1)  # two alternating frames: the traceback is not folded into "[Previous line repeated]"


async def raises_50kb() -> None:
    ping(440)  # about 50 kB of formatted traceback (the record keeps its last 20 kB)


async def hangs() -> None:
    await asyncio.Event().wait()


async def rounds(s: Scheduler, clock: FakeClock, count: int, finals: list[int]) -> None:
    """``count`` fake seconds: each fails 100 runs, times out 100, cancels 10."""
    for _ in range(count):
        before = finals[0]
        clock.advance(1)
        await s.engine.wait_idle()
        async with asyncio.timeout(30):
            while s.running_count("c000") == 0:
                await asyncio.sleep(0)
            for i in range(CANCELLED):
                await s.cancel_job_run(f"c{i:03}")
            while finals[0] - before < FAILING + TIMING_OUT + CANCELLED:
                await asyncio.sleep(0.001)


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_s15_soak_failures_timeouts_cancels(figure: FigureRecorder, lines: Lines) -> None:
    clock = FakeClock()
    s = Scheduler(timezone="UTC", clock=clock, store=MemoryStore(history_limit=HISTORY))
    metrics = SchedulerMetrics(s)  # as in production: it counts every run from the events
    finals = [0]

    def count(event: Any) -> None:
        finals[0] += 1

    s.add_listener(count, [EventType.ERROR, EventType.CANCELLED, EventType.EXECUTED])
    await s.start()
    try:
        for i in range(FAILING):
            await s.add_job(raises_50kb, "interval", seconds=1, id=f"f{i:03}")
        for i in range(TIMING_OUT):
            await s.add_job(hangs, "interval", seconds=1, id=f"t{i:03}", timeout=0.001)
        for i in range(CANCELLED):
            await s.add_job(hangs, "interval", seconds=1, id=f"c{i:03}")
        await rounds(s, clock, 20, finals)  # warm-up: fills the history, the pools, the caches
        gc.collect()
        before = rss_bytes()
        await rounds(s, clock, 100, finals)  # 10,000 failures, 10,000 timeouts, 1000 cancels
        gc.collect()
        growth = rss_bytes() - before
        kept = len(await s.get_runs(limit=100_000))
        sample = (await s.get_runs(schedule_id="f000", limit=1))[0]
    finally:
        await s.shutdown(wait=False)  # flushes the suppressed counts
        await metrics.close()

    failures = 120 * (FAILING + TIMING_OUT)
    logged, suppressed = sum(lines.lines.values()), sum(lines.suppressed.values())
    per_minute = max(n for n in lines.lines.values())
    figure("S15", "RSS growth after warm-up (MB)", growth / 1e6, "<= 20")
    figure("S15", "run records kept (history limit)", kept, f"<= {HISTORY}")
    figure(
        "S15", "error lines logged / suppressed / failed+timed-out runs", f"{logged} / {suppressed} / {failures}", "sum"
    )
    figure("S15", "most error lines of one schedule in 120 s", per_minute, f"<= {ERROR_LINES * 3} (+ summaries)")
    assert sample.state is RunState.FAILED and sample.traceback is not None and len(sample.traceback) == 20_000
    assert growth <= 20_000_000
    assert kept <= HISTORY
    assert logged + suppressed == failures
    assert per_minute <= ERROR_LINES * 3  # 120 fake seconds: at most 3 windows per schedule
    tasks = metrics.runs.tasks
    assert sum(t.executions[1] + t.executions[2] for t in tasks.values()) == failures  # failure + timeout
