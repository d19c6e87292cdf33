"""S6 (U): a 1-second interval, and the clock advances a year.

Passes when at most ``max_catchup`` fire times are enumerated (records made) and the rest are
counted exactly; the wake-up that handles it takes < 200 ms and allocates < 10 MB at its peak
(tracemalloc); and it is reported once (one ``catchup_truncated`` event, one WARNING line).
The trigger-level bound: tests/test_triggers.py::test_due_fire_times_interval_a_year_behind.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from datetime import timedelta

import pytest

from aiosched import EventType, FakeClock, RunState

from ..conftest import SchedulerFactory
from .conftest import FigureRecorder

YEAR = 365 * 86400
MAX_CATCHUP = 100


async def noop() -> None:
    return None


@pytest.mark.parametrize("catchup", ["all", "latest"])
async def test_s6_a_year_of_one_second_fires(
    make_scheduler: SchedulerFactory,
    clock: FakeClock,
    figure: FigureRecorder,
    caplog: pytest.LogCaptureFixture,
    catchup: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiosched.engine")
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "interval", seconds=1, id="a", catchup=catchup, max_catchup=MAX_CATCHUP)
    await s.engine.wait_idle()
    tracemalloc.start()
    try:
        began = time.perf_counter()
        clock.jump(YEAR)
        clock.advance(0)
        await s.engine.wait_idle()
        await rec.wait_runs(MAX_CATCHUP)  # every enumerated fire has its final record
        took = time.perf_counter() - began
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    await s.engine.wait_idle()
    runs = await s.get_runs(schedule_id="a", limit=10_000)
    truncated = rec.of(EventType.CATCHUP_TRUNCATED)
    warnings = [r for r in caplog.records if "counted, not enumerated" in r.getMessage()]
    counted = truncated[0].detail["truncated"] if truncated and truncated[0].detail else None
    figure("S6", f"{catchup}: fires enumerated (records)", len(runs), f"<= {MAX_CATCHUP}")
    figure("S6", f"{catchup}: fires counted, not enumerated", counted, f"== {YEAR - MAX_CATCHUP}")
    figure("S6", f"{catchup}: catch-up wake-up (s)", took, "< 0.2")
    figure("S6", f"{catchup}: peak traced memory (MB)", peak / 1e6, "< 10")
    figure("S6", f"{catchup}: warning events / WARNING lines", f"{len(truncated)} / {len(warnings)}", "1 / 1")

    assert len(runs) == MAX_CATCHUP
    succeeded = [r for r in runs if r.state is RunState.SUCCEEDED]
    assert len(succeeded) == (MAX_CATCHUP if catchup == "all" else 1)
    assert len(runs) - len(succeeded) == len([r for r in runs if r.state is RunState.SKIPPED])
    assert [e.detail for e in truncated] == [{"truncated": YEAR - MAX_CATCHUP}]
    assert len(warnings) == 1 and f"{YEAR - MAX_CATCHUP} more fire times" in warnings[0].getMessage()
    assert took < 0.2
    assert peak < 10_000_000
    assert (await s.get_job("a")).next_fire_time == clock.now() + timedelta(seconds=1)
