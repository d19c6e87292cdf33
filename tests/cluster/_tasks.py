"""Tasks the cluster tests schedule; they run in the node subprocesses and prove things from inside.

Each start is written to the test's ledger table (``<schema>.ledger``) before the task
does anything else, so duplicates and misses are exact numbers. The node script tells a
run its schedule and nominal fire time through :data:`CURRENT` (set by a ``submitted``
listener, which runs in the run's own task right before the task is called).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

CURRENT: contextvars.ContextVar[tuple[str, datetime] | None] = contextvars.ContextVar("ledger_current", default=None)
_pool: list[Any] = []
_lock: list[asyncio.Lock] = []


async def _db() -> Any:
    if not _lock:
        _lock.append(asyncio.Lock())
    async with _lock[0]:
        if not _pool:
            _pool.append(await asyncpg.create_pool(os.environ["LEDGER_DSN"], min_size=1, max_size=4, timeout=5))
    return _pool[0]


def _table(name: str) -> str:
    return f'"{os.environ["LEDGER_SCHEMA"]}".{name}'


async def _write(sql: str, *args: Any) -> Any:
    """Run one statement, retrying through a database outage (for up to a minute)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        try:
            async with (await _db()).acquire(timeout=5) as conn:
                return await conn.fetchval(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def record_start() -> None:
    current = CURRENT.get()
    assert current is not None, "the node script sets CURRENT for every run"
    sid, fire = current
    await _write(
        f"INSERT INTO {_table('ledger')} (schedule_id, fire_time, node, pid) VALUES ($1, $2, $3, $4)",
        sid,
        fire,
        os.environ["NODE_ID"],
        os.getpid(),
    )


async def ledger(hold: float = 0.0) -> None:
    """Write this start to the ledger, then take ``hold`` seconds."""
    await record_start()
    if hold:
        await asyncio.sleep(hold)


async def guarded(hold: float) -> int:
    """Count concurrent runs cluster-wide in a shared counter row; keep the peak seen."""
    await record_start()
    counters = _table("counters")
    now = await _write(
        f"UPDATE {counters} SET running = running + 1, peak = greatest(peak, running + 1) RETURNING running"
    )
    try:
        await asyncio.sleep(hold)
    finally:
        await _write(f"UPDATE {counters} SET running = running - 1 RETURNING running")
    return int(now)
