"""The release of a claimed batch on PostgreSQL: fenced, atomic, and safe when COMMIT's outcome is unknown.

One transaction advances the schedules whose lease is still ours (by the database's
clock), inserts the batch's runs except those of schedules whose lease was lost, and
writes a marker row naming the runs it inserted. If the connection drops before COMMIT
is sent, nothing happened (the leases are handed back when the database answers). If it
drops *during* COMMIT, nobody knows yet: the marker is re-read — at once, with backoff, for
up to one lease — and only then are runs started: those the marker lists, none if it is
absent. When the database stays away longer, the release is remembered and resolved
before the next claim; runs it did insert are then handed to ``maintain()`` to be started
late (the misfire rules decide whether they still run).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import StoreError
from ..models import RunRecord
from ._codec import run_values
from .base import Release

if TYPE_CHECKING:
    from .postgres import PostgresStore

logger = logging.getLogger("aiosched.stores.postgres")


def _same(value: Any) -> Any:
    return value


async def insert_runs(store: PostgresStore, conn: Any, runs: Sequence[RunRecord]) -> list[RunRecord]:
    """Insert runs whose key is new (the first of a key given twice); returns those inserted, in order."""
    seen: set[tuple[str, Any]] = set()
    unique: list[RunRecord] = []
    for run in runs:
        key = (run.schedule_id, run.fire_time)
        if key not in seen:
            seen.add(key)
            unique.append(run)
    if not unique:
        return []
    columns = list(zip(*(run_values(r, _same) for r in unique), strict=True))
    got = {(row[0], row[1]) for row in await conn.fetch(store.sql.insert_runs, *columns)}
    inserted = [r for r in unique if (r.schedule_id, r.fire_time) in got]
    await prune(store, conn, sum(r.state.is_final for r in inserted))
    return inserted


async def update_runs(store: PostgresStore, runs: Sequence[RunRecord]) -> None:
    """Write runs' current state, only where the run is still in flight and this node's (fencing)."""
    latest = {(r.schedule_id, r.fire_time): r for r in runs}
    columns = list(zip(*(run_values(r, _same) for r in latest.values()), strict=True))
    if not columns:
        return
    async with store._connection() as conn, conn.transaction():
        updated = await conn.fetch(store.sql.update_runs, *columns)
        await prune(store, conn, sum(r.state.is_final for r in latest.values()))
    stale = len(latest) - len(updated)
    if stale:
        store.stats["stale_run_updates"] += stale
        logger.warning(
            "%s: lease lost on %d run(s): their updates matched no run in flight of this node (another node "
            "settled them, having taken this node for dead); nothing was written for them",
            store.name,
            stale,
        )


async def prune(store: PostgresStore, conn: Any, finished: int) -> None:
    """Apply retention once enough runs finished since the last time (inside the caller's transaction).

    Every ``history_limit // 100`` finished runs (at least every one), so the limit holds
    within 1 % per writing node without counting the table on every write.
    """
    store._since_prune += finished
    if store._since_prune < store._prune_every:
        return
    store._since_prune = 0
    if store._max_age is not None:
        await conn.execute(store.sql.prune_age, store._max_age)
    await conn.execute(store.sql.prune_count, store._limit)


class _Attempt:
    """How far one release transaction got."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


async def release(store: PostgresStore, releases: Sequence[Release], runs: Sequence[RunRecord]) -> list[RunRecord]:
    """See PostgresStore.release and the module docstring."""
    if not releases and not runs:
        return []
    ids = [item.claim.schedule.id for item in releases]
    release_id = uuid.uuid4()
    attempt = _Attempt()
    try:
        return await _transaction(store, releases, runs, release_id, attempt)
    except StoreError as exc:
        if not attempt.committing:
            await store._unlease(ids)
            raise
        store.stats["unknown_commits"] += 1
        logger.warning("%s: connection lost during COMMIT of a release (%s); re-reading its outcome", store.name, exc)
        return await _resolve(store, release_id, runs, ids, exc)


async def _transaction(
    store: PostgresStore,
    releases: Sequence[Release],
    runs: Sequence[RunRecord],
    release_id: uuid.UUID,
    attempt: _Attempt,
) -> list[RunRecord]:
    sql = store.sql
    ids = [item.claim.schedule.id for item in releases]
    nfts = [item.next_fire_time for item in releases]
    versions = [item.claim.schedule.version for item in releases]
    index_of = {id(run): i for i, run in enumerate(runs)}
    async with store._connection() as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            lost: set[str] = set()
            if ids:
                advanced = {row[0] for row in await conn.fetch(sql.advance, ids, nfts, versions, store._token)}
                missing = [sid for sid in ids if sid not in advanced]
                if missing:  # removed ones are fine (their fire happened); existing ones were lost
                    lost = {row[0] for row in await conn.fetch(sql.existing, missing)}
            inserted = await insert_runs(store, conn, [r for r in runs if r.schedule_id not in lost])
            await conn.execute(sql.mark_release, release_id, store._node, [index_of[id(r)] for r in inserted])
            attempt.committing = True
            await tr.commit()
        except BaseException:
            if not attempt.committing and not conn.is_closed():
                try:
                    await tr.rollback()
                except Exception as exc:  # the connection is going away: the server rolls back anyway
                    logger.debug("rollback failed: %s", exc)
            raise
    if lost:
        store.stats["lease_lost"] += len(lost)
        logger.warning(
            "%s: lease lost on %d schedule(s) (e.g. %s): this node was too slow and another may hold them; "
            "their fires of this batch are dropped, nothing was written for them",
            store.name,
            len(lost),
            sorted(lost)[0],
        )
    return inserted


async def _resolve(
    store: PostgresStore, release_id: uuid.UUID, runs: Sequence[RunRecord], ids: list[str], cause: Exception
) -> list[RunRecord]:
    """Find out whether release ``release_id`` committed; returns its inserted runs or raises StoreError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + store.lease
    delay = 0.05
    while True:
        try:
            async with store._connection() as conn:
                inserted = await conn.fetchval(store.sql.find_release, release_id)
            break
        except StoreError:
            if loop.time() + delay > deadline:
                store._unresolved.append((release_id, list(runs), ids))
                raise StoreError(
                    f"{store.name}: a release's commit outcome is unknown and the database is unreachable; "
                    "it will be resolved before the next claim"
                ) from cause
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    if inserted is None:
        logger.warning("%s: re-read: the release did not commit; nothing of it starts", store.name)
        await store._unlease(ids)
        raise StoreError(f"{store.name}: the release did not commit (connection lost during COMMIT)") from cause
    logger.warning("%s: re-read: the release committed (%d runs inserted); they start now", store.name, len(inserted))
    return [runs[i] for i in inserted]


async def resolve_pending(store: PostgresStore) -> None:
    """Resolve releases whose outcome stayed unknown; runs they did insert are queued for ``maintain()``.

    Raises StoreError while the database is unreachable.
    """
    async with store._connection() as conn:
        while store._unresolved:
            release_id, runs, ids = store._unresolved[0]
            inserted = await conn.fetchval(store.sql.find_release, release_id)
            if inserted is None:
                await conn.execute(store.sql.unlease, ids, store._token)
            else:
                late = [runs[i] for i in inserted if not runs[i].state.is_final]
                store._orphan_starts += late
                logger.warning(
                    "%s: an unresolved release did commit; %d of its runs never started and start now",
                    store.name,
                    len(late),
                )
            store._unresolved.pop(0)
