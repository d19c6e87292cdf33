"""LISTEN/NOTIFY wake-ups for the PostgreSQL store: one dedicated connection per node.

Every change to a schedule sends ``NOTIFY`` in the same transaction, so idle nodes wake
within milliseconds of the commit and re-read their next fire time. The connection is
watched: when it closes (server restart, ``pg_terminate_backend``, a network cut) or stops
answering a ping, it is opened again with jittered exponential backoff, each reconnect is
counted, and the engine is woken once (notifications sent meanwhile were lost).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("aiosched.stores.postgres")

_MAX_BACKOFF = 5.0


class Listener:
    """Keeps a LISTEN connection open on ``channel`` and calls ``wake`` on foreign notifications.

    Args:
        connect: opens a new connection (raises on failure).
        channel: the channel name.
        token: this process's token; notifications carrying it are our own and ignored.
        wake: called (on the loop) for each foreign notification and after each reconnect.
        check_every: seconds between pings of an idle connection.
        stats: a counter dict; ``listen_reconnects`` is incremented per re-established connection.
    """

    def __init__(
        self,
        *,
        connect: Callable[[], Awaitable[Any]],
        channel: str,
        token: str,
        wake: Callable[[], None],
        check_every: float,
        stats: dict[str, int],
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._token = token
        self._wake = wake
        self._check_every = check_every
        self._stats = stats
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Start watching (the first connection is made in the background)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="aiosched-pg-listen")

    async def close(self) -> None:
        """Stop watching and close the connection. Safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop()

    def kill(self) -> None:
        """Drop the connection abruptly (tests use it to prove the reconnect)."""
        if self._conn is not None:
            self._conn.terminate()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection (None while disconnected)."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else int(conn.get_server_pid())

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._token:
            self._wake()

    async def _run(self) -> None:
        failures = 0
        first = True
        while True:
            lost = asyncio.Event()
            try:
                conn = self._conn = await self._connect()  # held at once: close() closes it whenever it comes
                conn.add_termination_listener(functools.partial(_on_closed, lost))
                await conn.add_listener(self._channel, self._notified)
            except Exception as exc:  # every way a connect can fail: retried with backoff, never fatal
                await self._drop()
                failures += 1
                delay = min(_MAX_BACKOFF, 0.1 * 2 ** min(failures, 8)) * random.uniform(0.5, 1.0)
                if failures == 1:
                    logger.warning("LISTEN connection failed (%s); retrying with backoff", exc)
                await asyncio.sleep(delay)
                continue
            if not first:
                self._stats["listen_reconnects"] += 1
                logger.info("LISTEN connection re-established after %d failed attempt(s)", failures)
            first, failures = False, 0
            self.connected.set()
            self._wake()  # whatever was notified while we were away is lost: look again
            await self._watch(conn, lost)
            self.connected.clear()
            logger.warning("LISTEN connection lost; reconnecting")
            await self._drop()

    async def _watch(self, conn: Any, lost: asyncio.Event) -> None:
        """Return once the connection is closed or stops answering."""
        while not lost.is_set():
            try:
                async with asyncio.timeout(self._check_every):
                    await lost.wait()
                return
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(max(1.0, self._check_every)):
                    await conn.fetchval("SELECT 1")
            except Exception:  # no answer, however it fails: treat the connection as lost
                return

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                async with asyncio.timeout(1.0):
                    await conn.close()
            except Exception:  # closing a broken connection: abort it instead
                conn.terminate()


def _on_closed(lost: asyncio.Event, _conn: Any) -> None:
    lost.set()
