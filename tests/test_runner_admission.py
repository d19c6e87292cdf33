"""Admission against runs in flight on other nodes (``Runner.admit(..., elsewhere=N)``).

A node can neither wait for nor cancel another node's runs, so a fire that only they hold
back is skipped whatever the overlap policy; ``cancel_other`` still cancels this node's own.
The multi-node behaviour is exercised for real in tests/cluster (S14).
"""

from __future__ import annotations

import pytest

from aiosched import RunState, Scheduler

from .conftest import START, SchedulerFactory


async def noop() -> None:
    return None


async def admitted(s: Scheduler, overlap: str, *, max_instances: int, elsewhere: int) -> tuple[bool, list[str]]:
    schedule = await s.add_job(
        noop, "cron", hour=9, id=f"{overlap}-{elsewhere}", overlap=overlap, max_instances=max_instances
    )
    plan = s._runner.admit(schedule, [START], START, elsewhere=elsewhere)
    s._runner.forget(plan)
    return plan.starts or plan.buffered, [r.reason or "" for r in plan.records if r.state is RunState.SKIPPED]


@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "cancel_other"])
async def test_runs_elsewhere_that_fill_max_instances_skip_the_fire(
    make_scheduler: SchedulerFactory, overlap: str
) -> None:
    s, _ = await make_scheduler()
    goes, skipped = await admitted(s, overlap, max_instances=1, elsewhere=1)
    assert not goes
    assert skipped == ["max_instances reached (1 running on other nodes)"]


async def test_cancel_other_makes_room_among_this_nodes_runs_only(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    schedule = await s.add_job(noop, "cron", hour=9, id="c", overlap="cancel_other", max_instances=3)
    plan = s._runner.admit(schedule, [START], START, elsewhere=2)
    s._runner.forget(plan)
    assert plan.starts
    assert plan.local_limit == 1  # this node keeps at most one run of it: the new one


async def test_buffer_one_buffers_behind_this_nodes_own_run(make_scheduler: SchedulerFactory) -> None:
    s, _ = await make_scheduler()
    schedule = await s.add_job(noop, "cron", hour=9, id="b", overlap="buffer_one")
    first = s._runner.admit(schedule, [START], START)
    second = s._runner.admit(schedule, [START], START)  # the first still holds the slot (reserved)
    assert first.starts and second.buffered
    assert [r.state for r in second.records] == [RunState.QUEUED]
    s._runner.forget(second)
    s._runner.forget(first)
