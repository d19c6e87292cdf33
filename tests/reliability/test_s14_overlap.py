"""S14 (I on one node, ~10 s; C, 60 s): a 1 s schedule whose task takes 3.5 s, per overlap policy.

Four schedules run side by side on the real clock: ``skip``, ``buffer_one`` and ``cancel_other``
(async ledger tasks of 3.5 s, ``max_instances: 1``), and a ``def`` on the thread pool that ignores
its 2 s timeout. Passes when ``skip`` never has more than 1 run going; ``buffer_one`` never has
more than 1 fire waiting (and 1 going); ``cancel_other`` has each run's cancellation recorded
before the next one starts; and the timeout frees the slot within 2.1 s although the thread keeps
running (``timed_out``, reported as an abandoned thread and counted in ``leaked``).
Cluster-wide ``max_instances`` across 3 nodes belongs to the cluster suite (PostgreSQL).
"""

from __future__ import annotations

import logging

import pytest

from aiosched import RunRecord, RunState, Scheduler

from ..conftest import SchedulerFactory
from .conftest import FigureRecorder
from .harness import Ledger, intervals, max_overlap, until

TASKS = "tests.reliability.tasks"
TAKES = 3.5


def queued_peak(records: list[RunRecord], ledger: Ledger, sid: str) -> int:
    """The most fires of ``sid`` waiting at once: fired (and not skipped) but not started yet."""
    started = {r["fire"]: r["wall"] for r in ledger.starts(sid)}
    waiting = [
        (r.fire_time.timestamp(), started.get(r.fire_time.isoformat(), float("inf")))
        for r in records
        if r.state is not RunState.SKIPPED
    ]
    return max_overlap([(f, s) for f, s in waiting if s > f])


async def overlap_policies(
    s: Scheduler, ledger: Ledger, figure: FigureRecorder, caplog: pytest.LogCaptureFixture, skip_runs: int
) -> None:
    caplog.set_level(logging.WARNING, logger="aiosched")
    for sid in ("skip", "buffer_one", "cancel_other"):
        await s.add_job(
            f"{TASKS}:run", "interval", seconds=1, id=sid, overlap=sid, kwargs={"ledger": str(ledger), "seconds": TAKES}
        )
    await s.add_job(
        f"{TASKS}:stubborn",
        "interval",
        seconds=1,
        id="timeout",
        executor="threadpool",
        timeout=2,
        kwargs={"ledger": str(ledger), "sid": "timeout", "seconds": TAKES},
    )
    await ledger.wait_starts(skip_runs, "skip", timeout=skip_runs * (TAKES + 1) + 5)
    threads = s.executors["threadpool"]
    await until(lambda: getattr(threads, "leaked", 0) >= 1, "an abandoned thread still running", timeout=5)
    leaked = getattr(threads, "leaked", 0)
    await s.shutdown(wait=False)
    runs: dict[str, list[RunRecord]] = {
        sid: sorted(await s.get_runs(schedule_id=sid, limit=10_000), key=lambda r: r.fire_time)
        for sid in ("skip", "buffer_one", "cancel_other", "timeout")
    }

    skip_peak = max_overlap(intervals(ledger.rows(sid="skip")))
    figure("S14", "skip: most runs going at once", skip_peak, "<= 1")
    assert skip_peak == 1
    assert {r.reason for r in runs["skip"] if r.state is RunState.SKIPPED} == {"max_instances reached (1 running)"}

    buffered = queued_peak(runs["buffer_one"], ledger, "buffer_one")
    buffer_going = max_overlap(intervals(ledger.rows(sid="buffer_one")))
    figure("S14", "buffer_one: most fires waiting / going at once", f"{buffered} / {buffer_going}", "<= 1 / <= 1")
    assert buffered == 1 and buffer_going == 1
    assert {r.reason for r in runs["buffer_one"] if r.state is RunState.SKIPPED} == {"buffer full (1 running)"}

    rows = ledger.rows(sid="cancel_other")
    starts = sorted(r["mono"] for r in rows if r["ev"] == "start")
    cancels = sorted(r["mono"] for r in rows if r["ev"] == "cancelled")
    first_before = all(c <= s2 for c, s2 in zip(cancels, starts[1:], strict=False))
    figure("S14", "cancel_other: each cancellation recorded before the next start", first_before, "True")
    figure("S14", "cancel_other: most runs going at once", max_overlap(intervals(rows)), "<= 1")
    assert len(starts) >= 3 and len(cancels) >= len(starts) - 1
    assert first_before and max_overlap(intervals(rows)) == 1
    by_newer = [r for r in runs["cancel_other"] if r.reason == "cancelled by a newer fire (overlap: cancel_other)"]
    assert len(by_newer) >= len(starts) - 1  # the last one started may end by the shutdown instead

    timed_out = [r for r in runs["timeout"] if r.state is RunState.TIMED_OUT]
    freed = max(r.duration or 0.0 for r in timed_out)
    ends = [r.ended_at for r in timed_out if r.ended_at is not None]
    follow_ups = [next((n for n in runs["timeout"] if n.fire_time > end), None) for end in ends]
    abandoned = [r.getMessage() for r in caplog.records if "thread abandoned" in r.getMessage()]
    figure("S14", "timeout 2 s: slot freed after (s, slowest)", freed, "< 2.1")
    figure(
        "S14", "timeout 2 s: abandoned threads leaked when sampled / warnings", f"{leaked} / {len(abandoned)}", ">= 1"
    )
    assert len(timed_out) >= 2
    assert all(2.0 <= (r.duration or 0.0) < 2.1 for r in timed_out)
    assert all(n is None or n.state is not RunState.SKIPPED for n in follow_ups)  # the slot was free again
    assert all("thread abandoned" in (r.error or "") for r in timed_out)
    assert leaked >= 1 and len(abandoned) >= len(timed_out)


@pytest.mark.usefixtures("release_threads")
async def test_s14_overlap_policies_one_node(
    ledger: Ledger, make_scheduler: SchedulerFactory, figure: FigureRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    s, _ = await make_scheduler()
    await overlap_policies(s, ledger, figure, caplog, skip_runs=3)  # ~10 s of real time


@pytest.mark.chaos
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("release_threads")
async def test_s14_overlap_policies_a_minute(
    ledger: Ledger, make_scheduler: SchedulerFactory, figure: FigureRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    s, _ = await make_scheduler()
    await overlap_policies(s, ledger, figure, caplog, skip_runs=15)  # ~60 s
