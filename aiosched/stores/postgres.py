"""The PostgreSQL store: schedules and run history shared by many scheduler nodes (asyncpg).

* **Leases** — ``acquire_due`` claims due schedules in one statement (``FOR UPDATE SKIP
  LOCKED``) and stamps them ``acquired_by``/``acquired_token``/``acquired_until``, always by
  the *database's* clock. **Fencing** — ``release`` (one transaction, :mod:`._pg_release`)
  advances only rows whose lease is still ours and inserts runs only for them; a stale node
  touches 0 rows, logs "lease lost" and counts ``stats["lease_lost"]``.
* **One start per fire** — ``PRIMARY KEY (schedule_id, fire_time)``, ``ON CONFLICT DO
  NOTHING``; only inserted runs start. An unknown COMMIT outcome is resolved by re-reading.
* **Nodes** (:mod:`._pg_nodes`) register, heartbeat in ``maintain()``, and settle dead nodes'
  runs. **Wake-ups** — changes ``NOTIFY`` in their own transaction (:mod:`._pg_listen`).
* **Outages** — connection failures become StoreError; ``ping()``/:attr:`healthy` tell.
* **Time** — :attr:`clock_offset` is this node's clock against the database's, measured at
  start and at every heartbeat (:mod:`._pg_clock`); the scheduler adds it to "now", so a
  node whose clock is off still claims fires when they are due by the database's clock.

docs/deployment.md says the same for operators.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, final

import asyncpg  # type: ignore[import-untyped]

from ..exceptions import ConflictingIdError, ScheduleNotFound, StoreError
from ..models import RunRecord, RunState, Schedule
from . import _pg_nodes as nodes
from . import _pg_release as rel
from ._codec import run_from_values, schedule_row
from ._pg_clock import ClockSync
from ._pg_listen import Listener
from ._pg_rows import Decoder, runs_query, without_password
from ._pg_schema import migrate, parse_url
from ._pg_sql import Sql
from .base import Claim, Release, Store

logger = logging.getLogger("aiosched.stores.postgres")

_TRANSIENT = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _same(value: Any) -> Any:
    return value


@final
class PostgresStore(Store):
    """Schedules and run history in PostgreSQL, shared by any number of nodes.

    Args:
        dsn: an asyncpg connection string (``postgresql://user@host:5432/db``) without the
            options below.
        schema: the schema holding the tables (created if missing); one cluster per schema.
        lease: seconds a claim and a heartbeat stay valid (database clock). A node silent for
            longer is dead: its runs in flight are settled by a survivor.
        heartbeat: seconds between maintenance steps (heartbeat, settling dead nodes).
        pool_size: connections in this node's pool (the LISTEN connection comes on top).
        batch: the most schedules one claim takes (smaller batches spread a burst across nodes).
        history_limit: finished runs kept (cluster-wide; enforced within 1 % per writer).
        history_max_age: seconds; finished runs with an older fire time are deleted too.
        command_timeout: seconds a statement may take before it counts as an outage.

    Attributes:
        clock_offset: seconds this node adds to its own clock to get the database's.
        stats: ``lease_lost``, ``listen_reconnects``, ``unknown_commits``, ``stale_run_updates``,
            ``settled`` since the store was created.
        invalid: ``{schedule id: reason}`` of stored rows that cannot be loaded (they never fire).
        healthy: whether the last database call succeeded.
    """

    maintenance_interval: float | None

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "aiosched",
        lease: float = 30.0,
        heartbeat: float = 5.0,
        pool_size: int = 10,
        batch: int = 100,
        history_limit: int = 10_000,
        history_max_age: float | None = None,
        command_timeout: float = 10.0,
    ) -> None:
        self._dsn, self._schema = dsn, schema
        self.sql = Sql(schema)
        if lease <= 0 or heartbeat <= 0 or heartbeat >= lease:
            raise StoreError(f"need 0 < heartbeat < lease, got heartbeat={heartbeat} lease={lease}")
        if pool_size < 2 or batch < 1 or history_limit < 0:
            raise StoreError("pool_size must be >= 2, batch >= 1 and history_limit >= 0")
        self.lease, self.heartbeat, self.maintenance_interval = lease, heartbeat, heartbeat
        self._pool_size, self._batch, self._timeout = pool_size, batch, command_timeout
        self._limit, self._max_age = history_limit, history_max_age
        self._prune_every, self._since_prune = max(1, history_limit // 100), 0
        self.name = f"{without_password(dsn.split('?', 1)[0])}?schema={schema}"
        self._pool: Any = None
        self._listener: Listener | None = None
        self._node, self._token = "", uuid.uuid4().hex
        self._decode = Decoder(self.name)
        self._unresolved: list[tuple[uuid.UUID, list[RunRecord], list[str]]] = []
        self._orphan_starts: list[RunRecord] = []
        self._recovered = False
        self._up_since: float | None = None  # since when our heartbeats succeed without a break
        self._lease_timer: asyncio.TimerHandle | None = None
        self.invalid = self._decode.invalid
        self.clock = ClockSync(self.name)
        self.healthy = False
        self.stats = dict.fromkeys(("lease_lost", "listen_reconnects", "unknown_commits", "stale_run_updates"), 0)
        self.stats["settled"] = 0

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """A store for ``postgresql://user:pass@host:port/db?schema=aiosched&lease=30&...``."""
        dsn, options = parse_url(url)
        return cls(dsn, **options)

    # -- life cycle ------------------------------------------------------------------

    async def start(self, *, node_id: str) -> None:
        """Connect, create or migrate the schema, register this node, start listening.

        Raises StoreError (nothing left open) when the server cannot be reached, the schema
        was written by a newer aiosched or holds foreign tables, or another live process
        holds ``node_id``.
        """
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings={"application_name": f"aiosched {node_id}"[:63]},
            )
        except _TRANSIENT as exc:
            raise StoreError(f"cannot connect to {self.name}: {type(exc).__name__}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await migrate(conn, self.sql, self._schema, self.name)
                await nodes.register(
                    conn, self.sql, node_id=node_id, token=self._token, lease=self.lease, what=self.name
                )
                await self.clock.measure(conn, 3)  # before the first claim: "now" is the database's
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, _TRANSIENT):
                raise StoreError(f"cannot open {self.name}: {type(exc).__name__}: {exc}") from exc
            raise
        self._pool, self._node, self.healthy = pool, node_id, True
        self._up_since = time.monotonic()
        self._listener = Listener(
            connect=self._listen_connection,
            channel=self.sql.channel,
            token=self._token,
            wake=self._wake,
            check_every=self.heartbeat,
            stats=self.stats,
        )
        self._listener.start()
        logger.info("%s: opened as node %s (lease %gs, heartbeat %gs)", self.name, node_id, self.lease, self.heartbeat)

    async def _listen_connection(self) -> Any:
        return await asyncpg.connect(
            self._dsn,
            timeout=self._timeout,
            command_timeout=self._timeout,
            server_settings={"application_name": f"aiosched {self._node} listen"[:63]},
        )

    @property
    def clock_offset(self) -> float:
        """See Store.clock_offset: measured at start and at every heartbeat (:mod:`._pg_clock`)."""
        return self.clock.offset

    def on_clock_change(self, callback: Callable[[], None]) -> None:
        self.clock.on_change(callback)

    async def close(self) -> None:
        """Stop listening, hand back any lease, unregister this node and close the pool. Safe twice."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        if self._listener is not None:
            await self._listener.close()
        try:
            async with asyncio.timeout(self._timeout):
                async with pool.acquire() as conn:
                    await conn.execute(self.sql.unlease_all, self._token)
                    await conn.execute(self.sql.unregister, self._node, self._token)
        except (*_TRANSIENT, TimeoutError) as exc:
            logger.warning("%s: closed without unregistering (%r); others settle it after the lease", self.name, exc)
        try:  # a graceful close waits for each server's goodbye: not for long on a broken network
            async with asyncio.timeout(2.0):
                await pool.close()
        except (*_TRANSIENT, TimeoutError):
            pool.terminate()

    async def ping(self) -> bool:
        """Whether the database answers ``SELECT 1`` within 2 s (never raises)."""
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(2.0), self._connection() as conn:
                await conn.fetchval("SELECT 1")
        except (StoreError, TimeoutError):
            return False
        return True

    @property
    def listener(self) -> Listener | None:
        """The LISTEN connection's keeper (None before start)."""
        return self._listener

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; connection failures become StoreError and mark the store unhealthy."""
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self.name} is not open (start() it first)")
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                yield conn
        except _TRANSIENT as exc:
            self.healthy = False
            raise StoreError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        self.healthy = True

    async def _recoverable(self, ids: set[str]) -> set[str]:
        async with self._connection() as conn:
            rows = await conn.fetch(self.sql.get_schedules_by_id, list(ids))
        loaded = (self._decode(row) for row in rows)
        return {s.id for s in loaded if s is not None and s.policy.recover}

    # -- schedules -----------------------------------------------------------------------

    async def add_schedule(self, schedule: Schedule, *, replace_existing: bool = False) -> Schedule:
        """See Store.add_schedule; also raises ScheduleError like the SQLite store (not durable)."""
        row = schedule_row(schedule)
        statement = self.sql.replace_schedule if replace_existing else self.sql.insert_schedule
        async with self._connection() as conn:
            version = await conn.fetchval(statement, *replace(row, version=1).values(_same), self._token)
        if version is None:
            raise ConflictingIdError(schedule.id)
        self._decode.forget(schedule.id)
        return replace(schedule, version=version)

    async def update_schedule(self, schedule: Schedule) -> Schedule:
        """See Store.update_schedule; the change is notified to every node in its transaction."""
        row = schedule_row(schedule)
        async with self._connection() as conn:
            values = list(row.values(_same))
            del values[self.sql.version_index]
            version = await conn.fetchval(self.sql.update_schedule, *values, self._token)
        if version is None:
            raise ScheduleNotFound(schedule.id)
        return replace(schedule, version=version)

    async def remove_schedule(self, schedule_id: str) -> None:
        async with self._connection() as conn:
            found = await conn.fetchval(self.sql.delete_schedule, schedule_id, self._token)
        if found is None:
            raise ScheduleNotFound(schedule_id)
        self._decode.forget(schedule_id)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        async with self._connection() as conn:
            row = await conn.fetchrow(self.sql.get_schedule, schedule_id)
        schedule = None if row is None else self._decode(row)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        return schedule

    async def get_schedules(self) -> list[Schedule]:
        async with self._connection() as conn:
            rows = await conn.fetch(self.sql.get_schedules)
        return [s for s in map(self._decode, rows) if s is not None]

    async def next_fire_times(self) -> dict[str, datetime | None]:
        async with self._connection() as conn:
            rows = await conn.fetch(self.sql.next_fire_times)
        return {row[0]: row[1] for row in rows}

    # -- the engine's path ---------------------------------------------------------------

    async def acquire_due(self, now: datetime, limit: int) -> list[Claim]:
        """See Store.acquire_due: claims with a lease; ``running_elsewhere`` counts other nodes' runs.

        First resolves any release whose commit outcome is still unknown (raising StoreError
        while the database is unreachable), so nothing is claimed on a guess.
        """
        if self._unresolved:
            await rel.resolve_pending(self)
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    self.sql.acquire,
                    now,
                    min(limit, self._batch),
                    self._node,
                    self._token,
                    list(self._decode.skip),
                    self.lease,
                )
        except StoreError:
            # the claim may have committed unseen; this node holds no other claim now (the engine
            # releases each batch before claiming the next), so hand back whatever it holds
            await self._unlease_all()
            raise
        claims: list[Claim] = []
        bad: list[str] = []
        for row in sorted(rows, key=lambda r: (r[8], r[0])):
            schedule = self._decode(row)
            if schedule is None:
                bad.append(row[0])
                continue
            claim = Claim(schedule, row[8])
            claim.running_elsewhere = int(row[11])
            claims.append(claim)
        if bad:
            await self._unlease(bad)
        return claims

    async def _unlease_all(self) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(self.sql.unlease_all, self._token)
        except StoreError:
            pass  # they expire by themselves

    async def _unlease(self, ids: list[str]) -> None:
        """Hand leases back at once (best effort: they expire anyway)."""
        try:
            async with self._connection() as conn:
                await conn.execute(self.sql.unlease, ids, self._token)
        except StoreError as exc:
            logger.debug("%s: could not hand back %d leases (%s); they expire by themselves", self.name, len(ids), exc)

    async def release(self, releases: Sequence[Release], runs: Sequence[RunRecord]) -> Sequence[RunRecord]:
        """See Store.release: one fenced transaction; see the module docstring.

        Raises StoreError when it did not commit (leases handed back when possible), or when
        the outcome of its COMMIT stays unknown (it is then resolved before the next claim).
        """
        return await rel.release(self, releases, runs)

    async def next_fire_time(self) -> datetime | None:
        """See Store.next_fire_time; also arms a wake-up for when another node's lease expires."""
        async with self._connection() as conn:
            row = await conn.fetchrow(self.sql.next_fire_time)
        nft, lease_left = row[0], row[1]
        if lease_left is not None:
            self._arm_lease_timer(max(0.0, float(lease_left)) + 0.01)
        result: datetime | None = nft
        return result

    def _arm_lease_timer(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        timer = self._lease_timer
        if timer is not None and not timer.cancelled() and timer.when() <= loop.time() + delay:
            return
        if timer is not None:
            timer.cancel()
        self._lease_timer = loop.call_later(delay, self._wake)

    # -- run history ---------------------------------------------------------------------

    async def add_run(self, run: RunRecord) -> bool:
        async with self._connection() as conn, conn.transaction():
            inserted = await rel.insert_runs(self, conn, [run])
        return bool(inserted)

    async def update_runs(self, runs: Sequence[RunRecord]) -> None:
        """See Store.update_runs; a run that another node settled meanwhile is left alone (fencing)."""
        await rel.update_runs(self, runs)

    async def get_runs(
        self,
        *,
        schedule_id: str | None = None,
        states: Collection[RunState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        sql, params = runs_query(self.sql, schedule_id, states, since, until)
        async with self._connection() as conn:
            rows = await conn.fetch(sql, *params, limit, offset)
        return [run_from_values(tuple(row), _same) for row in rows]

    # -- recovery and maintenance -------------------------------------------------------

    async def recover_runs(self) -> list[RunRecord]:
        """See Store.recover_runs: this node's earlier incarnation's runs, once, plus dead nodes' runs."""
        own, self._recovered = not self._recovered, True
        others = self._up_since is not None and time.monotonic() - self._up_since >= self.lease + self.heartbeat
        if not own and not others:
            return []
        async with self._connection() as conn:
            settled = await nodes.settle(
                conn,
                self.sql,
                node_id=self._node,
                lease=self.lease,
                own=own,
                others=others,
                recoverable=self._recoverable,
                now=datetime.now(UTC) + timedelta(seconds=self.clock.offset),
            )
        self.stats["settled"] += len(settled)
        return settled

    async def maintain(self, *, settle: bool = True) -> list[RunRecord]:
        """Heartbeat; settle dead nodes' runs; resolve unknown commits; retention (see Store.maintain)."""
        try:
            async with self._connection() as conn:
                if not await nodes.heartbeat(
                    conn, self.sql, node_id=self._node, token=self._token, lease=self.lease, what=self.name
                ):
                    self.stats["lease_lost"] += 1
                await self.clock.measure(conn)
                await conn.execute(self.sql.forget_releases, max(3600.0, 10 * self.lease))
        except StoreError:
            self._up_since = None  # judge no other node dead until ours have heartbeated for a lease again
            raise
        if self._up_since is None:
            self._up_since = time.monotonic()
        self._decode.skip.clear()  # invalid rows get another look (someone may have fixed the code)
        if not settle:
            return []
        if self._unresolved:
            await rel.resolve_pending(self)
        settled = await self.recover_runs()
        orphans, self._orphan_starts = self._orphan_starts, []
        return settled + orphans
