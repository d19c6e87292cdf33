"""Nodes of a PostgreSQL cluster: registration, heartbeats, and settling the runs of dead nodes.

A node registers its id in the ``nodes`` table when its store starts and heartbeats it
(``last_seen``, the database's clock) at every maintenance step. A second process that
asks for an id whose holder is alive is refused, naming the holder (RELIABILITY S20). A
node whose heartbeat is older than the lease is dead: the first survivor to lock its row
settles the runs it left in flight — ``abandoned``, or handed back still in flight to be
run once more when the schedule says ``recover: true`` — and deletes the row.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..exceptions import StoreError
from ..models import RunRecord, RunState
from ._codec import run_from_values, run_values
from ._pg_sql import Sql

logger = logging.getLogger("aiosched.stores.postgres")

ABANDONED = "the scheduler stopped while the run was in flight"
RERUN = "re-run: the scheduler stopped while the run was in flight"


def _same(value: Any) -> Any:
    return value


async def register(conn: Any, sql: Sql, *, node_id: str, token: str, lease: float, what: str) -> None:
    """Claim ``node_id`` for this process; raise StoreError naming the holder if it is alive.

    A holder counts as dead when its heartbeat is older than ``lease``, or when it ran on
    this host under a pid that no longer exists (a quick restart after a crash).
    """
    hostname, pid = socket.gethostname(), os.getpid()
    row = await conn.fetchrow(sql.register, node_id, token, hostname, pid, lease, token)
    if row is not None:
        return
    holder = await conn.fetchrow(sql.holder, node_id)
    if holder is not None and holder[0] == hostname and not _alive(int(holder[1])):
        row = await conn.fetchrow(sql.register, node_id, token, hostname, pid, 0.0, token)
        if row is not None:
            return
        holder = await conn.fetchrow(sql.holder, node_id)
    if holder is None:  # it unregistered meanwhile: try once more
        if await conn.fetchrow(sql.register, node_id, token, hostname, pid, lease, token) is not None:
            return
        holder = await conn.fetchrow(sql.holder, node_id)
    where = "unknown" if holder is None else f"pid {holder[1]} on host {holder[0]}, since {holder[2]:%Y-%m-%d %H:%M:%S}"
    seen = "" if holder is None else f", last heartbeat {holder[3]:.1f}s ago"
    raise StoreError(
        f"{what}: node id {node_id!r} is in use by another live aiosched process ({where}{seen}); "
        "give each node its own node_id, or wait for the other to stop (its heartbeat must be older "
        f"than the lease of {lease:g}s)"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


async def heartbeat(conn: Any, sql: Sql, *, node_id: str, token: str, lease: float, what: str) -> bool:
    """Refresh ``last_seen``; False if this node had been taken for dead (it registers again then)."""
    if await conn.execute(sql.heartbeat, node_id, token) == "UPDATE 1":
        return True
    logger.error(
        "%s: lease lost: node %s missed its heartbeats for longer than the lease and was taken for dead; "
        "its runs in flight may have been settled by another node",
        what,
        node_id,
    )
    try:
        await register(conn, sql, node_id=node_id, token=token, lease=lease, what=what)
    except StoreError as exc:
        logger.error("%s", exc)
    return False


async def settle(
    conn: Any,
    sql: Sql,
    *,
    node_id: str,
    lease: float,
    own: bool,
    others: bool,
    recoverable: Callable[[set[str]], Awaitable[set[str]]],
    now: datetime | None = None,
) -> list[RunRecord]:
    """Settle the runs in flight of dead or vanished nodes (``others``) and our own earlier ones (``own``).

    The caller passes ``others`` only once its own heartbeats have succeeded for longer than
    a lease: right after a database outage every node's heartbeat looks stale, and live
    nodes must first get the chance to heartbeat again. One transaction; rows locked by
    another survivor are skipped (it settles them). ``recoverable(ids)`` returns, of the
    given schedule ids, those that exist, load, and say ``recover: true``. Returns the
    settled runs, oldest fire time first; re-runs are still in flight and now this node's.
    ``now`` (the database's time as this node knows it) stamps the abandoned runs' end.
    """
    async with conn.transaction():
        dead = [r[0] for r in await conn.fetch(sql.dead_nodes, lease, node_id)] if others else []
        rows = await conn.fetch(sql.orphans, dead, node_id, own, others)
        if not rows and not dead:
            return []
        records = [run_from_values(tuple(row), _same) for row in rows]
        again_ids = await recoverable({r.schedule_id for r in records}) if records else set()
        now = now or datetime.now(UTC)
        for record in records:
            previous = record.node
            if record.state is RunState.RUNNING:  # the attempt in flight counts as made
                record.attempt = max(record.attempt, 1)
            if record.schedule_id in again_ids and record.reason != RERUN:
                record.reason, record.node = RERUN, node_id
                continue
            gone = ABANDONED if previous == node_id else f"node {previous} stopped while the run was in flight"
            note = gone if record.reason != RERUN else f"{gone} (again, during its re-run)"
            record.state, record.ended_at, record.reason = RunState.ABANDONED, now, note
        if records:
            columns = list(zip(*(run_values(r, _same) for r in records), strict=True))
            await conn.execute(sql.settle_runs, *columns)
        if dead:
            await conn.execute(sql.delete_nodes, dead)
    for record in records:
        if record.state is RunState.ABANDONED:
            logger.warning("run %s abandoned: %s", record.run_id, record.reason)
        else:
            logger.warning("run %s will be re-run once on node %s (recover: true)", record.run_id, node_id)
    if dead:
        logger.warning("nodes %s stopped heartbeating; their runs in flight are settled", ", ".join(sorted(dead)))
    return records
