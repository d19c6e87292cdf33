"""The Store contract (aiosched/stores/base.py docstrings), one suite over every backend.

A new backend is one more ``Kit`` in ``KITS``: how to make a started store with options,
and (for a durable backend) how to reopen its data as a restarted process would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiosched import ConflictingIdError, RunRecord, RunState, Schedule, ScheduleNotFound, build_trigger
from aiosched.models import DEFAULT_POLICY, apply_options
from aiosched.stores import MemoryStore, Release, SQLiteStore, Store

from ..conftest import START


async def task(tag: str = "") -> str:
    return tag


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def sched(sid: str, due: float | None = 0, *, paused: bool = False, **policy: Any) -> Schedule:
    return Schedule(
        id=sid,
        name=f"name-{sid}",
        func=task,
        task_ref=f"{__name__}:task",
        trigger=build_trigger("interval", {"seconds": 60}, timezone="UTC", now=START),
        next_fire_time=None if due is None else at(due),
        paused=paused,
        policy=apply_options(DEFAULT_POLICY, policy),
    )


def run(sid: str, fire: float, state: RunState = RunState.SUCCEEDED, **fields: Any) -> RunRecord:
    return RunRecord(schedule_id=sid, fire_time=at(fire), state=state, node="n1", **fields)


def keys(runs: list[RunRecord] | Any) -> list[tuple[str, float]]:
    return [(r.schedule_id, (r.fire_time - START).total_seconds()) for r in runs]


def summary(s: Schedule) -> tuple[Any, ...]:
    spec = s.trigger.spec
    return (
        s.id,
        s.name,
        s.task_ref,
        s.func,
        spec and spec.to_dict(),
        s.args,
        dict(s.kwargs),
        s.policy,
        s.paused,
        s.next_fire_time,
        s.version,
        s.source,
    )


class Kit:
    """Makes started stores of one backend and closes them after the test."""

    durable = False

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[Store] = []

    def build(self, **options: Any) -> Store:
        raise NotImplementedError

    async def make(self, **options: Any) -> Store:
        store = self.build(**options)
        await store.start(node_id="n1")
        self.made.append(store)
        return store

    async def reopen(self, store: Store, **options: Any) -> Store:
        """Close ``store`` and open its data again, as a restarted process would."""
        raise NotImplementedError

    async def close_all(self) -> None:
        for store in self.made:
            await store.close()


class MemoryKit(Kit):
    def build(self, **options: Any) -> Store:
        return MemoryStore(**options)


class SQLiteKit(Kit):
    durable = True

    def build(self, **options: Any) -> Store:
        return SQLiteStore(self.tmp_path / "store.db", **options)

    async def reopen(self, store: Store, **options: Any) -> Store:
        await store.close()
        return await self.make(**options)


class PostgresKit(Kit):
    """A fresh schema per test (the ``pg_url`` fixture drops it afterwards)."""

    durable = True
    url = ""

    def build(self, **options: Any) -> Store:
        from aiosched.stores.postgres import PostgresStore

        return PostgresStore.from_url(self.url + "".join(f"&{k}={v}" for k, v in options.items()))

    async def reopen(self, store: Store, **options: Any) -> Store:
        await store.close()
        return await self.make(**options)


KITS: dict[str, type[Kit]] = {"memory": MemoryKit, "sqlite": SQLiteKit, "postgres": PostgresKit}


@pytest.fixture(
    params=[pytest.param(name, marks=pytest.mark.postgres) if name == "postgres" else name for name in sorted(KITS)]
)
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kit]:
    made = KITS[request.param](tmp_path)
    if isinstance(made, PostgresKit):
        made.url = request.getfixturevalue("pg_url")
    yield made
    await made.close_all()


@pytest.fixture
async def store(kit: Kit) -> Store:
    return await kit.make()


# -- schedules ---------------------------------------------------------------------


async def test_add_returns_the_stored_schedule(store: Store) -> None:
    stored = await store.add_schedule(sched("a", 5, max_instances=3))
    assert stored.version == 1
    assert summary(await store.get_schedule("a")) == summary(stored)
    with pytest.raises(ScheduleNotFound):
        await store.get_schedule("nope")


async def test_add_conflict_and_replace(store: Store) -> None:
    await store.add_schedule(sched("a", 5, paused=True))
    with pytest.raises(ConflictingIdError):
        await store.add_schedule(sched("a", 9))
    assert (await store.get_schedule("a")).next_fire_time == at(5)
    replaced = await store.add_schedule(replace(sched("a", 9), name="new"), replace_existing=True)
    assert replaced.version == 2
    got = await store.get_schedule("a")
    assert (got.name, got.paused, got.next_fire_time) == ("new", False, at(9))  # nothing kept of the old one
    assert [c.schedule.name for c in await store.acquire_due(at(9), 10)] == ["new"]


async def test_update_bumps_version_and_takes_fields_as_given(store: Store) -> None:
    stored = await store.add_schedule(sched("a", 5))
    updated = await store.update_schedule(replace(stored, paused=True, next_fire_time=at(50), args=(1, "x")))
    assert updated.version == 2
    got = await store.get_schedule("a")
    assert (got.paused, got.next_fire_time, got.args, got.version) == (True, at(50), (1, "x"), 2)
    with pytest.raises(ScheduleNotFound):
        await store.update_schedule(sched("nope"))


async def test_update_during_a_claim_keeps_the_change(store: Store) -> None:
    await store.add_schedule(sched("a", 0))
    [claim] = await store.acquire_due(at(0), 10)
    changed = await store.update_schedule(replace(await store.get_schedule("a"), next_fire_time=at(500)))
    await store.release([Release(claim, at(60))], [run("a", 0, RunState.RUNNING)])
    got = await store.get_schedule("a")
    assert (got.next_fire_time, got.version) == (at(500), changed.version)
    assert await store.acquire_due(at(499), 10) == []
    assert [c.schedule.id for c in await store.acquire_due(at(500), 10)] == ["a"]


async def test_replace_during_a_claim_keeps_the_new_schedule(store: Store) -> None:
    await store.add_schedule(sched("a", 0))
    [claim] = await store.acquire_due(at(0), 10)
    await store.add_schedule(sched("a", 30), replace_existing=True)
    await store.release([Release(claim, at(60))], [])
    assert (await store.get_schedule("a")).next_fire_time == at(30)
    assert [c.next_fire_time for c in await store.acquire_due(at(100), 10)] == [at(30)]


async def test_remove_during_a_claim(store: Store) -> None:
    await store.add_schedule(sched("a", 0))
    [claim] = await store.acquire_due(at(0), 10)
    await store.remove_schedule("a")
    accepted = await store.release([Release(claim, at(60))], [run("a", 0)])
    assert keys(accepted) == [("a", 0)]  # the fire happened; its record is history
    with pytest.raises(ScheduleNotFound):
        await store.get_schedule("a")
    assert await store.acquire_due(at(1000), 10) == []
    assert await store.next_fire_time() is None


async def test_remove_keeps_history_and_refuses_unknown_ids(store: Store) -> None:
    await store.add_schedule(sched("a", 0))
    assert await store.add_run(run("a", 0))
    await store.remove_schedule("a")
    assert keys(await store.get_runs(schedule_id="a")) == [("a", 0)]
    with pytest.raises(ScheduleNotFound):
        await store.remove_schedule("a")
    assert await store.get_schedules() == []


async def test_get_schedules_order(store: Store) -> None:
    for s in (sched("b", 10), sched("a", 10), sched("c", 5), sched("p", 1, paused=True), sched("z", None)):
        await store.add_schedule(s)
    ids = [s.id for s in await store.get_schedules()]
    assert ids[:3] == ["c", "a", "b"]  # by next fire time, then id
    assert set(ids[3:]) == {"p", "z"}  # paused and finished ones last


async def test_next_fire_times_match_the_schedules(store: Store) -> None:
    for s in (sched("b", 10), sched("c", 5), sched("p", 1, paused=True), sched("z", None)):
        await store.add_schedule(s)
    claims = await store.acquire_due(at(5), 10)
    await store.release([Release(claims[0], at(65))], [])  # c fired: its next fire time moved on
    assert await store.next_fire_times() == {"b": at(10), "c": at(65), "p": None, "z": None}


# -- the engine's path -----------------------------------------------------------------


async def test_acquire_due_order_limit_paused_and_only_once(store: Store) -> None:
    for s in (sched("late", 3), sched("early", 1), sched("mid", 2), sched("paused", 0, paused=True), sched("x", 9)):
        await store.add_schedule(s)
    first = await store.acquire_due(at(5), 2)
    assert [(c.schedule.id, c.next_fire_time) for c in first] == [("early", at(1)), ("mid", at(2))]
    second = await store.acquire_due(at(5), 10)
    assert [c.schedule.id for c in second] == ["late"]  # not "early"/"mid" again; not "paused"; not "x" (not due)
    assert await store.acquire_due(at(5), 10) == []
    later = {"early": at(100), "mid": at(101), "late": at(99)}
    await store.release([Release(c, later[c.schedule.id]) for c in first + second], [])
    assert [c.schedule.id for c in await store.acquire_due(at(101), 10)] == ["x", "late", "early", "mid"]


async def test_release_advances_and_inserts_atomically_refusing_duplicates(store: Store) -> None:
    await store.add_schedule(sched("a", 0))
    await store.add_schedule(sched("b", 0))
    claims = await store.acquire_due(at(0), 10)
    batch = [run("a", 0, RunState.RUNNING), run("a", 0, RunState.SKIPPED), run("b", 0, RunState.MISSED)]
    accepted = await store.release([Release(c, at(60)) for c in claims], batch)
    assert [id(r) for r in accepted] == [id(batch[0]), id(batch[2])]  # the records given, in order
    assert [s.next_fire_time for s in await store.get_schedules()] == [at(60), at(60)]
    [claim] = await store.acquire_due(at(60), 1)
    again = await store.release([Release(claim, None)], [run(claim.schedule.id, 0), run(claim.schedule.id, 60)])
    assert keys(again) == [(claim.schedule.id, 60)]  # the existing (schedule, fire time) is refused
    stored = await store.get_runs(schedule_id="a", until=at(1))
    assert [(r.state, r.fire_time) for r in stored] == [(RunState.RUNNING, at(0))]
    assert (await store.get_schedule(claim.schedule.id)).next_fire_time is None


async def test_add_run_refuses_an_existing_key(store: Store) -> None:
    assert await store.add_run(run("a", 0, manual=True)) is True
    assert await store.add_run(run("a", 0)) is False
    assert [r.manual for r in await store.get_runs()] == [True]


async def test_next_fire_time_ignores_paused_and_claimed(store: Store) -> None:
    assert await store.next_fire_time() is None
    await store.add_schedule(sched("paused", 1, paused=True))
    await store.add_schedule(sched("a", 2))
    await store.add_schedule(sched("b", 3))
    assert await store.next_fire_time() == at(2)
    [claim] = await store.acquire_due(at(2), 10)
    assert await store.next_fire_time() == at(3)
    await store.release([Release(claim, at(10))], [])
    assert await store.next_fire_time() == at(3)
    await store.remove_schedule("b")
    assert await store.next_fire_time() == at(10)


# -- run history ---------------------------------------------------------------------


async def test_update_runs_writes_state_by_key(store: Store) -> None:
    record = run("a", 0, RunState.RUNNING)
    assert await store.add_run(record)
    finished = replace(record, state=RunState.FAILED, attempt=2, error="ValueError: x", traceback="tb", ended_at=at(3))
    await store.update_runs([finished, run("ghost", 0)])  # an unknown key is not inserted
    [got] = await store.get_runs()
    assert (got.state, got.attempt, got.error, got.traceback, got.ended_at) == (
        RunState.FAILED,
        2,
        "ValueError: x",
        "tb",
        at(3),
    )


async def test_get_runs_filters_pages_and_orders_newest_first(store: Store) -> None:
    S = RunState
    history = [
        ("a", S.SUCCEEDED),
        ("b", S.FAILED),
        ("a", S.MISSED),
        ("a", S.SUCCEEDED),
        ("b", S.RUNNING),
        ("a", S.SKIPPED),
    ]
    for fire, (sid, state) in enumerate(history):
        assert await store.add_run(run(sid, fire, state))
    assert keys(await store.get_runs()) == [("a", 5), ("b", 4), ("a", 3), ("a", 2), ("b", 1), ("a", 0)]
    assert keys(await store.get_runs(schedule_id="b")) == [("b", 4), ("b", 1)]
    assert keys(await store.get_runs(states={RunState.SUCCEEDED, RunState.RUNNING})) == [("b", 4), ("a", 3), ("a", 0)]
    assert keys(await store.get_runs(since=at(2), until=at(4))) == [("a", 3), ("a", 2)]  # since in, until out
    assert keys(await store.get_runs(schedule_id="a", states={RunState.SUCCEEDED}, since=at(1))) == [("a", 3)]
    assert keys(await store.get_runs(limit=2, offset=1)) == [("b", 4), ("a", 3)]
    assert keys(await store.get_runs(limit=10, offset=5)) == [("a", 0)]
    assert await store.get_runs(schedule_id="nope") == []


async def test_retention_drops_the_oldest_finished_runs_and_keeps_runs_in_flight(kit: Kit) -> None:
    store = await kit.make(history_limit=3)
    assert await store.add_run(run("a", 0, RunState.RUNNING))
    await store.release([], [run("a", s) for s in (1, 2, 3, 4)] + [run("b", 5, RunState.QUEUED)])
    assert keys(await store.get_runs()) == [("b", 5), ("a", 4), ("a", 3), ("a", 2), ("a", 0)]
    await store.update_runs([run("a", 0, RunState.SUCCEEDED), run("b", 5, RunState.CANCELLED)])
    assert keys(await store.get_runs()) == [("b", 5), ("a", 4), ("a", 3)]  # 0 finished last but fired first
    assert await store.add_run(run("c", 6, RunState.RUNNING))
    assert keys(await store.get_runs(states={RunState.RUNNING})) == [("c", 6)]


# -- recovery and durability -----------------------------------------------------------


async def test_recover_runs(kit: Kit) -> None:
    store = await kit.make()
    assert await store.recover_runs() == []
    await store.add_schedule(sched("keep", None))
    await store.add_schedule(sched("again", None, recover=True))
    in_flight = [
        run("keep", 1, RunState.RUNNING),
        run("again", 2, RunState.RUNNING, attempt=1),
        run("again", 3, RunState.QUEUED),
        run("gone", 4, RunState.RUNNING, attempt=1),
    ]
    await store.release([], [run("keep", 0), *in_flight])
    if not kit.durable:  # this process's own runs are never settled
        assert await store.recover_runs() == []
        assert len(await store.get_runs(states={RunState.RUNNING, RunState.QUEUED})) == 4
        return
    store = await kit.reopen(store)
    settled = await store.recover_runs()
    assert [(r.schedule_id, r.state, r.attempt, r.node) for r in settled] == [
        ("keep", RunState.ABANDONED, 1, "n1"),  # the attempt it was in counts as made
        ("again", RunState.RUNNING, 1, "n1"),
        ("again", RunState.QUEUED, 0, "n1"),
        ("gone", RunState.ABANDONED, 1, "n1"),
    ]
    assert "stopped while the run was in flight" in (settled[0].reason or "")
    assert settled[0].ended_at is not None
    assert await store.recover_runs() == []  # once per start
    assert [r.state for r in await store.get_runs(schedule_id="keep")] == [RunState.ABANDONED, RunState.SUCCEEDED]
    assert await store.add_run(run("again", 9, RunState.RUNNING))  # this process's own: never settled
    store = await kit.reopen(store)  # the re-runs died too: abandoned now, never re-run twice
    settled = await store.recover_runs()
    assert [(r.schedule_id, r.state) for r in settled] == [("again", RunState.ABANDONED)] * 2 + [
        ("again", RunState.RUNNING)
    ]


async def test_schedules_survive_a_reopen(kit: Kit) -> None:
    if not kit.durable:
        pytest.skip("a memory store does not outlive its process")
    store = await kit.make()
    trigger = build_trigger("cron", {"crontab": "*/5 9-17 * * mon-fri"}, timezone="Europe/Berlin", now=START)
    rich = replace(
        sched("rich", 7, paused=True, max_instances=2, overlap="buffer_one", catchup="all"),
        trigger=trigger,
        args=(1, "two", [3]),
        kwargs={"k": {"n": None}},
        source="config",
    )
    originals = [await store.add_schedule(sched("plain", None)), await store.add_schedule(rich)]
    store = await kit.reopen(store)
    assert [summary(s) for s in await store.get_schedules()] == [summary(s) for s in originals]
    got = await store.get_schedule("rich")
    assert got.args == (1, "two", [3])  # JSON: a tuple inside args comes back as a list
    assert got.trigger.next_fire_time(None, START) == trigger.next_fire_time(None, START)


async def test_close_is_safe_twice(kit: Kit) -> None:
    store = await kit.make()
    assert await store.ping() is True
    await store.close()
    await store.close()
