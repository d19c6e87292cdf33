"""A scheduler on a SQLite file, to be killed with SIGKILL by tests/stores/test_sqlite.py.

Run from the repository root: ``python -m tests.stores._child DB MARKERS``. It adds its
schedules, waits until the two hanging runs have started and a few ticks have finished,
then prints (JSON lines, flushed) what the store acknowledged and ``READY``, and waits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from aiosched import RunState, Schedule, Scheduler

from ._tasks import hang, tick


def emit(**data: Any) -> None:
    print(json.dumps(data, default=str), flush=True)  # noqa: T201 - stdout is this child's report to the test


def describe(s: Schedule) -> dict[str, Any]:
    spec = s.trigger.spec
    return {
        "id": s.id,
        "name": s.name,
        "task_ref": s.task_ref,
        "trigger": spec and spec.to_dict(),
        "args": list(s.args),
        "kwargs": dict(s.kwargs),
        "max_instances": s.policy.max_instances,
        "recover": s.policy.recover,
        "paused": s.paused,
        "next_fire_time": s.next_fire_time,
        "version": s.version,
    }


async def until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def main(db: str, markers: str) -> None:
    async with Scheduler(store=f"sqlite:///{db}", timezone="UTC", node_id="child") as s:
        await s.add_job(tick, "interval", seconds=0.05, id="tick", kwargs={"tag": "t"})
        await s.add_job(tick, "interval", hours=1, id="paused", paused=True)
        await s.add_job(tick, "interval", hours=1, id="modified")
        await s.modify_job("modified", kwargs={"tag": "changed"}, max_instances=2, name="Modified")
        for name, recover in (("hang", False), ("again", True)):
            await s.add_job(hang, "date", id=name, kwargs={"markers": markers, "name": name}, recover=recover)
        emit(schedules=[describe(j) for j in await s.get_jobs()])

        async def started() -> bool:
            return all(Path(markers, f"{n}.1").exists() for n in ("hang", "again"))

        async def ticked() -> bool:
            return len(await s.get_runs(schedule_id="tick", states=[RunState.SUCCEEDED])) >= 3

        await until(started, "the hanging runs to start")
        await until(ticked, "three ticks to finish")
        runs = await s.get_runs(limit=10_000)  # read back from the file: acknowledged
        emit(runs=[r.to_dict() for r in runs])
        emit(ready=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
