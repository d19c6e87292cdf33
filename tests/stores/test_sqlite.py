"""The SQLite store with the real scheduler and real files under tmp_path.

Process-level cases (a second process, SIGKILL) are in test_sqlite_process.py.
"""

from __future__ import annotations

import asyncio
import functools
import pickle
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from aiosched import (
    ConflictingIdError,
    FakeClock,
    RunRecord,
    RunState,
    Schedule,
    ScheduleError,
    Scheduler,
    StoreError,
    build_trigger,
)
from aiosched.stores import Release, SQLiteStore, open_store

from ..conftest import START, SchedulerFactory
from ._tasks import tick

ROOT = Path(__file__).resolve().parents[2]
MIDNIGHT = START.replace(microsecond=0)


async def noop() -> None:
    return None


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def a_schedule() -> Schedule:
    trigger = build_trigger("interval", {"seconds": 60}, timezone="UTC", now=START)
    return Schedule(
        id="a", name="a", func=tick, task_ref="tests.stores._tasks:tick", trigger=trigger, next_fire_time=START
    )


def describe(s: Schedule) -> tuple[Any, ...]:
    spec = s.trigger.spec
    return (
        s.id,
        s.name,
        s.func,
        s.task_ref,
        spec and spec.to_dict(),
        s.args,
        dict(s.kwargs),
        s.policy,
        s.paused,
        s.next_fire_time,
        s.version,
        s.source,
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Await a condition on stored state (run records are written just after their event)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


# -- restarts and downtime ---------------------------------------------------------------


async def test_restart_keeps_every_change(tmp_path: Path, clock: FakeClock, make_scheduler: SchedulerFactory) -> None:
    db = tmp_path / "a.db"
    async with Scheduler(store=url(db), clock=clock, timezone="UTC") as s:
        await s.add_job(noop, "interval", seconds=30, id="paused")
        kwargs = {"x": [1, {"y": None}]}
        await s.add_job(
            noop,
            "cron",
            crontab="0 9 * * mon-fri",
            id="cron",
            timezone="Europe/Berlin",
            kwargs=kwargs,
            max_attempts=3,
            retry_delay=5,
            retry_on=["OSError"],
        )
        await s.add_job("tests.stores._tasks:tick", "interval", minutes=5, id="byref", args=["a"], source="config")
        await s.add_job(noop, "date", run_date="2031-01-01T00:00:00", id="gone")
        await s.pause_job("paused")
        await s.modify_job("cron", name="Cron!", max_instances=4, coalesce=False, overlap="buffer_one")
        await s.reschedule_job("byref", "interval", minutes=7)
        await s.remove_job("gone")
        before = [describe(j) for j in await s.get_jobs()]
    s2, _ = await make_scheduler(store=url(db), clock=clock)
    assert [describe(j) for j in await s2.get_jobs()] == before
    assert [j.id for j in await s2.get_jobs()] == ["byref", "cron", "paused"]


async def test_downtime_is_caught_up_by_policy(
    tmp_path: Path, clock: FakeClock, make_scheduler: SchedulerFactory
) -> None:
    """RELIABILITY S5 across a real restart: 1-minute crons, the scheduler down for 10 minutes."""
    db = tmp_path / "a.db"
    async with Scheduler(store=url(db), clock=clock, timezone="UTC") as s:
        await s.add_job(noop, "cron", minute="*", id="latest", coalesce=True)
        await s.add_job(noop, "cron", minute="*", id="all", coalesce=False)
        await s.add_job(noop, "cron", minute="*", id="strict", coalesce=True, misfire_grace_time=5)
    clock.jump(10 * 60 + 20)  # while stopped
    s2, rec = await make_scheduler(store=url(db), clock=clock)
    await rec.wait_runs(30)
    assert rec.states("latest").count(RunState.SKIPPED) == 9
    assert [r.fire_time for r in rec.final_runs("latest") if r.state is RunState.SUCCEEDED] == [
        MIDNIGHT + timedelta(minutes=10)
    ]
    assert [r.fire_time for r in rec.final_runs("all")] == [MIDNIGHT + timedelta(minutes=m) for m in range(1, 11)]
    assert rec.states("strict") == [RunState.MISSED] * 10

    async def stored() -> bool:
        return len(await s2.get_runs(states=[RunState.SUCCEEDED], limit=100)) == 11

    await eventually(stored)
    assert (await s2.get_job("latest")).next_fire_time == MIDNIGHT + timedelta(minutes=11)
    assert len(await s2.get_runs(schedule_id="strict", states=["missed"])) == 10


# -- retention -------------------------------------------------------------------------


async def test_history_is_pruned_to_the_limit(
    tmp_path: Path, clock: FakeClock, make_scheduler: SchedulerFactory
) -> None:
    store = SQLiteStore(tmp_path / "a.db", history_limit=5)
    s, rec = await make_scheduler(store=store, clock=clock)
    await s.add_job(noop, "interval", seconds=1, id="i")
    for n in range(1, 13):
        clock.advance(1)
        await rec.wait_runs(n)

    async def pruned() -> bool:
        runs = await s.get_runs(limit=100)
        return [r.state for r in runs] == [RunState.SUCCEEDED] * 5

    await eventually(pruned)
    runs = await s.get_runs(limit=100)
    assert [r.fire_time for r in runs] == [START + timedelta(seconds=n) for n in range(12, 7, -1)]
    assert store.stats["runs_pruned"] == 7


async def test_history_max_age_prunes_old_finished_runs(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db", history_max_age=3600)
    await store.start(node_id="n")
    try:
        now = datetime.now(UTC)  # retention by age uses the real wall clock
        old = now - timedelta(hours=2)
        assert await store.add_run(RunRecord(schedule_id="a", fire_time=old, state=RunState.RUNNING))
        assert await store.add_run(RunRecord(schedule_id="b", fire_time=now, state=RunState.SUCCEEDED))
        assert await store.add_run(RunRecord(schedule_id="c", fire_time=old, state=RunState.FAILED))
        assert [r.schedule_id for r in await store.get_runs()] == ["b", "a"]  # in flight: kept however old
    finally:
        await store.close()


# -- refusing what cannot be stored or opened ------------------------------------------------


async def test_non_durable_schedules_are_refused(
    tmp_path: Path, clock: FakeClock, make_scheduler: SchedulerFactory
) -> None:
    s, _ = await make_scheduler(store=url(tmp_path / "a.db"), clock=clock)
    local = 1
    cases: list[tuple[Any, dict[str, Any], str, str]] = [
        (lambda: None, {}, "func", "importable task"),
        (lambda: local, {}, "func", "importable task"),
        (functools.partial(tick, "x"), {}, "func", "importable task"),
        (tick, {"args": [object()]}, "args", "JSON-serializable"),
        (tick, {"kwargs": {"tag": {1, 2}}}, "kwargs", "JSON-serializable"),
        (tick, {"kwargs": {"tag": float("nan")}}, "kwargs", "JSON-serializable"),
    ]
    for func, extra, field, words in cases:
        with pytest.raises(ScheduleError, match=words) as caught:
            await s.add_job(func, "interval", seconds=5, id="x", **extra)
        assert caught.value.field == field
    with pytest.raises(ScheduleError, match="trigger built from a type name") as caught:
        await s.add_job(tick, IntervalTrigger(seconds=5, timezone="UTC"), id="x")
    assert caught.value.field == "trigger"
    await s.add_job(tick, "interval", seconds=5, id="ok")
    with pytest.raises(ScheduleError, match="importable task"):
        await s.modify_job("ok", func=lambda: None)
    assert [(j.id, j.version) for j in await s.get_jobs()] == [("ok", 1)]


async def test_newer_schema_is_refused_and_the_file_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = SQLiteStore(db)
    await store.start(node_id="n")
    await store.close()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE schema_version SET version = 7")
    con.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"written by a newer aiosched \(schema 7, this version knows 1\)"):
        await SQLiteStore(db).start(node_id="n")
    assert db.read_bytes() == before


@pytest.mark.parametrize("content", [b"garbage, not a database " * 200, b"SQLite format 3\x00" + b"\xff" * 2000])
async def test_a_corrupt_file_is_refused_unchanged(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "a.db"
    db.write_bytes(content)
    s = Scheduler(store=url(db), timezone="UTC")
    try:
        with pytest.raises(StoreError, match="not a usable SQLite database"):
            await s.start()
        assert not s.running
    finally:
        await s.shutdown()
    assert db.read_bytes() == content
    assert not (tmp_path / "a.db-wal").exists()
    db.unlink()
    store = SQLiteStore(db)  # the lock was released: the path can be used once the file is moved away
    await store.start(node_id="n")
    await store.close()


async def test_a_damaged_store_file_is_refused_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = SQLiteStore(db)
    await store.start(node_id="n")
    for i in range(300):
        await store.add_schedule(replace(a_schedule(), id=f"s{i:03}", kwargs={"pad": "x" * 200}))
    await store.close()
    data = bytearray(db.read_bytes())
    for page in range(3, len(data) // 4096):  # the header and the first pages parse; the rest is garbage
        data[page * 4096 : page * 4096 + 512] = b"\xff" * 512
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="malformed"):
        await SQLiteStore(db).start(node_id="n")
    assert db.read_bytes() == data


async def test_a_foreign_database_is_refused_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE users (name TEXT)")
    con.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="other tables \\(users\\), not aiosched's"):
        await SQLiteStore(db).start(node_id="n")
    assert db.read_bytes() == before


async def test_unusable_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"directory .* does not exist"):
        await SQLiteStore(tmp_path / "missing" / "a.db").start(node_id="n")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        await SQLiteStore(tmp_path / "dir.db").start(node_id="n")
    for bad in (
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///a.db?history_limit=x",
        "sqlite:///a.db?x=1",
    ):
        with pytest.raises(StoreError):
            open_store(bad)


async def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/rel.db?history_limit=5&history_max_age=60&synchronous=full")
    assert isinstance(relative, SQLiteStore) and relative.path == "data/rel.db"
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/abs.db"
    (tmp_path / "data").mkdir()
    for store in (relative, absolute):
        await store.start(node_id="n")
        await store.close()
    assert (tmp_path / "data" / "rel.db").is_file() and (tmp_path / "abs.db").is_file()


# -- stored rows that do not load (RELIABILITY S18) -------------------------------------------


def _explode(marker: str) -> None:
    Path(marker).write_text("unpickled!")


class Bomb:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, (self.marker,))


async def test_invalid_rows_are_skipped_reported_and_kept(
    tmp_path: Path, clock: FakeClock, make_scheduler: SchedulerFactory
) -> None:
    db = tmp_path / "a.db"
    bad = {
        "badjson": ("kwargs", "{not json", "kwargs is not valid JSON"),
        "unknown": ("task_ref", "tests.nowhere:task", "cannot import module 'tests.nowhere'"),
        "pickled": ("args", pickle.dumps(Bomb(tmp_path / "boom")), "args is not JSON text"),
        "badpolicy": ("policy", '{"max_instances": 0}', "max_instances"),
        "badtrigger": ("trigger", '{"type": "cron", "args": {"minute": 61}, "timezone": "UTC"}', "minute"),
    }
    async with Scheduler(store=url(db), clock=clock, timezone="UTC") as s:
        for sid in ["good", *bad]:
            await s.add_job(noop, "interval", seconds=1, id=sid)
    with sqlite3.connect(db) as con:
        for sid, (column, value, _) in bad.items():
            con.execute(f"UPDATE schedules SET {column} = ? WHERE id = ?", (value, sid))
        rows = con.execute("SELECT * FROM schedules WHERE id != 'good' ORDER BY id").fetchall()
    con.close()

    s2, rec = await make_scheduler(store=url(db), clock=clock)
    store = s2.store
    assert isinstance(store, SQLiteStore)
    assert sorted(store.invalid) == sorted(bad)
    for sid, (_, _, reason) in bad.items():
        assert reason in store.invalid[sid], (sid, store.invalid[sid])
    assert [j.id for j in await s2.get_jobs()] == ["good"]
    clock.advance(1)
    await rec.wait_runs(1)
    await s2.engine.wait_idle()
    assert {r.schedule_id for r in rec.final_runs()} == {"good"}
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT * FROM schedules WHERE id != 'good' ORDER BY id").fetchall() == rows
    con.close()
    assert not (tmp_path / "boom").exists()  # the pickle was never loaded

    with pytest.raises(ConflictingIdError):
        await s2.add_job(noop, "interval", seconds=1, id="pickled")
    await s2.add_job(noop, "interval", seconds=1, id="unknown", replace_existing=True)
    await s2.remove_job("badjson")
    assert sorted(store.invalid) == ["badpolicy", "badtrigger", "pickled"]
    with sqlite3.connect(db) as con:
        ids = [i for (i,) in con.execute("SELECT id FROM schedules ORDER BY id")]
    con.close()
    assert ids == ["badpolicy", "badtrigger", "good", "pickled", "unknown"]


# -- batching, threads, cancellation ------------------------------------------------------------


async def test_one_wakeup_is_a_handful_of_transactions(
    tmp_path: Path, clock: FakeClock, make_scheduler: SchedulerFactory
) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    s, rec = await make_scheduler(store=store, clock=clock)
    for i in range(500):
        await s.add_job(tick, "date", run_date=START + timedelta(seconds=1), id=f"j{i}")
    before = store.stats["transactions"]
    clock.advance(1)
    await rec.wait_runs(500)

    async def written() -> bool:
        return len(await s.get_runs(states=[RunState.SUCCEEDED], limit=1000)) == 500

    await eventually(written)
    assert store.stats["transactions"] - before <= 5  # one release + a few batched update_runs, not 1000


async def test_every_sqlite_call_runs_on_the_store_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    await store.start(node_id="n")
    threads: set[str] = set()
    statements: list[str] = []

    def trace(sql: str) -> None:
        threads.add(threading.current_thread().name)
        statements.append(sql)

    try:
        await store._call(lambda: store._file._db.set_trace_callback(trace))
        await store.add_schedule(a_schedule())
        [claim] = await store.acquire_due(START, 10)
        [record] = await store.release(
            [Release(claim, None)], [RunRecord(schedule_id="a", fire_time=START, state=RunState.RUNNING)]
        )
        record.state = RunState.SUCCEEDED
        await store.update_runs([record])
        assert [r.state for r in await store.get_runs()] == [RunState.SUCCEEDED]
    finally:
        await store.close()
    assert len(statements) > 5
    assert threading.current_thread().name not in threads
    assert {name.rsplit("_", 1)[0] for name in threads} == {"aiosched-sqlite"}


async def test_a_cancelled_write_is_still_applied_to_file_and_memory(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    store = SQLiteStore(db)
    await store.start(node_id="n")
    schedule = a_schedule()
    try:
        task = asyncio.ensure_future(store.add_schedule(schedule))
        await asyncio.sleep(0)  # the transaction is on its way to the store thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await store.get_schedule("a")).version == 1
    finally:
        await store.close()
    await store.start(node_id="n")
    try:
        assert (await store.get_schedule("a")).version == 1
    finally:
        await store.close()
