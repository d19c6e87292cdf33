"""The SQLite store: durable schedules and run history in one file, for one process.

Design:

* **One process per file.** ``start()`` takes an exclusive lock on ``<file>.lock`` (the OS
  drops it when the process dies), so this process is the file's only writer. That lets the
  store keep every schedule in an in-memory :class:`~._index.ScheduleIndex` loaded at start:
  ``acquire_due``, ``next_fire_time`` and the schedule reads do no I/O at all.
* **Write-through.** Every change is committed to the file before the call returns, then
  applied to the index (an acknowledged change survives SIGKILL). Changes to schedules are
  serialized by an asyncio lock; a call cancelled mid-write still waits for its transaction
  and applies it, so the index and the file never disagree.
* **Never on the loop.** All sqlite3 calls (and the lock, and the task imports of loading)
  run on one dedicated worker thread; the loop only awaits futures.
* **Batched.** ``release`` (a whole wake-up: advance every schedule, insert every run) and
  ``update_runs`` are one transaction each.

Run history lives only in the file (see :class:`~._sqlite_file.SQLiteFile` for retention
and the durability trade-off of ``synchronous``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar, final

from ..exceptions import ConflictingIdError, ScheduleNotFound, StoreError
from ..models import RunRecord, RunState, Schedule
from ._codec import iso, run_values, schedule_row
from ._index import ScheduleIndex
from ._sqlite_file import SQLiteFile
from .base import Claim, Release, Store

logger = logging.getLogger("aiosched.stores.sqlite")

T = TypeVar("T")
R = TypeVar("R")


@final
class SQLiteStore(Store):
    """Schedules and run history in a SQLite file (WAL), used by one process at a time.

    Args:
        path: the database file; created (with its directory's ``<name>.lock``) if missing.
        history_limit: finished runs kept; the oldest fire times go first. Runs in flight
            are always kept.
        history_max_age: seconds; finished runs whose fire time is older are deleted too.
        synchronous: ``"NORMAL"`` (commits survive a killed process, not a power loss) or
            ``"FULL"`` (an fsync per commit: survives power loss too).

    Attributes:
        invalid: ``{schedule id: reason}`` of the stored schedules that could not be loaded
            (bad JSON, unknown task, bad trigger or policy). They do not fire; their rows are
            kept as they are until replaced (``replace_existing=True``) or removed.
        stats: ``{"transactions": n, "runs_pruned": n}`` since the store was created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        history_limit: int = 10_000,
        history_max_age: float | None = None,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise StoreError(f"the SQLite store needs a file path, got {self.path!r}")
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise StoreError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        if history_limit < 0 or (history_max_age is not None and history_max_age <= 0):
            raise StoreError("history_limit must be >= 0 and history_max_age positive")
        self.name = f"sqlite:///{self.path}"
        self._file = SQLiteFile(
            self.path, history_limit=history_limit, history_max_age=history_max_age, synchronous=synchronous.upper()
        )
        self._index = ScheduleIndex()
        self._lock = asyncio.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._node = ""
        self.invalid: dict[str, str] = {}

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``transactions`` committed, ``runs_pruned`` by retention."""
        return self._file.stats

    # -- life cycle ----------------------------------------------------------------

    async def start(self, *, node_id: str) -> None:
        """Lock the file, create or migrate its schema, load the schedules.

        Raises StoreError (nothing left open) when the file is locked by another process,
        cannot be created, is not an aiosched database, or was written by a newer aiosched.
        A schedule that cannot be loaded is logged and listed in :attr:`invalid`.
        """
        if self._pool is not None:
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiosched-sqlite")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(pool, self._file.open, node_id)
        interrupted = await _settle(fut)  # never leave a half-opened file behind a cancellation
        failed = fut.exception() is not None  # the file closed itself then
        if interrupted or failed:
            if not failed:
                await _settle(loop.run_in_executor(pool, self._file.close))
            pool.shutdown(wait=False)
            if interrupted:
                raise asyncio.CancelledError
        schedules, invalid = fut.result()
        self._pool, self._node = pool, node_id
        self._index.load(schedules)
        self.invalid = invalid
        for sid, reason in invalid.items():
            logger.error("%s: schedule %r cannot be loaded, it will not fire (row kept): %s", self.name, sid, reason)
        logger.info("%s: opened with %d schedules (%d invalid)", self.name, len(schedules), len(invalid))

    async def close(self) -> None:
        """Wait for writes in progress, close the file and drop the lock. Safe to call twice."""
        pool = self._pool
        if pool is None:
            return
        async with self._lock:
            self._pool = None
            await _settle(asyncio.get_running_loop().run_in_executor(pool, self._file.close))
        pool.shutdown(wait=False)
        self._index = ScheduleIndex()

    async def ping(self) -> bool:
        """True when the file is open and answers a query on the store's thread."""
        if self._pool is None:
            return False
        try:
            return await self._call(self._file.ping)
        except StoreError:
            return False

    def _open_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise StoreError(f"{self.name} is not open (start() it first)")
        return self._pool

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread (a read, or a write that touches no index)."""
        return await asyncio.get_running_loop().run_in_executor(self._open_pool(), fn, *args)

    async def _write(self, apply: Callable[[T], R], fn: Callable[..., T], *args: Any) -> R:
        """Run the transaction ``fn(*args)`` on the store's thread, then ``apply`` its result.

        Cancelled meanwhile, it still waits for the transaction (they are short) and
        applies it before re-raising, so the index always matches the file.
        """
        fut = asyncio.get_running_loop().run_in_executor(self._open_pool(), fn, *args)
        interrupted = await _settle(fut)
        result = apply(fut.result())
        if interrupted:
            raise asyncio.CancelledError
        return result

    # -- schedules -------------------------------------------------------------------

    async def add_schedule(self, schedule: Schedule, *, replace_existing: bool = False) -> Schedule:
        """See Store.add_schedule.

        Also raises ScheduleError when the schedule cannot be stored durably: its task is not
        importable by reference, its trigger is an object rather than a type name, or its
        args/kwargs are not JSON-serializable.
        """
        row = schedule_row(schedule)
        async with self._lock:
            stored = self._index.prepare_add(schedule, replace_existing=replace_existing)
            if schedule.id in self.invalid and not replace_existing:
                raise ConflictingIdError(schedule.id)

            def apply(_: None) -> Schedule:
                self._index.add(stored)
                self.invalid.pop(stored.id, None)
                return stored

            return await self._write(apply, self._file.put_schedule, replace(row, version=stored.version).values(iso))

    async def update_schedule(self, schedule: Schedule) -> Schedule:
        """See Store.update_schedule; raises ScheduleError like :meth:`add_schedule`."""
        row = schedule_row(schedule)
        async with self._lock:
            stored = self._index.prepare_update(schedule)

            def apply(_: None) -> Schedule:
                self._index.update(stored)
                return stored

            return await self._write(apply, self._file.put_schedule, replace(row, version=stored.version).values(iso))

    async def remove_schedule(self, schedule_id: str) -> None:
        """See Store.remove_schedule; removes an invalid row too."""
        async with self._lock:
            if schedule_id not in self._index and schedule_id not in self.invalid:
                raise ScheduleNotFound(schedule_id)

            def apply(_: None) -> None:
                if schedule_id in self._index:
                    self._index.remove(schedule_id)
                self.invalid.pop(schedule_id, None)

            await self._write(apply, self._file.delete_schedule, schedule_id)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return self._index.get(schedule_id)

    async def get_schedules(self) -> list[Schedule]:
        return self._index.ordered()

    async def next_fire_times(self) -> dict[str, datetime | None]:
        return self._index.next_fire_times()

    # -- the engine's path -------------------------------------------------------------

    async def acquire_due(self, now: datetime, limit: int) -> list[Claim]:
        return self._index.acquire(now, limit)

    async def release(self, releases: Sequence[Release], runs: Sequence[RunRecord]) -> Sequence[RunRecord]:
        """See Store.release: one transaction for the whole batch.

        If the write fails, the claims are handed back unchanged (they are due again) and
        the StoreError is raised.
        """
        rows = [run_values(run, iso) for run in runs]
        async with self._lock:
            advances = [(None if t is None else iso(t), s.id, s.version) for s, t in self._index.advances(releases)]

            def apply(inserted: list[bool]) -> list[RunRecord]:
                self._index.release(releases)
                return [run for run, ok in zip(runs, inserted, strict=True) if ok]

            try:
                return await self._write(apply, self._file.release, advances, rows)
            except Exception:
                self._index.release([Release(item.claim, item.claim.next_fire_time) for item in releases])
                raise

    async def next_fire_time(self) -> datetime | None:
        return self._index.next_fire_time()

    # -- run history -------------------------------------------------------------------

    async def add_run(self, run: RunRecord) -> bool:
        return await self._call(self._file.add_run, run_values(run, iso))

    async def update_runs(self, runs: Sequence[RunRecord]) -> None:
        """See Store.update_runs: one transaction, which also applies retention."""
        await self._call(self._file.update_runs, [run_values(run, iso) for run in runs])

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
        return await self._call(self._file.get_runs, schedule_id, states, since, until, limit, offset)

    async def recover_runs(self) -> list[RunRecord]:
        """See Store.recover_runs.

        Only runs left in flight by the file's previous holder (proven dead by the lock) are
        settled; a run that was re-run once already is abandoned.
        """
        recoverable = {s.id for s in self._index.schedules() if s.policy.recover}
        return await self._call(self._file.recover, recoverable, self._node)


async def _settle(fut: asyncio.Future[Any]) -> bool:
    """Wait until ``fut`` is done, even through cancellation; True if a cancellation came in."""
    interrupted = False
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            interrupted = True
    return interrupted
