"""S18 (I, SQLite): stored rows with bad JSON, an unknown task, or a pickle blob.

Passes when, on the store's one read of its file (its "poll": a SQLite store is the file's only
writer and loads it once, at start), every bad row is recorded as invalid with its reason and an
error line, before the first wake-up; the good schedule fires on time and alone; the rows are
kept untouched; and no pickle is ever loaded (the pickle module's entry points are spied on, and
a blob that would leave a marker file when unpickled leaves none). More cases (bad policy, bad
trigger, replace/remove of an invalid row):
tests/stores/test_sqlite.py::test_invalid_rows_are_skipped_reported_and_kept.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosched import FakeClock, RunState, Scheduler
from aiosched.stores import SQLiteStore

from ..conftest import SchedulerFactory
from ..stores.test_sqlite import Bomb, noop
from .conftest import FigureRecorder


def bad_rows(marker: Path) -> dict[str, tuple[str, object, str]]:
    blob = pickle.dumps(Bomb(marker))
    return {  # schedule id: (column, stored value, words of the reason)
        "json-kwargs": ("kwargs", "{not json", "kwargs is not valid JSON"),
        "json-trigger": ("trigger", "{", "trigger is not valid JSON"),
        "json-policy": ("policy", "[1,", "policy is not valid JSON"),
        "unknown-task": ("task_ref", "tests.nowhere:task", "cannot import module 'tests.nowhere'"),
        "pickle-args": ("args", blob, "args is not JSON text"),
        "pickle-kwargs": ("kwargs", blob, "kwargs is not JSON text"),
        "pickle-trigger": ("trigger", blob, "trigger is not JSON text"),
        "pickle-policy": ("policy", blob, "policy is not JSON text"),
    }


@pytest.fixture
def unpickled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Calls of the pickle module's loading entry points in this process (the store's thread included)."""
    calls: list[str] = []
    for name in ("loads", "load"):
        real = getattr(pickle, name)

        def spy(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(pickle, name, spy)

    class Unpickler(pickle.Unpickler):
        def load(self) -> Any:
            calls.append("Unpickler.load")
            return super().load()

    monkeypatch.setattr(pickle, "Unpickler", Unpickler)
    yield calls


async def test_s18_bad_rows_are_invalid_at_the_first_read(
    tmp_path: Path,
    clock: FakeClock,
    make_scheduler: SchedulerFactory,
    unpickled: list[str],
    figure: FigureRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, marker = tmp_path / "a.db", tmp_path / "unpickled"
    bad = bad_rows(marker)
    async with Scheduler(store=f"sqlite:///{db}", clock=clock, timezone="UTC") as s:
        for sid in ["good", *bad]:
            await s.add_job(noop, "interval", seconds=1, id=sid)
    con = sqlite3.connect(db)
    try:
        with con:
            for sid, (column, value, _) in bad.items():
                con.execute(f"UPDATE schedules SET {column} = ? WHERE id = ?", (value, sid))
        rows = con.execute("SELECT * FROM schedules ORDER BY id").fetchall()
    finally:
        con.close()

    caplog.set_level(logging.ERROR, logger="aiosched.stores.sqlite")
    s2, rec = await make_scheduler(store=f"sqlite:///{db}", clock=clock)
    store = s2.store
    assert isinstance(store, SQLiteStore)
    invalid_at_start = dict(store.invalid)  # before the engine's first wake-up has done anything
    logged = {sid for sid in bad if any(f"schedule {sid!r} cannot be loaded" in r.getMessage() for r in caplog.records)}
    clock.advance(1)
    await rec.wait_runs(1)
    await s2.engine.wait_idle()
    fired = {r.schedule_id: r.state.value for r in rec.final_runs()}
    figure(
        "S18",
        "bad rows recorded invalid at the store's first read",
        f"{len(invalid_at_start)}/{len(bad)}",
        f"{len(bad)}/{len(bad)}",
    )
    figure("S18", "schedules that fired after 1 s", fired, "{'good': 'succeeded'}")
    figure("S18", "pickle loads / marker file", f"{len(unpickled)} / {marker.exists()}", "0 / False")

    assert sorted(invalid_at_start) == sorted(bad) and logged == set(bad)
    for sid, (_, _, words) in bad.items():
        assert words in invalid_at_start[sid], (sid, invalid_at_start[sid])
    assert fired == {"good": RunState.SUCCEEDED.value}
    assert [j.id for j in await s2.get_jobs()] == ["good"]
    assert unpickled == [] and not marker.exists()
    assert pickle.loads(pickle.dumps(0)) == 0 and unpickled == ["loads"]  # the spy does see a load
    con = sqlite3.connect(db)
    try:
        kept = con.execute("SELECT * FROM schedules WHERE id != 'good' ORDER BY id").fetchall()
    finally:
        con.close()
    assert kept == [row for row in rows if row[0] != "good"]  # the bad rows stay as they were
