"""S5 (U+I): a 1-minute cron, the scheduler down for 10 minutes, per catch-up policy.

Passes when, on the way back: ``latest`` runs 1 (the last fire), ``earliest`` 1 (the first),
``all`` 10 in fire-time order, ``skip`` 0; and with ``misfire_grace_time: 30`` the fires later
than 30 s are ``missed``, counted exactly (9 of 10). The rest of each 10 is recorded, never lost.

U: an injected clock (FakeClock) jumps 10 min 20 s. I: two real node processes on one SQLite
file, the second started 10 min later on a libfaketime clock (a real restart; skips locally
without libfaketime, fails under CI). Also: tests/test_engine.py::test_catchup_after_downtime and
tests/stores/test_sqlite.py::test_downtime_is_caught_up_by_policy (FakeClock across a restart).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiosched import FakeClock, RunRecord, RunState
from aiosched.stores import SQLiteStore

from ..conftest import START, SchedulerFactory
from .conftest import FigureRecorder, NodeFactory
from .harness import Ledger, node_args, starting_at

MIDNIGHT = START.replace(microsecond=0)
POLICIES: dict[str, dict[str, Any]] = {
    "latest": {"catchup": "latest"},
    "earliest": {"catchup": "earliest"},
    "all": {"catchup": "all"},
    "skip": {"catchup": "skip"},
    "grace30": {"catchup": "all", "misfire_grace_time": 30},
}
MINUTES = [MIDNIGHT + timedelta(minutes=m) for m in range(1, 11)]
EXPECTED = {  # policy: (fire times that run, state of the others, how many others)
    "latest": (MINUTES[-1:], RunState.SKIPPED, 9),
    "earliest": (MINUTES[:1], RunState.SKIPPED, 9),
    "all": (MINUTES, None, 0),
    "skip": ([], RunState.MISSED, 10),
    "grace30": (MINUTES[-1:], RunState.MISSED, 9),
}


def check(records: list[RunRecord], figure: FigureRecorder, tier: str) -> None:
    """Assert EXPECTED on the final records of every policy, noting the figures."""
    for sid, (ran, other_state, others) in EXPECTED.items():
        mine = sorted((r for r in records if r.schedule_id == sid), key=lambda r: r.fire_time)
        started = [r.fire_time for r in mine if r.state is RunState.SUCCEEDED]
        rest = Counter(r.state for r in mine if r.state is not RunState.SUCCEEDED)
        shown = ", ".join(f"{n} {state.value}" for state, n in rest.items()) or "none"
        wanted = f"{others} {other_state.value}" if other_state else "none"
        figure("S5", f"{tier} {sid}: runs; others", f"{len(started)}; {shown}", f"{len(ran)}; {wanted}")
        assert started == ran, sid
        assert rest == (Counter({other_state: others}) if other_state else Counter()), sid
        assert [r.fire_time for r in mine] == MINUTES, f"{sid}: every due fire is recorded once"


async def test_s5_u_downtime_by_policy(
    make_scheduler: SchedulerFactory, clock: FakeClock, figure: FigureRecorder
) -> None:
    s, rec = await make_scheduler(clock=clock)

    async def noop() -> None:
        return None

    for sid, options in POLICIES.items():
        await s.add_job(noop, "cron", minute="*", id=sid, **options)
    clock.jump(10 * 60 + 20)  # down (or stalled) from 00:00:00.5 to 00:10:20.5
    clock.advance(0)
    await rec.wait_runs(50)
    await s.engine.wait_idle()
    check(rec.final_runs(), figure, "U")
    assert len(rec.final_runs()) == 50
    for sid in POLICIES:
        assert (await s.get_job(sid)).next_fire_time == MIDNIGHT + timedelta(minutes=11)


async def test_s5_i_downtime_across_a_real_restart(
    tmp_path: Path, ledger: Ledger, nodes: NodeFactory, faketime: str, figure: FigureRecorder
) -> None:
    db = tmp_path / "a.db"
    spec = {
        "store": f"sqlite:///{db}",
        "schedules": [
            {
                "id": sid,
                "func": "tests.reliability.tasks:run",
                "trigger": "cron",
                "args": {"minute": "*"},
                "kwargs": {"ledger": str(ledger)},
                "options": options,
            }
            for sid, options in POLICIES.items()
        ],
    }
    day = datetime(2030, 1, 1, tzinfo=UTC)
    assert day == MIDNIGHT  # so EXPECTED's fire times hold for this clock too
    first = await nodes(node_args(spec), name="before", env=starting_at(faketime, day + timedelta(seconds=45)))
    await first.expect("ready")
    first.terminate()
    assert await first.exit_code() == 0
    assert ledger.starts() == []

    # 10 minutes later (wall clock): 00:01 ... 00:10 are due; 00:10 is ~20 s late, within the grace
    second = await nodes(
        node_args(spec), name="after", env=starting_at(faketime, day + timedelta(minutes=10, seconds=20))
    )
    await second.expect("ready")
    await ledger.wait(lambda: len(ledger.rows("end")) >= 13, "13 catch-up runs end", timeout=20)
    second.terminate()
    assert await second.exit_code() == 0

    for sid, (ran, _, _) in EXPECTED.items():
        assert [r["fire"] for r in ledger.starts(sid)] == [t.isoformat() for t in ran], sid
    figure("S5", "I duplicate starts in the ledger", ledger.duplicates(), "== 0")
    assert ledger.duplicates() == 0
    store = SQLiteStore(db)
    await store.start(node_id="check")
    try:
        records = await store.get_runs(limit=1000)
        nxt = {j.id: j.next_fire_time for j in await store.get_schedules()}
    finally:
        await store.close()
    check(records, figure, "I")
    assert set(nxt.values()) == {day + timedelta(minutes=11)}
