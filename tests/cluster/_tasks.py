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
            _pool.append(await asyncpg.create_pool(os.environ["LEDGER_DSN"], min_size=4, max_size=4, timeout=5))
    return _pool[0]


async def warm_up() -> None:
    """Open the ledger pool now (a node calls it at start): a first burst of runs then finds its
    connections open instead of spending its first second connecting, which on a busy machine made
    a 0.1 s run outlast the next fire of its schedule (``max_instances`` skips in S13)."""
    if os.environ.get("LEDGER_DSN"):
        await _db()


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


async def record_start() -> tuple[str, datetime]:
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
    return sid, fire


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


async def span(hold: float) -> None:
    """Write this start to the ledger, take ``hold`` seconds, then stamp the row's ``ended`` (also when cancelled).

    The end is written before the run's slot is freed, so ``[at, ended]`` covers the run (S14).
    """
    sid, fire = await record_start()
    try:
        await asyncio.sleep(hold)
    finally:
        await _write(
            f"UPDATE {_table('ledger')} SET ended = clock_timestamp()"
            " WHERE schedule_id = $1 AND fire_time = $2 AND pid = $3 AND ended IS NULL RETURNING 1",
            sid,
            fire,
            os.getpid(),
        )
