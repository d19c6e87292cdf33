"""A scheduler node for the reliability tests: ``python -m tests.reliability.node SPEC``.

Run from the repository root. SPEC is a JSON object::

    {"store": "sqlite:////tmp/x/a.db", "node_id": "n1", "grace": 5, "max_sleep": 30,
     "schedules": [{"id": "a", "func": "tests.reliability.tasks:run", "trigger": "interval",
                    "args": {"seconds": 1}, "kwargs": {"ledger": "..."}, "options": {"recover": true}}]}

The node adds the schedules its store does not hold yet (a restarted node keeps the stored
ones and their next fire times), prints ``{"ready": ...}`` and runs until SIGTERM or SIGINT;
then it shuts down gracefully (``grace`` seconds for runs in flight), prints
``{"stopped": ...}`` and exits 0. Each stdout line is one flushed JSON object with ``mono``
(``time.monotonic()``, comparable across the machine's processes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

from aiosched import Scheduler


def emit(**data: Any) -> None:
    data["mono"] = time.monotonic()
    print(json.dumps(data, default=str), flush=True)  # noqa: T201 - stdout is this node's report to the test


async def main(spec: dict[str, Any]) -> None:
    scheduler = Scheduler(
        store=spec["store"],
        timezone="UTC",
        node_id=spec.get("node_id", "node"),
        max_sleep=float(spec.get("max_sleep", 30.0)),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    known = {job.id for job in await scheduler.get_jobs()}
    for item in spec.get("schedules", []):
        if item["id"] not in known:
            await scheduler.add_job(
                item["func"],
                item["trigger"],
                id=item["id"],
                kwargs=item.get("kwargs", {}),
                **item.get("args", {}),
                **item.get("options", {}),
            )
    emit(starting=True)
    await scheduler.start()
    emit(ready=True, jobs=len(await scheduler.get_jobs()))
    await stop.wait()
    emit(stopping=True)
    await scheduler.shutdown(wait=True, grace=spec.get("grace", 5.0))
    emit(stopped=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(json.loads(sys.argv[1])))
