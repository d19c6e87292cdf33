"""S4 (I, one node on SQLite): SIGKILL with 100 runs in flight, half ``recover: false``, half ``recover: true``.

Passes when, after a restart on the same file: the 50 ``recover: false`` runs are ``abandoned``
and never start again, and the 50 ``recover: true`` runs start exactly once more, as attempt 2,
within 2 s of the restart (SQLite has no lease: the file lock proves the old process dead).
The multi-node form (a dead node's leases on PostgreSQL) belongs to the cluster suite.
A two-run case of the same: tests/stores/test_sqlite_process.py::test_sigkill_mid_run_loses_nothing_acknowledged.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiosched import RunState
from aiosched.stores import SQLiteStore
from aiosched.stores._sqlite_file import ABANDONED

from .conftest import FigureRecorder, NodeFactory
from .harness import Ledger, node_args

RUNS = 100


def spec(db: Path, ledger: Ledger, when: str) -> dict[str, Any]:
    return {
        "store": f"sqlite:///{db}",
        "node_id": "n",
        "schedules": [
            {
                "id": f"{'again' if i % 2 else 'once'}-{i:03}",
                "func": "tests.reliability.tasks:run",
                "trigger": "date",
                "args": {"run_date": when},
                "kwargs": {"ledger": str(ledger), "hang_first": True},
                "options": {"recover": bool(i % 2)},
            }
            for i in range(RUNS)
        ],
    }


async def test_s4_sigkill_with_100_runs_in_flight(
    tmp_path: Path, ledger: Ledger, nodes: NodeFactory, figure: FigureRecorder
) -> None:
    db = tmp_path / "a.db"
    when = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    first = await nodes(node_args(spec(db, ledger, when)), name="first")
    await first.expect("ready")
    await ledger.wait_starts(RUNS, timeout=30)
    first.kill()
    assert await first.exit_code() == -9

    second = await nodes(node_args(spec(db, ledger, when)), name="second")
    restarted = (await second.expect("starting"))["mono"]
    await second.expect("ready")
    await ledger.wait(lambda: len(ledger.rows("end")) >= RUNS // 2, "50 re-runs end", timeout=10)
    second.terminate()
    assert await second.exit_code() == 0

    starts = ledger.starts()
    again = [r for r in starts if r["sid"].startswith("again") and r["attempt"] == 2]
    once_restarted = [r for r in starts if r["sid"].startswith("once") and r["attempt"] != 1]
    rerun_within = max(r["mono"] for r in again) - restarted
    figure("S4", "recover:false runs started again", len(once_restarted), "== 0")
    figure("S4", "recover:true runs re-run as attempt 2", len(again), "== 50")
    figure("S4", "last re-run started after the restart (s)", rerun_within, "< 2.0")
    figure("S4", "duplicate starts in the ledger", ledger.duplicates(), "== 0")

    assert len([r for r in starts if r["attempt"] == 1]) == RUNS
    assert once_restarted == []
    assert sorted(r["sid"] for r in again) == sorted(f"again-{i:03}" for i in range(1, RUNS, 2))
    assert rerun_within < 2.0
    assert ledger.duplicates() == 0

    store = SQLiteStore(db)  # the file as the second node left it
    await store.start(node_id="check")
    try:
        runs = await store.get_runs(limit=10_000)
        assert await store.recover_runs() == []  # nothing left in flight
    finally:
        await store.close()
    by_state: dict[str, list[Any]] = {}
    for run in runs:
        by_state.setdefault(run.state.value, []).append(run)
    abandoned, succeeded = by_state.pop("abandoned"), by_state.pop("succeeded")
    figure("S4", "abandoned records / succeeded attempt-2 records", f"{len(abandoned)}/{len(succeeded)}", "50/50")
    assert by_state == {}
    assert sorted(r.schedule_id for r in abandoned) == [f"once-{i:03}" for i in range(0, RUNS, 2)]
    assert all(r.reason == ABANDONED and r.attempt == 1 for r in abandoned)
    assert all(r.state is RunState.SUCCEEDED and r.attempt == 2 and r.result == "'attempt 2'" for r in succeeded)
    assert len(succeeded) == RUNS // 2
