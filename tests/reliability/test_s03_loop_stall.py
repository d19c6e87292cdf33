"""S3 (I): a task blocks the event loop with ``time.sleep`` for 1.5 s.

Passes when the stall (> 250 ms) is reported within 1 s of the block's start, naming the task,
with a stack snippet; ``scheduler_loop_stalls_total`` rises; the ledger holds 0 duplicate starts;
and the scheduler keeps going (a 0.2 s ticker fires again right after the block).
A smaller case of the same: tests/test_metrics.py::test_stall_is_reported_with_the_schedule_within_a_second.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiosched.metrics import SchedulerMetrics

from ..conftest import SchedulerFactory
from .conftest import FigureRecorder
from .harness import Ledger

BLOCK = 1.5
TASKS = "tests.reliability.tasks"


async def test_s3_a_blocked_loop_is_reported_and_survived(
    tmp_path: Path,
    ledger: Ledger,
    make_scheduler: SchedulerFactory,
    figure: FigureRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiosched.watchdog")
    s, _ = await make_scheduler(store=f"sqlite:///{tmp_path / 'a.db'}")
    async with SchedulerMetrics(s) as metrics:
        assert metrics.registry.get_sample_value("scheduler_loop_stalls_total") == 0
        await s.add_job(f"{TASKS}:run", "interval", seconds=0.2, id="tick", kwargs={"ledger": str(ledger)})
        await ledger.wait_starts(2, "tick", timeout=5)
        when = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        await s.add_job(
            f"{TASKS}:block",
            "date",
            run_date=when,
            id="blocker",
            name="Blocking report",
            kwargs={"ledger": str(ledger), "seconds": BLOCK},
        )
        [began] = await ledger.wait_starts(1, "blocker", timeout=5)
        await ledger.wait(lambda: bool(ledger.rows("end", "blocker")), "the block ends", timeout=5)
        ended = ledger.rows("end", "blocker")[0]["mono"]
        await ledger.wait(
            lambda: sum(r["mono"] > ended for r in ledger.starts("tick")) >= 3, "3 ticks after the block", timeout=5
        )
        stalls = list(metrics.stalls)
        counted = metrics.registry.get_sample_value("scheduler_loop_stalls_total")

    assert stalls, "no stall reported"
    stall = stalls[0]
    reported_after = stall.detected_at - began["mono"]
    next_tick = min(r["mono"] for r in ledger.starts("tick") if r["mono"] > ended) - ended
    figure("S3", "stall reported after the block began (s)", reported_after, "< 1.0")
    figure("S3", "blocked_for when reported (s)", stall.blocked_for, "> 0.25")
    figure("S3", "scheduler_loop_stalls_total", counted, ">= 1")
    figure("S3", "duplicate starts in the ledger", ledger.duplicates(), "== 0")
    figure("S3", "first tick after the block (s)", next_tick, "< 1.0")

    assert reported_after < 1.0
    assert stall.blocked_for > 0.25
    assert (stall.schedule_id, stall.schedule_name) == ("blocker", "Blocking report")
    assert "time.sleep(seconds)" in stall.stack and "in block" in stall.stack
    assert counted is not None and counted >= 1
    warning = next(r.getMessage() for r in caplog.records if "event loop blocked" in r.getMessage())
    assert "schedule blocker (Blocking report)" in warning and "time.sleep(seconds)" in warning
    assert ledger.duplicates() == 0
    assert next_tick < 1.0
    fires = [r.fire_time for r in await s.get_runs(schedule_id="tick", limit=10_000)]
    assert len(fires) == len(set(fires))
