"""What the Prometheus metrics cost per fire.

1. listener: ``SchedulerMetrics.on_event`` alone, for the two events of a successful run
   (SUBMITTED + EXECUTED), on 100 schedules; microseconds per run.
2. end to end: N no-op jobs due at one instant on a FakeClock, fired by a real Scheduler
   with and without a SchedulerMetrics attached (which also makes the runner copy each
   record into an event); the difference in wall time per fire. Median of the rounds.

Run from the repository root::

    /tmp/venv/bin/python benchmarks/bench_metrics.py [--jobs 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiosched import Event, EventType, FakeClock, RunRecord, RunState, Scheduler
from aiosched.metrics import SchedulerMetrics

START = datetime(2030, 1, 1, tzinfo=UTC)


async def noop() -> None:
    return None


def bench_listener(runs: int) -> float:
    scheduler = Scheduler(timezone="UTC")
    metrics = SchedulerMetrics(scheduler)
    events = []
    for i in range(runs):
        sid = f"job-{i % 100}"
        fire = START + timedelta(seconds=i)
        record = RunRecord(schedule_id=sid, fire_time=fire, state=RunState.RUNNING, attempt=1, started_at=fire,
                           lateness=0.002)  # fmt: skip
        done = copy.copy(record)
        done.state, done.ended_at = RunState.SUCCEEDED, fire + timedelta(seconds=0.01)
        events.append(Event(type=EventType.SUBMITTED, schedule_id=sid, run=record))
        events.append(Event(type=EventType.EXECUTED, schedule_id=sid, run=done))
    on_event = metrics.on_event
    for event in events[:200]:  # warm the label cache
        on_event(event)
    start = time.perf_counter()
    for event in events:
        on_event(event)
    return (time.perf_counter() - start) / runs * 1e6


async def fire_all(jobs: int, with_metrics: bool) -> float:
    clock = FakeClock(START)
    async with Scheduler(timezone="UTC", clock=clock) as scheduler:
        metrics = SchedulerMetrics(scheduler) if with_metrics else None
        done = asyncio.Event()
        finished = 0

        def count(_: Event) -> None:
            nonlocal finished
            finished += 1
            if finished == jobs:
                done.set()

        scheduler.add_listener(count, [EventType.EXECUTED])
        for i in range(jobs):
            await scheduler.add_job(noop, "date", run_date=START + timedelta(seconds=1), id=f"j{i}")
        gc.collect()
        start = time.perf_counter()
        clock.advance(1)
        await done.wait()
        elapsed = time.perf_counter() - start
        if metrics is not None:
            await metrics.close()
    return elapsed / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    listener = statistics.median(bench_listener(100_000) for _ in range(args.rounds))
    print(f"listener alone: {listener:.2f} us per run (SUBMITTED + EXECUTED)")
    without, with_ = [], []
    for _ in range(args.rounds):
        without.append(asyncio.run(fire_all(args.jobs, False)))
        with_.append(asyncio.run(fire_all(args.jobs, True)))
    a, b = statistics.median(without), statistics.median(with_)
    print(f"end to end, {args.jobs} jobs due at once: {a:.1f} us/fire without metrics, {b:.1f} with "
          f"(+{b - a:.1f} us, +{(b - a) / a * 100:.0f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
