"""The SQLite store across processes: one process per file, and SIGKILL mid-run (RELIABILITY S4, S12)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

from aiosched import EventType, RunState
from aiosched.stores import SQLiteStore

from ..conftest import SchedulerFactory
from .test_sqlite import eventually, url

ROOT = Path(__file__).resolve().parents[2]


async def run_python(code: str, *args: str, timeout: float = 30.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(timeout):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


OPEN_STORE = """
import asyncio, sys
from aiosched import StoreError
from aiosched.stores import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.start(node_id="second")
    await store.close()

try:
    asyncio.run(main())
except StoreError as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


async def test_a_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = SQLiteStore(db)
    await store.start(node_id="holder-node")
    try:
        code, out = await run_python(OPEN_STORE, str(db))
        assert code == 3, out
        assert "is in use by another aiosched process" in out
        assert f"pid {os.getpid()} on host {socket.gethostname()}, node holder-node, since 20" in out
    finally:
        await store.close()
    code, out = await run_python(OPEN_STORE, str(db))
    assert (code, out.strip()) == (0, "opened")


async def _read_until_ready(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while "ready" not in seen:
            line = await proc.stdout.readline()
            assert line, f"the child ended early: {seen}"
            seen.update(json.loads(line))
    return seen


async def test_sigkill_mid_run_loses_nothing_acknowledged(tmp_path: Path, make_scheduler: SchedulerFactory) -> None:
    """RELIABILITY S4/S12: kill -9 with two runs in flight, restart on the same file."""
    db, markers = tmp_path / "a.db", tmp_path / "markers"
    markers.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.stores._child",
        str(db),
        str(markers),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        child = await _read_until_ready(proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    s, rec = await make_scheduler(store=url(db))  # the lock died with the child
    await rec.wait(lambda: bool(rec.of(EventType.ABANDONED)) and len(rec.final_runs("again")) == 1)
    [abandoned] = [e.run for e in rec.of(EventType.ABANDONED)]
    assert abandoned is not None and abandoned.schedule_id == "hang"
    assert abandoned.reason == "the scheduler stopped while the run was in flight"
    [rerun] = rec.final_runs("again")
    assert (rerun.state, rerun.attempt, rerun.result) == (RunState.SUCCEEDED, 2, "'re-run'")
    assert not (markers / "hang.2").exists()  # abandoned: never re-run
    assert (markers / "again.2").exists()

    by_id = {j.id: j for j in await s.get_jobs()}
    for want in child["schedules"]:
        got = by_id[want["id"]]
        assert (
            got.name,
            got.task_ref,
            got.trigger.spec and got.trigger.spec.to_dict(),
            list(got.args),
            dict(got.kwargs),
            got.policy.max_instances,
            got.policy.recover,
            got.paused,
            got.version,
        ) == (
            want["name"],
            want["task_ref"],
            want["trigger"],
            want["args"],
            want["kwargs"],
            want["max_instances"],
            want["recover"],
            want["paused"],
            want["version"],
        )
        if want["id"] in ("paused", "modified"):
            assert str(got.next_fire_time) == want["next_fire_time"]
    assert by_id["modified"].kwargs == {"tag": "changed"}

    async def settled() -> bool:
        stored = await s.get_runs(schedule_id="again")
        return [r.state for r in stored] == [RunState.SUCCEEDED]

    await eventually(settled)
    stored = {r.run_id: r.to_dict() for r in await s.get_runs(limit=10_000)}
    finished = [r for r in child["runs"] if r["state"] not in ("running", "queued")]
    assert len(finished) >= 3
    for run in finished:
        assert stored[run["run_id"]] == run
    assert stored[abandoned.run_id]["state"] == "abandoned"
    await s.shutdown()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


WRITER = """
import asyncio, sys
from aiosched import Scheduler

async def main():
    async with Scheduler(store="sqlite:///" + sys.argv[1], timezone="UTC") as s:
        for i in range(int(sys.argv[2]), 100_000):
            await s.add_job("tests.stores._tasks:tick", "interval", hours=1, id=f"w{i}", kwargs={"tag": str(i)})
            if i % 3 == 0:
                await s.pause_job(f"w{i}")
            print(i, flush=True)

asyncio.run(main())
"""


async def test_acknowledged_writes_survive_sigkill_at_random_points(tmp_path: Path) -> None:
    """RELIABILITY S12, a few rounds: every write the child saw acknowledged is in the file."""
    db = tmp_path / "a.db"
    acked: set[int] = set()  # every write the children saw acknowledged, over all rounds
    after = -1  # the highest schedule in the file: the next child goes on from there
    for kill_after in (random.randint(20, 200) for _ in range(3)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(db), str(after + 1), cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                for _ in range(kill_after):
                    line = await proc.stdout.readline()
                    assert line, "the writer ended early"
                    acked.add(int(line))
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.communicate()
        store = SQLiteStore(db)
        await store.start(node_id="check")
        try:
            schedules = {s.id: s for s in await store.get_schedules()}
            for i in acked:  # (a write killed half-way, add done but pause not, was never acknowledged)
                assert schedules[f"w{i}"].kwargs == {"tag": str(i)}
                assert schedules[f"w{i}"].paused == (i % 3 == 0)
            after = max(int(sid[1:]) for sid in schedules)
        finally:
            await store.close()
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()
