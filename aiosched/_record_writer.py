"""The run-record writer: final records reach the store in batches, and survive a store outage."""

from __future__ import annotations

import asyncio
import logging
import time

from .models import RunRecord
from .stores.base import Store

logger = logging.getLogger("aiosched.runs")

DRAIN_TIMEOUT = 10.0  # at shutdown, how long unwritten run records wait for an unreachable store


class RecordWriter:
    """Batches run-record writes: one ``update_runs`` per burst of finished runs.

    A batch the store refuses (an outage) is kept and retried every ``retry_every``
    seconds; the first failure is logged with its traceback, later ones at most every
    30 s, and the recovery once.
    """

    def __init__(self, store: Store, *, retry_every: float = 1.0) -> None:
        self._store = store
        self._retry_every = retry_every
        self._pending: list[RunRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._reported = 0.0

    @property
    def pending(self) -> int:
        """Records handed in and not yet written."""
        return len(self._pending)

    def put(self, record: RunRecord) -> None:
        self._pending.append(record)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let the rest of this burst join the batch
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._store.update_runs(batch)
                except Exception as exc:
                    self._pending[:0] = batch
                    self._failed(exc)
                    await asyncio.sleep(self._retry_every)
                else:
                    if self._failing_since is not None:
                        logger.warning("run records are written again after %.1fs", _now() - self._failing_since)
                        self._failing_since = None
        finally:
            self._task = None

    def _failed(self, exc: Exception) -> None:
        now = _now()
        if self._failing_since is None:
            self._failing_since = self._reported = now
            logger.error("could not write %d run records; keeping them to retry", len(self._pending), exc_info=exc)
        elif now - self._reported >= 30.0:
            self._reported = now
            logger.warning("still cannot write %d run records: %s", len(self._pending), exc)

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - a bound, not a scope
        """Wait until every record handed in so far is written, at most ``timeout`` seconds.

        Records still unwritten then are logged as lost (the store stayed unreachable).
        """
        try:
            async with asyncio.timeout(timeout):
                while self._task is not None:
                    await asyncio.shield(self._task)
        except TimeoutError:
            logger.error("the store did not come back: %d run records were not written", len(self._pending))


def _now() -> float:
    return time.monotonic()
