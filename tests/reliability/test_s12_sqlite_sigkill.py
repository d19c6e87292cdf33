"""S12 (I, 5 rounds; C, 50 rounds): SQLite, up to 1000 API writes, SIGKILL at a random point.

Each round a writer process (writer.py) makes up to 1000 Scheduler API writes (add, pause,
resume, modify, remove) on one SQLite file and is SIGKILLed after a random number of them.
Passes when ``PRAGMA integrity_check`` is ``ok`` after every round; every write the writer saw
acknowledged is in the file (the one write in flight at the kill may be there or not); and,
while the writer holds the file, a second process is refused with a message naming the holder
(pid and node). The 3-round sibling: tests/stores/test_sqlite_process.py.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from aiosched.stores import SQLiteStore

from ..stores.test_sqlite_process import OPEN_STORE, run_python
from .conftest import FigureRecorder, NodeFactory

WRITES = 1000
State = dict[str, tuple[int, bool]]  # schedule id -> (tag, paused)


def applied(state: State, op: dict[str, Any]) -> State:
    """``state`` after the write ``op`` (as the writer printed it)."""
    out = dict(state)
    sid, tag = op["id"], op["tag"]
    if op["op"] == "add":
        out[sid] = (tag, False)
    elif op["op"] == "remove":
        del out[sid]
    else:
        old_tag, paused = out[sid]
        out[sid] = {"pause": (old_tag, True), "resume": (old_tag, False), "modify": (tag, paused)}[op["op"]]
    return out


async def stored(db: Path) -> State:
    """The schedules in the file, read through the store (which also proves the lock was dropped)."""
    store = SQLiteStore(db)
    await store.start(node_id="check")
    try:
        return {s.id: (int(s.kwargs["seconds"]), s.paused) for s in await store.get_schedules()}
    finally:
        await store.close()


async def one_round(n: int, db: Path, state: State, nodes: NodeFactory, rng: random.Random) -> dict[str, Any]:
    prefix = f"r{n:02}"
    writer = await nodes(
        ["-m", "tests.reliability.writer", str(db), prefix, str(WRITES), str(rng.randrange(2**32))],
        name=f"writer-{prefix}",
        stdin=True,
    )
    ready = await writer.expect("ready")
    code, out = await run_python(OPEN_STORE, str(db))  # a second process, while the writer holds the file
    refused = code == 3 and f"pid {ready['pid']} on host" in out and f"node writer-{prefix}" in out
    await writer.send("go")
    for _ in range(rng.randint(1, WRITES - 1)):
        await writer.expect("ack")
    writer.kill()
    assert await writer.exit_code() == -9
    ops = {line["begin"]: line for line in writer.lines if "begin" in line}
    acked = sorted(line["ack"] for line in writer.lines if "ack" in line)
    in_flight = [ops[i] for i in ops if i not in set(acked)]
    assert len(in_flight) <= 1 and all(op["begin"] == len(acked) for op in in_flight)  # writes are sequential
    expected = state
    for i in acked:
        expected = applied(expected, ops[i])

    con = sqlite3.connect(db)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()
    actual = await stored(db)
    uncertain = {op["id"] for op in in_flight}
    lost = [
        sid for sid in expected.keys() | actual.keys() if sid not in uncertain and expected.get(sid) != actual.get(sid)
    ]
    for op in in_flight:  # the write in flight at the kill: done or not, never half
        assert actual.get(op["id"]) in (expected.get(op["id"]), applied(expected, op).get(op["id"])), op
    state.clear()
    state.update(actual)
    return {
        "integrity": integrity,
        "lost": len(lost),
        "refused": refused,
        "acked": len(acked),
        "schedules": len(actual),
    }


async def rounds(count: int, tmp_path: Path, nodes: NodeFactory, figure: FigureRecorder) -> None:
    db = tmp_path / "a.db"
    rng = random.Random()
    state: State = {}
    results = [await one_round(n, db, state, nodes, rng) for n in range(count)]
    ok = sum(r["integrity"] == "ok" for r in results)
    lost = sum(r["lost"] for r in results)
    refused = sum(r["refused"] for r in results)
    kill_points = sorted(r["acked"] for r in results)
    figure("S12", f"{count} rounds: integrity_check ok", f"{ok}/{count}", f"{count}/{count}")
    figure("S12", f"{count} rounds: acknowledged writes lost", f"{lost} of {sum(kill_points)}", "0")
    figure("S12", f"{count} rounds: second process refused naming the holder", f"{refused}/{count}", f"{count}/{count}")
    figure(
        "S12",
        f"{count} rounds: writes acknowledged before the kill (min..max)",
        f"{kill_points[0]}..{kill_points[-1]}",
        "1..999",
    )
    assert ok == count
    assert lost == 0
    assert refused == count


async def test_s12_sigkill_during_api_writes_5_rounds(
    tmp_path: Path, nodes: NodeFactory, figure: FigureRecorder
) -> None:
    await rounds(5, tmp_path, nodes, figure)


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_s12_sigkill_during_api_writes_50_rounds(
    tmp_path: Path, nodes: NodeFactory, figure: FigureRecorder
) -> None:
    await rounds(50, tmp_path, nodes, figure)
