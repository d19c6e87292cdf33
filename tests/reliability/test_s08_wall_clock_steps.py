"""S8 (U+I): the wall clock steps +1 h, then -1 h, while a 10 s interval and a 1-minute cron run.

Passes when the forward step is handled as downtime (S5: ``catchup: latest`` runs each schedule
once and records the rest as skipped, at most ``max_catchup`` enumerated), and the backward step
repeats nothing (0 duplicate fires) and costs < 5 % of a core while the schedules wait out the
hour the clock went back (process CPU time over 3 s of the gap; I: from 2.5 s after the step,
once the node must have noticed it).

U: an injected clock (FakeClock). I: a real node process whose wall clock libfaketime steps
while it runs (its monotonic clock stays real, like an NTP step); ``max_sleep`` is 2 s there, so
the node notices a step within 2 s instead of 30. Also: tests/test_engine.py::
test_backward_clock_jump_does_not_double_fire and ::test_forward_clock_jump_is_handled_like_downtime.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from aiosched import EventType, FakeClock, RunRecord, RunState
from aiosched.stores import SQLiteStore

from ..conftest import SchedulerFactory
from .conftest import FigureRecorder, NodeFactory
from .harness import Ledger, WallClock, node_args

GAP = 3.0  # seconds of real time measured while the schedules wait out the repeated hour
NOTICE = 2.5  # I: the node notices a step within max_sleep (2 s); the gap is measured after that
CPU_LIMIT = 0.05


async def noop() -> None:
    return None


def duplicates(records: list[RunRecord]) -> int:
    """Records beyond the first of the same schedule and fire time."""
    return sum(n - 1 for n in Counter((r.schedule_id, r.fire_time) for r in records).values())


async def test_s8_u_steps_with_an_injected_clock(
    make_scheduler: SchedulerFactory, clock: FakeClock, figure: FigureRecorder
) -> None:
    s, rec = await make_scheduler(clock=clock)
    await s.add_job(noop, "interval", seconds=10, id="i")
    await s.add_job(noop, "cron", minute="*", id="c")
    for _ in range(6):  # one normal minute: 6 interval fires, 1 cron fire
        clock.advance(10)
        await s.engine.wait_idle()
    await rec.wait_runs(7)

    clock.jump(3600)  # forward: an hour of fires is due at once
    clock.advance(0)
    await rec.wait_runs(7 + 100 + 60)
    await s.engine.wait_idle()
    after_forward = rec.final_runs()
    forward = Counter((r.schedule_id, r.state) for r in after_forward[7:])
    figure(
        "S8", "U forward: interval runs / skipped", f"{forward['i', 'succeeded']} / {forward['i', 'skipped']}", "1 / 99"
    )
    figure("S8", "U forward: cron runs / skipped", f"{forward['c', 'succeeded']} / {forward['c', 'skipped']}", "1 / 59")
    assert forward == {
        ("i", RunState.SUCCEEDED): 1,
        ("i", RunState.SKIPPED): 99,  # max_catchup = 100 enumerated, the other 260 counted
        ("c", RunState.SUCCEEDED): 1,
        ("c", RunState.SKIPPED): 59,
    }
    assert [e.detail for e in rec.of(EventType.CATCHUP_TRUNCATED)] == [{"truncated": 260}]

    clock.jump(-3600)  # backward: the next fire times are an hour ahead again
    clock.advance(0)
    await s.engine.wait_idle()
    cpu, wakeups = time.process_time(), s.engine.wakeups
    await asyncio.sleep(GAP)  # the measuring window itself (nothing is awaited in it)
    share = (time.process_time() - cpu) / GAP
    figure("S8", "U backward: CPU share during the gap", share, f"< {CPU_LIMIT}")
    figure("S8", "U backward: engine wake-ups during the gap", s.engine.wakeups - wakeups, "<= 1")
    assert share < CPU_LIMIT
    assert s.engine.wakeups - wakeups <= 1  # no busy loop: one bounded re-check of the wall clock at most

    for _ in range(60):  # live through the repeated hour
        clock.advance(60)
        await s.engine.wait_idle()
    runs = await s.get_runs(limit=10_000)
    repeated = duplicates(runs)
    figure("S8", "U backward: duplicate fires", repeated, "== 0")
    assert repeated == 0
    assert len(rec.final_runs()) == len(after_forward)  # the repeated hour fired nothing


async def test_s8_i_steps_under_libfaketime(
    tmp_path: Path, ledger: Ledger, nodes: NodeFactory, faketime: str, figure: FigureRecorder
) -> None:
    db = tmp_path / "a.db"
    wall = WallClock(faketime, tmp_path)
    task = {"func": "tests.reliability.tasks:run", "kwargs": {"ledger": str(ledger)}}
    spec = {
        "store": f"sqlite:///{db}",
        "max_sleep": 2.0,
        "schedules": [
            {"id": "i", "trigger": "interval", "args": {"seconds": 10}, **task},
            {"id": "c", "trigger": "cron", "args": {"minute": "*"}, **task},
        ],
    }
    node = await nodes(node_args(spec), name="node", env=wall.env())
    await node.expect("ready")

    wall.set(+3600)
    await ledger.wait(lambda: {r["sid"] for r in ledger.starts()} == {"i", "c"}, "a catch-up run of each", timeout=10)
    await ledger.wait(lambda: len(ledger.rows("end")) == 2, "both catch-up runs end", timeout=5)
    text = await node.wait_log("more fire times were due than max_catchup", timeout=5)

    cpu, started = node.cpu_seconds(), len(ledger.starts())
    wall.set(0)
    slices = []  # cumulative CPU seconds every 0.5 s since the step back
    for _ in range(int((NOTICE + GAP) / 0.5)):  # the measuring window itself (nothing to await in it)
        await asyncio.sleep(0.5)
        slices.append(round(node.cpu_seconds() - cpu, 2))
    share = (slices[-1] - slices[int(NOTICE / 0.5) - 1]) / GAP  # the gap proper, once the step was noticed
    repeated = len(ledger.starts()) - started
    node.terminate()
    assert await node.exit_code() == 0

    figure("S8", "I backward: node CPU share during the gap", share, f"< {CPU_LIMIT}")
    figure("S8", "I backward: node CPU s from the step to the gap's end", slices[-1], "(reported)")
    figure("S8", "I backward: starts during the gap / duplicates", f"{repeated} / {ledger.duplicates()}", "0 / 0")
    assert share < CPU_LIMIT, f"cumulative CPU seconds every 0.5 s: {slices}\n{node.log_text()[-3000:]}"
    assert repeated == 0 and ledger.duplicates() == 0
    assert text.count("more fire times were due than max_catchup") == 1  # the interval's 350-odd, once

    store = SQLiteStore(db)
    await store.start(node_id="check")
    try:
        runs = await store.get_runs(limit=10_000)
    finally:
        await store.close()
    states = Counter((r.schedule_id, r.state.value) for r in runs)
    figure(
        "S8", "I forward: interval runs / skipped", f"{states['i', 'succeeded']} / {states['i', 'skipped']}", "1 / 99"
    )
    figure(
        "S8", "I forward: cron runs / skipped", f"{states['c', 'succeeded']} / {states['c', 'skipped']}", "1 / 59-60"
    )
    assert states["i", "succeeded"] == 1 and states["i", "skipped"] == 99
    assert states["c", "succeeded"] == 1 and states["c", "skipped"] in (59, 60)
    assert duplicates(runs) == 0
