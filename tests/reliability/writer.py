"""Scheduler API writes on a SQLite store, to be SIGKILLed: ``python -m tests.reliability.writer DB PREFIX N SEED``.

Run from the repository root (RELIABILITY S12). It starts a Scheduler on ``sqlite:///DB``, prints
``{"ready": ..., "pid": ...}``, waits for a line on stdin, then makes N API writes (add, pause,
resume, modify, remove; chosen by SEED) on schedules of its own (ids ``PREFIX-NNNN``). Around
each write it prints ``{"begin": i, "op": ..., "id": ..., "tag": ...}`` and, once the write
returned (acknowledged), ``{"ack": i}``. After the last write it waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from typing import Any

from aiosched import Scheduler


def emit(**data: Any) -> None:
    print(json.dumps(data), flush=True)  # noqa: T201 - stdout is this child's report to the test


async def write(s: Scheduler, op: str, sid: str, tag: int) -> None:
    if op == "add":
        await s.add_job(
            "tests.reliability.tasks:run", "interval", hours=1, id=sid, kwargs={"ledger": "-", "seconds": tag}
        )
    elif op == "pause":
        await s.pause_job(sid)
    elif op == "resume":
        await s.resume_job(sid)
    elif op == "modify":
        await s.modify_job(sid, kwargs={"ledger": "-", "seconds": tag})
    else:
        await s.remove_job(sid)


async def main(db: str, prefix: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    live: dict[str, bool] = {}  # id -> paused
    async with Scheduler(store=f"sqlite:///{db}", timezone="UTC", node_id=f"writer-{prefix}") as s:
        emit(ready=True, pid=os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for i in range(count):
            roll = rng.random()
            if not live or roll < 0.35:
                op, sid = "add", f"{prefix}-{i:04}"
            else:
                sid = rng.choice(sorted(live))
                op = "pause" if roll < 0.45 else "resume" if roll < 0.55 else "modify" if roll < 0.75 else "remove"
            emit(begin=i, op=op, id=sid, tag=i)
            await write(s, op, sid, i)
            emit(ack=i)
            if op == "remove":
                del live[sid]
            else:
                live[sid] = op == "pause" or (live.get(sid, False) and op != "resume")
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
